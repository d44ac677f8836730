//! How long a value stays fresh.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;

/// How long a value stays fresh: a duration, never, or a function asked on every call.
///
/// ```
/// use std::time::Duration;
/// use dogpile_core::Expiration;
///
/// assert_eq!(Expiration::from(300u64).resolve(), Some(Duration::from_secs(300)));
/// assert_eq!(Expiration::from(-1).resolve(), None); // -1 means never, as in dogpile
/// let until_midnight = Expiration::computed(|| Some(Duration::from_secs(42)));
/// assert_eq!(until_midnight.resolve(), Some(Duration::from_secs(42)));
/// ```
#[derive(Clone)]
pub enum Expiration {
    /// Fresh for this long after creation; `Duration::ZERO` expires at once.
    After(Duration),
    /// Never expires (`-1` in dogpile's configuration).
    Never,
    /// Asked on every call: `Some(d)` is a duration, `None` is never. For "cache until the end of
    /// the day" and other expirations that depend on when the call happens.
    Computed(Arc<dyn Fn() -> Option<Duration> + Send + Sync>),
}

impl Expiration {
    /// An expiration computed by `f` on every call.
    pub fn computed(f: impl Fn() -> Option<Duration> + Send + Sync + 'static) -> Self {
        Expiration::Computed(Arc::new(f))
    }

    /// Whole seconds, with dogpile's convention that a negative number (`-1`) means never.
    pub fn from_secs_signed(secs: i64) -> Self {
        match u64::try_from(secs) {
            Ok(s) => Expiration::After(Duration::from_secs(s)),
            Err(_) => Expiration::Never,
        }
    }

    /// The duration in force now: `None` means never.
    #[inline]
    pub fn resolve(&self) -> Option<Duration> {
        match self {
            Expiration::After(d) => Some(*d),
            Expiration::Never => None,
            Expiration::Computed(f) => f(),
        }
    }
}

/// Whether a value created at `created` is expired at `now` under `ttl` (`None`: never).
///
/// Strict: a value is expired when its age is *more* than the duration, except that a zero
/// duration expires at once (even when a coarse `now` lags the precise creation time).
#[inline]
///
/// `now` is asked only when the answer depends on it, so the hit path reads no clock for a
/// value that never expires.
pub(crate) fn is_expired(
    ttl: Option<Duration>,
    created: Timestamp,
    now: impl FnOnce() -> Timestamp,
) -> bool {
    match ttl {
        None => false,
        Some(d) if d.is_zero() => true,
        Some(d) => now().saturating_since(created) > d,
    }
}

impl From<Duration> for Expiration {
    fn from(d: Duration) -> Self {
        Expiration::After(d)
    }
}

impl From<u64> for Expiration {
    fn from(secs: u64) -> Self {
        Expiration::After(Duration::from_secs(secs))
    }
}

impl From<u32> for Expiration {
    fn from(secs: u32) -> Self {
        Expiration::After(Duration::from_secs(secs.into()))
    }
}

impl From<i64> for Expiration {
    fn from(secs: i64) -> Self {
        Expiration::from_secs_signed(secs)
    }
}

impl From<i32> for Expiration {
    fn from(secs: i32) -> Self {
        Expiration::from_secs_signed(secs.into())
    }
}

impl From<Option<Duration>> for Expiration {
    fn from(d: Option<Duration>) -> Self {
        d.map_or(Expiration::Never, Expiration::After)
    }
}

impl fmt::Debug for Expiration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expiration::After(d) => write!(f, "Expiration::After({d:?})"),
            Expiration::Never => f.write_str("Expiration::Never"),
            Expiration::Computed(_) => f.write_str("Expiration::Computed(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: u64) -> Timestamp {
        Timestamp::from_nanos(secs * 1_000_000_000)
    }

    #[test]
    fn expiry_is_strict() {
        let ttl = Some(Duration::from_secs(10));
        assert!(!is_expired(ttl, ts(100), || ts(110)));
        assert!(is_expired(ttl, ts(100), || ts(110)
            .saturating_add(Duration::from_nanos(1))));
    }

    #[test]
    fn an_expiration_past_the_nanosecond_range_never_passes_and_sub_seconds_count() {
        let latest = || Timestamp::from_nanos(u64::MAX);
        assert!(!is_expired(Some(Duration::MAX), ts(0), latest));
        assert!(!is_expired(
            Some(Duration::from_secs(u64::MAX / 1_000_000_000 + 1)),
            ts(0),
            latest
        ));
        let ttl = Some(Duration::new(1, 500_000_000));
        let at = |nanos: u64| move || Timestamp::from_nanos(1_000_000_000 + nanos);
        assert!(!is_expired(ttl, ts(1), at(1_500_000_000)));
        assert!(is_expired(ttl, ts(1), at(1_500_000_001)));
        // A clock behind the stamp: not expired (age zero).
        assert!(!is_expired(Some(Duration::from_nanos(1)), ts(5), || ts(4)));
    }

    #[test]
    fn zero_expires_at_once_and_never_never_does() {
        assert!(is_expired(Some(Duration::ZERO), ts(100), || ts(100)));
        assert!(is_expired(Some(Duration::ZERO), ts(100), || ts(99)));
        assert!(!is_expired(None, ts(0), || ts(u64::MAX / 2_000_000_000)));
    }

    #[test]
    fn minus_one_is_never() {
        assert_eq!(Expiration::from(-1).resolve(), None);
        assert_eq!(Expiration::from(-1i64).resolve(), None);
        assert_eq!(Expiration::from(0).resolve(), Some(Duration::ZERO));
    }

    #[test]
    fn computed_is_asked_each_time() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let n = Arc::new(AtomicU64::new(0));
        let n2 = n.clone();
        let e = Expiration::computed(move || {
            Some(Duration::from_secs(n2.fetch_add(1, Ordering::SeqCst)))
        });
        assert_eq!(e.resolve(), Some(Duration::from_secs(0)));
        assert_eq!(e.resolve(), Some(Duration::from_secs(1)));
    }
}
