//! Region configuration: [`RegionConfig`] in code, or from a string map with dogpile's key layout
//! (`prefix.backend`, `prefix.expiration_time`, `prefix.arguments.NAME`); the typed backend
//! [`Arguments`] (`arguments.rs`); and the secrets that never show in any text (`secrets.rs`).

mod arguments;
mod resilience;
mod secrets;
mod tiers;

pub use arguments::{coerce_string, ArgValue, Arguments};
pub(crate) use resilience::Resilience;
pub use resilience::DEFAULT_FAIL_SAFE_THROTTLE;
pub use secrets::{is_secret_argument, redact_url, Secret, REDACTED};
pub(crate) use tiers::BackplaneChoice;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::clock::Clock;
use crate::codec::WireFormat;
use crate::error::{Error, Result};
use crate::expiration::Expiration;
use crate::invalidation::RegionInvalidationStrategy;
use crate::proxy::ProxyBackend;
use crate::serializer::Serializer;
use secrets::is_credential;

/// The bound on waiting for another caller's creation when neither the region nor its backend
/// sets one: long enough for any creation a cache should front (a slow query, a remote call),
/// short enough that a stuck or lost creator costs each waiter half a minute, not forever.
pub const DEFAULT_LOCK_BLOCKING_TIMEOUT: Duration = Duration::from_secs(30);
/// The backend to configure: a registered name, or an instance.
#[derive(Clone)]
pub enum BackendSpec {
    /// A name, looked up among the built-in and registered backends.
    Name(String),
    /// A backend made by the caller.
    Instance(Arc<dyn Backend>),
}

/// Everything `configure` takes: the backend, the default expiration, backend arguments, proxies.
///
/// ```
/// use std::time::Duration;
/// use dogpile_core::RegionConfig;
///
/// let config = RegionConfig::new("dogpile.cache.memory")
///     .expiration_time(Duration::from_secs(3600))
///     .argument("max_size", 10_000);
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct RegionConfig {
    pub(crate) backend: BackendSpec,
    pub(crate) expiration_time: Option<Expiration>,
    pub(crate) arguments: Arguments,
    pub(crate) wrap: Vec<Arc<dyn ProxyBackend>>,
    pub(crate) replace_existing_backend: bool,
    pub(crate) clock: Clock,
    pub(crate) region_invalidator: Option<Arc<dyn RegionInvalidationStrategy>>,
    /// The region's own bound on waiting for another caller's creation, if set.
    pub(crate) lock_blocking_timeout: Option<Duration>,
    /// The configuration key the backend name came from, for errors.
    pub(crate) backend_key: Option<String>,
    /// How values become the payloads of byte backends (`None`: the default).
    pub(crate) serializer: Option<Arc<dyn Serializer>>,
    pub(crate) wire_format: WireFormat,
    /// The local tier and the backplane.
    pub(crate) tiers: tiers::TierOptions,
    /// Fail-safe, creator timeouts, early refresh, XFetch and jitter (all off unless set).
    pub(crate) resilience: Resilience,
}

impl RegionConfig {
    /// A configuration for the backend registered as `backend`, such as `dogpile.cache.memory`.
    pub fn new(backend: impl Into<String>) -> Self {
        Self::with_spec(BackendSpec::Name(backend.into()))
    }

    /// A configuration for a backend instance made by the caller.
    pub fn with_backend(backend: impl Backend) -> Self {
        Self::with_spec(BackendSpec::Instance(Arc::new(backend)))
    }

    fn with_spec(backend: BackendSpec) -> Self {
        RegionConfig {
            backend,
            expiration_time: None,
            arguments: Arguments::new(),
            wrap: Vec::new(),
            replace_existing_backend: false,
            clock: Clock::System,
            region_invalidator: None,
            lock_blocking_timeout: None,
            backend_key: None,
            serializer: None,
            wire_format: WireFormat::Dogpile,
            tiers: tiers::TierOptions::default(),
            resilience: Resilience::default(),
        }
    }

    /// The default expiration of the region's values: seconds (`-1`: never), a `Duration`, or an
    /// [`Expiration`].
    pub fn expiration_time(mut self, expiration: impl Into<Expiration>) -> Self {
        self.expiration_time = Some(expiration.into());
        self
    }

