//! `dogpile.cache.redis`, `dogpile.cache.redis_cluster` and `dogpile.cache.redis_sentinel`:
//! values on a Redis server, a Redis Cluster or the master of a Sentinel-watched service, with
//! an optional distributed dogpile lock (cargo feature `redis`). Valkey speaks the same
//! protocol: `dogpile.cache.valkey`, `dogpile.cache.valkey_cluster` and
//! `dogpile.cache.valkey_sentinel` are the same backends under its names. TLS is on rustls (no
//! OpenSSL to build against).
//!
//! Values are stored as the codec's envelope bytes (format version, creation time, payload);
//! bytes that do not decode (written by something else) read as a miss. Making the backend does
//! not connect: the first operation does, and a broken connection is replaced by itself, so the
//! backend recovers when a server restarts. Errors name the backend and the server:
//! `dogpile.cache.redis at 127.0.0.1:6379: reading a value: …`.
//!
//! ```no_run
//! use dogpile_backends::Builtins;
//! use dogpile_core::{CacheRegion, RegionConfig};
//!
//! // With the `dogpile` facade this is `dogpile::make_region().configure(…)`.
//! let region: CacheRegion<Builtins> = CacheRegion::new();
//! region.configure(
//!     RegionConfig::new("dogpile.cache.redis")
//!         .expiration_time(3600)
//!         .argument("url", "redis://127.0.0.1:6379/0")
//!         .argument("redis_expiration_time", 7200)
//!         .argument("distributed_lock", true),
//! )?;
//! let answer: u32 = region.get_or_create("answer", || 42)?;
//! # Ok::<(), dogpile_core::Error>(())
//! ```
//!
//! # Arguments of `dogpile.cache.redis`
//!
//! | argument | type | default | meaning |
//! |---|---|---|---|
//! | `url` | string | – | `redis://[username:password@]host:port[/db]`, `rediss://…` for TLS (see below), or `redis+unix:///path`. Without a scheme, `redis://` is assumed. When given it wins, as in dogpile: `host`, `port` and `db` beside it are ignored, with one `warn` event naming them (put the database in the URL). |
//! | `host` | string | `localhost` | server host, when there is no `url` |
//! | `port` | integer | `6379` | server port, when there is no `url` |
//! | `db` | integer | `0` | database number, when there is no `url` |
//! | `username` | string | none (or the `url`'s) | ACL user name; overrides the `url`'s |
//! | `password` | string | none (or the `url`'s) | password; overrides the `url`'s |
//! | `socket_timeout` | seconds (number) | `3` | bound on each reply (and each write), blocking and async |
//! | `socket_connect_timeout` | seconds (number) | `socket_timeout` | bound on connecting, setup commands included |
//! | `pool_timeout` | seconds (number) | `socket_connect_timeout + socket_timeout` | bound on waiting for a pooled connection while all `pool_size` are lent |
//! | `redis_expiration_time` | seconds (number) | none (0 also means none) | a server-side TTL (`SET … PX`) so Redis drops old entries by itself; must exceed the region's `expiration_time` (see below) |
//! | `distributed_lock` | boolean | `false` | use a lock on the server for `get_or_create`, shared by every process using this server, instead of the region's in-process lock |
//! | `lock_timeout` | seconds (number) | `30` | expiry of a distributed lock: the lock of a process that died goes away by itself at most this long after; a live holder's lock is extended every third of it, however long the creation takes |
//! | `lock_sleep` | seconds (number) | `0.002` | the longest pause of a waiter between looks at a held lock; pauses start at 0.5 ms and double up to this, so a waiter returns within about this long of the release (Python dogpile's 0.1 is accepted, and makes waiters that slow) |
//! | `lock_prefix` | string | `_lock` | the lock key is this + the key; dogpile's rule: 2 to 10 of letters, digits, `_`, `-`, `.`, `:` |
//! | `lock_blocking` | boolean | `true` | `false`: a caller never waits for another's creation ([`Backend::lock_blocking_timeout`] is 0) |
//! | `lock_blocking_timeout` | seconds (number) | none: the region's bound | the longest a caller waits for another's creation of a key; reported by [`Backend::lock_blocking_timeout`], and enforced by the region, for the distributed lock and the in-process one alike |
//! | `pool_size` | integer ≥ 1 | `16` | the most blocking connections open at once; they are kept open for reuse, and a thread finding all of them lent waits for one, at most `pool_timeout` (the async path shares one multiplexed connection besides) |
//! | `thread_local_lock` | boolean | – | accepted so Python configuration files work unchanged; has no effect (a lock may be released by any thread here) |
//! | `ssl` | boolean | `false` | connect with TLS even to a `redis://` address (a `rediss://` URL does anyway) |
//! | `socket_keepalive` | boolean | `false` | TCP keepalive probes on every connection |
//! | `socket_keepalive_options` | dict | – | with `socket_keepalive`: `TCP_KEEPIDLE`, `TCP_KEEPINTVL` (seconds) and `TCP_KEEPCNT`, by name or by their Linux numbers 4, 5, 6 (`{4: 60, 5: 10, 6: 3}`); an error without `socket_keepalive` |
//! | `connection_kwargs` | dict | – | redis-py's keyword arguments, see below |
//! | `connection_pool` | – | – | refused: a redis-py `ConnectionPool` is a Python object; `pool_size` and `pool_timeout` shape the pool here |
//!
//! Any other argument is an error that names it. A dict is written as settings of their own
//! (`PREFIXarguments.connection_kwargs.ssl_ca_certs = /etc/ca.pem` in a config map, dogpile's
//! dict form; `.argument("connection_kwargs.ssl_ca_certs", …)` in code) or as one value
//! (`{'ssl_ca_certs': '/etc/ca.pem', 'ssl_check_hostname': False}`).
//!
//! ## `connection_kwargs`
//!
//! | setting | type | default | meaning |
//! |---|---|---|---|
//! | `ssl_ca_certs` | path | the system's roots | the CA certificates (PEM) the server's certificate must chain to |
//! | `ssl_certfile`, `ssl_keyfile` | paths | – | a client certificate and its key (PEM), for servers that ask for one; each needs the other |
//! | `ssl_cert_reqs` | `required`, `optional`, `none` | `required` | `none` (or a config file's `none`, read as redis-py reads `None`) turns verification off; `optional` verifies, as a TLS server always sends a certificate |
//! | `ssl_check_hostname` | boolean | `true` | `false`: the certificate must chain to the CA but may name another host |
//! | `ssl` | boolean | `false` | as the argument |
//! | `socket_timeout`, `socket_connect_timeout`, `socket_keepalive`, `socket_keepalive_options`, `username`, `password`, `db` | | | as the arguments of those names; an argument given beside the setting wins, as in dogpile, which passes its own after the kwargs (a `none` argument is no argument); beside a `url`, `db`, `username` and `password` apply only where the URL has none, as redis-py's `from_url` takes them |
//! | `max_connections` | integer ≥ 1 | – | `pool_size`, unless that is given |
//! | `health_check_interval`, `retry_on_timeout` | | | accepted with no effect: a broken connection is replaced and the call retried once by itself, and every reply is bounded by `socket_timeout` |
//!
//! Any other setting is an error that names it (`arguments.connection_kwargs.decode_responses`),
//! and so is a TLS setting for an address that is not TLS (it would be dropped, and the
//! connection would be plain text).
//!
//! ## TLS
//!
//! A certificate that does not verify (another CA, another host name, expired) is an error at
//! the first call, whose message says so (`… invalid peer certificate: UnknownIssuer`); there is
//! never a plain-text fallback. Certificate files are read when the backend is made, so a
//! missing one is a configuration error naming it. rustls needs a crypto provider: the backend
//! installs *ring* as the process's default when the program has chosen none.
//!
//! # Arguments of `dogpile.cache.redis_sentinel`
//!
//! `sentinels`: the `host:port` of each sentinel (a list, or one string separated by commas);
//! `service_name`: the service the sentinels watch (default `mymaster`); `sentinel_kwargs`: how
//! to reach the sentinels themselves (`username`, `password`, and the `ssl*` settings above; the
//! credentials default to the master's, as in dogpile); `db` and `connection_kwargs` for the
//! master; and every common argument above. As in dogpile, `distributed_lock` is on unless set.
//! `url`, `host` and `port` are errors: the sentinels say where the master is.
//!
//! Each new connection asks the sentinels, in order, for the master's address, connects, and
//! checks with `ROLE` that the server is a master, all under `socket_connect_timeout` and
//! `socket_timeout` (the `redis` crate's own sentinel client is not used: its queries have no
//! timeout). After a failover, connections to the old master break or answer `READONLY`; they
//! are dropped and their replacements find the new master, so the backend recovers by itself
//! (measured in `tests/redis_sentinel.rs`: writes again about 2 s after the master was killed,
//! with the sentinels' `down-after-milliseconds` at 1 s).
//!
//! # Arguments of `dogpile.cache.redis_cluster`
//!
//! `startup_nodes`: a list of `host:port` (or `redis://host:port`) addresses of cluster nodes, or
//! one string of them separated by commas; `url` is accepted in its place (one or several URLs).
//! The others as above: `username`, `password`, `socket_timeout`, `socket_connect_timeout`,
//! `pool_timeout`, `redis_expiration_time`, `distributed_lock`, `lock_timeout`, `lock_sleep`,
//! `lock_prefix`, `lock_blocking`, `lock_blocking_timeout`, `pool_size`, `thread_local_lock`,
//! `ssl`, `socket_keepalive(_options)` and `connection_kwargs` (TLS to every node with
//! `rediss://` nodes or `ssl`). A cluster has only database 0, so `db`, `host` and `port` are
//! errors.
//! `get_multi` and `delete_multi` are one `MGET` / `DEL` per slot, sent by the cluster client;
//! `set_multi` is one cluster pipeline, which the client splits per node.
//!
//! # The backplane
//!
//! [`RedisBackplane`] carries a [backplane](dogpile_core::backplane)'s messages (what a region
//! with a local tier tells the other processes it wrote) over Redis pub/sub, on the same
//! connection settings: [`Backend::backplane`] gives one for the backend's own server
//! (`dogpile.cache.redis`, `dogpile.cache.valkey` and the Sentinel backends; a cluster has
//! none), and [`RedisBackplane::from_url`] / [`RedisBackplane::from_arguments`] make one
//! directly. Publishing is bounded like every other call; a subscription is a thread that
//! pings an idle link every heartbeat (250 ms by default) and reconnects by itself.
//!
//! # `redis_expiration_time` and the region's expiration
//!
//! The server TTL must be longer than the region's expiration time: the region serves an expired
//! value while one caller makes a new one, which needs the old value still on the server. The
//! backend is made before the region hands it its expiration time, so the check is done when the
//! region is configured ([`Backend::check_region_expiration`]): a region with a fixed
//! `expiration_time` at or above `redis_expiration_time` fails to configure, with an error naming
//! the argument. Regions that never expire, or whose expiration is computed per call, are accepted
//! (the server TTL then bounds how long values live; a computed expiration is not checked).
//!
//! # Operations
//!
//! `get` is one `GET`, `get_multi` one `MGET`, `set` one `SET` (with `PX` when there is a TTL),
//! `set_multi` one `MSET` without a TTL or one pipeline of `SET … PX` with it, `delete` and
//! `delete_multi` one `DEL`. The async methods (`get_async`, `set_async`, `delete_async`, and the
//! lock's `try_acquire_async` / `wait_async`) use the `redis` crate's multiplexed async
//! connection when called inside a tokio runtime (made on first use and shared); outside one they
//! use the blocking connections. The async path needs a runtime with I/O and time enabled.
//!
//! # Nothing waits forever
//!
//! Caching is an optimisation: a decorated function must return its body's value even when
//! Redis is unreachable, and "unreachable" is often not a refused connection but a server that
//! stopped answering (a frozen process, a network blackhole, a dead peer behind a NAT). Python's
//! redis client waits forever by default there; this backend does not. Every network wait has a
//! finite default: each reply `socket_timeout` (3 s, on the blocking and the async path alike),
//! connecting `socket_connect_timeout` (the reply timeout by default), and a wait for a pooled
//! connection `pool_timeout` (their sum by default, which is how long one lent connection is
//! normally busy at worst). 3 s is far beyond a healthy reply (well under a millisecond on a LAN)
//! and short enough that a caller falls back to the body instead of appearing hung. So with
//! default settings a call on a frozen server fails (and a decorated function runs its body)
//! within a few seconds; a call that needs a new connection and then retries once after a broken
//! one waits at most twice connect + reply, plus the pool wait.
//!
//! The thread that extends held locks has its own connection, whose reply and connect timeouts
//! are at most a third of `lock_timeout`: it never waits for a pooled connection nor behind a
//! caller's call, it extends every held lock in one round trip, and a round the server does not
//! answer is retried well before the locks expire.
//!
//! # The distributed lock
//!
//! With `distributed_lock`, [`Backend::get_mutex`] gives a [`RedisMutex`]: the lock key
//! (`lock_prefix` + key, `_lockKEY` by default, as Python dogpile names it, so Python and Rust
//! processes share their locks) is set to a token unique to the handle with `PX lock_timeout`,
//! only when it is free or already holds that token (one script), and released by a script that
//! deletes it only when it still holds that token, so a holder never deletes another holder's
//! lock. While a lock is held, a thread of the holding process (one per backend, started with the
//! first lock) extends its expiry every third of `lock_timeout` by a script that checks the
//! token: a slow creation never loses its lock to a second creator, and a killed holder's lock
//! expires after at most `lock_timeout`. An extension that finds the lock gone (it expired while
//! the server was unreachable, or was deleted) is reported: a `warn` event naming the lock key,
//! counted in `Stats::locks_lost`.
//!
//! A lock counts as possibly ours from the moment its acquire is sent. A retry on a new
//! connection after a broken one finds its own token and takes the lock; an acquire whose reply
//! timed out, or an async acquire cancelled mid-flight, leaves the handle possibly holding it,
//! and when the handle is dropped the lock is deleted by token in the background as soon as the
//! server answers (never left to expire, never another holder's). A failed release is retried
//! the same way. Releasing a handle that holds nothing is an error ("no acquire held for key").
//!
//! A waiter looks at the lock again after 0.5, 1, 2 ms… (at most `lock_sleep`) and returns as
//! soon as it is free, or at the deadline the region gives it; the region then reads the value
//! the holder stored before releasing.

