//! The guest author's loop, around a guest crate — a folder with a
//! `Cargo.toml` (a `cdylib`), `src/`, perhaps `wit/`, and a `roomhost.toml`
//! whose class(es) name the crate's component
//! (`target/wasm32-wasip2/release/<crate>.wasm`) and whose routes reach them:
//!
//! - [`dev`] (`roomhost dev`): builds the crate, serves it from a host in this
//!   process, and on every save rebuilds and hot-swaps the new component in —
//!   the path a deploy takes, so connections stay open and stored data stays;
//! - [`test`] (`roomhost test`): builds the crate, serves it on an ephemeral
//!   port with a temporary database, and runs the crate's own tests
//!   (`cargo test`, ignored ones included) with `ROOMHOST_URL` set;
//! - [`check`] (`roomhost check`): a config and its components, checked
//!   without serving.
//!
//! [`build`]: the cargo build both run; [`watch`]: the file watcher.

pub mod build;
pub mod check;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::Config;
use crate::error::{DevError, Error, Report};
use crate::server::{Deployer, Server};
use watch::{CONFIG_FILE, Watcher};

/// Who `roomhost dev` says deployed its versions.
pub const DEPLOYED_BY: &str = "roomhost dev";

/// The environment variable `roomhost test` gives the crate's tests: the
/// host's base URL, `http://127.0.0.1:PORT`.
pub const URL_ENV: &str = "ROOMHOST_URL";

/// `roomhost dev`'s settings.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// The crate's folder.
    pub dir: PathBuf,
    /// Where to listen (default: the config's `listen`).
    pub listen: Option<SocketAddr>,
    /// The database (default: `.roomhost/data.redb` in the crate's folder).
    pub data: Option<PathBuf>,
}

/// A guest crate and its host config, built once.
struct Built {
    /// The config, its classes pointing at the built component.
    config: Config,
    /// The classes the crate's component runs.
    classes: Vec<String>,
    /// The component cargo wrote.
    wasm: PathBuf,
}

/// Reads the crate's `roomhost.toml` (a clear error when it is missing).
fn crate_config(dir: &Path) -> Result<(PathBuf, Config), Error> {
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(DevError::NoConfig {
            path,
            artifact: build::artifact_name(dir),
        }
        .into());
    }
    let config = Config::from_file(&path)?;
    Ok((path, config))
}

