//! Connections: a small pool of blocking connections, and one lazily made async multiplexed
//! connection, for a single server or a cluster. Broken connections are dropped and replaced, so
//! the backend recovers by itself when a server restarts.
//!
//! Every wait here is bounded: connecting by the connect timeout, each reply by the reply
//! timeout (blocking and async alike), and a wait for a free pooled connection by the pool
//! timeout. A frozen server therefore makes calls fail, never hang.

use std::time::{Duration, Instant};

use dogpile_core::{Error, Result};
use parking_lot::{Condvar, Mutex};
use redis::{Cmd, ConnectionLike, FromRedisValue, RedisError, RedisFuture, RedisResult, Value};

/// The client of one server or of a cluster: it makes connections, it does not hold one.
#[derive(Clone)]
pub(crate) enum Client {
    /// One server.
    Single(Box<redis::Client>),
    /// A Redis Cluster, reached through its startup nodes.
    Cluster(Box<redis::cluster::ClusterClient>),
    /// The master of a service that Redis Sentinel watches, found anew for each connection.
    Sentinel(Box<super::sentinel::Sentinels>),
}

/// A blocking connection.
pub(crate) enum SyncConn {
    /// To one server.
    Single(redis::Connection),
    /// To a cluster (one socket per node, made as needed).
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl SyncConn {
    /// The connection as the `redis` crate's command interface sees it.
    pub(crate) fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            SyncConn::Single(c) => c,
            SyncConn::Cluster(c) => &mut **c,
        }
    }
}

/// An async multiplexed connection: cheap to clone, shared by every async caller.
#[derive(Clone)]
pub(crate) enum AsyncConn {
    /// To one server.
    Single(redis::aio::MultiplexedConnection),
    /// To a cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for AsyncConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            AsyncConn::Single(c) => c.req_packed_command(cmd),
            AsyncConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            AsyncConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            AsyncConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AsyncConn::Single(c) => c.get_db(),
            AsyncConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether an error means the connection is unusable (dropped, refused, timed out mid-reply),
/// as opposed to an error reply from a working server.
fn is_broken(e: &RedisError) -> bool {
    // READONLY: the server was a master and is a replica now (a failover demoted it); a new
    // connection finds the new master.
    e.code() == Some("READONLY")
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// The blocking connections: idle ones, and how many are open (idle or lent).
#[derive(Default)]
struct Pool {
    idle: Vec<SyncConn>,
    open: usize,
}

/// A connection lent by the pool, or the right to open one. Returned when dropped (also on a
/// panic): a connection still in it goes back to the idle ones, an empty lease frees its place.
struct Lease<'a> {
    conns: &'a Conns,
    conn: Option<SyncConn>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut pool = self.conns.pool.lock();
        match self.conn.take() {
            Some(c) => pool.idle.push(c),
            None => pool.open -= 1,
        }
        drop(pool);
        self.conns.returned.notify_one();
    }
}

/// The connections of one backend.
pub(crate) struct Conns {
    /// `dogpile.cache.redis at 127.0.0.1:6379`: what errors name.
    desc: String,
    client: Client,
    pool: Mutex<Pool>,
    returned: Condvar,
    limits: Limits,
    shared: Mutex<Option<AsyncConn>>,
}

/// How many blocking connections a [`Conns`] opens, and how long each of its waits may last.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Limits {
    /// The most blocking connections open at once.
    pub(crate) pool_size: usize,
    /// Bound on connecting (TCP and the connection's setup commands).
    pub(crate) connect_timeout: Duration,
    /// Bound on each reply (and each write).
    pub(crate) reply_timeout: Duration,
    /// Bound on waiting for a pooled connection while all of them are lent.
    pub(crate) pool_timeout: Duration,
}

impl Conns {
    pub(crate) fn new(desc: String, client: Client, limits: Limits) -> Self {
        Conns {
            desc,
            client,
            pool: Mutex::new(Pool::default()),
            returned: Condvar::new(),
            limits,
            shared: Mutex::new(None),
        }
    }

    /// Connections of their own to the same server, with other limits (the lock keeper's: one
    /// connection with a short reply timeout, so it never queues behind the callers' calls).
    pub(crate) fn sibling(&self, limits: Limits) -> Conns {
        Conns::new(self.desc.clone(), self.client.clone(), limits)
    }

    /// The database number the connections select.
    pub(crate) fn db(&self) -> i64 {
        match &self.client {
            Client::Single(c) => c.get_connection_info().redis_settings().db(),
            // A cluster has database 0 only.
            Client::Cluster(_) => 0,
            Client::Sentinel(s) => s.master.redis_settings().db(),
        }
    }

    /// The pool size and the timeouts.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// What errors name: the backend and the server address.
    pub(crate) fn desc(&self) -> &str {
        &self.desc
    }

    /// A backend error naming the server, for the operation `what`.
    pub(crate) fn error(&self, what: &str, e: RedisError) -> Error {
        Error::backend(self.desc.clone(), format!("{what}: {e}"), e)
    }

    fn connect(&self) -> RedisResult<SyncConn> {
        match &self.client {
            Client::Single(client) => {
                let conn = client.get_connection_with_timeout(self.limits.connect_timeout)?;
                conn.set_read_timeout(Some(self.limits.reply_timeout))?;
                conn.set_write_timeout(Some(self.limits.reply_timeout))?;
                Ok(SyncConn::Single(conn))
            }
            Client::Cluster(client) => {
                let conn = client.get_connection()?;
                conn.set_read_timeout(Some(self.limits.reply_timeout))?;
                conn.set_write_timeout(Some(self.limits.reply_timeout))?;
                Ok(SyncConn::Cluster(Box::new(conn)))
            }
            Client::Sentinel(sentinels) => Ok(SyncConn::Single(
                sentinels.connect(self.limits.connect_timeout, self.limits.reply_timeout)?,
            )),
        }
    }