mod backplane;
mod conn;
mod lock;
mod sentinel;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use dogpile_core::backend::CachedValueRef;
use dogpile_core::codec::{
    decode_envelope_or_miss, decode_envelope_ref_or_miss, encode_envelope_for,
};
use dogpile_core::config::Secret;
use dogpile_core::{
    Arguments, Backend, BoxFuture, CacheMutex, CachedValue, Error, Expiration, PayloadKind, Result,
};
use redis::IntoConnectionInfo;

pub use backplane::RedisBackplane;
use conn::{in_tokio, Client, Conns, SyncConn};
pub use lock::RedisMutex;
use settings::{
    address, cluster_nodes, is_wrong_type, single_server_info, Common, Tls, COMMON_ARGS, DICT_ARGS,
    TLS_SETTINGS,
};

/// The name of the single-server backend.
pub const REDIS: &str = "dogpile.cache.redis";
/// The name of the cluster backend.
pub const REDIS_CLUSTER: &str = "dogpile.cache.redis_cluster";
/// The name of the Sentinel backend.
pub const REDIS_SENTINEL: &str = "dogpile.cache.redis_sentinel";
/// The single-server backend under Valkey's name (Valkey speaks Redis's protocol).
pub const VALKEY: &str = "dogpile.cache.valkey";
/// The cluster backend under Valkey's name.
pub const VALKEY_CLUSTER: &str = "dogpile.cache.valkey_cluster";
/// The Sentinel backend under Valkey's name.
pub const VALKEY_SENTINEL: &str = "dogpile.cache.valkey_sentinel";

