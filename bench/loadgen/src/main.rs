//! `loadgen`: chat load against a roomhost on 127.0.0.1 (see the README).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loadgen::{
    Common, DurableOpts, FanoutOpts, IdleOpts, JoinOpts, RunawayOpts, ScenarioFailed, SwapOpts,
    WakeOpts, sys,
};
use serde::Serialize;

/// Load generator for roomhost's chat: real WebSocket clients, each from its
/// own 127.x.y.z address.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(flatten)]
    common: Common,
    /// Also print the report as one JSON object (the last line of output).
    #[arg(long, global = true)]
    json: bool,
    /// Worker threads of the runtime [default: one per CPU].
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// N clients over R rooms; S senders per room send M messages each.
    Fanout(FanoutOpts),
    /// N clients over R rooms connect and join concurrently.
    Join(JoinOpts),
    /// Host RSS and descriptors per idle connection (needs --host-pid).
    Idle(IdleOpts),
    /// Latency of the first message after each room has been idle.
    Wake(WakeOpts),
    /// Durable messages/s and ack latency, 1 sender + 1 receiver per room.
    Durable(DurableOpts),
    /// Hot swap of the chat's class under paced load (needs the admin token).
    Swap(SwapOpts),
    /// Runaway guests (the `probe` class's `spin`) beside one chat.
    Runaway(RunawayOpts),
}

fn print<R: std::fmt::Display + Serialize>(report: &R, json: bool) {
    println!("{report}");
    if json {
        match serde_json::to_string(report) {
            Ok(j) => println!("{j}"),
            Err(e) => eprintln!("cannot encode the report as JSON: {e}"),
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    let c = &cli.common;
    match &cli.cmd {
        Cmd::Fanout(o) => print(&loadgen::fanout(c, o).await?, cli.json),
        Cmd::Join(o) => print(&loadgen::join(c, o).await?, cli.json),
        Cmd::Idle(o) => print(&loadgen::idle(c, o).await?, cli.json),
        Cmd::Wake(o) => print(&loadgen::wake(c, o).await?, cli.json),
        Cmd::Runaway(o) => print(&loadgen::runaway(c, o).await?, cli.json),
        Cmd::Durable(o) => print(&loadgen::durable(c, o).await?, cli.json),
        Cmd::Swap(o) => print(&loadgen::swap(c, o).await?, cli.json),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match sys::raise_nofile_limit() {
        Ok((_, soft)) => {
            if let Some(soft) = soft {
                eprintln!("loadgen: RLIMIT_NOFILE soft limit {soft}");
            }
        }
        Err(e) => eprintln!("loadgen: cannot raise RLIMIT_NOFILE: {e}"),
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(t) = cli.threads {
        builder.worker_threads(t.max(1));
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ScenarioFailed>() {
                Some(f) => {
                    println!("{}", f.text);
                    if cli.json {
                        println!("{}", f.json);
                    }
                    eprintln!("loadgen: FAILED: {}", f.reason);
                }
                None => eprintln!("loadgen: error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
