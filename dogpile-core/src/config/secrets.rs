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
pub(super) fn is_credential(name: &str) -> bool {
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
/// // A password with `/`, `?` or `#` unescaped: the URL does not parse, and no part of the
/// // password shows in what says so.
/// assert_eq!(redact_url("redis://:s3cr/et@host:6379/0"), "redis://***@host:6379/0");
/// assert_eq!(redact_url("memcache://u:p?w#d@host"), "memcache://***@host");
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
/// `@` of the text.
///
/// Not the last `@` before the path: a password written with `/`, `?` or `#` unescaped would
/// end the authority early and show. Taking the last `@` of the whole text hides the host too
/// when a path or query holds an `@`: hiding too much is the safe side. A text with no scheme
/// that starts with `/` is a file path, whose `@` is no credential.
fn url_credentials(url: &str) -> Option<std::ops::Range<usize>> {
    let (start, rest) = match url.find("://") {
        Some(i) => (i + 3, &url[i + 3..]),
        None if url.starts_with('/') => return None,
        None => (0, url),
    };
    rest.rfind('@').map(|at| start..start + at)
}

/// The texts of `value` that are secret: all of it for a secret argument, the credentials of
/// the URLs it holds otherwise.
pub(super) fn secret_texts(name: &str, value: &ArgValue, out: &mut Vec<String>) {
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