/// What `sentinel_kwargs` may hold besides the TLS settings: how to reach the sentinels.
const SENTINEL_KWARGS: &[&str] = &["username", "password", "ssl"];

/// Fails, naming the first of `names` given: arguments of the single-server backend that another
/// backend cannot take, for the reason `why`.
fn refuse(args: &Arguments, names: &[&str], why: &str) -> Result<()> {
    match names.iter().find(|n| args.get(n).is_some()) {
        Some(n) => Err(args.error(n, why)),
        None => Ok(()),
    }
}

/// A single server's arguments (those of `dogpile.cache.redis`, and `more` besides), read and
/// checked: what errors name (`NAME at HOST:PORT`), its client, and the shared settings. The
/// backend and the [backplane](RedisBackplane) both start here, so they read one configuration
/// the same way.
fn single_server(
    name: &'static str,
    args: &Arguments,
    more: &[&str],
) -> Result<(String, Client, Common)> {
    let mut known = vec!["url", "host", "port", "db"];
    known.extend_from_slice(COMMON_ARGS);
    known.extend_from_slice(more);
    args.expect_only_with_dicts(name, &known, DICT_ARGS)?;
    let common = Common::read(args)?;
    let info = single_server_info(args, &common)?;
    let desc = format!("{name} at {}", address(&info));
    let client = common.tls.client(info).map_err(|e| args.error("url", e))?;
    Ok((desc, Client::Single(Box::new(client)), common))
}

