//! The `sluice` binary: parses the command line and hands over to [`sluice::cli`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sluice::cli::policy_test::{self, PolicyTestArgs};
use sluice::cli::queue::{self, QueueCommand};
use sluice::cli::relay;

#[derive(Parser)]
#[command(name = "sluice", version, about = "SMTP relay with sandboxed WebAssembly policies")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (on the embedded default configuration without --config).
    Serve {
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log lines as `text` or `json` (one object per line).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Check a configuration and load every policy it names.
    Check {
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage the queue and the quarantine.
    Queue {
        /// Configuration file (TOML).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Make a running relay reload its configuration and policies now (through the admin
    /// listener of the configuration).
    Reload {
        /// Configuration file (TOML) of the running relay.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Work with policy components.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Teach a learning policy (such as bayes) spam and ham, or make it forget them.
    Learn(Box<sluice::cli::learn::LearnArgs>),
    /// DKIM signing keys.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Write a new signing key and print the DNS TXT record to publish for it.
    Keygen {
        /// The signing domain (`d=`).
        #[arg(long)]
        domain: String,
        /// The selector (`s=`): the record goes at SELECTOR._domainkey.DOMAIN.
        #[arg(long)]
        selector: String,
        /// Where to write the private key (PEM, PKCS#8; never overwritten).
        #[arg(long)]
        key: PathBuf,
        /// Key type.
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ed25519"])]
        algorithm: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run messages through a chain of policies offline and show each stage's verdicts.
    Test(Box<PolicyTestArgs>),
    /// Put a tenant's previous generation of policies back in a running relay.
    Rollback {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Configuration file (TOML) of the running relay.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn init_logging(default: &str) {
    init_logging_as(default, false);
}

fn init_logging_as(default: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: log files and journals get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Exit status of a relay command: 0, or 1 with the error on stderr.
fn report(command: &str, result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sluice {command}: {e:#}");
            1
        }
    }
}

fn main() {
    sluice::panics::install();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sluice: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let status = match cli.command {
        Command::Serve { config, log_format } => {
            init_logging_as("info", log_format == "json");
            report(
                "serve",
                relay::load_config(config.as_ref())
                    .and_then(|c| runtime.block_on(relay::serve(c, config.clone()))),
            )
        }
        Command::Check { config } => {
            init_logging("warn");
            report(
                "check",
                relay::load_config(config.as_ref()).and_then(|c| runtime.block_on(relay::check(c))),
            )
        }
        Command::Queue { config, command } => {
            init_logging("warn");
            report("queue", relay::load_config(config.as_ref()).and_then(|c| queue::queue(&c, command)))
        }
        Command::Reload { config } => {
            init_logging("warn");
            report(
                "reload",
                relay::load_config(config.as_ref()).and_then(|c| runtime.block_on(relay::reload(&c))),
            )
        }
        Command::Policy { command: PolicyCommand::Rollback { tenant, config } } => {
            init_logging("warn");
            report(
                "policy rollback",
                relay::load_config(config.as_ref())
                    .and_then(|c| runtime.block_on(relay::rollback(&c, &tenant))),
            )
        }
        Command::Dkim { command: DkimCommand::Keygen { domain, selector, key, algorithm } } => {
            match sluice::cli::dkim::keygen(&domain, &selector, &key, &algorithm) {
                Ok(record) => {
                    println!("{record}");
                    0
                }
                Err(e) => {
                    eprintln!("sluice dkim keygen: {e:#}");
                    1
                }
            }
        }
        Command::Learn(args) => {
            init_logging("warn");
            match runtime.block_on(sluice::cli::learn::run(*args)) {
                Ok(status) => status,
                Err(e) => {
                    eprintln!("sluice learn: {e}");
                    2
                }
            }
        }
        Command::Policy { command: PolicyCommand::Test(args) } => {
            init_logging("warn");
            match runtime.block_on(policy_test::run(*args)) {
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
