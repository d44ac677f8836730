//! The pause between two looks of a waiter that polls a lock held elsewhere (another process's
//! file lock, a Redis or memcached lock key), and between two attempts of a Redis backplane
//! subscription to reconnect: 0.5 ms, doubling up to a ceiling, never past the waiter's
//! deadline. One home for the schedule, so every backend's waiter wakes the same way (about a
//! ceiling after the release at worst) and keeps its deadline the same way.

use std::time::{Duration, Instant};

/// The first pause of every poll.
pub(crate) const FIRST_PAUSE: Duration = Duration::from_micros(500);

/// A poll's pauses: [`FIRST_PAUSE`], then doubling up to its ceiling, each cut to the deadline.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    pause: Duration,
    max: Duration,
}

impl Backoff {
    /// Pauses doubling from [`FIRST_PAUSE`] up to `max` (raised to [`FIRST_PAUSE`] if lower).
    pub(crate) fn up_to(max: Duration) -> Backoff {
        Backoff {
            pause: FIRST_PAUSE,
            max: max.max(FIRST_PAUSE),
        }
    }

    /// The pause to sleep now, or `None` once `deadline` has come (the waiter returns).
    pub(crate) fn next_pause(&mut self, deadline: Instant) -> Option<Duration> {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let pause = self.pause.min(deadline - now);
        self.pause = (self.pause * 2).min(self.max);
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_ceiling() {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut b = Backoff::up_to(Duration::from_millis(2));
        let pauses: Vec<_> = (0..5).map(|_| b.next_pause(far).unwrap()).collect();
        let ms = |m: u64| Duration::from_micros(m);
        assert_eq!(pauses, [ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]);
    }

    #[test]
    fn a_pause_never_goes_past_the_deadline() {
        let mut b = Backoff::up_to(Duration::from_secs(10));
        for _ in 0..20 {
            b.next_pause(Instant::now() + Duration::from_secs(3600));
        }
        let soon = Instant::now() + Duration::from_millis(3);
        assert!(b.next_pause(soon).unwrap() <= Duration::from_millis(3));
        assert_eq!(b.next_pause(Instant::now()), None);
    }

    #[test]
    fn a_ceiling_below_the_first_pause_is_raised() {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut b = Backoff::up_to(Duration::ZERO);
        assert_eq!(b.next_pause(far), Some(FIRST_PAUSE));
        assert_eq!(b.next_pause(far), Some(FIRST_PAUSE));
    }
}