/// The `dogpile.cache.redis` and `dogpile.cache.redis_cluster` backend: see the
/// [module documentation](self) for its arguments.
pub struct RedisBackend {
    conns: Arc<Conns>,
    ttl: Option<Duration>,
    ttl_key: String,
    lock: Option<Arc<lock::Keeper>>,
    lock_blocking_timeout: Option<Duration>,
}

impl RedisBackend {
    /// A `dogpile.cache.redis` backend from its arguments. Does not connect.
    pub fn from_arguments(args: &Arguments) -> Result<Self> {
        Self::single(REDIS, args)
    }

    /// A `dogpile.cache.redis_cluster` backend from its arguments. Does not connect.
    pub fn cluster_from_arguments(args: &Arguments) -> Result<Self> {
        Self::cluster(REDIS_CLUSTER, args)
    }

    /// A `dogpile.cache.redis_sentinel` backend from its arguments. Does not connect.
    pub fn sentinel_from_arguments(args: &Arguments) -> Result<Self> {
        Self::sentinel(REDIS_SENTINEL, args)
    }

    /// The single-server backend under `name` (Redis's or Valkey's).
    pub(crate) fn single(name: &'static str, args: &Arguments) -> Result<Self> {
        let (desc, client, common) = single_server(name, args, &[])?;
        Ok(Self::with_client(desc, client, &common))
    }

