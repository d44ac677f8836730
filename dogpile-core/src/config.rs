//! Region configuration: [`RegionConfig`] in code, or from a string map with dogpile's key layout
//! (`prefix.backend`, `prefix.expiration_time`, `prefix.arguments.NAME`), and the typed backend
//! [`Arguments`].

use std::borrow::Cow;
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

/// The bound on waiting for another caller's creation when neither the region nor its backend
/// sets one: long enough for any creation a cache should front (a slow query, a remote call),
/// short enough that a stuck or lost creator costs each waiter half a minute, not forever.
pub const DEFAULT_LOCK_BLOCKING_TIMEOUT: Duration = Duration::from_secs(30);

/// One backend argument.
///
/// Its `Debug` and `Display` show the credentials of a URL as `***` (see [`redact_url`]).
#[derive(Clone, PartialEq)]
pub enum ArgValue {
    /// `none` / `None` in a config file.
    None,
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// Any other text.
    Str(String),
    /// A list, for example several server addresses.
    List(Vec<ArgValue>),
}

impl ArgValue {
    /// The name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ArgValue::None => "none",
            ArgValue::Bool(_) => "a boolean",
            ArgValue::Int(_) => "an integer",
            ArgValue::Float(_) => "a float",
            ArgValue::Str(_) => "a string",
            ArgValue::List(_) => "a list",
        }
    }
}

impl fmt::Debug for ArgValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgValue::None => f.write_str("None"),
            ArgValue::Bool(b) => f.debug_tuple("Bool").field(b).finish(),
            ArgValue::Int(i) => f.debug_tuple("Int").field(i).finish(),
            ArgValue::Float(x) => f.debug_tuple("Float").field(x).finish(),
            ArgValue::Str(s) => f.debug_tuple("Str").field(&redact_url(s)).finish(),
            ArgValue::List(l) => f.debug_tuple("List").field(l).finish(),
        }
    }
}

impl fmt::Display for ArgValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgValue::None => f.write_str("None"),
            ArgValue::Bool(b) => write!(f, "{b}"),
            ArgValue::Int(i) => write!(f, "{i}"),
            ArgValue::Float(x) => write!(f, "{x}"),
            ArgValue::Str(s) => write!(f, "{:?}", redact_url(s)),
            ArgValue::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

macro_rules! arg_from_int {
    ($($t:ty)*) => {$(
        impl From<$t> for ArgValue {
            fn from(v: $t) -> Self { ArgValue::Int(v.into()) }
        }
    )*};
}
arg_from_int!(i8 i16 i32 i64 u8 u16 u32);

impl From<u64> for ArgValue {
    fn from(v: u64) -> Self {
        i64::try_from(v).map_or(ArgValue::Float(v as f64), ArgValue::Int)
    }
}

impl From<usize> for ArgValue {
    fn from(v: usize) -> Self {
        ArgValue::from(v as u64)
    }
}

impl From<f64> for ArgValue {
    fn from(v: f64) -> Self {
        ArgValue::Float(v)
    }
}

impl From<bool> for ArgValue {
    fn from(v: bool) -> Self {
        ArgValue::Bool(v)
    }
}

impl From<&str> for ArgValue {
    fn from(v: &str) -> Self {
        ArgValue::Str(v.to_owned())
    }
}

impl From<String> for ArgValue {
    fn from(v: String) -> Self {
        ArgValue::Str(v)
    }
}

impl From<Duration> for ArgValue {
    fn from(v: Duration) -> Self {
        ArgValue::Float(v.as_secs_f64())
    }
}

