//! Region invalidation: `invalidate(hard)`, and the strategy behind it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Timestamp;

/// Decides which values an `invalidate` call has made absent (hard) or expired (soft).
///
/// A region uses [`DefaultInvalidation`], which keeps the time of the last invalidation in the
/// region: it holds in this process. A strategy that keeps that time in a shared store makes
/// invalidation hold across processes; pass one to
/// [`RegionConfig::region_invalidator`](crate::RegionConfig::region_invalidator).
pub trait RegionInvalidationStrategy: Send + Sync + 'static {
    /// Records an invalidation at `now`: hard (values count as absent) or soft (as expired).
    fn invalidate(&self, hard: bool, now: Timestamp);

    /// Whether a value created at `created_at` is hard-invalidated: treated as absent.
    fn is_hard_invalidated(&self, created_at: Timestamp) -> bool;

    /// Whether a value created at `created_at` is soft-invalidated: treated as expired.
    fn is_soft_invalidated(&self, created_at: Timestamp) -> bool;

    /// Whether the last invalidation was hard.
    fn was_hard_invalidated(&self) -> bool;

    /// Whether the last invalidation was soft.
    fn was_soft_invalidated(&self) -> bool;

    /// Whether any invalidation may have happened. `false` lets the hit path skip asking about
    /// each value; the default, `true`, always asks.
    fn ever_invalidated(&self) -> bool {
        true
    }

    /// Whether a value created at `created_at` is invalidated at all.
    fn is_invalidated(&self, created_at: Timestamp) -> bool {
        self.is_hard_invalidated(created_at) || self.is_soft_invalidated(created_at)
    }
}

/// The default strategy: the times of the last hard and of the last soft invalidation, kept in
/// the region.
///
/// The two kinds have a slot each, so a soft invalidation never weakens an earlier hard one: a
/// value created before the last hard invalidation stays absent whatever comes after, and one
/// created after it but before the last soft one is expired. Each slot is one atomic word, so a
/// reader never sees half of an invalidation.
///
/// Values created strictly before an invalidation's time are invalidated; a value created at the
/// same instant (possible with a manual clock) is not.
#[derive(Debug, Default)]
pub struct DefaultInvalidation {
    /// Nanoseconds since the epoch of the last hard invalidation; 0 for none.
    hard: AtomicU64,
    /// Nanoseconds since the epoch of the last soft invalidation; 0 for none.
    soft: AtomicU64,
}

impl DefaultInvalidation {
    /// A strategy with no invalidation yet.
    pub const fn new() -> Self {
        DefaultInvalidation {
            hard: AtomicU64::new(0),
            soft: AtomicU64::new(0),
        }
    }

    /// The times of the last hard and the last soft invalidation (nanoseconds; 0 for none).
    pub(crate) fn times(&self) -> (u64, u64) {
        (
            self.hard.load(Ordering::Acquire),
            self.soft.load(Ordering::Acquire),
        )
    }

    /// Whether any invalidation has happened: the hit path's fast exit.
    #[inline]
    pub(crate) fn ever_invalidated(&self) -> bool {
        (self.hard.load(Ordering::Relaxed) | self.soft.load(Ordering::Relaxed)) != 0
    }
}

/// Whether `created_at` is before the invalidation kept in `slot` (0: none).
#[inline]
fn before(slot: &AtomicU64, created_at: Timestamp) -> bool {
    created_at.as_nanos() < slot.load(Ordering::Acquire)
}

impl RegionInvalidationStrategy for DefaultInvalidation {
    fn invalidate(&self, hard: bool, now: Timestamp) {
        let slot = if hard { &self.hard } else { &self.soft };
        // `fetch_max`: two invalidations racing keep the later time, whichever stores last.
        slot.fetch_max(now.as_nanos().max(1), Ordering::AcqRel);
    }

    #[inline]
    fn is_hard_invalidated(&self, created_at: Timestamp) -> bool {
        before(&self.hard, created_at)
    }

    #[inline]
    fn is_soft_invalidated(&self, created_at: Timestamp) -> bool {
        // A value the hard slot has made absent is not merely expired.
        before(&self.soft, created_at) && !before(&self.hard, created_at)
    }

    fn was_hard_invalidated(&self) -> bool {
        let hard = self.hard.load(Ordering::Acquire);
        hard != 0 && hard >= self.soft.load(Ordering::Acquire)
    }

    fn was_soft_invalidated(&self) -> bool {
        self.soft.load(Ordering::Acquire) > self.hard.load(Ordering::Acquire)
    }

    #[inline]
    fn ever_invalidated(&self) -> bool {
        DefaultInvalidation::ever_invalidated(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_and_soft() {
        let s = DefaultInvalidation::new();
        let t = |n| Timestamp::from_nanos(n);
        assert!(!s.is_invalidated(t(5)));
        assert!(!s.was_hard_invalidated() && !s.was_soft_invalidated());
        s.invalidate(true, t(10));
        assert!(s.is_hard_invalidated(t(9)));
        assert!(!s.is_hard_invalidated(t(10)));
        assert!(!s.is_soft_invalidated(t(9)));
        assert!(s.was_hard_invalidated());
        s.invalidate(false, t(20));
        assert!(s.is_soft_invalidated(t(19)));
        assert!(!s.is_hard_invalidated(t(19)));
        assert!(s.was_soft_invalidated());
    }

    #[test]
    fn a_soft_invalidation_after_a_hard_one_keeps_older_values_absent() {
        let s = DefaultInvalidation::new();
        let t = |n| Timestamp::from_nanos(n);
        s.invalidate(true, t(10));
        s.invalidate(false, t(20));
        // Created before the hard invalidation: still absent, not merely stale.
        assert!(s.is_hard_invalidated(t(5)));
        assert!(!s.is_soft_invalidated(t(5)));
        // Created between the two: stale.
        assert!(!s.is_hard_invalidated(t(15)));
        assert!(s.is_soft_invalidated(t(15)));
        assert!(!s.is_invalidated(t(25)));
        // A later hard invalidation covers everything before it again.
        s.invalidate(true, t(30));
        assert!(s.is_hard_invalidated(t(25)) && !s.is_soft_invalidated(t(25)));
        assert!(s.was_hard_invalidated() && !s.was_soft_invalidated());
    }
}
