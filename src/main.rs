//! The `sluice` binary: CLI, tracing, config load, signals, exit code. Nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run => match cli.config {
            Some(path) => runtime().block_on(run(path)),
            None => {
                eprintln!("sluice: `run` needs --config FILE (or try `sluice demo`)");
                ExitCode::from(2)
            }
        },
        Command::Demo => match runtime().block_on(sluice::demo::run()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start the tokio runtime")
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

async fn run(path: PathBuf) -> ExitCode {
    let config = match sluice::config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: invalid configuration {}:\n{e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let handle = match sluice::Proxy::start(config).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal(&handle).await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    ExitCode::SUCCESS
}

/// Wait for SIGINT or SIGTERM; on SIGHUP reload what was learnt from the servers.
async fn wait_for_signal(handle: &sluice::ProxyHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {
                handle.reload();
                handle.reload_tls();
            }
        }
    }
}
