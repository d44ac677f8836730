//! The arguments of the Redis backends, read and checked: the ones all of them share
//! ([`Common`]), where a single server is ([`single_server_info`]), the cluster's nodes, TLS
//! ([`Tls`]), TCP keepalive, and redis-py's `connection_kwargs`.
//!
//! A setting may be given as an argument or inside `connection_kwargs` (as redis-py takes it);
//! the argument wins, as in dogpile, which passes its own arguments after the kwargs.

use std::time::Duration;

use dogpile_core::config::Secret;
use dogpile_core::lock::DEFAULT_LOCK_PREFIX;
use dogpile_core::{ArgValue, Arguments, Error, Result};
use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::{ConnectionAddr, IntoConnectionInfo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::conn::Limits;
use super::lock::LockSettings;
use super::REDIS;

/// The default bound on each reply (`socket_timeout`): see "Nothing waits forever" in the
/// module documentation.
pub(crate) const DEFAULT_SOCKET_TIMEOUT: Duration = Duration::from_secs(3);
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_LOCK_SLEEP: Duration = Duration::from_millis(2);
pub(crate) const DEFAULT_POOL_SIZE: usize = 16;

/// The arguments every Redis backend takes.
pub(crate) const COMMON_ARGS: &[&str] = &[
    "username",
    "password",
    "socket_timeout",
    "socket_connect_timeout",
    "pool_timeout",
    "redis_expiration_time",
    "distributed_lock",
    "lock_timeout",
    "lock_sleep",
    "lock_blocking",
    "lock_blocking_timeout",
    "lock_prefix",
    "pool_size",
    "thread_local_lock",
    "ssl",
    "connection_kwargs",
    "socket_keepalive",
    "socket_keepalive_options",
    "connection_pool",
];

/// The arguments that hold dicts, whose settings a config map writes as `NAME.SETTING`.
pub(crate) const DICT_ARGS: &[&str] = &[
    "connection_kwargs",
    "socket_keepalive_options",
    "sentinel_kwargs",
];

/// Whether `name` is given a value (a config map's `none` is no value, as dogpile passes only
/// the arguments it has).
pub(crate) fn given(args: &Arguments, name: &str) -> bool {
    args.get(name).is_some_and(|v| !matches!(v, ArgValue::None))
        || args
            .iter()
            .any(|(k, _)| k.strip_prefix(name).is_some_and(|r| r.starts_with('.')))
}

/// redis-py's TLS settings besides `ssl`, as `connection_kwargs` and `sentinel_kwargs` hold them.
pub(crate) const TLS_SETTINGS: &[&str] = &[
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
];

/// What `connection_kwargs` may hold besides [`TLS_SETTINGS`]: `ssl`, settings that are also
/// arguments (the argument wins), and two accepted without effect (see the module docs).
const KWARGS: &[&str] = &[
    "ssl",
    "username",
    "password",
    "db",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
    "max_connections",
    "health_check_interval",
    "retry_on_timeout",
];

/// Where a setting is read: the argument when it is given, else `connection_kwargs`.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) args: &'a Arguments,
    kwargs: &'a Arguments,
}

impl<'a> Source<'a> {
    /// The arguments and their `connection_kwargs` (checked: unknown settings are errors).
    pub(crate) fn new(args: &'a Arguments, kwargs: &'a Arguments) -> Result<Self> {
        if given(args, "connection_pool") {
            return Err(args.error(
                "connection_pool",
                "a redis-py ConnectionPool is a Python object, which a configuration cannot give here; use pool_size and pool_timeout to shape the pool",
            ));
        }
        kwargs.expect_only_with_dicts(
            "connection_kwargs",
            &[KWARGS, TLS_SETTINGS].concat(),
            &["socket_keepalive_options"],
        )?;
        Ok(Source { args, kwargs })
    }

    /// The arguments that hold `name`.
    pub(crate) fn of(&self, name: &str) -> &'a Arguments {
        if given(self.args, name) {
            self.args
        } else {
            self.kwargs
        }
    }
}

