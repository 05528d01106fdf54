//! The `sluice` binary: parses the command line and hands over to [`sluice::cli`].

use clap::{Parser, Subcommand};
use sluice::cli::policy_test::{self, PolicyTestArgs};

#[derive(Parser)]
#[command(name = "sluice", version, about = "SMTP relay with sandboxed WebAssembly policies")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with policy components.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run messages through a chain of policies offline and show each stage's verdicts.
    Test(PolicyTestArgs),
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sluice: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let status = match cli.command {
        Command::Policy { command: PolicyCommand::Test(args) } => {
            init_logging("warn");
            match runtime.block_on(policy_test::run(args)) {
                Ok(status) => status,
                Err(e) => {
                    eprintln!("sluice policy test: {e}");
                    2
                }
            }
        }
    };
    std::process::exit(status);
}