    /// Sets one backend argument.
    pub fn argument(mut self, name: impl Into<String>, value: impl Into<ArgValue>) -> Self {
        self.arguments.insert(name, value);
        self
    }

    /// Replaces all backend arguments.
    pub fn arguments(mut self, arguments: Arguments) -> Self {
        self.arguments = arguments;
        self
    }

    /// Adds a proxy around the backend. The first proxy added is the outermost: it sees each call
    /// first, as in dogpile's `wrap=[...]` list.
    pub fn wrap(mut self, proxy: impl ProxyBackend) -> Self {
        self.wrap.push(Arc::new(proxy));
        self
    }

    /// Allows `configure` on a region that already has a backend, replacing it.
    pub fn replace_existing_backend(mut self, replace: bool) -> Self {
        self.replace_existing_backend = replace;
        self
    }

    /// The clock the region reads (a manual clock in tests).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the invalidation strategy.
    pub fn region_invalidator(mut self, strategy: impl RegionInvalidationStrategy) -> Self {
        self.region_invalidator = Some(Arc::new(strategy));
        self
    }

    /// How long a caller may wait for another caller's creation of a value (dogpile's
    /// `lock_blocking_timeout`). Past it, region methods return
    /// [`Error::LockTimeout`] and a decorated function runs its body.
    ///
    /// Every waiter has a bound, in-process ones included: this setting, else the backend's own
    /// (its `lock_blocking_timeout` argument, see
    /// [`Backend::lock_blocking_timeout`]), else
    /// [`DEFAULT_LOCK_BLOCKING_TIMEOUT`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use dogpile_core::{CacheRegion, RegionConfig};
    ///
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(
    ///         RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())
    ///             .lock_blocking_timeout(Duration::from_secs(2)),
    ///     )
    ///     .unwrap();
    /// ```
    pub fn lock_blocking_timeout(mut self, timeout: Duration) -> Self {
        self.lock_blocking_timeout = Some(timeout);
        self
    }

    /// dogpile's `lock_blocking`: `false` means a caller never waits for another's creation (a
    /// bound of zero); `true` undoes an earlier `false`.
    pub fn lock_blocking(mut self, blocking: bool) -> Self {
        if !blocking {
            self.lock_blocking_timeout = Some(Duration::ZERO);
        } else if self.lock_blocking_timeout == Some(Duration::ZERO) {
            self.lock_blocking_timeout = None;
        }
        self
    }

    /// How the region encodes values for byte backends (the object-storing memory backend never
    /// encodes): one of [`crate::serializer`]'s built-ins or the caller's own. The default is
    /// [`MessagePack`](crate::serializer::MessagePack). Every process sharing a byte backend must
    /// use the same serializer: bytes another one wrote are misses.
    ///
    /// ```
    /// use dogpile_core::serializer::Json;
    /// use dogpile_core::{CacheRegion, RegionConfig};
    ///
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(
    ///         RegionConfig::with_backend(dogpile_core::testing::MapBackend::bytes())
    ///             .serializer(Json),
    ///     )
    ///     .unwrap();
    /// region.set("k", "v".to_string()).unwrap();
    /// assert_eq!(region.get::<String>("k").unwrap().as_deref(), Some("v"));
    /// ```
    pub fn serializer(mut self, serializer: impl Serializer) -> Self {
        self.serializer = Some(Arc::new(serializer));
        self
    }

    /// How byte backends lay out the values this region writes (the default is this toolkit's
    /// envelope): [`WireFormat::Python`] writes them as Python dogpile.cache 1.x does,
    /// `{"ct": …, "v": 2}|payload`, so that Python services read them; with the Python side's
    /// serializer ([`Pickle`](crate::serializer::Pickle), dogpile's default on Redis, or
    /// [`Json`](crate::serializer::Json)) the two share entries. Without a
    /// [`serializer`](RegionConfig::serializer) it is pickle; MessagePack and bincode, which
    /// Python dogpile cannot read (its services would raise), are refused at `configure`.
    /// Either format is read whatever this says. In a configuration map:
    /// `PREFIXwire_format = python`.
    ///
    /// ```
    /// use dogpile_core::codec::WireFormat;
    /// use dogpile_core::serializer::Pickle;
    /// use dogpile_core::{CacheRegion, RegionConfig};
    /// use dogpile_core::testing::MapBackend;
    ///
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(
    ///         RegionConfig::with_backend(MapBackend::bytes())
    ///             .serializer(Pickle)
    ///             .wire_format(WireFormat::Python),
    ///     )
    ///     .unwrap();
    /// region.set("k", 42u32).unwrap();
    /// assert_eq!(region.get::<u32>("k").unwrap(), Some(42));
    /// ```
    pub fn wire_format(mut self, wire_format: WireFormat) -> Self {
        self.wire_format = wire_format;
        self
    }

    /// The backend name, or `<instance>`.
    pub fn backend_name(&self) -> &str {
        match &self.backend {
            BackendSpec::Name(n) => n,
            BackendSpec::Instance(_) => "<instance>",
        }
    }

    /// Reads a configuration from a string map with dogpile's layout under `prefix`:
    /// `PREFIXbackend` (required), `PREFIXexpiration_time` (seconds; `-1` or `none` for never),
    /// `PREFIXreplace_existing_backend`, `PREFIXlock_blocking_timeout` (seconds; `none` for the
    /// default, see [`lock_blocking_timeout`](RegionConfig::lock_blocking_timeout)),
    /// `PREFIXlock_blocking` (`false`: never wait), `PREFIXserializer` (`msgpack`, `json`,
    /// `pickle` or `bincode`, see [`serializer`](RegionConfig::serializer)), `PREFIXwire_format`
    /// (`dogpile` or `python`, see [`wire_format`](RegionConfig::wire_format)), `PREFIXwrap` (a
    /// comma-separated list of proxies registered with
    /// [`register_proxy`](crate::registry::register_proxy), the first outermost, as
    /// [`wrap`](RegionConfig::wrap) adds them), and `PREFIXarguments.NAME` for each backend
    /// argument.
    /// Values are coerced as [`coerce_string`] does, but credentials (secret arguments, see
    /// [`is_secret_argument`], and `username`) are taken as the text written: a password `0123`
    /// stays `0123`, `none` stays `none`. Other keys under the prefix are errors that name them.
    ///
    /// ```
    /// use dogpile_core::RegionConfig;
    ///
    /// let config = RegionConfig::from_config(
    ///     [("c.backend", "dogpile.cache.redis"), ("c.arguments.password", "0123")],
    ///     "c.",
    /// )
    /// .unwrap();
    /// assert!(!format!("{config:?}").contains("0123")); // and a secret never shows
    /// ```
    pub fn from_config<I, K, V>(map: I, prefix: &str) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let args_prefix = format!("{prefix}arguments.");
        let mut backend: Option<(String, String)> = None;
        let mut expiration = None;
        let mut replace = false;
        let mut lock_timeout = None;
        let mut lock_blocking = true;
        let mut serializer = None;
        let mut wire_format = WireFormat::Dogpile;
        let mut wrap = Vec::new();
        let mut tier_keys = tiers::TierKeys::default();
        let mut resilience_options = Resilience::default();
        let mut arguments = Arguments {
            values: BTreeMap::new(),
            origin: args_prefix.clone(),
        };
        for (k, v) in map {
            let (k, v) = (k.as_ref(), v.as_ref());
            let Some(rest) = k.strip_prefix(prefix) else {
                continue;
            };
            if let Some(name) = rest.strip_prefix("arguments.") {
                if name.is_empty() {
                    return Err(Error::config(
                        k,
                        "an argument needs a name after `arguments.`",
                    ));
                }
                // Credentials are text: a password `0123`, `1e3` or `none` is that text.
                let value = if is_credential(name) {
                    ArgValue::Str(v.trim().to_owned())
                } else {
                    coerce_string(v)
                };
                arguments.insert(name, value);
                continue;
            }
            match rest {
                "backend" => {
                    let name = v.trim();
                    if name.is_empty() {
                        return Err(Error::config(k, "expected a backend name, got an empty string"));
                    }
                    backend = Some((name.to_owned(), k.to_owned()));
                }
                "expiration_time" => {
                    expiration = match coerce_string(v) {
                        ArgValue::Int(-1) => Some(Expiration::Never),
                        _ => seconds(k, v)
                            .map_err(|_| {
                                Error::config(
                                    k,
                                    format!(
                                        "expected a number of seconds (0 or more), -1 for never, or none; got {}",
                                        coerce_string(v)
                                    ),
                                )
                            })?
                            .map(Expiration::After),
                    }
                }
                "lock_blocking_timeout" => lock_timeout = seconds(k, v)?,
                "lock_blocking" => lock_blocking = boolean(k, v)?,
                "serializer" => serializer = Some(crate::serializer::by_name(v, k)?),
                "wire_format" => {
                    wire_format = WireFormat::by_name(v).ok_or_else(|| {
                        Error::config(k, format!("expected dogpile or python, got {:?}", v.trim()))
                    })?
                }
                "wrap" => {
                    wrap = v
                        .split(',')
                        .map(str::trim)
                        .filter(|name| !name.is_empty())
                        .map(|name| crate::registry::make_proxy(name, k))
                        .collect::<Result<Vec<_>>>()?;
                }
                "replace_existing_backend" => replace = boolean(k, v)?,
                _ if tier_keys.read(rest, k, v)? => {}
                name if resilience::KEYS.contains(&name) => resilience_options.read(name, k, v)?,
                _ => {
                    return Err(Error::config(
                        k,
                        format!(
                            "unknown configuration key; under {prefix:?} dogpile reads backend, expiration_time, replace_existing_backend, lock_blocking_timeout, lock_blocking, serializer, wire_format, wrap, {}, {} and arguments.NAME",
                            resilience::KEYS.join(", "),
                            tiers::KEYS.join(", ")
                        ),
                    ))
                }
            }
        }
        let (backend, backend_key) = backend.ok_or_else(|| {
            Error::config(
                format!("{prefix}backend"),
                "missing: the backend name is required",
            )
        })?;
        let mut config = RegionConfig::new(backend)
            .arguments(arguments)
            .replace_existing_backend(replace);
        config.expiration_time = expiration;
        config.lock_blocking_timeout = lock_timeout;
        config = config.lock_blocking(lock_blocking);
        config.backend_key = Some(backend_key);
        config.serializer = serializer;
        config.wire_format = wire_format;
        config.wrap = wrap;
        config.tiers = tier_keys.finish()?;
        config.resilience = resilience_options;
        Ok(config)
    }
}

/// `true` or `false` from a config map value (as dogpile coerces them: any case).
pub(crate) fn boolean(key: &str, value: &str) -> Result<bool> {
    match coerce_string(value) {
        ArgValue::Bool(b) => Ok(b),
        other => Err(Error::config(
            key,
            format!("expected true or false, got {other}"),
        )),
    }
}

/// A number of seconds from a config map value, as dogpile writes them: an integer or a float, 0
/// or more; `none` for unset. The one reading of every duration key of the region.
pub(crate) fn seconds(key: &str, value: &str) -> Result<Option<Duration>> {
    match coerce_string(value) {
        ArgValue::None => Ok(None),
        v => bounded_seconds(&v).map(Some).ok_or_else(|| {
            Error::config(key, format!("expected {SECONDS_EXPECTED} or none; got {v}"))
        }),
    }
}

/// The longest duration a configuration may give, in seconds: a hundred years. Longer is a
/// mistake, and a deadline that far from now would overflow the monotonic clock (a panic).
pub const MAX_SECONDS: u64 = 3_155_760_000;

/// What a configured duration must be, as the errors say it.
pub(crate) const SECONDS_EXPECTED: &str = "a number of seconds (0 to 3155760000, a hundred years)";

/// `v` as a configured duration: whole or fractional seconds, from 0 to [`MAX_SECONDS`]. The
/// one rule of every duration, in a config map and in a backend's arguments.
pub(crate) fn bounded_seconds(v: &ArgValue) -> Option<Duration> {
    let d = match v {
        ArgValue::Int(i) => Duration::from_secs(u64::try_from(*i).ok()?),
        ArgValue::Float(x) => Duration::try_from_secs_f64(*x).ok()?,
        _ => return None,
    };
    (d <= Duration::from_secs(MAX_SECONDS)).then_some(d)
}

impl From<&str> for RegionConfig {
    fn from(name: &str) -> Self {
        RegionConfig::new(name)
    }
}

impl From<String> for RegionConfig {
    fn from(name: String) -> Self {
        RegionConfig::new(name)
    }
}

impl fmt::Debug for RegionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionConfig")
            .field("backend", &self.backend_name())
            .field("expiration_time", &self.expiration_time)
            .field("arguments", &self.arguments)
            .field("wrap", &self.wrap.len())
            .field("replace_existing_backend", &self.replace_existing_backend)
            .field("serializer", &self.serializer.as_ref().map(|s| s.name()))
            .field("wire_format", &self.wire_format)
            .field("local_tier", &self.tiers.local_tier)
            .field("backplane", &self.tiers.backplane.is_some())
            .field("resilience", &self.resilience)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn durations_are_bounded_at_a_hundred_years_as_the_errors_say() {
        assert!(SECONDS_EXPECTED.contains(&format!("0 to {MAX_SECONDS},")));
        let max = MAX_SECONDS as i64;
        assert_eq!(
            bounded_seconds(&ArgValue::Int(max)),
            Some(Duration::from_secs(MAX_SECONDS))
        );
        assert_eq!(bounded_seconds(&ArgValue::Int(max + 1)), None);
        assert_eq!(bounded_seconds(&ArgValue::Int(-1)), None);
        assert_eq!(
            bounded_seconds(&ArgValue::Float(0.25)),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            bounded_seconds(&ArgValue::Float(MAX_SECONDS as f64 + 1.0)),
            None
        );
        assert_eq!(bounded_seconds(&ArgValue::Float(f64::NAN)), None);
        assert_eq!(seconds("k", "none").unwrap(), None);
        assert_eq!(
            seconds("k", "1e19").unwrap_err().to_string(),
            format!("k: expected {SECONDS_EXPECTED} or none; got 10000000000000000000")
        );
    }

    #[test]
    fn coercion_matches_dogpile() {
        assert_eq!(coerce_string("10"), ArgValue::Int(10));
        assert_eq!(coerce_string("+10"), ArgValue::Int(10));
        assert_eq!(coerce_string("1e3"), ArgValue::Float(1000.0));
        assert_eq!(coerce_string(".5"), ArgValue::Float(0.5));
        assert_eq!(coerce_string("5."), ArgValue::Float(5.0));
        assert_eq!(coerce_string("FALSE"), ArgValue::Bool(false));
        assert_eq!(coerce_string("inf"), ArgValue::Str("inf".into()));
        assert_eq!(coerce_string("nan"), ArgValue::Str("nan".into()));
        assert_eq!(coerce_string("1.2.3"), ArgValue::Str("1.2.3".into()));
        assert_eq!(coerce_string(""), ArgValue::Str("".into()));
        assert_eq!(coerce_string("99999999999999999999"), ArgValue::Float(1e20));
    }

    #[test]
    fn from_config_reads_dogpiles_layout() {
        let map: HashMap<String, String> = [
            ("cache.local.backend", "dogpile.cache.dbm"),
            ("cache.local.expiration_time", "300"),
            ("cache.local.arguments.filename", "/path/to/dbmfile.dbm"),
            ("cache.memcached.backend", "dogpile.cache.pylibmc"),
            ("cache.memcached.arguments.url", "127.0.0.1, 10.0.0.1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let local = RegionConfig::from_config(&map, "cache.local.").unwrap();
        assert_eq!(local.backend_name(), "dogpile.cache.dbm");
        assert_eq!(
            local.expiration_time.as_ref().and_then(Expiration::resolve),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            local.arguments.string("filename").unwrap().as_deref(),
            Some("/path/to/dbmfile.dbm")
        );
        let mc = RegionConfig::from_config(&map, "cache.memcached.").unwrap();
        assert_eq!(
            mc.arguments.string_list("url").unwrap().unwrap(),
            vec!["127.0.0.1", "10.0.0.1"]
        );
    }

    #[test]
    fn a_dict_that_does_not_parse_never_shows_its_secrets() {
        let args = Arguments::new().with(
            "connection_kwargs",
            "{'password': 'hunter22', 'socket_keepalive_options': {4: 60}}",
        );
        assert!(!format!("{args:?}").contains("hunter22"), "{args:?}");
        let err = args.nested("connection_kwargs").unwrap_err().to_string();
        assert!(!err.contains("hunter22"), "{err}");
        let err = Arguments::new()
            .with("connection_kwargs", "{'password' 'hunter22'}")
            .nested("connection_kwargs")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter22") && err.contains("item 1"), "{err}");
        let err = Arguments::new()
            .with("connection_kwargs", "{'password': 'hunter22}")
            .nested("connection_kwargs")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter22"), "{err}");
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |pairs: &[(&str, &str)]| {
            RegionConfig::from_config(pairs.iter().copied(), "c.")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(&[]), "c.backend: missing: the backend name is required");
        assert_eq!(
            err(&[("c.backend", "x"), ("c.expiration_time", "soon")]),
            "c.expiration_time: expected a number of seconds (0 or more), -1 for never, or none; got \"soon\""
        );
        assert!(err(&[("c.backend", "x"), ("c.backnd", "y")])
            .starts_with("c.backnd: unknown configuration key"));
        let args =
            RegionConfig::from_config([("c.backend", "x"), ("c.arguments.max_size", "ten")], "c.")
                .unwrap()
                .arguments;
        assert_eq!(
            args.u64("max_size").unwrap_err().to_string(),
            "c.arguments.max_size: expected a non-negative integer, got a string \"ten\""
        );
    }

    #[test]
    fn credentials_are_taken_as_written() {
        let config = RegionConfig::from_config(
            [
                ("c.backend", "x"),
                ("c.arguments.password", " 0123 "),
                ("c.arguments.sasl_password", "1e3"),
                ("c.arguments.auth_token", "none"),
                ("c.arguments.client_secret", "true"),
                ("c.arguments.username", "007"),
                ("c.arguments.port", "0123"),
            ],
            "c.",
        )
        .unwrap();
        let args = &config.arguments;
        let text = |name| args.get(name).cloned();
        assert_eq!(text("password"), Some(ArgValue::Str("0123".into())));
        assert_eq!(text("sasl_password"), Some(ArgValue::Str("1e3".into())));
        assert_eq!(text("auth_token"), Some(ArgValue::Str("none".into())));
        assert_eq!(text("client_secret"), Some(ArgValue::Str("true".into())));
        assert_eq!(text("username"), Some(ArgValue::Str("007".into())));
        assert_eq!(args.string("password").unwrap().as_deref(), Some("0123"));
        // Other arguments are coerced as dogpile does.
        assert_eq!(text("port"), Some(ArgValue::Int(123)));
    }

    #[test]
    fn secrets_never_show() {
        let config = RegionConfig::new("dogpile.cache.redis")
            .argument("password", "hunter2")
            .argument("sasl_password", "s3cr3t-sasl")
            .argument("ssl_keyfile", "/keys/private.pem")
            .argument("url", "redis://user:pw-in-url@host:6379/0")
            .argument("startup_nodes", vec!["redis://:pw-in-list@h:1", "h:2"])
            .argument("username", "ann");
        let debug = format!("{config:?}");
        for secret in [
            "hunter2",
            "s3cr3t-sasl",
            "private.pem",
            "pw-in-url",
            "pw-in-list",
            "user:",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("\"password\": ***"), "{debug}");
        assert!(debug.contains("redis://***@host:6379/0"), "{debug}");
        assert!(debug.contains("\"ann\""), "{debug}");

        // Type errors name the argument and echo nothing secret.
        let args = Arguments::new().with("password", vec!["hunter2"]).with(
            "url",
            vec![
                ArgValue::from("redis://:pw-in-list@h:1"),
                ArgValue::Bool(true),
            ],
        );
        assert_eq!(
            args.string("password").unwrap_err().to_string(),
            "arguments.password: expected a string, got a list ***"
        );
        assert_eq!(
            args.string_list("url").unwrap_err().to_string(),
            "arguments.url: expected a string or a list of strings, got a list [\"redis://***@h:1\", true]"
        );
        // A message that echoes a value hides the secrets it holds.
        let args = Arguments::new()
            .with("password", "pa\"ss")
            .with("url", "memcache://me:hunter2@h:1/x");
        let err = args.error(
            "url",
            "memcache://me:hunter2@h:1/x, \"pa\\\"ss\" and pa\"ss",
        );
        assert_eq!(
            err.to_string(),
            "arguments.url: memcache://***@h:1/x, \"***\" and ***"
        );
    }

    #[test]
    fn minus_one_and_none_expirations() {
        let never =
            RegionConfig::from_config([("c.backend", "x"), ("c.expiration_time", "-1")], "c.")
                .unwrap();
        assert!(matches!(never.expiration_time, Some(Expiration::Never)));
        let none =
            RegionConfig::from_config([("c.backend", "x"), ("c.expiration_time", "None")], "c.")
                .unwrap();
        assert!(none.expiration_time.is_none());
    }
}
