//! The `roomhost` binary: parse the command line, set up logging, serve — or
//! act as a client of a running host's admin API (deploy, rollback, promote,
//! classes), or run the guest author's tools (dev, test, check: see
//! `roomhost::dev`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use roomhost::Config;

/// roomhost: a runtime for room objects (Durable Objects, self-hosted).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP and WebSockets (the default when no command is given).
    Serve(ServeArgs),
    /// Deploy a component as a class's new version, into a running host.
    Deploy {
        /// The class (a new one is created).
        class: String,
        /// The component (`cargo build --release --target wasm32-wasip2`).
        file: PathBuf,
        /// Move only this percentage of the class's objects (chosen by a
        /// stable hash of their ids) until `roomhost promote`.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=99))]
        canary: Option<u8>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Go back to the class's previous version (or to --to), or end a canary.
    Rollback {
        /// The class.
        class: String,
        /// The version id to go back to (see `roomhost classes`).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Move every object of the class to its canary version.
    Promote {
        /// The class.
        class: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List classes, their versions, and the objects on each.
    Classes {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List objects: live (an instance), hibernated (sockets, no instance)
    /// or stored (only in the database), with their sockets, stored bytes
    /// and alarms. Pages through all of them unless --limit.
    Objects {
        /// Only this class.
        class: Option<String>,
        /// Only objects with a live instance.
        #[arg(long, group = "state")]
        live: bool,
        /// Only hibernated objects.
        #[arg(long, group = "state")]
        hibernated: bool,
        /// Only objects that exist only in storage.
        #[arg(long, group = "state")]
        stored: bool,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one object: its keys and values (cut), sockets, alarm and recent
    /// traps.
    Inspect {
        /// The class.
        class: String,
        /// The object's name.
        name: String,
        /// Show only this key, its value in full.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Write an object's storage as JSON lines (key, and value as text or hex).
    Export {
        /// The class.
        class: String,
        /// The object's name.
        name: String,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Load JSON lines (as `roomhost export` writes) into an object, in one
    /// transaction; refuses to replace existing keys unless --overwrite.
    Import {
        /// The class.
        class: String,
        /// The object's name.
        name: String,
        /// The JSON lines.
        file: PathBuf,
        /// Replace keys that exist.
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Drop an object's live instance; its sockets stay open, and its next
    /// event wakes it.
    Evict {
        /// The class.
        class: String,
        /// The object's name.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete an object: close its sockets (1012), delete its storage and
    /// alarm. The host logs who did it.
    Delete {
        /// The class.
        class: String,
        /// The object's name.
        name: String,
        /// Yes, delete it.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Copy a consistent snapshot of the serving host's database into FILE
    /// (a redb file that `roomhost serve --data FILE` opens).
    Backup {
        /// Where to write it.
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Create a room guest crate in ./NAME: a working room, its tests, its
    /// host config, and the SDK and WIT this binary carries.
    New {
        /// The crate, its folder and its class.
        name: String,
        /// What to start from.
        #[arg(long, default_value = "room", value_parser = clap::builder::PossibleValuesParser::new(roomhost::scaffold::TEMPLATES))]
        template: String,
    },
    /// Replace DIR/roomhost-sdk (in a crate made by `roomhost new`) with the
    /// SDK and WIT this binary carries.
    UpdateSdk {
        /// The crate.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Build a guest crate, serve it, and rebuild and hot-swap it on every
    /// save (connections and stored data stay).
    Dev(DevArgs),
    /// Build a guest crate, serve it on an ephemeral port with a temporary
    /// database, and run its tests (`cargo test --release -- --include-ignored`)
    /// with ROOMHOST_URL set.
    Test {
        /// The crate's folder (with its roomhost.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Passed to the test binaries, after `--include-ignored`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Check a config and its components without serving: the config
    /// parses, each class's component compiles, links and starts, each route
    /// names a class.
    Check {
        /// The config file.
        #[arg(long, default_value = "roomhost.toml")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct DevArgs {
    /// The crate's folder: Cargo.toml, src/, and roomhost.toml (its classes
    /// and routes).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Address to listen on [default: the config's, else 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The redb database file [default: DIR/.roomhost/data.redb].
    #[arg(long)]
    data: Option<PathBuf>,
}

/// Where the admin API is, and its token.
#[derive(clap::Args)]
struct AdminArgs {
    /// The host (its listener, or its `admin_listen`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The admin token [default: $ROOMHOST_ADMIN_TOKEN, then the admin.token
    /// file beside --data].
    #[arg(long)]
    token: Option<String>,
    /// The host's database, to find its generated admin.token beside it.
    #[arg(long, default_value = "data/roomhost.redb")]
    data: PathBuf,
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or the config's].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The redb database file [default: ./data/roomhost.redb, or the config's].
    #[arg(long)]
    data: Option<PathBuf>,
    /// A TOML config file (classes, routes, limits).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The guest author's tools show what the guest says (its log, its
    // panics) and the host's warnings; serving shows everything from info.
    let default_filter = match &cli.command {
        // (A deploy's outcome is printed by the dev loop itself.)
        Some(Command::Dev(_) | Command::Test { .. }) => {
            "warn,roomhost::guest=debug,roomhost::objects::deploy=error"
        }
        Some(Command::Check { .. }) => "warn",
        _ => "info",
    };
    // Colour only on a terminal: a log written to a file stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
    // One descriptor per WebSocket: allow as many as the hard limit permits.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("open file limit: {n}"),
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        None => ServeArgs::default(),
        Some(Command::New { name, template }) => return new_crate(&name, &template),
        Some(Command::UpdateSdk { dir }) => return update_sdk(&dir),
        Some(Command::Dev(a)) => return dev(a),
        Some(Command::Test { dir, args }) => return test(&dir, &args),
        Some(Command::Check { config }) => return check(&config),
        Some(admin) => return admin_command(admin),
    };
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let report = roomhost::error::Report(&e);
            tracing::error!("{report}");
            eprintln!("roomhost: {report}");
            ExitCode::FAILURE
        }
    }
}

/// `roomhost new`: makes the crate and says what to type next.
fn new_crate(name: &str, template: &str) -> ExitCode {
    match roomhost::scaffold::new_crate(std::path::Path::new("."), name, template) {
        Ok(dir) => {
            println!("created {} (template {template})", dir.display());
            println!("next:");
            println!("  cd {name}");
            println!("  cargo test      # unit tests on the SDK's in-memory host");
            println!("  roomhost dev    # serve on 127.0.0.1, hot-swap on every save");
            println!("  roomhost test   # unit and end-to-end tests against a real host");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomhost: {}", roomhost::error::Report(&e));
            ExitCode::FAILURE
        }
    }
}

/// `roomhost update-sdk`.
fn update_sdk(dir: &std::path::Path) -> ExitCode {
    match roomhost::scaffold::update_sdk(dir) {
        Ok(()) => {
            println!(
                "rewrote {} with the SDK of roomhost {}; review the diff, then cargo test",
                dir.join("roomhost-sdk").display(),
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomhost: {}", roomhost::error::Report(&e));
            ExitCode::FAILURE
        }
    }
}

/// jemalloc keeps each size class in its own pages and gives freed pages back
/// on its own (see `memory.rs`): a host that held a burst of connections does not
/// keep the burst's memory as holes between the long-lived objects.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: one arena (two workers hardly contend); one
/// background thread that purges freed pages over ~5 s (purging faster, 1 s,
/// cost the paced fan-out p99 3x: each purge is an madvise that interrupts
/// the workers, and the pages come back as faults under steady load); and
/// thread caches for sizes up to 4 KiB only (the default, 32 KiB, kept the
/// larger pieces of evicted instances cached per worker: ~0.2 KB more per idle
/// connection at 1,000, no measurable speed difference).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[allow(non_upper_case_globals, unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: Option<&u8> =
    Some(&b"background_thread:true,max_background_threads:1,narenas:1,dirty_decay_ms:5000,muzzy_decay_ms:0,tcache_max:4096\0"[0]);

/// Returns the calling thread's jemalloc cache (tcache) to the arena.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[allow(unsafe_code)]
fn flush_jemalloc_thread_cache() {
    // SAFETY: `thread.tcache.flush` is a documented jemalloc control that takes
    // no input or output (all null/0); it only flushes the calling thread's
    // own cache. It fails harmlessly (non-zero) when the cache is disabled.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.tcache.flush".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

fn serve(args: ServeArgs) -> Result<(), roomhost::Error> {
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    roomhost::memory::use_glibc_trim(false);
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    roomhost::memory::set_thread_cache_flush(flush_jemalloc_thread_cache);
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data) = args.data {
        config.data = data;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| roomhost::Error::Io {
            context: "cannot start the tokio runtime".into(),
            source,
        })?;
    runtime.block_on(async move {
        let listener =
            roomhost::server::listen(config.listen).map_err(|source| roomhost::Error::Io {
                context: format!("cannot listen on {}", config.listen),
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(config.listen);
        let data = config.data.clone();
        // Open the database, load the components, then say where it listens:
        // connections wait in the backlog meanwhile.
        let server = roomhost::Server::new(config)?;
        tracing::info!(
            "roomhost listening on http://{addr} (data: {})",
            data.display()
        );
        server.serve(listener, shutdown_signal()).await
    })
}

/// A multi-threaded runtime for the commands that run a host.
fn runtime() -> Result<tokio::runtime::Runtime, roomhost::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| roomhost::Error::Io {
            context: "cannot start the tokio runtime".into(),
            source,
        })
}

/// The last word of a command that failed: one line on stderr, status 1.
fn failed(e: &roomhost::Error) -> ExitCode {
    eprintln!("roomhost: {}", roomhost::error::Report(e));
    ExitCode::FAILURE
}

/// `roomhost dev`: see `roomhost::dev::dev`.
fn dev(args: DevArgs) -> ExitCode {
    let opts = roomhost::dev::DevOptions {
        dir: args.dir,
        listen: args.listen,
        data: args.data,
    };
    match runtime().and_then(|rt| rt.block_on(roomhost::dev::dev(opts, shutdown_signal()))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

/// `roomhost test`: exits with cargo test's status.
fn test(dir: &std::path::Path, args: &[String]) -> ExitCode {
    match runtime().and_then(|rt| rt.block_on(roomhost::dev::test(dir, args, shutdown_signal()))) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => failed(&e),
    }
}

/// `roomhost check`: one line per class, then every problem; status 1 if any.
fn check(config_file: &std::path::Path) -> ExitCode {
    let config = match Config::from_file(config_file) {
        Ok(c) => c,
        Err(e) => return failed(&e.into()),
    };
    let report = match runtime().and_then(|rt| rt.block_on(roomhost::dev::check::check(&config))) {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let mut problems = 0;
    for c in &report.classes {
        match &c.result {
            Ok((version, size)) => println!(
                "ok    class {:<16} version {version}  {:>7.1} KB  {}",
                c.class,
                *size as f64 / 1024.0,
                c.component
            ),
            Err(e) => {
                problems += 1;
                println!("FAIL  {}", roomhost::error::Report(e));
            }
        }
    }
    for (path, class) in &report.routes_without_class {
        problems += 1;
        println!(
            "FAIL  route {path}: class {class} is not configured (add [classes.{class}] to {}, or deploy it before serving)",
            config_file.display()
        );
    }
    if problems == 0 {
        println!("{}: ok", config_file.display());
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "roomhost: {}: {problems} problem{}",
            config_file.display(),
            if problems == 1 { "" } else { "s" }
        );
        ExitCode::FAILURE
    }
}

/// Runs an admin command against a running host; prints what happened, or
/// one line saying why not (exit status 1).
fn admin_command(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("roomhost: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_admin(command)) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomhost: {}", roomhost::error::Report(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run_admin(command: Command) -> Result<String, roomhost::client::ClientError> {
    use roomhost::client::{AdminClient, find_token};
    let client = |a: AdminArgs| -> Result<AdminClient, roomhost::client::ClientError> {
        AdminClient::new(&a.url, find_token(a.token, &a.data)?)
    };
    let change = |v: &serde_json::Value| -> String {
        let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
        let version = &v["version"];
        let id = version["id"].as_str().unwrap_or("-");
        let prev = v["previous"].as_str().unwrap_or("none");
        match v["canary_percent"].as_u64() {
            Some(p) => format!(
                "{}: canary {id} on {p}% of objects (the rest stay on {prev}); `roomhost promote {}` moves them all",
                s("class"),
                s("class")
            ),
            None => format!("{}: version {id} serves now (was {prev})", s("class")),
        }
    };
    match command {
        Command::Serve(_)
        | Command::New { .. }
        | Command::UpdateSdk { .. }
        | Command::Dev(_)
        | Command::Test { .. }
        | Command::Check { .. } => Ok(String::new()),
        Command::Deploy {
            class,
            file,
            canary,
            admin,
        } => {
            let v = client(admin)?
                .deploy(&class, &file, canary, &operator())
                .await?;
            Ok(change(&v))
        }
        Command::Objects {
            class,
            live,
            hibernated,
            stored,
            limit,
            admin,
        } => {
            let state = match (live, hibernated, stored) {
                (true, _, _) => "live",
                (_, true, _) => "hibernated",
                (_, _, true) => "stored",
                _ => "all",
            };
            let c = client(admin)?;
            let mut rows = Vec::new();
            let mut after: Option<String> = None;
            let want = limit.unwrap_or(usize::MAX);
            while rows.len() < want {
                let page_size = (want - rows.len()).min(1000);
                let v = c
                    .objects(class.as_deref(), state, after.as_deref(), page_size)
                    .await?;
                rows.extend(v["objects"].as_array().into_iter().flatten().cloned());
                match v["next"].as_str() {
                    Some(n) => after = Some(n.to_string()),
                    None => break,
                }
            }
            rows.truncate(want);
            Ok(objects_table(&rows))
        }
        Command::Inspect {
            class,
            name,
            key,
            admin,
        } => {
            let v = client(admin)?
                .inspect(&class, &name, key.as_deref())
                .await?;
            Ok(match key {
                Some(k) => match v["keys"].as_array().and_then(|a| a.first()) {
                    Some(entry) => shown(&entry["value"]),
                    None => {
                        return Err(roomhost::client::ClientError::Refused {
                            status: hyper::StatusCode::NOT_FOUND,
                            message: format!("{class}/{name} has no key {k:?}"),
                        });
                    }
                },
                None => inspection(&v),
            })
        }
        Command::Export {
            class,
            name,
            out,
            admin,
        } => {
            let c = client(admin)?;
            match out {
                Some(file) => {
                    let mut f = std::fs::File::create(&file)
                        .map_err(roomhost::client::ClientError::Write)?;
                    let n = c.export(&class, &name, &mut f).await?;
                    f.sync_all().map_err(roomhost::client::ClientError::Write)?;
                    Ok(format!(
                        "{class}/{name}: {n} bytes written to {}",
                        file.display()
                    ))
                }
                None => {
                    let mut stdout = std::io::stdout();
                    c.export(&class, &name, &mut stdout).await?;
                    Ok(String::new())
                }
            }
        }
        Command::Import {
            class,
            name,
            file,
            overwrite,
            admin,
        } => {
            let v = client(admin)?
                .import(&class, &name, &file, overwrite)
                .await?;
            Ok(format!(
                "{class}/{name}: {} keys imported",
                v["imported"].as_u64().unwrap_or(0)
            ))
        }
        Command::Evict { class, name, admin } => {
            let v = client(admin)?.evict(&class, &name).await?;
            Ok(if v["evicted"].as_bool() == Some(true) {
                format!(
                    "{class}/{name}: instance dropped (its sockets stay; the next event wakes it)"
                )
            } else {
                format!("{class}/{name}: no live instance")
            })
        }
        Command::Delete {
            class,
            name,
            yes,
            admin,
        } => {
            if !yes {
                return Err(roomhost::client::ClientError::Refused {
                    status: hyper::StatusCode::BAD_REQUEST,
                    message: format!(
                        "this deletes {class}/{name}'s storage and alarm and closes its sockets: add --yes"
                    ),
                });
            }
            let v = client(admin)?.delete(&class, &name, &operator()).await?;
            Ok(format!(
                "{class}/{name} deleted: {} sockets closed with 1012, {} bytes removed{}",
                v["sockets_closed"].as_u64().unwrap_or(0),
                v["bytes_deleted"].as_u64().unwrap_or(0),
                if v["alarm_ms"].is_null() {
                    ""
                } else {
                    ", alarm deleted"
                }
            ))
        }
        Command::Backup { file, admin } => {
            let started = std::time::Instant::now();
            let n = client(admin)?.backup(&file).await?;
            Ok(format!(
                "backup written to {} ({n} bytes, {:.1} s); serve it with `roomhost serve --data {}`",
                file.display(),
                started.elapsed().as_secs_f64(),
                file.display()
            ))
        }
        Command::Rollback { class, to, admin } => {
            let v = client(admin)?.rollback(&class, to.as_deref()).await?;
            Ok(change(&v))
        }
        Command::Promote { class, admin } => {
            let v = client(admin)?.promote(&class).await?;
            Ok(change(&v))
        }
        Command::Classes { admin } => {
            let v = client(admin)?.classes().await?;
            Ok(classes_table(&v))
        }
    }
}

/// Who runs this command, for the host's log: `user@host`.
fn operator() -> String {
    format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "someone".into()),
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    )
}

/// Bytes the host showed as `{"text"}` or `{"hex"}`.
fn shown(v: &serde_json::Value) -> String {
    let cut = if v["cut"].as_bool() == Some(true) {
        format!("… ({} bytes)", v["bytes"].as_u64().unwrap_or(0))
    } else {
        String::new()
    };
    match (v["text"].as_str(), v["hex"].as_str()) {
        (Some(t), _) => format!("{t}{cut}"),
        (None, Some(h)) => format!("hex:{h}{cut}"),
        _ => "-".into(),
    }
}

/// A time in ms since the epoch, or `-`.
fn when(v: &serde_json::Value) -> String {
    v.as_u64().map_or("-".into(), |ms| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if ms >= now {
            format!("{ms} (in {:.1} s)", (ms - now) as f64 / 1000.0)
        } else {
            format!("{ms} ({:.1} s ago)", (now - ms) as f64 / 1000.0)
        }
    })
}

/// `roomhost objects` as a table.
fn objects_table(rows: &[serde_json::Value]) -> String {
    let mut out = String::from(
        "CLASS             NAME                              VERSION       STATE       SOCKETS        BYTES  ALARM\n",
    );
    for o in rows {
        out.push_str(&format!(
            "{:<17} {:<33} {:<13} {:<10} {:>8} {:>12}  {}\n",
            o["class"].as_str().unwrap_or("-"),
            o["name"].as_str().unwrap_or("-"),
            o["version"].as_str().unwrap_or("-"),
            o["state"].as_str().unwrap_or("-"),
            o["sockets"].as_u64().unwrap_or(0),
            o["stored_bytes"].as_u64().unwrap_or(0),
            when(&o["alarm_ms"]),
        ));
    }
    out.push_str(&format!("({} objects)", rows.len()));
    out
}

/// `roomhost inspect` as text.
fn inspection(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "{}/{}: {}, version {}, {} bytes stored, alarm {}\n",
        s("class"),
        s("name"),
        s("state"),
        s("version"),
        v["stored_bytes"].as_u64().unwrap_or(0),
        when(&v["alarm_ms"]),
    );
    let keys = v["keys"].as_array().cloned().unwrap_or_default();
    let more = if v["more_keys"].as_bool() == Some(true) {
        " (the first; `roomhost export` writes them all)"
    } else {
        ""
    };
    out.push_str(&format!("keys: {}{more}\n", keys.len()));
    for k in &keys {
        out.push_str(&format!(
            "  {} = {}\n",
            shown(&k["key"]),
            shown(&k["value"])
        ));
    }
    let sockets = v["sockets"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("sockets: {}\n", sockets.len()));
    for so in &sockets {
        let tags: Vec<&str> = so["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        out.push_str(&format!(
            "  #{} peer {} open {:.1} s, tags [{}], attachment {}\n",
            so["id"].as_u64().unwrap_or(0),
            so["peer"].as_str().unwrap_or("-"),
            so["age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            tags.join(", "),
            shown(&so["attachment"]),
        ));
    }
    let traps = v["traps"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("recent traps: {}", traps.len()));
    for t in &traps {
        out.push_str(&format!(
            "\n  {} {}: {}",
            when(&t["at_ms"]),
            t["event"].as_str().unwrap_or("-"),
            t["message"].as_str().unwrap_or("-")
        ));
    }
    out
}

/// `roomhost classes` as a table.
fn classes_table(v: &serde_json::Value) -> String {
    let mut out =
        String::from("CLASS             VERSION       ACTIVE  LIVE  HIBERNATED  DEPLOYED BY\n");
    for class in v["classes"].as_array().into_iter().flatten() {
        let name = class["class"].as_str().unwrap_or("-");
        let canary = class["canary"]["version"].as_str();
        for ver in class["versions"].as_array().into_iter().flatten() {
            let id = ver["id"].as_str().unwrap_or("-");
            let active = if ver["active"].as_bool() == Some(true) {
                "*"
            } else if canary == Some(id) {
                "canary"
            } else {
                ""
            };
            out.push_str(&format!(
                "{name:<17} {id:<13} {active:<7} {:>4}  {:>10}  {}\n",
                ver["live_objects"].as_u64().unwrap_or(0),
                ver["hibernated_objects"].as_u64().unwrap_or(0),
                ver["deployed_by"].as_str().unwrap_or("-"),
            ));
        }
    }
    out.trim_end().to_string()
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