impl<T: Into<ArgValue>> From<Vec<T>> for ArgValue {
    fn from(v: Vec<T>) -> Self {
        ArgValue::List(v.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<ArgValue> + Clone> From<&[T]> for ArgValue {
    fn from(v: &[T]) -> Self {
        ArgValue::List(v.iter().cloned().map(Into::into).collect())
    }
}

impl<T: Into<ArgValue>> From<Option<T>> for ArgValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(ArgValue::None, Into::into)
    }
}

/// What a secret shows as in any text: `Debug`, `Display`, errors and logs.
pub const REDACTED: &str = "***";

/// A value that shows as `***` in `Debug` and `Display`: for a password or a token kept in a
/// struct that derives `Debug`, or handed to a log or an error message.
///
/// ```
/// use dogpile_core::config::Secret;
///
/// let password = Secret("hunter2".to_string());
/// assert_eq!(format!("{password:?} {password}"), "*** ***");
/// assert_eq!(password.0, "hunter2");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Secret<T>(pub T);

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Whether a backend argument holds a secret, by its name: a name with a part (between `_`,
/// `.` or `-`) saying password, secret, token or key (`password`, `sasl_password`,
/// `auth_token`, `ssl_keyfile`, `api_key`, `client_secret`). Its value shows as `***` in the
/// `Debug` of [`Arguments`] and [`RegionConfig`] and in configuration errors, and a config map's
/// text is taken as written (see [`RegionConfig::from_config`]).
///
/// ```
/// use dogpile_core::config::is_secret_argument;
///
/// assert!(is_secret_argument("password"));
/// assert!(is_secret_argument("sasl_password"));
/// assert!(is_secret_argument("ssl_keyfile"));
/// assert!(is_secret_argument("AUTH_TOKEN"));
/// assert!(!is_secret_argument("url"));
/// assert!(!is_secret_argument("max_keys"));
/// assert!(is_secret_argument("api_key"));
/// assert!(!is_secret_argument("key_placement"));
/// ```
pub fn is_secret_argument(name: &str) -> bool {
    const ENDINGS: &[&str] = &[
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
    ];
    let parts: Vec<String> = name
        .split(['_', '.', '-'])
        .map(str::to_ascii_lowercase)
        .collect();
    // `key` names a secret only as the last word (`api_key`, `ssl_key`): as the first it is
    // about cache keys (`key_placement`, `key_prefix`), which must stay readable in errors.
    parts.last().is_some_and(|p| p == "key")
        || parts.iter().any(|part| {
            matches!(part.as_str(), "keyfile" | "pwd" | "credentials")
                || ENDINGS.iter().any(|w| part.ends_with(w))
        })
}

/// Whether a config map's text for this argument is taken as written, with no coercion to a
/// number, a boolean or none: the secrets, and the user name that goes with a password.
fn is_credential(name: &str) -> bool {
    is_secret_argument(name)
        || matches!(
            name.to_ascii_lowercase().as_str(),
            "username" | "user" | "login" | "sasl_username"
        )
}

/// `url` with the credentials it holds (the user information before `@`: a user name, a
/// password, both) shown as `***`; a text without them is returned as it is. Addresses without
/// a scheme (`user:pw@host:6379`) are read the same way.
///
/// ```
/// use dogpile_core::config::redact_url;
///
/// assert_eq!(redact_url("redis://:pw@host:6379/0"), "redis://***@host:6379/0");
/// assert_eq!(redact_url("redis://user:p@ss@host"), "redis://***@host");
/// assert_eq!(redact_url("user:pw@host:6379"), "***@host:6379");
/// assert_eq!(redact_url("redis://host:6379/0"), "redis://host:6379/0");
/// assert_eq!(redact_url("/var/cache/a@b"), "/var/cache/a@b");
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    match url_credentials(url) {
        Some(creds) => Cow::Owned(format!(
            "{}{REDACTED}{}",
            &url[..creds.start],
            &url[creds.end..]
        )),
        None => Cow::Borrowed(url),
    }
}

/// Where the credentials of a URL are: between the scheme's `://` (or the start) and the last
/// `@` before the path.
fn url_credentials(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority.rfind('@').map(|at| start..start + at)
}

/// The texts of `value` that are secret: all of it for a secret argument, the credentials of
/// the URLs it holds otherwise.
fn secret_texts(name: &str, value: &ArgValue, out: &mut Vec<String>) {
    match value {
        ArgValue::List(items) => items.iter().for_each(|i| secret_texts(name, i, out)),
        ArgValue::Str(s) if is_secret_argument(name) => out.push(s.clone()),
        // A dict written as text: the secrets of its settings.
        ArgValue::Str(s) if s.trim_start().starts_with('{') => {
            out.extend(url_credentials(s).map(|r| s[r].to_owned()));
            if let Ok(items) = parse_dict(s) {
                items.iter().for_each(|(k, v)| secret_texts(k, v, out));
            }
        }
        ArgValue::Str(s) => out.extend(url_credentials(s).map(|r| s[r].to_owned())),
        ArgValue::Int(_) | ArgValue::Float(_) | ArgValue::Bool(_) if is_secret_argument(name) => {
            out.push(value.to_string())
        }
        _ => {}
    }
}

/// Reads a string from a config file as dogpile does: integers, floats, `true` / `false` (any
/// case) and `None` / `none` become those values; anything else stays a string. Surrounding
/// white space is dropped.
///
/// ```
/// use dogpile_core::{coerce_string, ArgValue};
/// assert_eq!(coerce_string(" 42 "), ArgValue::Int(42));
/// assert_eq!(coerce_string("-1"), ArgValue::Int(-1));
/// assert_eq!(coerce_string("2.5"), ArgValue::Float(2.5));
/// assert_eq!(coerce_string("True"), ArgValue::Bool(true));
/// assert_eq!(coerce_string("none"), ArgValue::None);
/// assert_eq!(coerce_string("127.0.0.1:11211"), ArgValue::Str("127.0.0.1:11211".into()));
/// ```
pub fn coerce_string(s: &str) -> ArgValue {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // Past i64, a whole number is read as a float (Python would keep it exact).
        return t
            .parse::<i64>()
            .map(ArgValue::Int)
            .or_else(|_| t.parse::<f64>().map(ArgValue::Float))
            .unwrap_or_else(|_| ArgValue::Str(t.to_owned()));
    }
    if looks_like_float(digits) {
        if let Ok(x) = t.parse::<f64>() {
            return ArgValue::Float(x);
        }
    }
    if t.eq_ignore_ascii_case("true") {
        return ArgValue::Bool(true);
    }
    if t.eq_ignore_ascii_case("false") {
        return ArgValue::Bool(false);
    }
    if t.eq_ignore_ascii_case("none") {
        return ArgValue::None;
    }
    ArgValue::Str(t.to_owned())
}

