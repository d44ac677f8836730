//! The region's two tiers: starting the local tier and the backplane at configure time, and the
//! reads and writes that go through them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::{CacheRegion, CacheValue, Configured};
use crate::backend::{Backend, CachedValueRef};
use crate::backplane::{Notice, Subscription};
use crate::clock::{Clock, Timestamp};
use crate::config::{Arguments, BackplaneChoice, RegionConfig};
use crate::error::{Error, Result};
use crate::fleet::{new_origin, Fleet, FleetSink, LinkTrust, SharedInvalidation};
use crate::invalidation::RegionInvalidationStrategy;
use crate::key::KeyMangler;
use crate::lock::Lookup;
use crate::registry::{make_backend, BackendCatalog};
use crate::stats::Counter;
use crate::tags::{TagTimes, TAG_TIMES_WITHOUT_BACKPLANE};
use crate::tier::{FillTicket, Tier, DEFAULT_LOCAL_EXPIRATION, DEFAULT_MAX_SILENCE};

/// What a read that missed the local tier noted before it read the shared backend.
#[derive(Clone, Copy)]
struct LocalMiss {
    now: Timestamp,
    ticket: FillTicket,
}

/// What configure starts for the two tiers.
pub(super) struct Tiers {
    pub(super) tier: Option<Arc<Tier>>,
    pub(super) fleet: Option<Arc<Fleet>>,
    pub(super) tags: Arc<TagTimes>,
    /// The fleet-wide invalidation strategy, when a backplane is on and the caller set none.
    pub(super) invalidator: Option<Arc<dyn RegionInvalidationStrategy>>,
    pub(super) subscription: Option<Subscription>,
}

/// The memory backend the local tier keeps its copies in, by its registered name: the core
/// names no backend type.
const MEMORY_BACKEND: &str = "dogpile.cache.memory";

impl<C: BackendCatalog> CacheRegion<C> {
    /// Starts the local tier and the backplane of `config` over `backend` (the backend under its
    /// proxies: the backplane is the server's, not a proxy's).
    pub(super) fn start_tiers(
        &self,
        config: &RegionConfig,
        backend: &Arc<dyn Backend>,
        mangler: Option<&KeyMangler>,
        clock: &Clock,
        region_ttl: Option<Duration>,
    ) -> Result<Tiers> {
        let options = &config.tiers;
        let channel = match (&options.channel, &self.name) {
            (Some(c), _) => c.clone(),
            (None, Some(name)) => format!("dogpile:{name}"),
            (None, None) if options.backplane.is_some() => {
                return Err(Error::config(
                    "backplane_channel",
                    "a region with a backplane needs a name (CacheRegion::named) or a backplane_channel, so that every process finds the same channel",
                ))
            }
            (None, None) => "dogpile:<unnamed>".to_owned(),
        };
        let backplane = match &options.backplane {
            None => None,
            Some(BackplaneChoice::Instance(b)) => Some(b.clone()),
            Some(BackplaneChoice::FromBackend) => Some(backend.backplane()?.ok_or_else(|| {
                Error::config(
                    "backplane",
                    format!(
                        "backend {:?} has no backplane of its own; pass one with RegionConfig::backplane",
                        backend.name()
                    ),
                )
            })?),
        };
        // The silence in force: the tier's, or the default that tag times use without a tier.
        let max_silence = options
            .local_tier
            .as_ref()
            .map_or(DEFAULT_MAX_SILENCE, |t| t.max_silence);
        if let Some((b, beat)) = backplane.as_ref().and_then(|b| Some((b, b.heartbeat()?))) {
            if max_silence < beat * 2 {
                return Err(Error::config(
                    "local_tier.max_silence",
                    format!(
                        "{max_silence:?} is under twice the {} backplane's heartbeat ({beat:?}): what is known here would stop being trusted between heartbeats of a working link",
                        b.name()
                    ),
                ));
            }
        }
        let region = self.name().to_owned();
        let fleet = backplane.map(|backplane| {
            Arc::new(Fleet {
                origin: new_origin(),
                channel: channel.clone(),
                backplane,
                stats: self.stats.handle(),
                region: region.clone(),
            })
        });
        let trust = Arc::new(LinkTrust::new(fleet.is_some(), max_silence));
        let tier = match &options.local_tier {
            None => None,
            Some(local) => Some(Arc::new(Tier::start(
                local,
                region_ttl,
                trust.clone(),
                |max_size| {
                    let mut args = Arguments::new();
                    if let Some(n) = max_size {
                        args.insert("max_size", n as i64);
                    }
                    make_backend::<C>(MEMORY_BACKEND, &args).map_err(|e| {
                        Error::config(
                            "local_tier",
                            format!("the local tier needs the memory backend ({e}); build with it, or pass a store with LocalTier::with_store"),
                        )
                    })
                },
            )?)),
        };
        let tag_max_age = match (&fleet, &tier) {
            (None, _) => TAG_TIMES_WITHOUT_BACKPLANE,
            (Some(_), Some(t)) => t.expiration(),
            (Some(_), None) => DEFAULT_LOCAL_EXPIRATION,
        };
        let tags = Arc::new(TagTimes::new(
            backend.clone(),
            format!("{channel}:"),
            mangler.cloned(),
            fleet.clone(),
            tag_max_age,
            trust.clone(),
        ));
        let mut invalidator = None;
        let mut subscription = None;
        if let Some(fleet) = &fleet {
            let key = {
                let key = format!("{channel}:invalidated");
                mangler.map_or(key.clone(), |m| m.mangle(&key).into_owned())
            };
            // Re-read at the tag times' bound: an invalidation holds fleet-wide within it, a
            // region's as a tag's, even when its message is lost.
            let shared = Arc::new(SharedInvalidation::new(
                backend.clone(),
                key,
                fleet.clone(),
                clock.clone(),
                tag_max_age,
            ));
            // A process started after an invalidation learns of it here; and what this region
            // invalidated before it had a backplane is not forgotten.
            shared.reload();
            if config.region_invalidator.is_none() {
                shared.carry_over(self.invalidation.times(), clock.now());
            }
            let sink = Arc::new(FleetSink {
                origin: fleet.origin,
                tier: tier.clone(),
                trust: trust.clone(),
                invalidation: shared.clone(),
                tags: tags.clone(),
                clock: clock.clone(),
                stats: self.stats.handle(),
                region: region.clone(),
                was_up: AtomicBool::new(false),
            });
            subscription = Some(fleet.backplane.subscribe(&channel, sink)?);
            if config.region_invalidator.is_none() {
                invalidator = Some(shared as Arc<dyn RegionInvalidationStrategy>);
            }
        }
        Ok(Tiers {
            tier,
            fleet,
            tags,
            invalidator,
            subscription,
        })
    }
}