/// The arguments every Redis backend shares, read and checked.
#[derive(Clone, Debug)]
pub(crate) struct Common {
    pub(crate) username: Option<String>,
    /// `***` in `Debug`.
    pub(crate) password: Option<Secret<String>>,
    pub(crate) limits: Limits,
    pub(crate) ttl: Option<Duration>,
    pub(crate) ttl_key: String,
    pub(crate) distributed_lock: bool,
    pub(crate) lock: LockSettings,
    /// `lock_blocking` and `lock_blocking_timeout`, as [`Backend::lock_blocking_timeout`]
    /// reports them.
    pub(crate) lock_blocking_timeout: Option<Duration>,
    /// TLS, when the URL is `rediss://` or `ssl` is set.
    pub(crate) tls: Tls,
    /// TCP settings of every connection (keepalive).
    pub(crate) tcp: TcpSettings,
    /// `connection_kwargs`, read once and checked, for the settings a backend reads itself.
    pub(crate) kwargs: Arguments,
}

pub(crate) fn positive(
    args: &Arguments,
    name: &str,
    d: Option<Duration>,
) -> Result<Option<Duration>> {
    match d {
        Some(d) if d.is_zero() => Err(args.error(name, "expected more than 0 seconds, got 0")),
        other => Ok(other),
    }
}

impl Common {
    /// The shared arguments, `connection_kwargs` included.
    pub(crate) fn read(args: &Arguments) -> Result<Self> {
        let kwargs = args.nested("connection_kwargs")?;
        let src = Source::new(args, &kwargs)?;
        let seconds = |name: &str| {
            let a = src.of(name);
            positive(a, name, a.seconds(name)?)
        };
        let reply_timeout = seconds("socket_timeout")?.unwrap_or(DEFAULT_SOCKET_TIMEOUT);
        let connect_timeout = seconds("socket_connect_timeout")?.unwrap_or(reply_timeout);
        let pool_timeout = positive(args, "pool_timeout", args.seconds("pool_timeout")?)?
            .unwrap_or(connect_timeout + reply_timeout);
        let ttl = args
            .seconds("redis_expiration_time")?
            .filter(|d| !d.is_zero());
        // `thread_local_lock` is read only to check its type.
        args.bool("thread_local_lock")?;
        let lock_timeout = positive(args, "lock_timeout", args.seconds("lock_timeout")?)?
            .unwrap_or(DEFAULT_LOCK_TIMEOUT);
        let lock_sleep = positive(args, "lock_sleep", args.seconds("lock_sleep")?)?
            .unwrap_or(DEFAULT_LOCK_SLEEP);
        // redis-py's `max_connections` (in the kwargs) is the pool's size too.
        let size_arg = if given(args, "pool_size") || !given(&kwargs, "max_connections") {
            (args, "pool_size")
        } else {
            (&kwargs, "max_connections")
        };
        let pool_size = match size_arg.0.u64(size_arg.1)? {
            None => DEFAULT_POOL_SIZE,
            Some(0) => return Err(size_arg.0.error(size_arg.1, "expected at least 1, got 0")),
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        // Accepted for redis-py configurations, with no effect here (see the module docs); read
        // to check their types.
        kwargs.seconds("health_check_interval")?;
        kwargs.bool("retry_on_timeout")?;
        // dogpile: `lock_blocking=False` never waits, whatever `lock_blocking_timeout` says.
        let lock_blocking_timeout = match args.bool("lock_blocking")? {
            Some(false) => Some(Duration::ZERO),
            _ => args.seconds("lock_blocking_timeout")?,
        };
        Ok(Common {
            username: src.of("username").string("username")?,
            password: src.of("password").string("password")?.map(Secret),
            limits: Limits {
                pool_size,
                connect_timeout,
                reply_timeout,
                pool_timeout,
            },
            ttl,
            ttl_key: args.key("redis_expiration_time"),
            distributed_lock: args.bool("distributed_lock")?.unwrap_or(false),
            lock: LockSettings {
                prefix: lock_prefix(args)?,
                timeout: lock_timeout,
                max_pause: lock_sleep,
            },
            lock_blocking_timeout,
            tls: Tls::read(src)?,
            tcp: tcp_settings(src)?,
            kwargs,
        })
    }
}

/// `lock_prefix`, checked by dogpile's rule (`^[\w\-\.\:]{2,10}$`): 2 to 10 letters, digits,
/// `_`, `-`, `.` or `:`.
pub(crate) fn lock_prefix(args: &Arguments) -> Result<String> {
    let Some(prefix) = args.string("lock_prefix")? else {
        return Ok(DEFAULT_LOCK_PREFIX.to_owned());
    };
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    let n = prefix.chars().count();
    if !(2..=10).contains(&n) || !prefix.chars().all(allowed) {
        return Err(args.error(
            "lock_prefix",
            format!("expected 2 to 10 letters, digits, '_', '-', '.' or ':' (dogpile's rule ^[\\w\\-\\.\\:]{{2,10}}$), got {prefix:?}"),
        ));
    }
    Ok(prefix)
}

/// Adds `redis://` to an address written without a scheme.
pub(crate) fn with_scheme(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("redis://{addr}")
    }
}

