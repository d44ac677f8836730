//! Region invalidation: `invalidate(hard)`, and the strategy behind it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

    /// Whether a value created at `created_at` is invalidated at all.
    fn is_invalidated(&self, created_at: Timestamp) -> bool {
        self.is_hard_invalidated(created_at) || self.is_soft_invalidated(created_at)
    }
}

/// The default strategy: the time and kind of the last invalidation, kept in the region.
///
/// Values created strictly before that time are invalidated; a value created at the same instant
/// (possible with a manual clock) is not.
#[derive(Debug, Default)]
pub struct DefaultInvalidation {
    /// Nanoseconds since the epoch of the last invalidation; 0 for none.
    at: AtomicU64,
    hard: AtomicBool,
}

impl DefaultInvalidation {
    /// A strategy with no invalidation yet.
    pub const fn new() -> Self {
        DefaultInvalidation {
            at: AtomicU64::new(0),
            hard: AtomicBool::new(false),
        }
    }

    /// Whether any invalidation has happened: one load, for the hit path's fast exit.
    #[inline]
    pub(crate) fn ever_invalidated(&self) -> bool {
        self.at.load(Ordering::Relaxed) != 0
    }

    fn before_last(&self, created_at: Timestamp) -> bool {
        let at = self.at.load(Ordering::Acquire);
        at != 0 && created_at.as_nanos() < at
    }
}

impl RegionInvalidationStrategy for DefaultInvalidation {
    fn invalidate(&self, hard: bool, now: Timestamp) {
        // The kind first, then the time: a reader that sees the new time sees its kind.
        self.hard.store(hard, Ordering::Release);
        self.at.store(now.as_nanos().max(1), Ordering::Release);
    }

    #[inline]
    fn is_hard_invalidated(&self, created_at: Timestamp) -> bool {
        self.before_last(created_at) && self.hard.load(Ordering::Acquire)
    }

    #[inline]
    fn is_soft_invalidated(&self, created_at: Timestamp) -> bool {
        self.before_last(created_at) && !self.hard.load(Ordering::Acquire)
    }

    fn was_hard_invalidated(&self) -> bool {
        self.at.load(Ordering::Acquire) != 0 && self.hard.load(Ordering::Acquire)
    }

    fn was_soft_invalidated(&self) -> bool {
        self.at.load(Ordering::Acquire) != 0 && !self.hard.load(Ordering::Acquire)
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
}
