//! What a region does with its backplane: announce its writes and invalidations, and apply the
//! other processes' (drop local copies, move the invalidation times).
//!
//! Region invalidation times live in the shared backend too, at a key of their own, so a process
//! started after an `invalidate` reads them when it is configured, and every process reads them
//! again whenever its backplane link comes back up (messages sent while it was down are lost),
//! and at the first heartbeat once they are older than the tag times' bound (a message lost
//! while both links looked up: the publisher's send failed, or a reload failed). So a region
//! invalidation holds in every running process within that bound, as a tag's does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, CachedValue, Metadata, Payload};
use crate::backplane::{Backplane, BackplaneSink, Message, Notice};
use crate::clock::{Clock, Timestamp};
use crate::invalidation::{DefaultInvalidation, RegionInvalidationStrategy};
use crate::stats::{CountSink, Counter, StatsHandle};
use crate::tags::TagTimes;
use crate::tier::Tier;

/// How far this process may trust what it knows through the backplane (local copies, tag
/// times): only what it learned in the link's current epoch (the epoch moves whenever the link
/// comes up or goes down: messages may have been lost), and, with a backplane, only while the
/// link was heard from within `max_silence`. The local tier and the tag times share one.
pub(crate) struct LinkTrust {
    has_backplane: bool,
    max_silence_nanos: u64,
    epoch: AtomicU64,
    /// When the backplane was last heard from (nanoseconds; 0 while the link is down).
    last_alive: AtomicU64,
}

impl LinkTrust {
    pub(crate) fn new(has_backplane: bool, max_silence: Duration) -> Self {
        LinkTrust {
            has_backplane,
            max_silence_nanos: nanos(max_silence),
            epoch: AtomicU64::new(0),
            last_alive: AtomicU64::new(0),
        }
    }

    /// The current epoch, to stamp what is learned now.
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether something learned in `epoch` may be used at `now` (nanoseconds).
    #[inline]
    pub(crate) fn trusts(&self, epoch: u64, now: u64) -> bool {
        epoch == self.epoch.load(Ordering::Acquire)
            && (!self.has_backplane
                || now.saturating_sub(self.last_alive.load(Ordering::Acquire))
                    < self.max_silence_nanos)
    }

    /// The backplane was heard from at `now`.
    pub(crate) fn alive(&self, now: Timestamp) {
        self.last_alive.fetch_max(now.as_nanos(), Ordering::AcqRel);
    }

    /// Stops trusting everything learned so far (the link came up: messages sent while it was
    /// down are lost).
    pub(crate) fn distrust_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The link is down: nothing is trusted until it is heard from again.
    pub(crate) fn link_down(&self) {
        self.last_alive.store(0, Ordering::Release);
        self.distrust_all();
    }
}

/// A duration in nanoseconds, saturating: what the hit path compares against.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A region's end of the backplane: who it is, where it speaks, and how.
pub(crate) struct Fleet {
    /// This configured region instance, as its messages say.
    pub(crate) origin: u64,
    pub(crate) channel: String,
    pub(crate) backplane: Arc<dyn Backplane>,
    pub(crate) stats: StatsHandle,
    pub(crate) region: String,
}

impl Fleet {
    /// Tells the other processes; a failure is logged and counted, never the caller's error: the
    /// write itself has landed in the shared backend, and the others' copies expire by the tier's
    /// bound.
    pub(crate) fn announce(&self, notice: Notice) {
        let bytes = Message::new(self.origin, notice).encode();
        match self.backplane.publish(&self.channel, &bytes) {
            Ok(()) => self.stats.add(Counter::BackplaneSent, 1),
            Err(e) => {
                self.stats.add(Counter::BackplaneDropped, 1);
                tracing::warn!(
                    region = %self.region,
                    channel = %self.channel,
                    error = %e,
                    "backplane message not sent; other processes keep their copies until the local tier's expiration, and learn of an invalidation when they next read the shared times"
                );
            }
        }
    }
}