/// A URL for an error message, its user name and password shown as `***`.
pub(crate) fn redacted(url: &str) -> String {
    dogpile_core::config::redact_url(url).into_owned()
}

pub(crate) fn parse_url(args: &Arguments, name: &str, url: &str) -> Result<redis::ConnectionInfo> {
    with_scheme(url)
        .into_connection_info()
        .map_err(|e| args.error(name, format!("not a Redis URL ({:?}): {e}", redacted(url))))
}

pub(crate) fn address(info: &redis::ConnectionInfo) -> String {
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        redis::ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
        redis::ConnectionAddr::Unix(path) => path.display().to_string(),
        other => format!("{other:?}"),
    }
}

/// Where a single-server backend connects, read from `url` or `host` / `port` / `db` /
/// `username` / `password`.
pub(crate) fn single_server_info(
    args: &Arguments,
    common: &Common,
) -> Result<redis::ConnectionInfo> {
    let url = args.string("url")?;
    let host = args.string("host")?;
    let port = args.u64("port")?;
    let kwargs = &common.kwargs;
    let mut info = match &url {
        Some(url) => {
            // As in dogpile, the client is built from the URL alone: `host`, `port` and `db`
            // beside it are ignored, and said so once, here.
            let ignored: Vec<String> = ["host", "port", "db"]
                .into_iter()
                .filter(|name| given(args, name))
                .map(|name| args.key(name))
                .collect();
            if !ignored.is_empty() {
                tracing::warn!(
                    ignored = %ignored.join(", "),
                    "{REDIS}: url is given, so {} beside it {} ignored (as in dogpile); put the database in the URL (redis://host:port/DB)",
                    ignored.join(", "),
                    if ignored.len() == 1 { "is" } else { "are" },
                );
            }
            parse_url(args, "url", url)?
        }
        None => {
            let port = match port {
                None => 6379,
                Some(p) => u16::try_from(p)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| args.error("port", format!("expected 1 to 65535, got {p}")))?,
            };
            let host = host.unwrap_or_else(|| "localhost".to_owned());
            redis::ConnectionAddr::Tcp(host, port)
                .into_connection_info()
                .map_err(|e| args.error("host", e))?
        }
    };
    let mut settings = info.redis_settings().clone();
    // The database: the argument (without a URL), else the kwargs' where the URL names none,
    // as redis-py's `from_url` takes a kwarg only for what the URL leaves out.
    let db_args = match &url {
        None if given(args, "db") => Some(args),
        Some(url) if url_names_db(url) => None,
        _ => given(kwargs, "db").then_some(kwargs),
    };
    if let Some(db_args) = db_args {
        if let Some(db) = db_args.i64("db")? {
            if db < 0 {
                return Err(db_args.error("db", format!("expected 0 or more, got {db}")));
            }
            settings = settings.set_db(db);
        }
    }
    // Credentials: an argument overrides the URL's (dogpile passes its own); the kwargs' fill in
    // only what the URL leaves out.
    let username = match args.string("username")? {
        Some(u) => Some(u),
        None if settings.username().is_none() => kwargs.string("username")?,
        None => None,
    };
    let password = match args.string("password")? {
        Some(p) => Some(p),
        None if settings.password().is_none() => kwargs.string("password")?,
        None => None,
    };
    if let Some(u) = &username {
        settings = settings.set_username(u);
    }
    if let Some(p) = &password {
        settings = settings.set_password(p);
    }
    info = info
        .set_redis_settings(settings)
        .set_tcp_settings(common.tcp.clone());
    let info = common.tls.apply(info);
    common.tls.check_applies(&info)?;
    Ok(info)
}

