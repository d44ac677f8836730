//! Secrets in configuration: which arguments hold them, URL credentials, and [`Secret`], so
//! that no password or token reaches a `Debug` text, an error or a log.

use std::borrow::Cow;
use std::fmt;

use super::arguments::{parse_dict, ArgValue};

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
/// `Debug` of [`Arguments`](super::Arguments) and [`RegionConfig`](super::RegionConfig) and in configuration errors, and a config map's
/// text is taken as written (see [`RegionConfig::from_config`](super::RegionConfig::from_config)).
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
/// assert!(is_secret_argument("pass"));
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
            matches!(part.as_str(), "keyfile" | "pwd" | "pass" | "credentials")
                || ENDINGS.iter().any(|w| part.ends_with(w))
        })
}

/// Whether a config map's text for this argument is taken as written, with no coercion to a
/// number, a boolean or none: the secrets, and the user name that goes with a password.
pub(super) fn is_credential(name: &str) -> bool {
    is_secret_argument(name)
        || matches!(
            name.to_ascii_lowercase().as_str(),
            "username" | "user" | "login" | "sasl_username"
        )
}

/// `url` with the credentials it holds shown as `***`: the user information before `@` (a user
/// name, a password, both) and the values of query parameters that name one (`?pass=`,
/// `&password=`: `redis+unix://` URLs carry theirs there); a text without them is returned as
/// it is. Addresses without a scheme (`user:pw@host:6379`) are read the same way, and so is
/// each entry of a comma-separated list of addresses.
///
/// ```
/// use dogpile_core::config::redact_url;
///
/// assert_eq!(redact_url("redis://:pw@host:6379/0"), "redis://***@host:6379/0");
/// assert_eq!(redact_url("redis://user:p@ss@host"), "redis://***@host");
/// assert_eq!(redact_url("user:pw@host:6379"), "***@host:6379");
/// assert_eq!(redact_url("redis://host:6379/0"), "redis://host:6379/0");
/// assert_eq!(redact_url("/var/cache/a@b"), "/var/cache/a@b");
/// // A password with `/`, `?` or `#` unescaped: the URL does not parse, and no part of the
/// // password shows in what says so.
/// assert_eq!(redact_url("redis://:s3cr/et@host:6379/0"), "redis://***@host:6379/0");
/// assert_eq!(redact_url("memcache://u:p?w#d@host"), "memcache://***@host");
/// // In the query of a socket URL, and in a list whose first address has no scheme.
/// assert_eq!(
///     redact_url("redis+unix:///tmp/r.sock?db=1&pass=hunter2"),
///     "redis+unix:///tmp/r.sock?db=1&pass=***"
/// );
/// assert_eq!(
///     redact_url("user:hunter2@10.0.0.1:11211, memcache://10.0.0.2:11211"),
///     "***@10.0.0.1:11211, memcache://10.0.0.2:11211"
/// );
/// // A query password holding `,` or a space is hidden whole; one holding `@` with the path
/// // before it (the `@` might end user information).
/// assert_eq!(redact_url("unix:///s?pass=hun,ter 2&db=1"), "unix:///s?pass=***&db=1");
/// assert_eq!(redact_url("unix:///s?pass=hun@ter2&db=1"), "unix://***&db=1");
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let secrets = credential_ranges(url, true);
    if secrets.is_empty() {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len());
    let mut from = 0;
    for r in secrets {
        out.push_str(&url[from..r.start]);
        out.push_str(REDACTED);
        from = r.end;
    }
    out.push_str(&url[from..]);
    Cow::Owned(out)
}

/// Where the credentials of a URL (or of a list of them) are, in order and apart; with
/// `user_names`, the values of query parameters naming a user too (for texts to show: a user
/// name alone is no secret to hunt for in other texts, where `default` or `redis` are words).
///
/// The user information runs from the first scheme's `://` (or the start) to the last `@` of
/// the text; from the start when an `@` comes before that `://` (a list whose first address has
/// no scheme). Not the last `@` before the path: a password written with `/`, `?` or `#`
/// unescaped would end the authority early and show. Taking the last `@` of the whole text
/// hides the host too when a path or query holds an `@`, or the addresses between two
/// credentials of a list: hiding too much is the safe side. A text with no scheme that starts
/// with `/` is a file path, whose `@` is no credential.
///
/// Then, over the whole text, the value of each `?name=` or `&name=` that names a credential,
/// up to the next `&` or `#` (a password may hold `@`, `,` or a space unescaped: what follows is
/// hidden with it); in a dict written as text, also up to a quote, which ends the URL's text.
fn credential_ranges(url: &str, user_names: bool) -> Vec<std::ops::Range<usize>> {
    let scheme_end = url.find("://").map(|i| i + 3);
    let start = match (scheme_end, url.find('@')) {
        (Some(end), Some(at)) if at < end => Some(0),
        (Some(end), _) => Some(end),
        (None, _) if url.starts_with('/') => None,
        (None, _) => Some(0),
    };
    let mut ranges = Vec::new();
    if let Some(start) = start {
        if let Some(at) = url[start..].rfind('@') {
            ranges.push(start..start + at);
        }
    }
    let value_ends: &[char] = if url.trim_start().starts_with('{') {
        &['&', '#', '\'', '"']
    } else {
        &['&', '#']
    };
    let mut i = 0;
    while let Some(off) = url[i..].find(['?', '&']) {
        let name_start = i + off + 1;
        let rest = &url[name_start..];
        let name_len = rest.find(['=', '&', '#', '?']).unwrap_or(rest.len());
        i = name_start + name_len;
        if !rest[name_len..].starts_with('=') {
            continue;
        }
        let value_start = i + 1;
        let value_len = url[value_start..]
            .find(value_ends)
            .unwrap_or(url.len() - value_start);
        let name = &rest[..name_len];
        // `is_secret_argument` names redis-rs's `pass` too.
        let secret = is_secret_argument(name) || (user_names && is_credential(name));
        if value_len > 0 && secret {
            ranges.push(value_start..value_start + value_len);
        }
        i = value_start + value_len;
    }
    // The user information and a query value can overlap (a query before the last `@`).
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// The texts of `value` that are secret: all of it for a secret argument, the credentials of
/// the URLs it holds otherwise.
pub(super) fn secret_texts(name: &str, value: &ArgValue, out: &mut Vec<String>) {
    match value {
        ArgValue::List(items) => items.iter().for_each(|i| secret_texts(name, i, out)),
        ArgValue::Str(s) if is_secret_argument(name) => out.push(s.clone()),
        // A dict written as text: the secrets of its settings.
        ArgValue::Str(s) if s.trim_start().starts_with('{') => {
            out.extend(
                credential_ranges(s, false)
                    .into_iter()
                    .map(|r| s[r].to_owned()),
            );
            if let Ok(items) = parse_dict(s) {
                items.iter().for_each(|(k, v)| secret_texts(k, v, out));
            }
        }
        ArgValue::Str(s) => out.extend(
            credential_ranges(s, false)
                .into_iter()
                .map(|r| s[r].to_owned()),
        ),
        ArgValue::Int(_) | ArgValue::Float(_) | ArgValue::Bool(_) if is_secret_argument(name) => {
            out.push(value.to_string())
        }
        _ => {}
    }
}
