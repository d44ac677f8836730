//! Tags: invalidate every value a tag names, in every process, without a scan.
//!
//! A tag's invalidation is a time, as a region's is: values carrying the tag created before the
//! last hard invalidation of the tag count as absent, those created before the last soft one as
//! expired. The times live in the shared backend (one small entry per tag) and are known locally:
//! read once when a tag is first used, kept up to date by the backplane, and read again when they
//! may have gone stale (the link was down, or the copy is older than its bound). Nothing walks the
//! keys; invalidating a tag is one write and one message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::backplane::Notice;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::fleet::{read_times, write_times, Fleet};
use crate::key::KeyMangler;

/// How long a tag's times, read from the shared backend, are used without reading them again
/// when no backplane announces changes.
pub(crate) const TAG_TIMES_WITHOUT_BACKPLANE: Duration = Duration::from_secs(1);

/// More tags known at once than this and the whole table is dropped (each is read again on
/// use): a bound on memory for services with a tag per user.
const MAX_KNOWN: usize = 100_000;

/// The latest invalidations of a call's tags: values created before `hard` are absent, before
/// `soft` expired (nanoseconds; 0 for none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Floors {
    pub(crate) hard: u64,
    pub(crate) soft: u64,
}

#[derive(Clone, Copy)]
struct Known {
    hard: u64,
    soft: u64,
    read_at: u64,
    epoch: u64,
}

/// A region's knowledge of its tags' invalidation times.
pub(crate) struct TagTimes {
    backend: Arc<dyn Backend>,
    /// The key prefix of tag entries in the shared backend (the region's channel).
    prefix: String,
    mangler: Option<KeyMangler>,
    fleet: Option<Arc<Fleet>>,
    known: parking_lot::RwLock<HashMap<String, Known>>,
    /// How long a known time is used before it is read again.
    max_age: Duration,
    max_silence: Duration,
    /// Moved when the backplane link comes up or goes down: times read in an earlier epoch are
    /// read again.
    epoch: AtomicU64,
    last_alive: AtomicU64,
}

impl TagTimes {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        prefix: String,
        mangler: Option<KeyMangler>,
        fleet: Option<Arc<Fleet>>,
        max_age: Duration,
        max_silence: Duration,
    ) -> Self {
        TagTimes {
            backend,
            prefix,
            mangler,
            fleet,
            known: parking_lot::RwLock::new(HashMap::new()),
            max_age,
            max_silence,
            epoch: AtomicU64::new(0),
            last_alive: AtomicU64::new(0),
        }
    }

    fn key(&self, tag: &str) -> String {
        let key = format!("{}tag:{tag}", self.prefix);
        match &self.mangler {
            Some(m) => m.mangle(&key),
            None => key,
        }
    }

    fn usable(&self, k: &Known, now: u64) -> bool {
        k.epoch == self.epoch.load(Ordering::Acquire)
            && now.saturating_sub(k.read_at) < self.max_age.as_nanos() as u64
            && (self.fleet.is_none()
                || now.saturating_sub(self.last_alive.load(Ordering::Acquire))
                    < self.max_silence.as_nanos() as u64)
    }

    /// The latest invalidation times over `tags`, read from the shared backend where not known.
    pub(crate) fn floors(&self, tags: &[String], now: Timestamp) -> Result<Floors> {
        let mut floors = Floors::default();
        for tag in tags {
            let cached = self.known.read().get(tag.as_str()).copied();
            let k = match cached {
                Some(k) if self.usable(&k, now.as_nanos()) => k,
                _ => {
                    let epoch = self.epoch.load(Ordering::Acquire);
                    let (hard, soft) =
                        read_times(&*self.backend, &self.key(tag))?.unwrap_or((0, 0));
                    let k = Known {
                        hard,
                        soft,
                        read_at: now.as_nanos(),
                        epoch,
                    };
                    let mut known = self.known.write();
                    if known.len() >= MAX_KNOWN {
                        known.clear();
                    }
                    // A message that arrived during the read may know a later time.
                    let e = known.entry(tag.clone()).or_insert(k);
                    e.hard = e.hard.max(hard);
                    e.soft = e.soft.max(soft);
                    e.read_at = k.read_at;
                    e.epoch = epoch;
                    *e
                }
            };
            floors.hard = floors.hard.max(k.hard);
            floors.soft = floors.soft.max(k.soft);
        }
        Ok(floors)
    }

    /// Invalidates `tag` at `now`: here, in the shared backend, and on the backplane.
    pub(crate) fn invalidate(&self, tag: &str, hard: bool, now: Timestamp) -> Result<()> {
        write_times(&*self.backend, &self.key(tag), hard, now.as_nanos(), now)?;
        self.apply(tag, hard, now.as_nanos());
        if let Some(fleet) = &self.fleet {
            fleet.announce(Notice::InvalidateTag {
                tag: tag.to_owned(),
                hard,
                at: now.as_nanos(),
            });
        }
        Ok(())
    }

    /// Applies a tag invalidation (ours, or announced by another process).
    pub(crate) fn apply(&self, tag: &str, hard: bool, at: u64) {
        // Unknown here: the next use reads the shared backend, which already has it.
        if let Some(k) = self.known.write().get_mut(tag) {
            if hard {
                k.hard = k.hard.max(at);
            } else {
                k.soft = k.soft.max(at);
            }
        }
    }

    pub(crate) fn alive(&self, now: Timestamp) {
        self.last_alive.fetch_max(now.as_nanos(), Ordering::AcqRel);
    }

    pub(crate) fn distrust_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn link_down(&self) {
        self.last_alive.store(0, Ordering::Release);
        self.distrust_all();
    }
}
