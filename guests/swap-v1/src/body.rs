// The body of the hot-swap test guests (`swap-v1`, `swap-v2`, `swap-bad`,
// `swap-crash`); each crate's lib.rs sets `VERSION`, `TRAP_IN_INIT` and
// `TRAP_ON_MESSAGE`, then includes this.

use roomhost_sdk::{
    Frame, Object, Reply, Request, Response, Result, Socket, accept, storage, versions,
};

/// The swap test object: all its state is in storage.
struct Swap;

/// A decimal counter in storage (0 when absent or unreadable).
fn counter(key: &str) -> u64 {
    storage::get::<u64>(key).ok().flatten().unwrap_or(0)
}

impl Object for Swap {
    fn init() -> Result<Self> {
        if TRAP_IN_INIT {
            // A trap, not an `Err`: the deploy test wants an init that traps.
            panic!("{VERSION}: init traps on purpose");
        }
        // The upgrade hook: data written by another version is "migrated"
        // (here: the migration is noted), which records this version as the
        // data's writer.
        if let Some(from) = versions::upgraded_from() {
            let _ = storage::put_bytes("migrated-from", from.as_bytes());
        }
        Ok(Swap)
    }

    fn on_request(&mut self, request: Request) -> Result<Reply> {
        if request.is_websocket() {
            return Ok(accept(&[]));
        }
        let response = match request.path.rsplit('/').next() {
            Some("count") => Response::text(200, counter("count").to_string()),
            Some("version") => Response::text(200, VERSION),
            Some("migrated-from") => match storage::get_bytes("migrated-from").ok().flatten() {
                Some(v) => Response::text(200, String::from_utf8_lossy(&v)),
                None => Response::text(404, "never migrated"),
            },
            Some("versions") => {
                let from = versions::upgraded_from().unwrap_or_else(|| "none".into());
                Response::text(200, format!("{} {from}", versions::current()))
            }
            _ => Response::text(404, "not found"),
        };
        Ok(response.into())
    }

    fn on_socket_message(&mut self, socket: Socket, frame: Frame) -> Result<()> {
        let Some(text) = frame.as_text() else {
            return Ok(());
        };
        if TRAP_ON_MESSAGE {
            panic!("{VERSION}: every message traps on purpose");
        }
        // Every message is counted in storage (as a decimal: the JSON of a
        // u64), so that a test can tell a message lost (or run twice) across a
        // swap from one that was not. A failed write answers nothing.
        let n = counter("count") + 1;
        storage::put("count", &n)?;
        socket.send_text(format!("{VERSION}:{n}:{text}"))?;
        Ok(())
    }
}

roomhost_sdk::export_object!(Swap);