/// A random 64-bit instance id: the std hasher's per-process random keys, mixed with the time
/// and a counter, so two instances (in one process or two) never share one in practice.
pub(crate) fn new_origin() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Region invalidation that holds across processes: the times are kept here, in the shared
/// backend (for processes started later, and for running ones that missed a message), and
/// announced on the backplane (for running ones).
pub(crate) struct SharedInvalidation {
    local: DefaultInvalidation,
    backend: Arc<dyn Backend>,
    /// The (mangled) key of the times in the shared backend.
    key: String,
    fleet: Arc<Fleet>,
    clock: Clock,
    /// How old the times read from the shared backend may grow before a heartbeat reads them
    /// again (nanoseconds).
    reload_every_nanos: u64,
    /// When the times were last read from the shared backend (coarse clock, nanoseconds).
    reloaded_at: AtomicU64,
    /// A re-read is running on the `blocking` pool.
    reloading: AtomicBool,
    /// The last read failed (warned once until one succeeds).
    failing: AtomicBool,
}

/// How soon a failed read of the shared times is tried again, at the most.
const RELOAD_RETRY: Duration = Duration::from_secs(5);

impl SharedInvalidation {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        key: String,
        fleet: Arc<Fleet>,
        clock: Clock,
        reload_every: Duration,
    ) -> Self {
        SharedInvalidation {
            local: DefaultInvalidation::new(),
            backend,
            key,
            fleet,
            clock,
            reload_every_nanos: nanos(reload_every),
            reloaded_at: AtomicU64::new(0),
            reloading: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }

    /// Applies an invalidation another process announced.
    pub(crate) fn apply(&self, hard: bool, at: u64) {
        self.local.invalidate(hard, Timestamp::from_nanos(at));
    }

    /// Takes over invalidations made before this strategy existed (on the region before it had
    /// a backplane): they hold here, and are stored for the other processes and later ones.
    pub(crate) fn carry_over(&self, (hard, soft): (u64, u64), now: Timestamp) {
        for (is_hard, at) in [(true, hard), (false, soft)] {
            if at == 0 {
                continue;
            }
            self.apply(is_hard, at);
            if let Err(e) = write_times(&*self.backend, &self.key, is_hard, at, now) {
                tracing::warn!(
                    region = %self.fleet.region,
                    error = %e,
                    "storing an earlier invalidation in the shared backend failed"
                );
            }
        }
    }

    /// Reads the times kept in the shared backend again when they are older than the bound,
    /// off this thread (a heartbeat comes on the transport's thread, or on a caller's): a
    /// message this process missed while its link looked up holds here within the bound. A
    /// failed read is tried again at a later heartbeat.
    pub(crate) fn reload_if_due(self: &Arc<Self>) {
        let now = self.clock.now_coarse().as_nanos();
        let due =
            now.saturating_sub(self.reloaded_at.load(Ordering::Acquire)) >= self.reload_every_nanos;
        if !due || self.reloading.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        blocking::unblock(move || {
            this.reload();
            this.reloading.store(false, Ordering::Release);
        })
        .detach();
    }

    /// Reads the times kept in the shared backend (at configure time, when the link comes
    /// back, and when they are due, see [`reload_if_due`](Self::reload_if_due)): the later of
    /// them and the ones known here win.
    pub(crate) fn reload(&self) {
        let started = self.clock.now_coarse().as_nanos();
        match read_times(&*self.backend, &self.key) {
            Ok(found) => {
                let (hard, soft) = found.unwrap_or((0, 0));
                for (is_hard, at) in [(true, hard), (false, soft)] {
                    if at != 0 {
                        self.apply(is_hard, at);
                    }
                }
                self.reloaded_at.fetch_max(started, Ordering::AcqRel);
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(region = %self.fleet.region, "the region's invalidation times were read again");
                }
            }
            Err(e) => {
                // Due again in a few seconds (not at every heartbeat, a few a second), and one
                // warning for the outage.
                let retry = nanos(RELOAD_RETRY).min(self.reload_every_nanos);
                self.reloaded_at.fetch_max(
                    started.saturating_sub(self.reload_every_nanos) + retry,
                    Ordering::AcqRel,
                );
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        region = %self.fleet.region,
                        error = %e,
                        "reading the region's invalidation times from the shared backend failed; trying again"
                    );
                }
            }
        }
    }
}

/// Reads a pair of times stored by [`write_times`]; `None` when nothing (or something else) is
/// there.
pub(crate) fn read_times(backend: &dyn Backend, key: &str) -> crate::Result<Option<(u64, u64)>> {
    Ok(backend.get(key)?.and_then(|v| match &v.payload {
        Payload::Bytes(b) if b.len() == 16 => Some((
            u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
        )),
        _ => None,
    }))
}

