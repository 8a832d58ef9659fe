//! The `roomhost` binary: parse the command line, set up logging, serve.

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    // One descriptor per WebSocket: allow as many as the hard limit permits.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("open file limit: {n}"),
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        None => ServeArgs::default(),
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
        tracing::info!(
            "roomhost listening on http://{addr} (data: {})",
            config.data.display()
        );
        roomhost::run(listener, config, shutdown_signal()).await
    })
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