impl Configured {
    /// After values were written to the shared backend: the local copies go (the next read here
    /// fills from what was written), and the news for the other processes.
    ///
    /// A writer drops its own copy rather than keeping the value it wrote: two writers of one
    /// key in this process may reach the shared backend in one order and the tier in the other,
    /// and a kept copy could then be the value the backend no longer has. After the write, not
    /// before: a reader here that read the shared backend before the write then finds its key's
    /// bucket moved, and makes no copy.
    pub(super) fn wrote(&self, mkeys: &[&str]) {
        self.changed(mkeys, Notice::Set);
    }

    /// Whether a write has anyone to tell: a local tier, or a backplane.
    #[inline]
    pub(super) fn tells_writes(&self) -> bool {
        self.tier.is_some() || self.fleet.is_some()
    }

    /// After keys were deleted from the shared backend: as [`wrote`](Configured::wrote).
    pub(super) fn deleted(&self, mkeys: &[&str]) {
        self.changed(mkeys, Notice::Delete);
    }

    fn changed(&self, mkeys: &[&str], notice: fn(Vec<String>) -> Notice) {
        if let Some(tier) = &self.tier {
            tier.forget(mkeys.iter().copied());
        }
        if let Some(fleet) = &self.fleet {
            if !mkeys.is_empty() {
                fleet.announce(notice(mkeys.iter().map(|k| (*k).to_owned()).collect()));
            }
        }
    }

    /// [`wrote`](Configured::wrote) for async callers: the backplane's publish is blocking I/O,
    /// so it runs on the blocking pool rather than on the executor's thread.
    pub(super) async fn wrote_async(&self, mkey: &str) {
        self.changed_async(mkey, Notice::Set).await;
    }

    /// [`deleted`](Configured::deleted) for async callers.
    pub(super) async fn deleted_async(&self, mkey: &str) {
        self.changed_async(mkey, Notice::Delete).await;
    }

    async fn changed_async(&self, mkey: &str, notice: fn(Vec<String>) -> Notice) {
        if let Some(tier) = &self.tier {
            tier.forget([mkey]);
        }
        if let Some(fleet) = &self.fleet {
            let fleet = fleet.clone();
            let notice = notice(vec![mkey.to_owned()]);
            blocking::unblock(move || fleet.announce(notice)).await;
        }
    }
}

impl<C: BackendCatalog> CacheRegion<C> {
    /// The local copy of `mkey` when it may be served fresh, with its creation time.
    #[inline]
    fn local_hit<T: CacheValue>(
        &self,
        tier: &Tier,
        cfg: &Configured,
        mkey: &str,
        ttl: Option<Duration>,
        now: Timestamp,
    ) -> Option<(T, Timestamp)> {
        let hit = tier.read::<T, _>(
            mkey,
            now,
            |meta| self.judge_at(cfg, meta, ttl, mkey, Some(now)) == Some(true),
            |v, meta| (v.clone(), meta.created_at),
        )?;
        self.stats.incr(Counter::LocalHits);
        Some(hit)
    }