/// Moves the hard or soft time kept at `key` forward to `at`: read, keep the later, write.
///
/// Two processes invalidating at the same moment may each write what they read, so the stored
/// time can be the earlier of two racing invalidations (running processes got both messages and
/// keep the later); the backend has no compare-and-set in its interface.
pub(crate) fn write_times(
    backend: &dyn Backend,
    key: &str,
    hard: bool,
    at: u64,
    now: Timestamp,
) -> crate::Result<()> {
    let (mut h, mut s) = read_times(backend, key)?.unwrap_or((0, 0));
    if hard {
        h = h.max(at);
    } else {
        s = s.max(at);
    }
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&h.to_le_bytes());
    bytes.extend_from_slice(&s.to_le_bytes());
    backend.set(
        key,
        CachedValue {
            payload: Payload::Bytes(bytes.into()),
            metadata: Metadata::new(now),
        },
    )
}

impl RegionInvalidationStrategy for SharedInvalidation {
    fn invalidate(&self, hard: bool, now: Timestamp) {
        self.local.invalidate(hard, now);
        if let Err(e) = write_times(&*self.backend, &self.key, hard, now.as_nanos(), now) {
            self.fleet.stats.add(Counter::BackendErrors, 1);
            tracing::warn!(
                region = %self.fleet.region,
                error = %e,
                "storing the invalidation time in the shared backend failed; processes started later will not see it"
            );
        }
        self.fleet.announce(Notice::Invalidate {
            hard,
            at: now.as_nanos(),
        });
    }

    fn is_hard_invalidated(&self, created_at: Timestamp) -> bool {
        self.local.is_hard_invalidated(created_at)
    }

    fn is_soft_invalidated(&self, created_at: Timestamp) -> bool {
        self.local.is_soft_invalidated(created_at)
    }

    fn was_hard_invalidated(&self) -> bool {
        self.local.was_hard_invalidated()
    }

    fn was_soft_invalidated(&self) -> bool {
        self.local.was_soft_invalidated()
    }

    fn ever_invalidated(&self) -> bool {
        self.local.ever_invalidated()
    }
}

/// The region's listener on the backplane.
pub(crate) struct FleetSink {
    pub(crate) origin: u64,
    pub(crate) tier: Option<Arc<Tier>>,
    /// What the tier and the tag times trust, moved here once for both.
    pub(crate) trust: Arc<LinkTrust>,
    pub(crate) invalidation: Arc<SharedInvalidation>,
    pub(crate) tags: Arc<TagTimes>,
    pub(crate) clock: Clock,
    pub(crate) stats: StatsHandle,
    pub(crate) region: String,
    /// Whether the link has come up before: later ups are reconnects.
    pub(crate) was_up: AtomicBool,
}

impl BackplaneSink for FleetSink {
    fn message(&self, bytes: &[u8]) {
        let message = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.add(Counter::BackplaneDropped, 1);
                tracing::warn!(region = %self.region, error = %e, "backplane message ignored");
                return;
            }
        };
        if message.origin == self.origin {
            // Our own write: already applied when it was made.
            return;
        }
        match message.notice {
            Notice::Set(keys) | Notice::Delete(keys) => {
                if let Some(tier) = &self.tier {
                    tier.forget(keys.iter().map(String::as_str));
                }
            }
            Notice::Invalidate { hard, at } => self.invalidation.apply(hard, at),
            Notice::InvalidateTag { tag, hard, at } => self.tags.apply(&tag, hard, at),
        }
        // Counted once applied: a reader that sees the count sees the message's effect.
        self.stats.add(Counter::BackplaneReceived, 1);
    }

    fn alive(&self) {
        self.trust.alive(self.clock.now_coarse());
        self.invalidation.reload_if_due();
    }

    fn connected(&self) {
        self.trust.distrust_all();
        self.invalidation.reload();
        if self.was_up.swap(true, Ordering::AcqRel) {
            self.stats.add(Counter::BackplaneReconnects, 1);
            tracing::info!(region = %self.region, "backplane reconnected; local copies dropped");
        } else {
            tracing::debug!(region = %self.region, "backplane connected");
        }
    }

    fn disconnected(&self) {
        self.trust.link_down();
        tracing::warn!(
            region = %self.region,
            "backplane link down; local copies are not served until it is back"
        );
    }
}
