//! Where the shared store's server is, and the connection to it: one server by URL (kept up
//! by a connection manager), the master a set of sentinels names, or a Redis Cluster.

use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::redis_kv::TIMEOUT;

/// Where the server is.
pub(super) enum Source {
    /// One server, by URL.
    Direct(redis::Client),
    /// The master the sentinels name (asked again after the connection fails: a failover).
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
    /// A Redis Cluster, by some of its nodes: each key goes to its slot's node.
    Cluster(redis::cluster::ClusterClient),
}

/// A connection to one server (kept up by a manager) or to a cluster.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// How to reach the server besides its URL (`[state]`).
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// CA certificates (PEM) for `rediss://`, instead of the system's roots.
    pub tls_ca: Option<Vec<u8>>,
    /// The sentinels (`host:port`); empty: the URL's server itself.
    pub sentinels: Vec<String>,
    /// The master's name the sentinels know.
    pub master: Option<String>,
    /// Redis Cluster nodes (`host:port`, some of them); the URL then gives scheme and
    /// credentials. Keys are then hash-tagged by tenant (`PREFIX{tenant}…`), so that what
    /// one operation touches is in one slot.
    pub cluster: Vec<String>,
}

impl Source {
    /// From the `[state]` backend URL and `options`; nothing is connected yet.
    pub(super) fn new(url: &str, options: &RedisOptions) -> Result<Self, String> {
        let certificates =
            |ca: &Option<Vec<u8>>| redis::TlsCertificates { client_tls: None, root_cert: ca.clone() };
        let bad = |e: redis::RedisError| format!("{url}: {e}");
        Ok(if !options.cluster.is_empty() {
            let scheme = if url.starts_with("rediss://") { "rediss" } else { "redis" };
            let info = url.into_connection_info().map_err(bad)?;
            let settings = info.redis_settings();
            let auth = match (settings.username(), settings.password()) {
                (Some(user), Some(password)) => format!("{user}:{password}@"),
                (None, Some(password)) => format!(":{password}@"),
                _ => String::new(),
            };
            let nodes: Vec<String> =
                options.cluster.iter().map(|n| format!("{scheme}://{auth}{n}")).collect();
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT);
            if options.tls_ca.is_some() {
                builder = builder.certs(certificates(&options.tls_ca));
            }
            Source::Cluster(builder.build().map_err(bad)?)
        } else if options.sentinels.is_empty() {
            Source::Direct(match &options.tls_ca {
                Some(_) => redis::Client::build_with_tls(url, certificates(&options.tls_ca)).map_err(bad)?,
                None => redis::Client::open(url).map_err(bad)?,
            })
        } else {
            let info = url.into_connection_info().map_err(bad)?;
            let settings = info.redis_settings();
            let mut sentinels = Vec::new();
            for address in &options.sentinels {
                let (host, port) = address
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse::<u16>().ok()?)))
                    .ok_or_else(|| format!("state.sentinels: {address}: not host:port"))?;
                sentinels.push(redis::ConnectionAddr::Tcp(host, port));
            }
            let master = options.master.clone().unwrap_or_default();
            let mut builder = redis::sentinel::SentinelClientBuilder::new(
                sentinels,
                master,
                redis::sentinel::SentinelServerType::Master,
            )
            .map_err(bad)?
            .set_client_to_redis_db(settings.db());
            if let Some(user) = settings.username() {
                builder = builder.set_client_to_redis_username(user);
            }
            if let Some(password) = settings.password() {
                builder = builder.set_client_to_redis_password(password);
            }
            if url.starts_with("rediss://") {
                builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                if options.tls_ca.is_some() {
                    builder = builder.set_client_to_redis_certificates(certificates(&options.tls_ca));
                }
            }
            Source::Sentinel(tokio::sync::Mutex::new(builder.build().map_err(bad)?))
        })
    }

    /// A new connection: to the server, to the master the sentinels name now, or to the
    /// cluster.
    pub(super) async fn connect(&self) -> redis::RedisResult<Connection> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let client = match self {
            Source::Direct(client) => client.clone(),
            Source::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await?,
            Source::Cluster(cluster) => return cluster.get_async_connection().await.map(Connection::Cluster),
        };
        client.get_connection_manager_with_config(config).await.map(Connection::Single)
    }
}
