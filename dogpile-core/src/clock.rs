//! The time source of a region.
//!
//! A region reads time through a [`Clock`], so tests replace it with a [`ManualClock`] and never
//! sleep. The system clock has two readings: a precise one for creation and invalidation times
//! (taken only when a value is written) and a coarse one, a few milliseconds fine, for the age check
//! on the hit path, where `SystemTime::now()` would cost more than the map lookup.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: nanoseconds since the Unix epoch.
///
/// Stored in every [`CachedValue`](crate::CachedValue)'s metadata, so that processes sharing a
/// backend agree on ages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The timestamp of a `SystemTime` (times before the epoch count as the epoch).
    pub fn from_system_time(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// This timestamp as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// This timestamp moved forward by `d` (saturating).
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

/// Where a region reads the time.
#[derive(Clone, Default)]
pub enum Clock {
    /// The system's real-time clock.
    #[default]
    System,
    /// A clock that moves only when told to; for tests.
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// A manual clock starting at `start`, and the handle that moves it.
    pub fn manual(start: SystemTime) -> (Clock, Arc<ManualClock>) {
        let m = Arc::new(ManualClock::new(start));
        (Clock::Manual(m.clone()), m)
    }

    /// The precise current time.
    #[inline]
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::from_system_time(SystemTime::now()),
            Clock::Manual(m) => m.now(),
        }
    }

    /// The current time, a few milliseconds fine; cheap enough for every cache hit.
    #[inline]
    pub fn now_coarse(&self) -> Timestamp {
        match self {
            Clock::System => coarse_realtime(),
            Clock::Manual(m) => m.now(),
        }
    }
}

/// `CLOCK_REALTIME_COARSE`: the kernel's real-time clock as of the last tick, read through the
/// vDSO in a few nanoseconds (a precise read costs several times that).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn coarse_realtime() -> Timestamp {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call writes only into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 {
        return Timestamp::from_system_time(SystemTime::now());
    }
    Timestamp((ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn coarse_realtime() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clock::System => f.write_str("Clock::System"),
            Clock::Manual(m) => write!(f, "Clock::Manual({:?})", m.now()),
        }
    }
}

/// A clock for tests: it stands still until [`advance`](ManualClock::advance) or
/// [`set`](ManualClock::set) moves it.
#[derive(Debug)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            nanos: AtomicU64::new(Timestamp::from_system_time(start).0),
        }
    }

    /// The time it shows.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.nanos.load(Ordering::SeqCst))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let add = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(add, Ordering::SeqCst);
    }

    /// Sets the time it shows.
    pub fn set(&self, t: SystemTime) {
        self.nanos
            .store(Timestamp::from_system_time(t).0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let (clock, handle) = Clock::manual(UNIX_EPOCH + Duration::from_secs(100));
        assert_eq!(clock.now(), Timestamp::from_nanos(100_000_000_000));
        assert_eq!(clock.now(), clock.now_coarse());
        handle.advance(Duration::from_millis(1500));
        assert_eq!(
            clock
                .now()
                .saturating_since(Timestamp::from_nanos(100_000_000_000)),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn coarse_system_clock_is_close_to_the_precise_one() {
        // Bracketed by two precise reads, so however long this thread waits in between, the
        // coarse reading is never after the second and at most a tick (1-10 ms) before the
        // first; a second of slack still catches a clock on the wrong epoch or in the wrong unit.
        let c = Clock::System;
        let before = c.now();
        let coarse = c.now_coarse();
        let after = c.now();
        assert!(coarse <= after, "coarse {coarse:?} after precise {after:?}");
        assert!(
            before.saturating_since(coarse) < Duration::from_secs(1),
            "coarse {coarse:?} far before precise {before:?}"
        );
    }

    #[test]
    fn timestamps_convert_to_system_time_and_back() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(Timestamp::from_system_time(t).to_system_time(), t);
    }
}
