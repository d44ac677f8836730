//! `dogpile.cache.redis_sentinel`: the master of a service that Redis Sentinel watches.
//!
//! Each new connection asks the sentinels, starting with the one that answered last, where the
//! master of
//! `service_name` is (`SENTINEL get-master-addr-by-name`), connects there, and checks that the
//! server says it is a master (`ROLE`): a sentinel that has not yet seen a failover may still
//! name the old master. So after a failover the backend finds the new master by itself: the
//! connections to the old one break, are dropped, and their replacements ask again.
//!
//! Every step has the backend's bounds: connecting to a sentinel or a master takes at most
//! `socket_connect_timeout`, each reply at most `socket_timeout`. The `redis` crate's own
//! sentinel client is not used because its sentinel queries have no timeout: a frozen sentinel
//! would hang the caller.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult, Value};

use super::settings::Tls;

/// The default `service_name`, as in dogpile.
pub(crate) const DEFAULT_SERVICE_NAME: &str = "mymaster";

/// The sentinels of one service, and how to connect to its master.
#[derive(Clone)]
pub(crate) struct Sentinels {
    /// One client per sentinel: its address, with `sentinel_kwargs`' credentials and TLS.
    pub(crate) sentinels: Vec<redis::Client>,
    /// The service (Sentinel's "master name").
    pub(crate) service: String,
    /// A connection to the master with no address yet: database, credentials, TCP settings.
    pub(crate) master: ConnectionInfo,
    /// TLS to the master.
    pub(crate) master_tls: Tls,
    /// The sentinel that answered last: asked first next time, so a frozen one costs its
    /// timeout once, not on every new connection (as redis-py moves it to the front).
    pub(crate) first: Arc<AtomicUsize>,
}

/// An error of the backend's own making, worded for the caller.
fn failed(what: String) -> RedisError {
    RedisError::from((redis::ErrorKind::Io, "redis_sentinel", what))
}

impl Sentinels {
    /// The master's client for the address a sentinel gave.
    fn master_client(&self, host: String, port: u16) -> RedisResult<redis::Client> {
        let info = self
            .master
            .clone()
            .set_addr(ConnectionAddr::Tcp(host, port));
        self.master_tls.client(self.master_tls.apply(info))
    }

    /// The master's address as `sentinel` sees it.
    fn ask(
        &self,
        sentinel: &redis::Client,
        connect: Duration,
        reply: Duration,
    ) -> RedisResult<(String, u16)> {
        let mut con = sentinel.get_connection_with_timeout(connect)?;
        con.set_read_timeout(Some(reply))?;
        con.set_write_timeout(Some(reply))?;
        let found: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.service)
            .query(&mut con)?;
        found.ok_or_else(|| {
            failed(format!(
                "the sentinel at {} knows no service {:?} (service_name)",
                address(sentinel),
                self.service
            ))
        })
    }

    /// A blocking connection to the current master.
    pub(crate) fn connect(
        &self,
        connect: Duration,
        reply: Duration,
    ) -> RedisResult<redis::Connection> {
        let mut errors = Vec::new();
        for (at, sentinel) in self.in_order() {
            let attempt = self.ask(sentinel, connect, reply).and_then(|(host, port)| {
                let client = self.master_client(host, port)?;
                let mut con = client.get_connection_with_timeout(connect)?;
                con.set_read_timeout(Some(reply))?;
                con.set_write_timeout(Some(reply))?;
                let role: Value = redis::cmd("ROLE").query(&mut con)?;
                check_master(&role, &client)?;
                Ok(con)
            });
            match attempt {
                Ok(con) => {
                    self.first.store(at, Ordering::Relaxed);
                    return Ok(con);
                }
                Err(e) => errors.push(format!("{}: {e}", address(sentinel))),
            }
        }
        Err(self.no_master(errors))
    }

    /// The sentinels in the order to ask them: the one that answered last first.
    fn in_order(&self) -> impl Iterator<Item = (usize, &redis::Client)> {
        let n = self.sentinels.len();
        let first = self.first.load(Ordering::Relaxed) % n.max(1);
        (0..n).map(move |i| {
            let at = (first + i) % n;
            (at, &self.sentinels[at])
        })
    }

    /// An async multiplexed connection to the current master.
    pub(crate) async fn connect_async(
        &self,
        connect: Duration,
        reply: Duration,
    ) -> RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(reply));
        let mut errors = Vec::new();
        for (at, sentinel) in self.in_order() {
            let attempt = async {
                let mut con = sentinel
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let found: Option<(String, u16)> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.service)
                    .query_async(&mut con)
                    .await?;
                let (host, port) = found.ok_or_else(|| {
                    failed(format!(
                        "the sentinel knows no service {:?} (service_name)",
                        self.service
                    ))
                })?;
                let client = self.master_client(host, port)?;
                let mut con = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let role: Value = redis::cmd("ROLE").query_async(&mut con).await?;
                check_master(&role, &client)?;
                Ok::<_, RedisError>(con)
            };
            match attempt.await {
                Ok(con) => {
                    self.first.store(at, Ordering::Relaxed);
                    return Ok(con);
                }
                Err(e) => errors.push(format!("{}: {e}", address(sentinel))),
            }
        }
        Err(self.no_master(errors))
    }

    fn no_master(&self, errors: Vec<String>) -> RedisError {
        failed(format!(
            "no sentinel gave a reachable master of {:?}: {}",
            self.service,
            errors.join("; ")
        ))
    }
}

/// Fails unless `ROLE` says master: a sentinel may name a demoted master for a moment.
fn check_master(role: &Value, client: &redis::Client) -> RedisResult<()> {
    let is_master = matches!(role, Value::Array(items)
        if matches!(items.first(), Some(Value::BulkString(b)) if b.as_slice() == b"master"));
    if is_master {
        Ok(())
    } else {
        Err(failed(format!(
            "{} is not a master (yet): a failover is under way",
            address(client)
        )))
    }
}

fn address(client: &redis::Client) -> String {
    super::settings::address(client.get_connection_info())
}

/// The sentinels' addresses (`host:port`, `redis://host:port` or `rediss://…`) as connection
/// infos.
pub(crate) fn sentinel_info(addr: &str) -> RedisResult<ConnectionInfo> {
    super::settings::with_scheme(addr).into_connection_info()
}