    /// Whether these connections go to one server (a Sentinel backend's master counts), not to
    /// a cluster.
    pub(crate) fn has_one_server(&self) -> bool {
        !matches!(self.client, Client::Cluster(_))
    }

    /// A connection of its own to the one server, outside the pool, with the connect and reply
    /// timeouts: for pub/sub, which keeps its connection subscribed. A cluster has no one server:
    /// an error, without connecting.
    pub(crate) fn connect_one(&self) -> RedisResult<redis::Connection> {
        let no_one_server = || {
            RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a Redis Cluster has no single server to subscribe on",
            ))
        };
        if !self.has_one_server() {
            return Err(no_one_server());
        }
        match self.connect()? {
            SyncConn::Single(c) => Ok(c),
            SyncConn::Cluster(_) => Err(no_one_server()),
        }
    }

    /// An idle connection (`true`: reused), or a place to open one; waits while `pool_size`
    /// connections are lent, at most `pool_timeout`.
    fn lease(&self, what: &str) -> Result<(Lease<'_>, bool)> {
        let deadline = Instant::now() + self.limits.pool_timeout;
        let mut pool = self.pool.lock();
        loop {
            if let Some(c) = pool.idle.pop() {
                let lease = Lease {
                    conns: self,
                    conn: Some(c),
                };
                return Ok((lease, true));
            }
            if pool.open < self.limits.pool_size {
                pool.open += 1;
                let lease = Lease {
                    conns: self,
                    conn: None,
                };
                return Ok((lease, false));
            }
            if self.returned.wait_until(&mut pool, deadline).timed_out() {
                return Err(Error::backend_msg(
                    self.desc.clone(),
                    format!(
                        "{what}: all {} connections stayed busy for {} s (pool_size, pool_timeout)",
                        self.limits.pool_size,
                        self.limits.pool_timeout.as_secs_f64()
                    ),
                ));
            }
        }
    }

    /// Closes the idle connections: a server restart broke them too.
    fn discard_idle(&self) {
        let mut pool = self.pool.lock();
        let n = pool.idle.len();
        pool.idle.clear();
        pool.open -= n;
        drop(pool);
        self.returned.notify_all();
    }

    /// Runs `f` on a pooled blocking connection. A connection that breaks is closed (with the
    /// idle ones, which a server restart broke too) and `f` is tried once more on a new
    /// connection, so the first call after a restart succeeds.
    pub(crate) fn run<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut SyncConn) -> RedisResult<T>,
    ) -> Result<T> {
        let (mut lease, mut reused) = self.lease(what)?;
        loop {
            let conn = match lease.conn.as_mut() {
                Some(c) => c,
                None => lease
                    .conn
                    .insert(self.connect().map_err(|e| self.error(what, e))?),
            };
            match f(conn) {
                Ok(v) => return Ok(v),
                Err(e) if is_broken(&e) => {
                    lease.conn = None;
                    self.discard_idle();
                    if !reused || e.is_timeout() {
                        return Err(self.error(what, e));
                    }
                    tracing::debug!(backend = %self.desc, error = %e, "reconnecting");
                    reused = false;
                }
                Err(e) => return Err(self.error(what, e)),
            }
        }
    }

    /// Runs one command on a blocking connection.
    pub(crate) fn query<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T> {
        self.run(what, |c| cmd.query(c.as_dyn()))
    }

    async fn connect_async(&self) -> RedisResult<AsyncConn> {
        match &self.client {
            Client::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.limits.connect_timeout))
                    .set_response_timeout(Some(self.limits.reply_timeout));
                Ok(AsyncConn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Client::Cluster(client) => Ok(AsyncConn::Cluster(client.get_async_connection().await?)),
            Client::Sentinel(sentinels) => Ok(AsyncConn::Single(
                sentinels
                    .connect_async(self.limits.connect_timeout, self.limits.reply_timeout)
                    .await?,
            )),
        }
    }

    /// Runs one command on the shared async connection, made on first use. Call it only inside
    /// a tokio runtime (see [`in_tokio`]). A broken connection is replaced, and the command tried
    /// once more, as in [`run`](Conns::run).
    pub(crate) async fn query_async<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T> {
        let mut retried = false;
        loop {
            let shared = self.shared.lock().clone();
            let (mut conn, reused) = match shared {
                Some(c) => (c, true),
                None => (
                    self.connect_async()
                        .await
                        .map_err(|e| self.error(what, e))?,
                    false,
                ),
            };
            match cmd.query_async::<T>(&mut conn).await {
                Ok(v) => {
                    if !reused {
                        *self.shared.lock() = Some(conn);
                    }
                    return Ok(v);
                }
                Err(e) if is_broken(&e) => {
                    *self.shared.lock() = None;
                    if !reused || retried || e.is_timeout() {
                        return Err(self.error(what, e));
                    }
                    tracing::debug!(backend = %self.desc, error = %e, "reconnecting (async)");
                    retried = true;
                }
                Err(e) => {
                    if !reused {
                        *self.shared.lock() = Some(conn);
                    }
                    return Err(self.error(what, e));
                }
            }
        }
    }
}

/// Whether the caller runs inside a tokio runtime, where the async connection can live. Outside
/// one (another executor, a blocking `block_on`), the async methods use the blocking connections.
pub(crate) fn in_tokio() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}
