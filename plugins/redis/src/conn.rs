//! Connections to the shared Redis: one multiplexed, self-reconnecting
//! command connection (a `ConnectionManager` for a single server or a
//! Sentinel-resolved master, a cluster connection for Redis Cluster), a
//! pub/sub connection, and the near cache's tracking connections.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Client, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use crate::config::{Config, Mode};
use crate::error::Error;

/// The command connection; cheap to clone (clones share the socket).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A client for `url` with the configured credentials.
pub(crate) fn client(config: &Config, url: &str) -> redis::RedisResult<Client> {
    let info = url.into_connection_info()?;
    let settings = with_credentials(config, info.redis_settings().clone());
    let info = info.set_redis_settings(settings);
    match &config.tls_ca_pem {
        Some(pem) => Client::build_with_tls(info, certificates(pem)),
        None => Client::open(info),
    }
}

/// `settings` with the configured ACL user and password (when set).
fn with_credentials(config: &Config, mut settings: redis::RedisConnectionInfo) -> redis::RedisConnectionInfo {
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password);
    }
    settings
}

fn certificates(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates { client_tls: None, root_cert: Some(pem.to_vec()) }
}

/// The server that takes commands and pub/sub (single and sentinel modes),
/// or the node pub/sub uses (cluster mode: a publish reaches every node).
pub(crate) async fn server_client(config: &Config) -> Result<Client, Error> {
    match config.mode {
        Mode::Single | Mode::Cluster => {
            let mut last = Error::NoUrls;
            for url in &config.urls {
                match client(config, url) {
                    Ok(c) => {
                        // In cluster mode, prefer a node that answers.
                        if config.mode == Mode::Single || ping(&c, config).await.is_ok() {
                            return Ok(c);
                        }
                        last = Error::NoAnswer { url: url.clone() };
                    }
                    Err(e) => last = Error::Client { url: url.clone(), source: e },
                }
            }
            Err(last)
        }
        Mode::Sentinel => {
            let node = SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(with_credentials(config, redis::RedisConnectionInfo::default()));
            let mut sentinel = SentinelClient::build(
                config.urls.clone(),
                config.sentinel_master.clone(),
                Some(node),
                SentinelServerType::Master,
            )
            .map_err(|e| Error::Sentinels { urls: config.urls.clone(), source: e })?;
            sentinel.async_get_client().await.map_err(|e| Error::NoMaster {
                urls: config.urls.clone(),
                master: config.sentinel_master.clone(),
                source: e,
            })
        }
    }
}

async fn ping(client: &Client, config: &Config) -> redis::RedisResult<()> {
    let mut conn = tokio::time::timeout(config.connect_timeout(), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
    redis::cmd("PING").query_async::<()>(&mut conn).await
}

/// Connects the command connection. The error says where and what to check.
pub async fn connect(config: &Config) -> Result<Conn, Error> {
    let fail = |cause: Error| Error::Unreachable {
        mode: mode_name(config.mode),
        urls: config.urls.join(", "),
        cause: Box::new(cause),
    };
    let connected = async {
        match config.mode {
            Mode::Single | Mode::Sentinel => {
                let client = server_client(config).await?;
                let settings = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout()))
                    .set_response_timeout(Some(config.response_timeout()))
                    .set_number_of_retries(1);
                let manager = ConnectionManager::new_with_config(client, settings).await.map_err(Error::Connect)?;
                Ok(Conn::Single(manager))
            }
            Mode::Cluster => {
                let mut builder = ClusterClientBuilder::new(config.urls.clone())
                    .connection_timeout(config.connect_timeout())
                    .response_timeout(config.response_timeout())
                    .retries(2);
                if let Some(user) = &config.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &config.password {
                    builder = builder.password(password);
                }
                if let Some(pem) = &config.tls_ca_pem {
                    builder = builder.certs(certificates(pem));
                }
                let client = builder.build().map_err(Error::Connect)?;
                client.get_async_connection().await.map(Conn::Cluster).map_err(Error::Connect)
            }
        }
    };
    // Bounded as a whole: a cluster connect tries every node.
    match tokio::time::timeout(config.connect_timeout() * 2, connected).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(detail)) => Err(fail(detail)),
        Err(_) => Err(fail(Error::ConnectTimedOut(config.connect_timeout() * 2))),
    }
}

/// A pub/sub connection.
pub async fn pubsub(config: &Config) -> Result<redis::aio::PubSub, Error> {
    let client = server_client(config).await?;
    tokio::time::timeout(config.connect_timeout(), client.get_async_pubsub())
        .await
        .map_err(|_| Error::PubSubTimedOut(config.connect_timeout()))?
        .map_err(Error::Connect)
}

/// A RESP3 connection to the server `client` names with client tracking
/// on (crate::near), named `name` in `CLIENT LIST`; its pushes (the
/// invalidations, and its closing) go to `push`, in its read task.
pub(crate) async fn tracking(
    config: &Config,
    client: &Client,
    name: &str,
    push: impl redis::aio::AsyncPushSender,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let info = client.get_connection_info().clone();
    let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
    // The address keeps its TLS parameters.
    let client = Client::open(info.set_redis_settings(settings))?;
    let settings = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout()))
        .set_response_timeout(Some(config.response_timeout()))
        .set_push_sender(push);
    let connect = client.get_multiplexed_async_connection_with_config(&settings);
    let mut conn = tokio::time::timeout(config.connect_timeout() * 2, connect)
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
    redis::cmd("CLIENT").arg("TRACKING").arg("ON").query_async::<()>(&mut conn).await?;
    redis::cmd("CLIENT").arg("SETNAME").arg(name).query_async::<()>(&mut conn).await?;
    Ok(conn)
}

/// The URL of Redis Cluster node `host:port`, with the scheme (and the
/// `#insecure` mark) of the configured URLs.
pub(crate) fn node_url(config: &Config, host: &str, port: u16) -> String {
    let first = config.urls.first().map(String::as_str).unwrap_or_default();
    let scheme = if first.starts_with("rediss://") { "rediss" } else { "redis" };
    let insecure = if first.ends_with("#insecure") { "/#insecure" } else { "" };
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
    format!("{scheme}://{host}:{port}{insecure}")
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Single => "single",
        Mode::Sentinel => "sentinel",
        Mode::Cluster => "cluster",
    }
}
