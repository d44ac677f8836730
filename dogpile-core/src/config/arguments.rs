//! The typed arguments of a backend: [`ArgValue`], dogpile's string coercion
//! ([`coerce_string`]), and [`Arguments`] with getters whose errors name the argument, nested
//! settings (dicts) included.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::secrets::{
    is_credential, is_secret_argument, redact_url, secret_texts, Secret, REDACTED,
};
use super::{bounded_seconds, SECONDS_EXPECTED};
use crate::error::{Error, Result};

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
    pub(super) values: BTreeMap<String, ArgValue>,
    /// What stands before an argument's name in errors: `arguments.` in code,
    /// `cache.local.arguments.` from a config map.
    pub(super) origin: String,
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

    /// A duration given in seconds (whole or fractional, from 0 to [`MAX_SECONDS`](super::MAX_SECONDS), a hundred
    /// years: a longer one is a mistake, and a deadline that far would overflow the clock).
    ///
    /// ```
    /// use dogpile_core::config::Arguments;
    ///
    /// let args = Arguments::new().with("socket_timeout", 2.5).with("lock_timeout", 1e19);
    /// assert_eq!(args.seconds("socket_timeout").unwrap(), Some(std::time::Duration::from_millis(2500)));
    /// let e = args.seconds("lock_timeout").unwrap_err().to_string();
    /// assert!(e.starts_with("arguments.lock_timeout: expected a number of seconds"), "{e}");
    /// ```
    pub fn seconds(&self, name: &str) -> Result<Option<Duration>> {
        self.typed(name, SECONDS_EXPECTED, bounded_seconds)
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
pub(super) fn parse_dict(text: &str) -> std::result::Result<Vec<(String, ArgValue)>, String> {
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