    /// A lookup through the local tier: a fresh local copy, or the shared backend's value (a
    /// fresh one is copied into the tier); with the value's creation time.
    pub(super) fn lookup_tiered<T: CacheValue>(
        &self,
        tier: &Tier,
        cfg: &Configured,
        mkey: &str,
        ttl: Option<Duration>,
    ) -> Result<(Lookup<T>, Option<Timestamp>)> {
        let miss = match self.local_first(tier, cfg, mkey, ttl) {
            Ok(hit) => return Ok(hit),
            Err(miss) => miss,
        };
        let mut found = (Lookup::Absent, None);
        cfg.backend
            .visit(mkey, &mut |v| {
                found = self.settle_miss(miss, tier, cfg, v.view(), ttl, mkey)
            })
            .map_err(|e| self.backend_failed(e, mkey))?;
        Ok(found)
    }

    /// [`lookup_tiered`](CacheRegion::lookup_tiered) through the backend's async path.
    pub(super) async fn lookup_tiered_async<T: CacheValue>(
        &self,
        tier: &Tier,
        cfg: &Configured,
        mkey: &str,
        ttl: Option<Duration>,
    ) -> Result<(Lookup<T>, Option<Timestamp>)> {
        let miss = match self.local_first(tier, cfg, mkey, ttl) {
            Ok(hit) => return Ok(hit),
            Err(miss) => miss,
        };
        let raw = cfg
            .backend
            .get_async(mkey)
            .await
            .map_err(|e| self.backend_failed(e, mkey))?;
        Ok(raw.map_or((Lookup::Absent, None), |v| {
            self.settle_miss(miss, tier, cfg, v.view(), ttl, mkey)
        }))
    }

    /// The local tier's answer: a fresh copy (`Ok`), or what a read of the shared backend needs
    /// to fill the tier afterwards (`Err`).
    #[inline]
    fn local_first<T: CacheValue>(
        &self,
        tier: &Tier,
        cfg: &Configured,
        mkey: &str,
        ttl: Option<Duration>,
    ) -> std::result::Result<(Lookup<T>, Option<Timestamp>), LocalMiss> {
        let now = cfg.clock.now_coarse();
        match self.local_hit(tier, cfg, mkey, ttl, now) {
            Some((v, stamp)) => Ok((Lookup::Fresh(v), Some(stamp))),
            None => Err(LocalMiss {
                now,
                ticket: tier.ticket(mkey),
            }),
        }
    }

    /// Classifies a value read from the shared backend after a local miss, and copies a fresh
    /// one into the tier.
    fn settle_miss<T: CacheValue>(
        &self,
        miss: LocalMiss,
        tier: &Tier,
        cfg: &Configured,
        v: CachedValueRef<'_>,
        ttl: Option<Duration>,
        mkey: &str,
    ) -> (Lookup<T>, Option<Timestamp>) {
        let found: Lookup<T> = self.classify(cfg, v, ttl, mkey);
        if let Lookup::Fresh(value) = &found {
            tier.fill(mkey, value.clone(), v.metadata, miss.now, miss.ticket);
        }
        (found, Some(v.metadata.created_at))
    }

    /// [`lookup_multi`](CacheRegion::lookup_multi) through the local tier: the keys without a
    /// fresh local copy are read in one backend call.
    pub(super) fn lookup_multi_tiered<T: CacheValue>(
        &self,
        tier: &Tier,
        cfg: &Configured,
        mkeys: &[&str],
        ttl: Option<Duration>,
    ) -> Result<Vec<(Lookup<T>, Option<Timestamp>)>> {
        let now = cfg.clock.now_coarse();
        let mut out: Vec<(Lookup<T>, Option<Timestamp>)> = Vec::with_capacity(mkeys.len());
        let mut missing = Vec::new();
        for (i, mkey) in mkeys.iter().enumerate() {
            match self.local_hit(tier, cfg, mkey, ttl, now) {
                Some((v, stamp)) => out.push((Lookup::Fresh(v), Some(stamp))),
                None => {
                    out.push((Lookup::Absent, None));
                    let miss = LocalMiss {
                        now,
                        ticket: tier.ticket(mkey),
                    };
                    missing.push((i, *mkey, miss));
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        // One backend call for the misses, each value decoded where the backend holds it.
        let keys: Vec<&str> = missing.iter().map(|(_, k, _)| *k).collect();
        cfg.backend
            .visit_multi(&keys, &mut |j, v| {
                // A position out of range (a faulty backend) is ignored, never a panic.
                if let Some(&(i, mkey, miss)) = missing.get(j) {
                    out[i] = self.settle_miss(miss, tier, cfg, v, ttl, mkey);
                }
            })
            .map_err(|e| self.backend_failed(e, keys[0]))?;
        Ok(out)
    }
}
