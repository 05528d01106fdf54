//! `sluice serve`, `sluice check`, `sluice reload` and `sluice policy rollback`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Backend, Config};
use crate::listener::Listeners;
use crate::relay::Relay;
use crate::spool::Store;

/// Load the configuration named on the command line, or the embedded default.
pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::from_file(p)?,
        None => Config::embedded_default()?,
    })
}

/// `sluice serve`: run until SIGINT or SIGTERM. With a configuration file, changes to it
/// and to the policy files are reloaded as they happen, and on SIGHUP. On SIGINT or SIGTERM
/// the relay stops accepting; after `server.shutdown_grace_secs` sessions waiting for a
/// command get `421 4.3.2`, those receiving a message finish (up to
/// `server.shutdown_timeout_secs` in all), and it exits; queued mail stays in the spool.
pub async fn serve(mut config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    crate::oci::resolve(&mut config).await?;
    let listen = config.server.listen.clone();
    let admin = config.admin.clone();
    let timeout = Duration::from_secs(config.server.shutdown_timeout_secs);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let watching = config_path.is_some();
    // The admin tokens are read before anything starts: a bad one stops the relay here.
    let tokens = crate::admin::auth::Tokens::load(&config).map_err(anyhow::Error::msg)?;
    let admin_tls = admin_tls(&config)?;
    let shared = crate::relay::redis_store(&config)?.map(Arc::new);
    let fleet = match (&config.fleet, &shared) {
        (Some(fleet), Some(store)) => Some((fleet.node.clone(), store.clone())),
        _ => None,
    };
    let (relay, delivery) = Relay::build(config, config_path).await?;
    if let Some(store) = shared {
        let _ = relay.shared_limits.set(store);
    }
    if let Some((node, store)) = fleet {
        let fleet = crate::fleet::Fleet::new(&node, store, relay.generations.clone());
        let _ = relay.fleet.set(fleet.clone());
        tokio::spawn(fleet.run());
        tracing::info!(node = %node, "fleet: this relay is a node; reloads and rollbacks are announced to the others");
    }
    // Clean up after a crash before anything writes to the spool.
    let queue = relay.spool.recover(Store::Queue)?;
    let queued = queue.len();
    let quarantined = relay.spool.recover(Store::Quarantine)?.len();
    // Watch before anything listens: a change made as soon as the relay answers is seen.
    if watching && let Err(e) = relay.generations.watch() {
        tracing::warn!(error = %e, "files are not watched; reload with SIGHUP or sluice reload");
    }
    let listeners = super::fronts::AllListeners::new(relay.clone(), Listeners::new(relay.clone()));
    relay.generations.set_listen(listeners.clone());
    // Bound as a reload binds them: the SMTP listeners and the servers for an MTA in front.
    let errors = crate::reload::Listen::listen(&*listeners, &relay.snapshot().config).await;
    if let Some(error) = errors.first() {
        anyhow::bail!("{error}");
    }
    tracing::info!(
        listen = listen.iter().map(ToString::to_string).collect::<Vec<_>>().join(",").as_str(),
        tenants = relay.snapshot().tenants.len(),
        queued,
        quarantined,
        "sluice is ready"
    );
    if let Some(admin) = &admin {
        let listener = tokio::net::TcpListener::bind(admin.listen)
            .await
            .map_err(|e| anyhow::anyhow!("admin.listen: cannot listen on {}: {e}", admin.listen))?;
        if !tokens.required() {
            tracing::warn!(listen = %admin.listen, "admin API without admin.token_file: anyone who reaches it may read and change the relay");
        }
        let (relay, admin, tls) = (relay.clone(), admin.clone(), admin_tls.clone());
        tokio::spawn(async move { crate::admin::serve(relay, listener, tokens, &admin, tls).await });
    }
    relay.metrics.set_queue_ages(queue.iter().map(|m| (m.tenant.as_str(), m.received_at)));
    tokio::spawn(crate::delivery::run(delivery));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hangup.recv() => {
                // An operator's reload of one node is the fleet's (as through the admin API).
                let relay = relay.clone();
                tokio::spawn(async move {
                    relay.generations.reload("SIGHUP").await;
                    if let Some(fleet) = relay.fleet.get()
                        && let Err(e) = fleet.announce("reload", None).await
                    {
                        tracing::warn!(error = %e, "fleet: the reload was not announced to the other nodes");
                    }
                });
            }
        }
    }
    tracing::info!("shutting down: no new connections; queued mail stays in the spool");
    let open = listeners.smtp.shutdown(grace, timeout, &relay.closing).await;
    if open > 0 {
        tracing::warn!(sessions = open, "sessions still open at the end of the shutdown timeout are cut");
    }
    Ok(())
}

/// The admin listener's TLS, when `[admin] tls_cert` and `tls_key` are set.
fn admin_tls(config: &Config) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let Some(admin) = &config.admin else { return Ok(None) };
    let (Some(cert), Some(key)) = (&admin.tls_cert, &admin.tls_key) else { return Ok(None) };
    crate::auth::tls_acceptor(&config.resolve(cert), &config.resolve(key))
        .map(Some)
        .map_err(|e| anyhow::anyhow!("admin.tls_cert / admin.tls_key: {e}"))
}

