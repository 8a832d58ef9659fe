// The body of the hot-swap test guests (`swap-v1`, `swap-v2`, `swap-bad`,
// `swap-crash`); each crate's lib.rs sets `VERSION`, `TRAP_IN_INIT` and
// `TRAP_ON_MESSAGE`, then includes this.

use roomhost_sdk::{Frame, Object, Reply, Request, Response, sockets, storage, versions};

struct Swap;

/// Reads a decimal counter from storage.
fn counter(key: &str) -> u64 {
    storage::get(key)
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

impl Object for Swap {
    fn init() {
        if TRAP_IN_INIT {
            panic!("{VERSION}: init traps on purpose");
        }
        // The upgrade hook: data written by another version is "migrated"
        // (here: the migration is noted), which records this version as the
        // data's writer.
        if let Some(from) = versions::upgraded_from() {
            let _ = storage::put("migrated-from", from.as_bytes());
        }
    }

    fn on_request(req: Request) -> Reply {
        if req.websocket.is_some() {
            return roomhost_sdk::accept(&[]);
        }
        match req.path.rsplit('/').next() {
            Some("count") => Response::text(200, counter("count").to_string()).into(),
            Some("version") => Response::text(200, VERSION).into(),
            Some("migrated-from") => match storage::get("migrated-from").ok().flatten() {
                Some(v) => Response::text(200, String::from_utf8_lossy(&v)).into(),
                None => Response::text(404, "never migrated").into(),
            },
            Some("versions") => {
                let from = versions::upgraded_from().unwrap_or_else(|| "none".into());
                Response::text(200, format!("{} {from}", versions::current())).into()
            }
            _ => Response::text(404, "not found").into(),
        }
    }

    fn on_socket_message(id: u64, frame: Frame) {
        let Some(text) = frame.as_text() else { return };
        if TRAP_ON_MESSAGE {
            panic!("{VERSION}: every message traps on purpose");
        }
        // Every message is counted in storage, so that a test can tell a
        // message lost (or run twice) across a swap from one that was not.
        let n = counter("count") + 1;
        if storage::put("count", n.to_string().as_bytes()).is_err() {
            return;
        }
        let _ = sockets::send(id, &Frame::Text(format!("{VERSION}:{n}:{text}")));
    }
}

roomhost_sdk::export_object!(Swap);
