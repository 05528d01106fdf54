//! The `sluice` binary: parses the command line and hands over to [`sluice::cli`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sluice::cli::policy_test::{self, PolicyTestArgs};
use sluice::cli::queue::{self, QueueCommand};
use sluice::cli::registry::Access;
use sluice::cli::relay;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "SMTP relay with sandboxed WebAssembly policies",
    long_about = "Sluice is an SMTP relay for a network's edge: it accepts mail, runs every connection \
and message through each tenant's chain of policies — WebAssembly components under CPU and memory \
limits, reloaded without a restart — and forwards what passes to the next hop. `sluice help \
COMMAND` (or COMMAND --help) describes each command with examples.",
    after_help = "Examples:\n  sluice serve --config /etc/sluice/sluice.toml\n  sluice check --config sluice.toml\n  \
sluice policy test --policy spam_heuristics.wasm --eml message.eml\n  sluice queue list --config sluice.toml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (on the embedded default configuration without --config).
    #[command(
        long_about = "Run the relay: listen for SMTP, run the edge's and each tenant's policies, store \
accepted mail in the spool (fsynced before the 250) and deliver it. Without --config it runs \
the embedded default configuration (localhost only, loopback trusted to relay). Changes to the \
configuration file and to policy files are reloaded as they happen, and on SIGHUP. SIGTERM or \
Ctrl-C: no new connections; after server.shutdown_grace_secs idle sessions get 421 4.3.2, \
messages being received finish. One relay per spool.",
        after_help = "Examples:\n  sluice serve\n  sluice serve --config /etc/sluice/sluice.toml --log-format json\n  \
SLUICE_LOG=debug sluice serve --config sluice.toml"
    )]
    Serve {
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log lines as `text` or `json` (one object per line).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Check a configuration and load every policy it names.
    #[command(
        long_about = "Check a configuration: parse it (every error names its line and key), check \
that every policy file is a component, load and initialise every policy, and print warnings \
(tenants without policies, unverified smarthost TLS, an unreachable Redis). Exit 0 when the \
relay would start, 1 with the error. It runs beside a relay on the same spool.",
        after_help = "Examples:\n  sluice check --config sluice.toml\n  sluice check"
    )]
    Check {
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Say whether the relay answers (for container health checks and monitors).
    #[command(
        long_about = "Connect to the relay's first listening address (loopback for a wildcard one), \
wait up to five seconds for its 220 greeting and say QUIT. Exit 0 when it answers, 1 with the \
reason otherwise. The container image's HEALTHCHECK runs it.",
        after_help = "Examples:\n  sluice health --config /etc/sluice/sluice.toml\n  sluice health"
    )]
    Health {
        /// Configuration file (TOML) of the relay.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage the queue and the quarantine.
    #[command(
        long_about = "List, show, flush, hold, release and delete queued and quarantined messages. Reading \
works on the spool at any time; changes are made by the command itself when no relay runs, \
else by the running relay through its admin API ([admin] listen), so they never race it.",
        after_help = "Examples:\n  sluice queue list --config sluice.toml\n  \
sluice queue list --config sluice.toml --tenant example --older-than 2h --json\n  \
sluice queue show 0661CAC1A6F9940009 --config sluice.toml\n  sluice queue flush --config sluice.toml\n  \
sluice queue hold --sender @bulk.example --config sluice.toml\n  \
sluice queue release 0661CAC1A2B1D00004 --learn-ham --config sluice.toml"
    )]
    Queue {
        /// Configuration file (TOML).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Make a running relay reload its configuration and policies now (through the admin
    /// listener of the configuration).
    #[command(
        long_about = "Make a running relay reload its configuration and policy files now, as it does \
on its own when they change and on SIGHUP. It asks the relay through the admin API at the \
[admin] listen address of the configuration given, and prints the relay's report: what \
changed, or why nothing could (the running generation then stays).",
        after_help = "Examples:\n  sluice reload --config /etc/sluice/sluice.toml"
    )]
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
    #[command(
        long_about = "Teach a tenant's learning policies (such as bayes) messages of a known class, \
offline, into the key-value store a relay reads (its [state] path while it is stopped, or \
Redis), or into a file for `policy test --state`. Messages already learned are not counted \
twice.",
        after_help = "Examples:\n  sluice learn --state model.redb --tenant example --policy bayes.wasm --spam spam/ --ham ham/\n  \
sluice learn --config sluice.toml --tenant example --spam new-spam/"
    )]
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
    #[command(
        long_about = "Write a new DKIM signing key (RSA 2048 or Ed25519, PKCS#8 PEM, never \
overwriting a file) and print the TXT record to publish at SELECTOR._domainkey.DOMAIN.",
        after_help = "Examples:\n  sluice dkim keygen --domain example.com --selector s2026 --key /etc/sluice/dkim/example.com.pem"
    )]
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
    #[command(
        long_about = "Run messages through policies exactly as the relay would — the same SMTP \
conversation, engine, chains and judge — without a server: each stage's verdicts, symbols, \
score and the final outcome, as text or JSON. With --config, through the edge and tenants of a \
relay configuration. --suite runs NAME.eml against NAME.expect files; --expect checks every \
outcome (exit 1 on a mismatch).",
        after_help = "Examples:\n  sluice policy test --policy spam_heuristics.wasm --eml message.eml\n  \
sluice policy test --policy sender_guard.wasm --policy-config sender-guard.domains=example.com --eml mail/ --json\n  \
sluice policy test --config sluice.toml --eml message.eml --to user@example.com\n  \
sluice policy test --policy bayes.wasm --state model.redb --eml spam/ --expect reject"
    )]
    Test(Box<PolicyTestArgs>),
    /// Start a policy in Rust, JavaScript, Python or C: a folder with a build script and a
    /// golden suite.
    #[command(
        long_about = "Write a new policy folder (which must not exist, or be empty): the policy's \
source — a working example that scores mail whose subject offers free money — a build.sh that \
makes NAME.wasm, and a golden suite (suite/*.eml with *.expect) for `sluice policy test \
--suite`. The folder is self-contained: the interface (WIT) or the C bindings come from this \
binary; a Rust policy depends on the sluice-policy SDK (the checkout this binary was built \
from, or --sdk PATH|GIT-URL). Each language's toolchain: Rust and the wasm32-wasip2 target; \
Node.js and npm; componentize-py (pip); clang, lld and wasi-libc, with wasm-tools or Node.js.",
        after_help = "Examples:\n  sluice policy new --lang rust no-shouting\n  \
cd no-shouting && ./build.sh && sluice policy test --policy no-shouting.wasm --suite suite\n  \
sluice policy new --lang js policies/link-check\n  \
sluice policy new --lang rust my-policy --sdk ~/src/sluice/guest-sdk"
    )]
    New {
        /// The language.
        #[arg(long, value_enum)]
        lang: sluice::cli::scaffold::Lang,
        /// The folder to write; its last part is the policy's name (lower case, digits, dashes).
        path: PathBuf,
        /// Rust only: the sluice-policy SDK, a path or a git URL.
        #[arg(long)]
        sdk: Option<String>,
    },
    /// Push a policy component to an OCI registry (signed with an Ed25519 key if given).
    #[command(
        long_about = "Push a component to an OCI registry as an artifact (one application/wasm \
layer), under a tag; print the reference pinned by the manifest's digest. With --sign-key (an \
Ed25519 key in PKCS#8 PEM: openssl genpkey -algorithm ed25519 -out KEY.pem) the manifest carries \
a signature of the component's digest, and the public key to list in [oci] public_keys is \
printed. --insecure speaks plain HTTP to the registry (one on this machine or network). A \
registry that asks for credentials gets those of --auth-file, $REGISTRY_AUTH_FILE or \
~/.docker/config.json (what docker, podman or oras login write).",
        after_help = "Examples:\n  sluice policy push greylist.wasm oci://registry.example/policies/greylist:1.2\n  \
sluice policy push filter.wasm oci://127.0.0.1:5000/acme/filter:prod --insecure --sign-key policy-key.pem"
    )]
    Push {
        /// The component.
        file: PathBuf,
        /// Where: oci://REGISTRY/REPOSITORY:TAG.
        target: String,
        /// Plain HTTP to the registry.
        #[arg(long)]
        insecure: bool,
        /// Sign with this Ed25519 private key (PKCS#8 PEM).
        #[arg(long)]
        sign_key: Option<PathBuf>,
        /// Registry credentials: an auth file as docker/podman/oras login write it.
        #[arg(long)]
        auth_file: Option<PathBuf>,
    },
    /// Pull a policy component from an OCI registry, checking its digests.
    #[command(
        long_about = "Pull a component from an OCI registry into a file, checking the manifest's \
digest (when pinned with @sha256:…) and the component's; with --public-key, its signature too.",
        after_help = "Examples:\n  sluice policy pull oci://registry.example/policies/greylist:1.2 --output greylist.wasm"
    )]
    Pull {
        /// What: oci://REGISTRY/REPOSITORY:TAG or @sha256:DIGEST.
        source: String,
        /// The file to write.
        #[arg(long, short)]
        output: PathBuf,
        /// Plain HTTP to the registry.
        #[arg(long)]
        insecure: bool,
        /// Require a signature by this Ed25519 public key (base64; repeatable).
        #[arg(long)]
        public_key: Vec<String>,
        /// Registry credentials: an auth file as docker/podman/oras login write it.
        #[arg(long)]
        auth_file: Option<PathBuf>,
    },
    /// Put a tenant's previous generation of policies back in a running relay.
    #[command(
        long_about = "Put a tenant's previous generation of policies back in service in a running \
relay (after a reload that went wrong), through its admin API. The edge is the tenant `edge`.",
        after_help = "Examples:\n  sluice policy rollback --tenant example --config /etc/sluice/sluice.toml"
    )]
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
    sluice::cli::progress::show_compiles();
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
        Command::Health { config } => {
            init_logging("warn");
            report(
                "health",
                relay::load_config(config.as_ref()).and_then(|c| runtime.block_on(relay::health(&c))),
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
        Command::Policy { command: PolicyCommand::New { lang, path, sdk } } => {
            match sluice::cli::scaffold::new_policy(lang, &path, sdk.as_deref()) {
                Ok(next) => {
                    println!("{next}");
                    0
                }
                Err(e) => {
                    eprintln!("sluice policy new: {e:#}");
                    1
                }
            }
        }
        Command::Policy { command: PolicyCommand::Push { file, target, insecure, sign_key, auth_file } } => {
            let access = Access { insecure, public_keys: &[], auth_file: auth_file.as_deref() };
            let pushed =
                runtime.block_on(sluice::cli::registry::push(&file, &target, &access, sign_key.as_deref()));
            report("policy push", pushed.map_err(anyhow::Error::msg))
        }
        Command::Policy {
            command: PolicyCommand::Pull { source, output, insecure, public_key, auth_file },
        } => {
            let access = Access { insecure, public_keys: &public_key, auth_file: auth_file.as_deref() };
            let pulled = runtime.block_on(sluice::cli::registry::pull(&source, &output, &access));
            report("policy pull", pulled.map_err(anyhow::Error::msg))
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