    /// The cluster backend under `name`.
    pub(crate) fn cluster(name: &'static str, args: &Arguments) -> Result<Self> {
        refuse(
            args,
            &["db", "host", "port"],
            &format!("{name} takes startup_nodes (or url); a cluster has only database 0"),
        )?;
        let mut known = vec!["startup_nodes", "url"];
        known.extend_from_slice(COMMON_ARGS);
        args.expect_only_with_dicts(name, &known, DICT_ARGS)?;
        let common = Common::read(args)?;
        let nodes: Vec<redis::ConnectionInfo> = cluster_nodes(args)?
            .into_iter()
            .map(|n| common.tls.apply(n))
            .collect();
        let desc = format!(
            "{name} at {}",
            nodes.iter().map(address).collect::<Vec<_>>().join(",")
        );
        let tls = nodes.iter().any(Tls::is_tls);
        if let Some(plain) = nodes.iter().find(|n| !Tls::is_tls(n)) {
            common.tls.check_applies(plain)?;
        }
        if tls {
            settings::install_crypto_provider();
        }
        let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(common.limits.connect_timeout)
            .response_timeout(common.limits.reply_timeout)
            .tcp_settings(common.tcp.clone());
        if tls {
            builder = builder.tls(if common.tls.verify {
                redis::TlsMode::Secure
            } else {
                redis::TlsMode::Insecure
            });
            if let Some(certs) = common.tls.certificates() {
                builder = builder.certs(certs);
            }
            if common.tls.verify && !common.tls.check_hostname() {
                builder = builder.danger_accept_invalid_hostnames(true);
            }
        }
        if let Some(u) = &common.username {
            builder = builder.username(u);
        }
        if let Some(Secret(p)) = &common.password {
            builder = builder.password(p);
        }
        let client = builder
            .build()
            .map_err(|e| args.error("startup_nodes", e))?;
        Ok(Self::with_client(
            desc,
            Client::Cluster(Box::new(client)),
            &common,
        ))
    }