/// `\d+(\.\d*)?|\.\d+` with an optional exponent: numbers only, not `inf` or `nan`.
fn looks_like_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = all_digits(int)
        && frac.is_none_or(all_digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok && (frac.is_some() || exponent.is_some())
}

/// The arguments of a backend, read with typed getters whose errors name the argument.
///
/// ```
/// use dogpile_core::Arguments;
/// let args = Arguments::new().with("max_size", 1000).with("url", "a:1, b:2");
/// assert_eq!(args.u64("max_size").unwrap(), Some(1000));
/// assert_eq!(args.string_list("url").unwrap(), Some(vec!["a:1".to_string(), "b:2".to_string()]));
/// let err = args.expect_only("dogpile.cache.memory", &["max_size"]).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "arguments.url: unknown argument for dogpile.cache.memory; it takes: max_size"
/// );
/// ```
///
/// Secrets never show: in its `Debug` the value of a secret argument ([`is_secret_argument`]) is
/// `***`, and so are URL credentials ([`redact_url`]); errors made by [`Arguments::error`] show
/// no secret of these arguments either.
#[derive(Clone, Default, PartialEq)]
pub struct Arguments {
    values: BTreeMap<String, ArgValue>,
    /// What stands before an argument's name in errors: `arguments.` in code,
    /// `cache.local.arguments.` from a config map.
    origin: String,
}

impl Arguments {
    /// No arguments.
    pub fn new() -> Self {
        Arguments {
            values: BTreeMap::new(),
            origin: "arguments.".to_owned(),
        }
    }