/// `sluice check`: validate the configuration and load every policy.
pub async fn check(mut config: Config) -> anyhow::Result<()> {
    crate::oci::resolve(&mut config).await?;
    let tenants = config.tenants.len();
    let policies: usize =
        config.edge().policies.len() + config.tenants.iter().map(|t| t.policies.len()).sum::<usize>();
    let warnings = config.warnings();
    let fronts: Vec<String> = config
        .mta_servers()
        .into_iter()
        .filter_map(|(key, settings)| settings.map(|s| format!("{key} on {}", s.listen)))
        .collect();
    let shared = match &config.state.backend {
        Backend::Redis(_) if !config.state.sentinels.is_empty() => Some(format!(
            "state.sentinels: {} (master {})",
            config.state.sentinels.join(", "),
            config.state.sentinel_master.as_deref().unwrap_or_default()
        )),
        Backend::Redis(_) if !config.state.cluster.is_empty() => {
            Some(format!("state.cluster: {}", config.state.cluster.join(", ")))
        }
        Backend::Redis(url) => Some(format!("state.backend: {url}")),
        _ => None,
    };
    crate::admin::auth::Tokens::load(&config).map_err(anyhow::Error::msg)?;
    admin_tls(&config)?;
    let (relay, _delivery) = Relay::build_to_check(config).await?;
    for warning in &warnings {
        println!("warning: {warning}");
    }
    let snapshot = relay.snapshot();
    for (i, tenant) in snapshot.tenants.iter().enumerate() {
        if let crate::recipients::Rule::List(list) = &tenant.recipients {
            for problem in &list.problems {
                println!(
                    "warning: tenant[{i}] ({}).recipients: {}: {problem} (skipped; the other lines are used)",
                    tenant.name,
                    list.path.display()
                );
            }
        }
    }
    if let Some(url) = shared
        && let Err(e) = relay.generations.loader.kv().usage("").await
    {
        println!(
            "warning: {url}: {e} (until it is reachable, policies that use the store \
             fail into their tenant's failure mode)"
        );
    }
    println!("configuration ok: {tenants} tenant(s), {policies} policy component(s) loaded");
    if !fronts.is_empty() {
        println!("for an MTA in front: {}", fronts.join(", "));
    }
    Ok(())
}

/// Send `method target` to the admin listener of the relay `config` describes; print the
/// answer; an error unless it is 200.
async fn admin_call(config: &Config, method: &str, target: &str) -> anyhow::Result<()> {
    let answer = admin_json(config, method, target).await?;
    println!("{answer}");
    Ok(())
}

/// Send `method target` to the admin listener of the relay `config` describes; its JSON
/// answer, or an error with the relay's own words unless it is 200.
pub(crate) async fn admin_json(
    config: &Config,
    method: &str,
    target: &str,
) -> anyhow::Result<serde_json::Value> {
    let admin = config.admin.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no [admin] listen address; this command reaches the running relay through its \
             admin API: give it the relay's configuration file with --config FILE",
            config.source_name()
        )
    })?;
    let token = match &admin.token_file {
        Some(path) => Some(
            crate::admin::auth::token_file("admin.token_file", &config.resolve(path))
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let pinned = admin.tls_cert.as_ref().map(|cert| config.resolve(cert));
    let (status, body) =
        crate::admin::request(admin.listen, method, target, token.as_deref(), pinned.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("the relay's admin API at {}: {e}", admin.listen))?;
    let answer: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| serde_json::Value::String(body.clone()));
    if status != 200 {
        let errors: Vec<&str> = match (answer.get("error"), answer.get("errors")) {
            (Some(error), _) => error.as_str().into_iter().collect(),
            (None, Some(errors)) => {
                errors.as_array().into_iter().flatten().filter_map(|e| e.as_str()).collect()
            }
            (None, None) => vec![body.as_str()],
        };
        anyhow::bail!("the relay answered {status}: {}", errors.join("; "));
    }
    Ok(answer)
}

/// `sluice reload`.
pub async fn reload(config: &Config) -> anyhow::Result<()> {
    admin_call(config, "POST", "/api/reload").await
}

/// `sluice policy rollback --tenant T`.
pub async fn rollback(config: &Config, tenant: &str) -> anyhow::Result<()> {
    let encoded = crate::spool::filter::encode(tenant);
    admin_call(config, "POST", &format!("/api/rollback?tenant={encoded}")).await
}

/// `sluice health`: the relay answers on its first listening address — it connects (to
/// loopback for a wildcard address; with `PROXY UNKNOWN` first when loopback is a trusted
/// proxy), reads a `220` greeting within five seconds and says QUIT. For container health
/// checks and monitors: exit 0 when it answers, 1 otherwise.
pub async fn health(config: &Config) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut addr = *config.server.listen.first().ok_or_else(|| anyhow::anyhow!("server.listen is empty"))?;
    if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        addr.set_ip(loopback);
    }
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let local = stream.local_addr()?.ip();
        if config.server.proxy_trusted_networks.iter().any(|n| n.contains(local)) {
            stream.write_all(b"PROXY UNKNOWN\r\n").await?;
        }
        let (read, mut write) = stream.split();
        let mut greeting = String::new();
        tokio::io::BufReader::new(read).read_line(&mut greeting).await?;
        let _ = write.write_all(b"QUIT\r\n").await;
        Ok::<String, std::io::Error>(greeting)
    };
    let greeting = tokio::time::timeout(Duration::from_secs(5), check)
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no greeting within 5 seconds"))?
        .map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
    if !greeting.starts_with("220") {
        anyhow::bail!("{addr}: answered {}", greeting.trim_end());
    }
    println!("ok: {addr} answered {}", greeting.trim_end());
    Ok(())
}