    /// The Sentinel backend under `name`: `sentinels`, `service_name`, `sentinel_kwargs`,
    /// `db` and the common arguments. As in dogpile, `distributed_lock` is on unless set.
    pub(crate) fn sentinel(name: &'static str, args: &Arguments) -> Result<Self> {
        refuse(
            args,
            &["url", "host", "port"],
            &format!("{name} finds the master through the sentinels: give sentinels (host:port of each) and service_name"),
        )?;
        let mut known = vec!["sentinels", "service_name", "sentinel_kwargs", "db"];
        known.extend_from_slice(COMMON_ARGS);
        args.expect_only_with_dicts(name, &known, DICT_ARGS)?;
        let mut common = Common::read(args)?;
        if args.get("distributed_lock").is_none() {
            common.distributed_lock = true;
        }
        let service = args
            .string("service_name")?
            .unwrap_or_else(|| sentinel::DEFAULT_SERVICE_NAME.to_owned());
        let listed = args.string_list("sentinels")?.unwrap_or_default();
        if listed.is_empty() {
            return Err(args.error(
                "sentinels",
                format!("missing: {name} needs the address of at least one sentinel (host:port)"),
            ));
        }
        // The sentinels are reached with `sentinel_kwargs`; their credentials default to the
        // master's, as in dogpile.
        let sk = args.nested("sentinel_kwargs")?;
        sk.expect_only("sentinel_kwargs", &[SENTINEL_KWARGS, TLS_SETTINGS].concat())?;
        let sentinel_tls = Tls::read_alone(&sk)?;
        let username = sk.string("username")?.or_else(|| common.username.clone());
        let password = sk
            .string("password")?
            .or_else(|| common.password.clone().map(|p| p.0));
        let mut sentinels = Vec::with_capacity(listed.len());
        for addr in &listed {
            let info = sentinel::sentinel_info(addr).map_err(|e| {
                args.error(
                    "sentinels",
                    format!("{addr:?} is not a sentinel address: {e}"),
                )
            })?;
            let mut settings = info.redis_settings().clone();
            if let Some(u) = &username {
                settings = settings.set_username(u);
            }
            if let Some(p) = &password {
                settings = settings.set_password(p);
            }
            let info = sentinel_tls.apply(
                info.set_redis_settings(settings)
                    .set_tcp_settings(common.tcp.clone()),
            );
            sentinels.push(
                sentinel_tls
                    .client(info)
                    .map_err(|e| args.error("sentinels", e))?,
            );
        }
        // The master: no address yet, the database and credentials of the arguments.
        let db_args = if settings::given(args, "db") {
            args
        } else {
            &common.kwargs
        };
        let db = db_args.i64("db")?.unwrap_or(0);
        if db < 0 {
            return Err(db_args.error("db", format!("expected 0 or more, got {db}")));
        }
        let mut settings = redis::RedisConnectionInfo::default().set_db(db);
        if let Some(u) = &common.username {
            settings = settings.set_username(u);
        }
        if let Some(Secret(p)) = &common.password {
            settings = settings.set_password(p);
        }
        let master = redis::ConnectionAddr::Tcp(String::new(), 0)
            .into_connection_info()
            .map_err(|e| args.error("sentinels", e))?
            .set_redis_settings(settings)
            .set_tcp_settings(common.tcp.clone());
        let shown: Vec<String> = sentinels
            .iter()
            .map(|c: &redis::Client| address(c.get_connection_info()))
            .collect();
        let desc = format!("{name} {service:?} at {}", shown.join(","));
        // TLS settings for the master without TLS to it would be dropped.
        if !common.tls.on {
            common.tls.check_applies(&master)?;
        }
        let client = Client::Sentinel(Box::new(sentinel::Sentinels {
            sentinels,
            service,
            master,
            master_tls: common.tls.clone(),
            first: Default::default(),
        }));
        Ok(Self::with_client(desc, client, &common))
    }