    /// Adds an argument.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<ArgValue>) -> Self {
        self.insert(name, value);
        self
    }

    /// Adds an argument.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<ArgValue>) {
        self.values.insert(name.into(), value.into());
    }

    /// The raw value of an argument.
    pub fn get(&self, name: &str) -> Option<&ArgValue> {
        self.values.get(name)
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The arguments, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArgValue)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The full key of an argument, as errors name it.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.origin)
    }

    /// An error about argument `name`. Any secret of these arguments in `message` (the value of
    /// a secret argument, the credentials of a URL, as written or as `{:?}` writes them) shows
    /// as `***`, so a message may echo what it rejects.
    ///
    /// ```
    /// use dogpile_core::Arguments;
    ///
    /// let args = Arguments::new().with("url", "memcache://user:hunter2@host:1/x");
    /// let url = args.string("url").unwrap().unwrap();
    /// let err = args.error("url", format!("{url:?} is not a server address"));
    /// assert_eq!(
    ///     err.to_string(),
    ///     r#"arguments.url: "memcache://***@host:1/x" is not a server address"#
    /// );
    /// ```
    pub fn error(&self, name: &str, message: impl fmt::Display) -> Error {
        Error::config(self.key(name), self.redact(&message.to_string()))
    }

    /// `text` with every secret of these arguments in it shown as `***`: the values of secret
    /// arguments and the credentials of URLs, as written and as `{:?}` writes them. For
    /// messages that echo an argument (or a client library's error about it). Secrets shorter
    /// than 3 characters are left (they would hide words); [`Arguments::error`] and the typed
    /// getters never echo a secret argument's value.
    pub fn redact(&self, text: &str) -> String {
        let mut secrets = Vec::new();
        for (name, value) in &self.values {
            secret_texts(name, value, &mut secrets);
        }
        let escaped: Vec<String> = secrets
            .iter()
            .map(|s| {
                let debug = format!("{s:?}");
                debug[1..debug.len() - 1].to_owned()
            })
            .collect();
        secrets.extend(escaped);
        secrets.retain(|s| s.chars().count() >= 3);
        // The longest first, so a secret holding another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_owned();
        for secret in &secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    fn typed<T>(
        &self,
        name: &str,
        expected: &str,
        convert: impl FnOnce(&ArgValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.values.get(name) {
            None | Some(ArgValue::None) => Ok(None),
            Some(v) => convert(v).map(Some).ok_or_else(|| {
                let shown: &dyn fmt::Display = if is_secret_argument(name) {
                    &REDACTED
                } else {
                    v
                };
                self.error(
                    name,
                    format!("expected {expected}, got {} {shown}", v.type_name()),
                )
            }),
        }
    }

    /// A string argument (numbers and booleans are accepted as their text).
    pub fn string(&self, name: &str) -> Result<Option<String>> {
        self.typed(name, "a string", |v| match v {
            ArgValue::Str(s) => Some(s.clone()),
            ArgValue::Int(_) | ArgValue::Float(_) | ArgValue::Bool(_) => Some(v.to_string()),
            _ => None,
        })
    }

    /// A list of strings: a list, or one string split at commas (as in dogpile's
    /// `"127.0.0.1, 10.0.0.1"`).
    pub fn string_list(&self, name: &str) -> Result<Option<Vec<String>>> {
        self.typed(name, "a string or a list of strings", |v| match v {
            ArgValue::Str(s) => Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            ArgValue::List(items) => items
                .iter()
                .map(|i| match i {
                    ArgValue::Str(s) => Some(s.clone()),
                    ArgValue::Int(_) | ArgValue::Float(_) => Some(i.to_string()),
                    _ => None,
                })
                .collect(),
            _ => None,
        })
    }

    /// A non-negative integer argument.
    pub fn u64(&self, name: &str) -> Result<Option<u64>> {
        self.typed(name, "a non-negative integer", |v| match v {
            ArgValue::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        })
    }

    /// An integer argument.
    pub fn i64(&self, name: &str) -> Result<Option<i64>> {
        self.typed(name, "an integer", |v| match v {
            ArgValue::Int(i) => Some(*i),
            _ => None,
        })
    }

    /// A number argument.
    pub fn f64(&self, name: &str) -> Result<Option<f64>> {
        self.typed(name, "a number", |v| match v {
            ArgValue::Int(i) => Some(*i as f64),
            ArgValue::Float(x) => Some(*x),
            _ => None,
        })
    }

    /// A boolean argument.
    pub fn bool(&self, name: &str) -> Result<Option<bool>> {
        self.typed(name, "true or false", |v| match v {
            ArgValue::Bool(b) => Some(*b),
            _ => None,
        })
    }

    /// A duration given in seconds (whole or fractional, not negative).
    pub fn seconds(&self, name: &str) -> Result<Option<Duration>> {
        self.typed(name, "a number of seconds (0 or more)", |v| match v {
            ArgValue::Int(i) => u64::try_from(*i).ok().map(Duration::from_secs),
            ArgValue::Float(x) => Duration::try_from_secs_f64(*x).ok(),
            _ => None,
        })
    }

    /// Fails, naming the argument, if any argument is not in `known`: a mistyped argument is
    /// an error, not a silent default.
    pub fn expect_only(&self, backend: &str, known: &[&str]) -> Result<()> {
        self.expect_only_with_dicts(backend, known, &[])
    }

    /// [`expect_only`](Arguments::expect_only) where the arguments named in `dicts` (all of them
    /// in `known`) hold dicts, whose settings may be written `dict.NAME` (dogpile's dict form in
    /// config maps); the backend reads each with [`Arguments::nested`] and checks its names.
    /// A dotted name under any other argument is unknown.
    pub fn expect_only_with_dicts(
        &self,
        backend: &str,
        known: &[&str],
        dicts: &[&str],
    ) -> Result<()> {
        let is_known = |k: &str| {
            known.contains(&k) || k.split_once('.').is_some_and(|(t, _)| dicts.contains(&t))
        };
        match self.values.keys().find(|k| !is_known(k)) {
            None => Ok(()),
            Some(k) => Err(self.error(
                k,
                format!(
                    "unknown argument for {backend}; it takes: {}",
                    if known.is_empty() {
                        "no arguments".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )),
        }
    }
}

impl Arguments {
    /// The settings nested under `name`, as arguments of their own (whose errors name them in
    /// full: `arguments.connection_kwargs.ssl_ca_certs`): every argument `name.SETTING`, as a
    /// config map writes them (`PREFIXarguments.connection_kwargs.ssl_ca_certs = …`, dogpile's
    /// dict form) and code may too; or one value written as a dict, `{'ssl_ca_certs': '/ca.pem',
    /// 'ssl_check_hostname': False}` (Python's or JSON's quotes; values coerced as
    /// [`coerce_string`] does, quoted ones kept as text). Empty when there are none.
    ///
    /// ```
    /// use dogpile_core::{ArgValue, Arguments};
    ///
    /// let dotted = Arguments::new().with("connection_kwargs.ssl_ca_certs", "/ca.pem");
    /// let written = Arguments::new()
    ///     .with("connection_kwargs", "{'ssl_ca_certs': '/ca.pem', 'health_check_interval': 30}");
    /// for args in [dotted, written] {
    ///     let kwargs = args.nested("connection_kwargs").unwrap();
    ///     assert_eq!(kwargs.string("ssl_ca_certs").unwrap().as_deref(), Some("/ca.pem"));
    /// }
    /// let err = Arguments::new().with("connection_kwargs", 3).nested("connection_kwargs").unwrap_err();
    /// assert!(err.to_string().starts_with("arguments.connection_kwargs: expected a dict"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the argument when `name` holds a value that is not a dict, or a
    /// dict that does not parse.
    pub fn nested(&self, name: &str) -> Result<Arguments> {
        let mut out = Arguments {
            values: BTreeMap::new(),
            origin: format!("{}{name}.", self.origin),
        };
        match self.values.get(name) {
            None | Some(ArgValue::None) => {}
            Some(ArgValue::Str(text)) => {
                for (k, v) in parse_dict(text).map_err(|why| {
                    self.error(
                        name,
                        format!("expected a dict such as {{'name': 'value'}}: {why}"),
                    )
                })? {
                    out.values.insert(k, v);
                }
            }
            Some(other) => {
                return Err(self.error(
                    name,
                    format!(
                        "expected a dict such as {{'name': 'value'}} (or settings written as {name}.NAME), got {}",
                        other.type_name()
                    ),
                ))
            }
        }
        let prefix = format!("{name}.");
        for (k, v) in &self.values {
            if let Some(setting) = k.strip_prefix(&prefix) {
                out.values.insert(setting.to_owned(), v.clone());
            }
        }
        Ok(out)
    }
}

/// A dict written in a config file: `{'a': 'x', "b": 2, 'c': True}`. Keys are quoted or bare
/// words; quoted values are text, others are coerced as [`coerce_string`] does; no nesting.
fn parse_dict(text: &str) -> std::result::Result<Vec<(String, ArgValue)>, String> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or("it must start with { and end with }")?;
    let mut items = Vec::new();
    // Messages name items by position, never by their text: a value may be a secret.
    for (n, item) in split_outside_quotes(inner, ',')?.into_iter().enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let parts = split_outside_quotes(item, ':')?;
        let [key, value] = match parts.as_slice() {
            [k, rest @ ..] if !rest.is_empty() => [*k, &item[k.len() + 1..]],
            _ => return Err(format!("item {} is not key: value", n + 1)),
        };
        let key = match unquote(key.trim())? {
            Some(k) => k,
            None => key.trim().to_owned(),
        };
        if key.is_empty() {
            return Err("a key is empty".into());
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("the value of {key:?} is empty"));
        }
        if value.starts_with(['{', '[']) {
            return Err(format!(
                "the value of {key:?} nests a dict or a list; write it as {key}.NAME settings"
            ));
        }
        let value = match unquote(value)? {
            Some(text) => ArgValue::Str(text),
            // Credentials are text, as in config maps: a password 0123 stays 0123.
            None if is_credential(&key) => ArgValue::Str(value.to_owned()),
            None => coerce_string(value),
        };
        items.push((key, value));
    }
    Ok(items)
}