/// Whether a URL names its database (`redis://host:6379/2`, or `?db=2` on a socket URL).
fn url_names_db(url: &str) -> bool {
    let url = with_scheme(url);
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    if rest.contains("db=") {
        return true;
    }
    match rest.find('/') {
        Some(i) => rest[i + 1..]
            .split(['?', '#'])
            .next()
            .is_some_and(|p| !p.is_empty()),
        None => false,
    }
}

/// The startup nodes of a cluster backend, from `startup_nodes` or `url`.
pub(crate) fn cluster_nodes(args: &Arguments) -> Result<Vec<redis::ConnectionInfo>> {
    let (name, nodes) = match (args.string_list("startup_nodes")?, args.string_list("url")?) {
        (Some(_), Some(_)) => {
            return Err(args.error("url", "give either startup_nodes or url, not both"))
        }
        (Some(n), None) => ("startup_nodes", n),
        (None, Some(u)) => ("url", u),
        (None, None) => {
            return Err(args.error(
                "startup_nodes",
                "missing: dogpile.cache.redis_cluster needs the address of at least one cluster node (host:port)",
            ))
        }
    };
    if nodes.is_empty() {
        return Err(args.error(name, "expected at least one host:port, got none"));
    }
    nodes.iter().map(|n| parse_url(args, name, n)).collect()
}

/// Whether the server answered `WRONGTYPE`: the key holds a list, a hash or another non-string.
pub(crate) fn is_wrong_type(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<redis::RedisError>())
        .is_some_and(|r| r.code() == Some("WRONGTYPE"))
}

/// TLS as dogpile and redis-py configure it: `ssl` (or a `rediss://` URL), and in
/// `connection_kwargs` (or as arguments) `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`,
/// `ssl_cert_reqs` and `ssl_check_hostname`. Files are read when the backend is made, so a
/// missing one is a configuration error naming it.
#[derive(Clone, Default)]
pub(crate) struct Tls {
    /// `ssl` was set: connect with TLS even to a `redis://` address.
    pub(crate) on: bool,
    /// The CA certificates (PEM) that the server's certificate must chain to; the system's
    /// roots when `None`.
    ca_certs: Option<Vec<u8>>,
    /// A client certificate and key (PEM), for servers that ask for one.
    client: Option<(Vec<u8>, Secret<Vec<u8>>)>,
    /// `ssl_cert_reqs` is not `none`: the server's certificate is verified.
    pub(crate) verify: bool,
    /// `ssl_check_hostname`: the certificate must name the host connected to.
    check_hostname: bool,
    /// The full key of the first `ssl_*` setting given, for the error when the address turns
    /// out not to be TLS (the setting would be silently dropped).
    given: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("on", &self.on)
            .field("ca_certs", &self.ca_certs.is_some())
            .field("client_certificate", &self.client.is_some())
            .field("verify", &self.verify)
            .field("check_hostname", &self.check_hostname)
            .finish()
    }
}