    fn with_client(desc: String, client: Client, common: &Common) -> Self {
        let conns = Arc::new(Conns::new(desc, client, common.limits));
        RedisBackend {
            lock: common
                .distributed_lock
                .then(|| lock::Keeper::new(conns.clone(), common.lock.clone())),
            conns,
            ttl: common.ttl,
            ttl_key: common.ttl_key.clone(),
            lock_blocking_timeout: common.lock_blocking_timeout,
        }
    }

    /// The server-side TTL (`redis_expiration_time`), if any.
    pub fn redis_expiration_time(&self) -> Option<Duration> {
        self.ttl
    }

    /// Whether `get_mutex` gives distributed locks (`distributed_lock`).
    pub fn distributed_lock(&self) -> bool {
        self.lock.is_some()
    }

    fn ttl_ms(&self) -> Option<u64> {
        self.ttl
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
    }

    fn encode(&self, key: &str, value: &CachedValue) -> Result<Vec<u8>> {
        encode_envelope_for(value, self.conns.desc(), key)
    }

    fn set_cmd(&self, key: &str, bytes: &[u8]) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(bytes);
        if let Some(ms) = self.ttl_ms() {
            cmd.arg("PX").arg(ms);
        }
        cmd
    }

    /// The raw values at `keys`, in order, in one `MGET`.
    fn mget(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<Option<Vec<u8>>> = self
            .conns
            .query("reading values", redis::cmd("MGET").arg(keys))?;
        if found.len() != keys.len() {
            return Err(Error::backend_msg(
                self.conns.desc(),
                format!(
                    "reading values: MGET of {} keys returned {} values",
                    keys.len(),
                    found.len()
                ),
            ));
        }
        Ok(found)
    }

    fn decode(&self, key: &str, bytes: Option<Vec<u8>>) -> Option<CachedValue> {
        bytes.and_then(|b| decode_envelope_or_miss(&b, self.conns.desc(), key))
    }

    /// A `GET`'s outcome: a key holding something other than a string (a list, a hash) is not
    /// ours, so it reads as a miss, as `MGET` reads it, and the next creation overwrites it.
    fn read_outcome(&self, key: &str, r: Result<Option<Vec<u8>>>) -> Result<Option<CachedValue>> {
        match r {
            Ok(bytes) => Ok(self.decode(key, bytes)),
            Err(e) if is_wrong_type(&e) => {
                tracing::warn!(backend = %self.conns.desc(), key, "a key of another Redis type read as a miss");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("server", &self.conns.desc())
            .field("redis_expiration_time", &self.ttl)
            .field("distributed_lock", &self.lock.is_some())
            .finish()
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &str {
        self.conns.desc()
    }

    fn payload_kind(&self) -> PayloadKind {
        PayloadKind::Bytes
    }

    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        let r = self
            .conns
            .query("reading a value", redis::cmd("GET").arg(key));
        self.read_outcome(key, r)
    }

    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        let bytes = self.encode(key, &value)?;
        self.conns
            .query::<()>("storing a value", &self.set_cmd(key, &bytes))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.conns
            .query::<()>("deleting a value", redis::cmd("DEL").arg(key))
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue>>> {
        Ok(keys
            .iter()
            .zip(self.mget(keys)?)
            .map(|(k, b)| self.decode(k, b))
            .collect())
    }

    fn visit_multi(
        &self,
        keys: &[&str],
        f: &mut dyn FnMut(usize, CachedValueRef<'_>),
    ) -> Result<()> {
        // Each envelope is decoded where the reply put it, not copied into a value of its own.
        for (i, (k, b)) in keys.iter().zip(self.mget(keys)?).enumerate() {
            let found = b.as_deref();
            if let Some(v) =
                found.and_then(|b| decode_envelope_ref_or_miss(b, self.conns.desc(), k))
            {
                f(i, v);
            }
        }
        Ok(())
    }

    fn set_multi(&self, items: Vec<(String, CachedValue)>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let encoded = items
            .iter()
            .map(|(k, v)| Ok((k.as_str(), self.encode(k, v)?)))
            .collect::<Result<Vec<_>>>()?;
        let ttl = self.ttl_ms();
        self.conns.run("storing values", |conn| {
            if ttl.is_none() {
                let mut mset = redis::cmd("MSET");
                for (k, b) in &encoded {
                    mset.arg(*k).arg(b);
                }
                return mset.query::<()>(conn.as_dyn());
            }
            match conn {
                SyncConn::Single(c) => {
                    let mut pipe = redis::pipe();
                    for (k, b) in &encoded {
                        pipe.add_command(self.set_cmd(k, b)).ignore();
                    }
                    pipe.query::<()>(c)
                }
                SyncConn::Cluster(c) => {
                    let mut pipe = redis::cluster::cluster_pipe();
                    for (k, b) in &encoded {
                        pipe.add_command(self.set_cmd(k, b)).ignore();
                    }
                    pipe.query::<()>(c)
                }
            }
        })
    }

    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.conns
            .query::<()>("deleting values", redis::cmd("DEL").arg(keys))
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        let keeper = self.lock.as_ref()?;
        Some(Box::new(RedisMutex::new(keeper, key)))
    }

    fn lock_blocking_timeout(&self) -> Option<Duration> {
        self.lock_blocking_timeout
    }

    fn check_region_expiration(&self, expiration: Option<&Expiration>) -> Result<()> {
        match (self.ttl, expiration) {
            (Some(server), Some(Expiration::After(region))) if server <= *region => {
                Err(Error::config(
                    self.ttl_key.clone(),
                    format!(
                        "{} s must exceed the region's expiration_time ({} s): Redis would drop values before they expire in the region, so callers would wait for a new value instead of getting the old one",
                        server.as_secs_f64(),
                        region.as_secs_f64()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Pub/sub on this backend's server, with its connection settings (see [`RedisBackplane`]);
    /// for a Sentinel backend, on the master the sentinels name, found anew on each reconnect.
    /// A cluster has none (`Ok(None)`): its pub/sub needs a connection to one node.
    fn backplane(&self) -> Result<Option<Arc<dyn dogpile_core::backplane::Backplane>>> {
        Ok(RedisBackplane::beside(&self.conns)
            .map(|b| Arc::new(b) as Arc<dyn dogpile_core::backplane::Backplane>))
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<CachedValue>>> {
        Box::pin(async move {
            if !in_tokio() {
                return self.get(key);
            }
            let r = self
                .conns
                .query_async("reading a value", redis::cmd("GET").arg(key))
                .await;
            self.read_outcome(key, r)
        })
    }

    fn set_async<'a>(&'a self, key: &'a str, value: CachedValue) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if !in_tokio() {
                return self.set(key, value);
            }
            let bytes = self.encode(key, &value)?;
            self.conns
                .query_async::<()>("storing a value", &self.set_cmd(key, &bytes))
                .await
        })
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if !in_tokio() {
                return self.delete(key);
            }
            self.conns
                .query_async::<()>("deleting a value", redis::cmd("DEL").arg(key))
                .await
        })
    }
}

#[cfg(test)]
mod tests;