/// The text of a quoted string (`'x'` or `"x"`), `None` when `s` is not quoted.
fn unquote(s: &str) -> std::result::Result<Option<String>, String> {
    let Some(q) = s.chars().next().filter(|c| matches!(c, '\'' | '"')) else {
        return Ok(None);
    };
    let body = s[1..]
        .strip_suffix(q)
        .filter(|_| s.len() >= 2)
        .ok_or("a quoted text has no closing quote")?;
    Ok(Some(body.to_owned()))
}

/// `s` split at `sep` where it stands outside quotes.
fn split_outside_quotes(s: &str, sep: char) -> std::result::Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut start, mut quote) = (0, None);
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == sep => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            None => {}
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

impl fmt::Debug for Arguments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// The values, those of secret arguments as `***`.
        struct Values<'a>(&'a BTreeMap<String, ArgValue>);
        impl fmt::Debug for Values<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let hidden = Secret(());
                let mut map = f.debug_map();
                for (name, value) in self.0 {
                    if is_secret_argument(name) {
                        map.entry(name, &hidden);
                        continue;
                    }
                    // A dict written as text shows with its secrets as `***`; one that does not
                    // parse (so its secrets cannot be found) shows as `***` whole.
                    let mut secrets = Vec::new();
                    if let ArgValue::Str(text) = value {
                        if text.trim_start().starts_with('{') && parse_dict(text).is_err() {
                            map.entry(name, &hidden);
                            continue;
                        }
                        if text.trim_start().starts_with('{') {
                            secret_texts(name, value, &mut secrets);
                            secrets.retain(|s| !s.is_empty());
                            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
                            let mut shown = text.clone();
                            for secret in &secrets {
                                shown = shown.replace(secret.as_str(), REDACTED);
                            }
                            map.entry(name, &ArgValue::Str(shown));
                            continue;
                        }
                    }
                    map.entry(name, value);
                }
                map.finish()
            }
        }
        f.debug_struct("Arguments")
            .field("values", &Values(&self.values))
            .field("origin", &self.origin)
            .finish()
    }
}

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
                        ArgValue::None => None,
                        ArgValue::Int(-1) => Some(Expiration::Never),
                        ArgValue::Int(i) if i >= 0 => {
                            Some(Expiration::After(Duration::from_secs(i as u64)))
                        }
                        ArgValue::Float(x) if Duration::try_from_secs_f64(x).is_ok() => {
                            Duration::try_from_secs_f64(x).ok().map(Expiration::After)
                        }
                        other => {
                            return Err(Error::config(
                                k,
                                format!(
                                    "expected a number of seconds (0 or more), -1 for never, or none; got {other}"
                                ),
                            ))
                        }
                    }
                }
                "lock_blocking_timeout" => {
                    lock_timeout = match coerce_string(v) {
                        ArgValue::None => None,
                        ArgValue::Int(i) if i >= 0 => Some(Duration::from_secs(i as u64)),
                        ArgValue::Float(x) if Duration::try_from_secs_f64(x).is_ok() => {
                            Duration::try_from_secs_f64(x).ok()
                        }
                        other => {
                            return Err(Error::config(
                                k,
                                format!("expected a number of seconds (0 or more) or none; got {other}"),
                            ))
                        }
                    }
                }
                "lock_blocking" => {
                    lock_blocking = match coerce_string(v) {
                        ArgValue::Bool(b) => b,
                        other => {
                            return Err(Error::config(k, format!("expected true or false, got {other}")))
                        }
                    }
                }
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
                "replace_existing_backend" => {
                    replace = match coerce_string(v) {
                        ArgValue::Bool(b) => b,
                        other => {
                            return Err(Error::config(k, format!("expected true or false, got {other}")))
                        }
                    }
                }
                _ => {
                    return Err(Error::config(
                        k,
                        format!(
                            "unknown configuration key; under {prefix:?} dogpile reads backend, expiration_time, replace_existing_backend, lock_blocking_timeout, lock_blocking, serializer, wire_format, wrap and arguments.NAME"
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
        Ok(config)
    }
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
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