impl Tls {
    /// TLS as `args` alone give it (for `sentinel_kwargs`).
    pub(crate) fn read_alone(args: &Arguments) -> Result<Tls> {
        Tls::read(Source { args, kwargs: args })
    }

    fn read(src: Source<'_>) -> Result<Tls> {
        // Files are read and parsed now, so a bad one is an error naming its setting.
        let file = |name: &str| -> Result<Option<Vec<u8>>> {
            let a = src.of(name);
            let Some(path) = a.string(name)? else {
                return Ok(None);
            };
            let pem = std::fs::read(&path)
                .map_err(|e| a.error(name, format!("cannot read {path:?}: {e}")))?;
            let parsed = if name == "ssl_keyfile" {
                PrivateKeyDer::from_pem_slice(&pem)
                    .map(drop)
                    .map_err(|e| format!("no private key in PEM form in {path:?}: {e}"))
            } else {
                match CertificateDer::pem_slice_iter(&pem)
                    .collect::<std::result::Result<Vec<_>, _>>()
                {
                    Ok(certs) if !certs.is_empty() => Ok(()),
                    Ok(_) => Err(format!("no certificate in PEM form in {path:?}")),
                    Err(e) => Err(format!("not certificates in PEM form: {path:?}: {e}")),
                }
            };
            parsed.map_err(|why| a.error(name, why))?;
            Ok(Some(pem))
        };
        let given = TLS_SETTINGS
            .iter()
            .find(|n| src.of(n).get(n).is_some())
            .map(|n| src.of(n).key(n));
        let verify = {
            let a = src.of("ssl_cert_reqs");
            match a
                .get("ssl_cert_reqs")
                // redis-py reads a `None` as CERT_NONE (and a config file's `none` is `None`).
                .map(|v| match v {
                    dogpile_core::ArgValue::None => Ok(Some("none".to_owned())),
                    _ => a.string("ssl_cert_reqs"),
                })
                .transpose()?
                .flatten()
                .map(|s| s.to_ascii_lowercase())
                .as_deref()
            {
                None | Some("required" | "cert_required" | "ssl.cert_required") => true,
                // A client's CERT_OPTIONAL verifies a certificate the server sends, and a
                // TLS server always sends one.
                Some("optional" | "cert_optional" | "ssl.cert_optional") => true,
                Some("none" | "cert_none" | "ssl.cert_none") => false,
                Some(other) => {
                    return Err(a.error(
                        "ssl_cert_reqs",
                        format!("expected required, optional or none, got {other:?}"),
                    ))
                }
            }
        };
        let client = match (file("ssl_certfile")?, file("ssl_keyfile")?) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, Secret(key))),
            (Some(_), None) => {
                return Err(src.of("ssl_certfile").error(
                    "ssl_certfile",
                    "a client certificate needs its key: give ssl_keyfile too",
                ))
            }
            (None, Some(_)) => {
                return Err(src.of("ssl_keyfile").error(
                    "ssl_keyfile",
                    "a client key needs its certificate: give ssl_certfile too",
                ))
            }
        };
        Ok(Tls {
            on: src.of("ssl").bool("ssl")?.unwrap_or(false),
            ca_certs: file("ssl_ca_certs")?,
            client,
            verify,
            check_hostname: src
                .of("ssl_check_hostname")
                .bool("ssl_check_hostname")?
                .unwrap_or(true),
            given,
        })
    }

    /// Fails when TLS settings were given for an address that is not TLS: they would be
    /// dropped silently and the connection would be plain text (redis-py refuses them too).
    pub(crate) fn check_applies(&self, info: &redis::ConnectionInfo) -> Result<()> {
        if Self::is_tls(info) {
            return Ok(());
        }
        let (key, what) = match (&self.given, self.on) {
            (_, true) => (
                "ssl".to_owned(),
                "ssl = true needs a TCP address (redis://host:port or rediss://…), not a socket"
                    .to_owned(),
            ),
            (Some(key), false) => (
                key.clone(),
                "a TLS setting for a plain-text address: use a rediss:// URL or ssl = true"
                    .to_owned(),
            ),
            (None, false) => return Ok(()),
        };
        Err(Error::config(key, what))
    }

    /// `info` with TLS when `ssl` is set (a `rediss://` URL has it already), and the
    /// verification asked for.
    pub(crate) fn apply(&self, info: redis::ConnectionInfo) -> redis::ConnectionInfo {
        let addr = match info.addr().clone() {
            ConnectionAddr::Tcp(host, port) if self.on => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: !self.verify,
                tls_params: None,
            },
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params,
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: insecure || !self.verify,
                tls_params,
            },
            other => other,
        };
        info.set_addr(addr)
    }

    /// Whether the certificate must name the host connected to (`ssl_check_hostname`).
    pub(crate) fn check_hostname(&self) -> bool {
        self.check_hostname
    }

    /// Whether `info` connects with TLS.
    pub(crate) fn is_tls(info: &redis::ConnectionInfo) -> bool {
        matches!(info.addr(), ConnectionAddr::TcpTls { .. })
    }

    /// The certificates to hand the `redis` crate, when any were given.
    pub(crate) fn certificates(&self) -> Option<redis::TlsCertificates> {
        if self.ca_certs.is_none() && self.client.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, Secret(key))| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca_certs.clone(),
        })
    }

    /// A client for `info`, with these certificates and checks when it connects with TLS.
    pub(crate) fn client(&self, info: redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
        if !Self::is_tls(&info) {
            return redis::Client::open(info);
        }
        install_crypto_provider();
        let client = match self.certificates() {
            Some(certs) => redis::Client::build_with_tls(info, certs)?,
            None => redis::Client::open(info)?,
        };
        if self.check_hostname || !self.verify {
            return Ok(client);
        }
        // Verified against the CA, but for any host name (ssl_check_hostname = false).
        let info = client.get_connection_info().clone();
        let mut addr = info.addr().clone();
        addr.set_danger_accept_invalid_hostnames(true);
        redis::Client::open(info.set_addr(addr))
    }
}

