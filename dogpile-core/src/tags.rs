//! Tags: invalidate every value a tag names, in every process, without a scan.
//!
//! A tag's invalidation is a time, as a region's is: values carrying the tag created before the
//! last hard invalidation of the tag count as absent, those created before the last soft one as
//! expired. The times live in the shared backend (one small entry per tag) and are known locally:
//! read once when a tag is first used, kept up to date by the backplane, and read again when they
//! may have gone stale (the link was down, or the copy is older than its bound). Nothing walks the
//! keys; invalidating a tag is one write and one message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::backplane::Notice;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::fleet::{nanos, read_times, write_times, Fleet, LinkTrust};
use crate::key::KeyMangler;
use crate::lock::Lookup;

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

impl Floors {
    /// What the tags make of a value created at `created_at`: absent when created before the
    /// last hard invalidation of one of them, stale before the last soft one. (Strictly before,
    /// as for region invalidation.)
    #[inline]
    pub(crate) fn demote<T>(&self, found: Lookup<T>, created_at: Option<Timestamp>) -> Lookup<T> {
        let Some(created) = created_at.map(Timestamp::as_nanos) else {
            return found;
        };
        match found {
            Lookup::Fresh(_) | Lookup::Stale(_) if created < self.hard => Lookup::Absent,
            Lookup::Fresh(v) if created < self.soft => Lookup::Stale(v),
            other => other,
        }
    }
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
    /// How long a known time is used before it is read again (nanoseconds).
    max_age_nanos: u64,
    /// The link's epoch and word: times read in an earlier epoch are read again.
    trust: Arc<LinkTrust>,
}

impl TagTimes {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        prefix: String,
        mangler: Option<KeyMangler>,
        fleet: Option<Arc<Fleet>>,
        max_age: Duration,
        trust: Arc<LinkTrust>,
    ) -> Self {
        TagTimes {
            backend,
            prefix,
            mangler,
            fleet,
            known: parking_lot::RwLock::new(HashMap::new()),
            max_age_nanos: nanos(max_age),
            trust,
        }
    }

    fn key(&self, tag: &str) -> String {
        let key = format!("{}tag:{tag}", self.prefix);
        match &self.mangler {
            Some(m) => m.mangle(&key).into_owned(),
            None => key,
        }
    }

    fn usable(&self, k: &Known, now: u64) -> bool {
        // `read_at` 0: made by an invalidation, never read from the backend.
        k.read_at != 0
            && now.saturating_sub(k.read_at) < self.max_age_nanos
            && self.trust.trusts(k.epoch, now)
    }

    /// The latest invalidation times over `tags` when every one is known here (no I/O); `None`
    /// when one must be read from the shared backend.
    pub(crate) fn known_floors(&self, tags: &[String], now: Timestamp) -> Option<Floors> {
        let known = self.known.read();
        let mut floors = Floors::default();
        for tag in tags {
            let k = known
                .get(tag.as_str())
                .filter(|k| self.usable(k, now.as_nanos()))?;
            floors.hard = floors.hard.max(k.hard);
            floors.soft = floors.soft.max(k.soft);
        }
        Some(floors)
    }

    /// The latest invalidation times over `tags`, read from the shared backend where not known.
    pub(crate) fn floors(&self, tags: &[String], now: Timestamp) -> Result<Floors> {
        let mut floors = Floors::default();
        for tag in tags {
            let cached = self.known.read().get(tag.as_str()).copied();
            let k = match cached {
                Some(k) if self.usable(&k, now.as_nanos()) => k,
                _ => {
                    let epoch = self.trust.epoch();
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
    ///
    /// A tag not known here gets an entry too, marked never read (not to be used): a read of the shared
    /// backend under way (which may have read the time before this invalidation) then merges
    /// into it and keeps this time, and the next use reads the backend again.
    pub(crate) fn apply(&self, tag: &str, hard: bool, at: u64) {
        let mut known = self.known.write();
        if known.len() >= MAX_KNOWN && !known.contains_key(tag) {
            known.clear();
        }
        let epoch = self.trust.epoch();
        let k = known.entry(tag.to_owned()).or_insert(Known {
            hard: 0,
            soft: 0,
            read_at: 0,
            epoch,
        });
        if hard {
            k.hard = k.hard.max(at);
        } else {
            k.soft = k.soft.max(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MapBackend;

    #[test]
    fn an_invalidation_of_an_unknown_tag_survives_a_read_that_missed_it() {
        // The shared backend's times were read (here: nothing there yet) while an invalidation
        // of the tag arrived: before the fix the message found no entry and was dropped, and
        // the read's older time was used for the tag's whole max_age.
        let times = TagTimes::new(
            Arc::new(MapBackend::bytes()),
            "dogpile:r:".into(),
            None,
            None,
            Duration::from_secs(30),
            Arc::new(LinkTrust::new(false, Duration::from_secs(1))),
        );
        times.apply("t", true, 100);
        let now = Timestamp::from_nanos(1_000);
        assert_eq!(
            times.known_floors(&["t".into()], now),
            None,
            "not read yet: not usable"
        );
        let floors = times.floors(&["t".into()], now).unwrap();
        assert_eq!(floors, Floors { hard: 100, soft: 0 });
        assert_eq!(times.known_floors(&["t".into()], now), Some(floors));
    }
}