/// Builds the crate and points the config's classes whose component is the
/// crate's (by file name: the config says `target/...`, cargo may have
/// written it under `CARGO_TARGET_DIR`) at what cargo wrote.
async fn build_crate(dir: &Path) -> Result<Built, Error> {
    let (path, mut config) = crate_config(dir)?;
    let wasm = build::build(dir).await?;
    let name = wasm.file_name().map(|n| n.to_os_string());
    let mut classes = Vec::new();
    for (class, cc) in config.classes.iter_mut() {
        if cc.component.starts_with("builtin:") {
            continue;
        }
        if Path::new(&cc.component)
            .file_name()
            .map(|n| n.to_os_string())
            == name
        {
            cc.component = wasm.display().to_string();
            classes.push(class.clone());
        }
    }
    if classes.is_empty() {
        return Err(DevError::NoClass {
            config: path,
            artifact: name
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
        .into());
    }
    Ok(Built {
        config,
        classes,
        wasm,
    })
}

/// A host serving in this process.
struct LocalHost {
    addr: SocketAddr,
    deployer: Deployer,
    stop: oneshot::Sender<()>,
    join: tokio::task::JoinHandle<crate::Result<()>>,
}

impl LocalHost {
    /// Opens the database, loads the classes, and serves on `config.listen`.
    async fn start(config: Config) -> Result<LocalHost, Error> {
        let listener = crate::server::listen(config.listen).map_err(|source| Error::Io {
            context: format!("cannot listen on {}", config.listen),
            source,
        })?;
        let addr = listener.local_addr().unwrap_or(config.listen);
        let server = Server::new(config)?;
        let deployer = server.deployer();
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(LocalHost {
            addr,
            deployer,
            stop,
            join,
        })
    }

    /// Shuts down gracefully (sockets close with 1001, the last commit lands).
    async fn stop(self) -> Result<(), Error> {
        let _ = self.stop.send(());
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(Error::Io {
                context: "the host's task failed".into(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

/// What the dev loop and the test runner print, marked as theirs.
fn say(message: impl std::fmt::Display) {
    println!("roomhost: {message}");
}

/// The URLs a config serves on `addr`, one a line.
fn urls(addr: SocketAddr, config: &Config) -> String {
    let mut out = String::new();
    for r in &config.routes {
        let what = match (&r.object, &r.unique_id, &r.page) {
            (Some(c), _, _) => format!("objects of class {c}"),
            (_, Some(c), _) => format!("a new unique {c} id"),
            (_, _, Some(p)) => format!("the {p} page"),
            _ => String::new(),
        };
        let method = r
            .method
            .as_deref()
            .map(|m| format!("{m} "))
            .unwrap_or_default();
        out.push_str(&format!("\n  {method}http://{addr}{}  → {what}", r.path));
    }
    out
}

/// `roomhost dev`: builds the crate in `opts.dir`, serves it, and on each
/// save rebuilds it and swaps the new component in. Ends when `shutdown`
/// resolves (the host then shuts down gracefully).
pub async fn dev(opts: DevOptions, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    tokio::pin!(shutdown);
    let dir = std::fs::canonicalize(&opts.dir).map_err(|source| DevError::Io {
        context: format!("cannot open the crate folder {}", opts.dir.display()),
        source,
    })?;
    let mut watcher = Watcher::new(&dir)?;
    say(format!("building {}", dir.display()));
    // A first build that fails waits for a fix.
    let built = loop {
        let failed = tokio::select! {
            r = build_crate(&dir) => match r {
                Ok(b) => break b,
                Err(e) => e,
            },
            () = &mut shutdown => return Ok(()),
        };
        say(format!(
            "{}; fix it and save: the build runs again",
            Report(&failed)
        ));
        tokio::select! {
            c = watcher.changed() => if c.is_none() { return Ok(()) },
            () = &mut shutdown => return Ok(()),
        }
    };
    let Built {
        mut config,
        classes,
        wasm,
    } = built;
    let data_dir = dir.join(".roomhost");
    config.data = match opts.data {
        Some(d) => d,
        None => {
            create_data_dir(&data_dir)?;
            data_dir.join("data.redb")
        }
    };
    if let Some(listen) = opts.listen {
        config.listen = listen;
    }
    // A version that panics keeps serving: its author is looking at it.
    config.auto_rollback_ms = 0;
    let data = config.data.clone();
    let served = config.clone();
    let host = LocalHost::start(config).await?;
    let bytes = std::fs::read(&wasm).map_err(|source| DevError::Io {
        context: format!("cannot read {}", wasm.display()),
        source,
    })?;
    let hash = content_hash(&bytes);
    let mut last = Some(hash.clone());
    for class in &classes {
        // What was built serves, even if the database says another version
        // (one deployed or rolled back to by hand since the last start).
        let built = crate::components::versions::version_id(&hash);
        let stale = host.deployer.active_version(class).as_deref() != Some(built.as_str());
        if stale
            && let Err(e) = host
                .deployer
                .deploy(class, bytes.clone(), DEPLOYED_BY)
                .await
        {
            say(format!("refused: {}", Report(&e)));
            last = None;
        }
        let version = host.deployer.active_version(class).unwrap_or_default();
        say(format!(
            "class {class} runs {} (version {version})",
            wasm.display()
        ));
    }
    say(format!(
        "serving on http://{} (data: {}){}",
        host.addr,
        data.display(),
        urls(host.addr, &served)
    ));
    say("watching src/, wit/, Cargo.toml: save to rebuild and swap; Ctrl-C stops");
    loop {
        let change = tokio::select! {
            c = watcher.changed() => match c {
                Some(c) => c,
                None => break,
            },
            () = &mut shutdown => break,
        };
        if change.config() {
            say(format!(
                "{CONFIG_FILE} changed: restart `roomhost dev` to apply it (classes, routes and limits are read at start)"
            ));
            if change.only_config() {
                continue;
            }
        }
        // An editor's (or sed's) temporary files come and go: name the rest.
        let mut files: Vec<String> = change
            .files
            .iter()
            .filter(|f| dir.join(f).exists())
            .map(|f| f.display().to_string())
            .collect();
        if files.is_empty() {
            files = change
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect();
        }
        say(format!("{} changed: rebuilding", files.join(", ")));
        let serving = || {
            let versions: Vec<String> = classes
                .iter()
                .map(|c| host.deployer.active_version(c).unwrap_or_default())
                .collect();
            versions.join(", ")
        };
        let built = tokio::select! {
            r = build::build(&dir) => r,
            () = &mut shutdown => break,
        };
        let wasm = match built {
            Ok(w) => w,
            Err(e) => {
                say(format!(
                    "{}; version {} keeps serving",
                    Report(&e),
                    serving()
                ));
                continue;
            }
        };
        let bytes = match std::fs::read(&wasm) {
            Ok(b) => b,
            Err(e) => {
                say(format!(
                    "cannot read {}: {e}; version {} keeps serving",
                    wasm.display(),
                    serving()
                ));
                continue;
            }
        };
        let hash = content_hash(&bytes);
        if last.as_deref() == Some(hash.as_str()) {
            say("the component did not change: nothing to swap");
            continue;
        }
        let mut all_swapped = true;
        for class in &classes {
            match host
                .deployer
                .deploy(class, bytes.clone(), DEPLOYED_BY)
                .await
            {
                Ok(c) => say(format!(
                    "swapped {class} to version {} (was {}), {:.1} s after the save",
                    c.version.id,
                    c.previous.as_deref().unwrap_or("none"),
                    change.first.elapsed().as_secs_f64()
                )),
                Err(e) => {
                    all_swapped = false;
                    let old = host.deployer.active_version(class).unwrap_or_default();
                    say(format!(
                        "refused: {}; version {old} keeps serving",
                        Report(&e)
                    ));
                }
            }
        }
        if all_swapped {
            last = Some(hash);
        }
    }
    say("stopping");
    host.stop().await
}

/// The dev database's folder, with a `.gitignore` that keeps it out of git.
fn create_data_dir(dir: &Path) -> Result<(), Error> {
    let io = |what: &str| {
        let context = format!("cannot create {what} in {}", dir.display());
        move |source| DevError::Io { context, source }
    };
    std::fs::create_dir_all(dir).map_err(io("the data folder"))?;
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(
            &ignore,
            "# roomhost dev's database and admin token: not for git\n*\n",
        )
        .map_err(io(".gitignore"))?;
    }
    Ok(())
}

/// `roomhost test`: builds the crate in `dir`, serves it on 127.0.0.1 (an
/// ephemeral port, a temporary database, removed afterwards), and runs
/// `cargo test --release -- --include-ignored ARGS` in `dir` with
/// [`URL_ENV`] set. Returns cargo test's exit code.
pub async fn test(
    dir: &Path,
    args: &[String],
    shutdown: impl Future<Output = ()>,
) -> Result<i32, Error> {
    tokio::pin!(shutdown);
    let dir = std::fs::canonicalize(dir).map_err(|source| DevError::Io {
        context: format!("cannot open the crate folder {}", dir.display()),
        source,
    })?;
    let Built { mut config, .. } = tokio::select! {
        r = build_crate(&dir) => r?,
        () = &mut shutdown => return Ok(130),
    };
    let data = tempfile::tempdir().map_err(|source| DevError::Io {
        context: "cannot create a temporary folder for the database".into(),
        source,
    })?;
    config.data = data.path().join("test.redb");
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.auto_rollback_ms = 0;
    let host = LocalHost::start(config).await?;
    let url = format!("http://{}", host.addr);
    say(format!(
        "host on {url} (data: {}, removed afterwards): cargo test with {URL_ENV}={url}",
        data.path().display()
    ));
    let mut child = tokio::process::Command::new("cargo")
        .current_dir(&dir)
        .args(["test", "--release", "--", "--include-ignored"])
        .args(args)
        .env(URL_ENV, &url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DevError::Spawn {
            program: "cargo test".into(),
            dir: dir.clone(),
            source,
        })?;
    let status = tokio::select! {
        s = child.wait() => Some(s.map_err(|source| DevError::Spawn {
            program: "cargo test".into(),
            dir: dir.clone(),
            source,
        })?),
        () = &mut shutdown => None,
    };
    let stopped = tokio::time::timeout(Duration::from_secs(30), host.stop()).await;
    drop(data);
    match stopped {
        Ok(r) => r?,
        Err(_) => say("the host did not stop within 30 s"),
    }
    Ok(match status {
        Some(s) => s.code().unwrap_or(1),
        None => 130,
    })
}

fn content_hash(bytes: &[u8]) -> String {
    crate::components::versions::content_hash(bytes)
}