/// Makes rustls use *ring* unless the program chose a crypto provider: the `redis` crate builds
/// its TLS configurations on the process's default provider.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one first; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// TCP keepalive: `socket_keepalive`, and `socket_keepalive_options` with redis-py's keys
/// (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`, or their Linux numbers 4, 5 and 6).
fn tcp_settings(src: Source<'_>) -> Result<TcpSettings> {
    let on = src
        .of("socket_keepalive")
        .bool("socket_keepalive")?
        .unwrap_or(false);
    let options_args = src.of("socket_keepalive_options");
    let options = options_args.nested("socket_keepalive_options")?;
    if !on {
        if !options.is_empty() {
            return Err(options_args.error(
                "socket_keepalive_options",
                "given without socket_keepalive = true, so it would have no effect",
            ));
        }
        return Ok(TcpSettings::default());
    }
    let mut keepalive = TcpKeepalive::new();
    for (name, _) in options.iter() {
        let positive_secs = |n: &str| -> Result<Duration> {
            match options.seconds(n)? {
                Some(d) if !d.is_zero() => Ok(d),
                _ => Err(options.error(n, "expected more than 0 seconds")),
            }
        };
        keepalive = match name.to_ascii_uppercase().as_str() {
            "TCP_KEEPIDLE" | "4" => keepalive.with_time(positive_secs(name)?),
            "TCP_KEEPINTVL" | "5" => keepalive.with_interval(positive_secs(name)?),
            "TCP_KEEPCNT" | "6" => {
                let n = options
                    .u64(name)?
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| options.error(name, "expected a count of 1 or more"))?;
                keepalive.with_retries(n)
            }
            _ => {
                return Err(options.error(
                    name,
                    "unknown keepalive option; expected TCP_KEEPIDLE, TCP_KEEPINTVL or TCP_KEEPCNT (or 4, 5, 6)",
                ))
            }
        };
    }
    Ok(TcpSettings::default().set_keepalive(keepalive))
}
