//! The `sluice` binary: CLI, tracing, config load, signals, exit code. Nothing else.
//!
//! Signals: SIGHUP reloads the configuration file; the first SIGTERM or SIGINT (or the admin
//! console's `SHUTDOWN`) drains (stop accepting, let open transactions finish within
//! `lifecycle.shutdown_timeout`, send idle clients away with `57P01`) and exits 0; a second one
//! exits at once with status 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// glibc's `malloc`, with tokio's cache-line-aligned blocks carved out of plain `malloc` blocks
/// instead of `posix_memalign`'s slow path (see `sluice::allocator`).
#[global_allocator]
static ALLOCATOR: sluice::allocator::Allocator = sluice::allocator::Allocator;

/// sluice: a read/write-splitting PostgreSQL proxy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (for `run`, the default command).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Check a configuration file and print every problem.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Start a throwaway primary + 2 streaming replicas and sluice in front of them.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run => match cli.config {
            Some(path) => run(path),
            None => {
                eprintln!("sluice: `run` needs --config FILE (or try `sluice demo`)");
                ExitCode::from(2)
            }
        },
        Command::Demo => {
            sluice::logging::init(&sluice::config::OpsConfig::default().log);
            let Some(runtime) = runtime(&sluice::config::RuntimeConfig::default()) else { return ExitCode::FAILURE };
            match runtime.block_on(sluice::demo::run()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The runtime `main` blocks on, built from `[runtime]` before anything runs (see
/// [`sluice::runtime`]).
fn runtime(cfg: &sluice::config::RuntimeConfig) -> Option<tokio::runtime::Runtime> {
    sluice::runtime::build_main(cfg).inspect_err(|e| eprintln!("sluice: cannot start the tokio runtime: {e}")).ok()
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match sluice::config::Config::load(file) {
        Ok(c) => {
            println!("{}: ok ({} nodes, {} users)", file.display(), c.nodes.len(), c.users.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for p in &e.0 {
                println!("{}: {}: {}", file.display(), p.key, p.reason);
            }
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> ExitCode {
    let config = match sluice::config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: invalid configuration {}:\n{e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    sluice::logging::init(&config.ops.log);
    let Some(runtime) = runtime(&config.ops.runtime) else { return ExitCode::FAILURE };
    runtime.block_on(serve(path))
}

async fn serve(path: PathBuf) -> ExitCode {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = match sluice::Proxy::start_from_file(&path).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        tokio::select! {
            stop = signals.next() => if stop {
                break
            } else {
                handle.reload();
                handle.reload_tls();
            },
            () = handle.stop_requested() => break,
        }
    }
    let timeout = handle.config().ops.lifecycle.shutdown_timeout;
    tracing::info!(?timeout, "draining: no new connections; open transactions may finish");
    tokio::select! {
        left = handle.drain(timeout) => {
            if left > 0 {
                tracing::warn!(clients = left, "shutdown timeout reached; closing the remaining clients");
            }
            tracing::info!("sluice stopped");
            ExitCode::SUCCESS
        }
        () = signals.stop() => {
            tracing::warn!("second signal: exiting at once");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM, SIGINT and SIGHUP.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal: `true` to stop, `false` to reload.
    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.term.recv() => true,
            _ = self.int.recv() => true,
            _ = self.hup.recv() => false,
        }
    }

    /// The next stop signal (SIGHUP is ignored while draining).
    async fn stop(&mut self) {
        while !self.next().await {}
    }
}
