//! Get-or-create of many keys in one call, on the lock algorithm of `lock.rs`.

use std::convert::Infallible;

use super::create::{BatchCreator, Io};
use super::resilience::Seen;
use super::source::{KeySlot, RegionSource};
use super::{CacheRegion, CacheValue, CreateOptions};
use crate::error::{CreateError, Result};
use crate::lock::{self, KeyState, Lookup};
use crate::registry::BackendCatalog;

impl<C: BackendCatalog> CacheRegion<C> {
    /// The values at `keys`, in the caller's order; `creator` runs once, with only the keys that
    /// are missing or expired (and whose lock this caller took), and returns their values in the
    /// order given.
    ///
    /// The creator gets the missing keys in the order they first appear in `keys`, each once.
    /// Locks are taken in one fixed order, and a caller never waits while it holds one (on a
    /// key another caller is creating, it lets go of its locks, waits, and starts over), so
    /// overlapping batches, and batches beside creators that ask for other keys, do not
    /// deadlock.
    ///
    /// ```
    /// # use dogpile_core::{CacheRegion, RegionConfig};
    /// # let region: CacheRegion = CacheRegion::new();
    /// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())).unwrap();
    /// region.set("b", 20).unwrap();
    /// let values = region
    ///     .get_or_create_multi(&["c", "b", "a"], |missing| {
    ///         assert_eq!(missing, ["c", "a"]); // the caller's order
    ///         missing.iter().map(|k| k.len() as i32).collect()
    ///     })
    ///     .unwrap();
    /// assert_eq!(values, [1, 20, 1]);
    /// ```
    ///
    /// # Errors
    ///
    /// A backend error before the creator ran, [`Error::LockTimeout`](crate::Error::LockTimeout)
    /// past the region's `lock_blocking_timeout`, and a creator that returns fewer or more values
    /// than keys ([`Error::Key`](crate::Error::Key)); the others of
    /// [`get_or_create`](CacheRegion::get_or_create).
    ///
    /// # Panics
    ///
    /// A panic of `creator` unwinds to this caller, nothing is stored, and every lock the call
    /// holds is released on the way.
    pub fn get_or_create_multi<T: CacheValue, K: AsRef<str>>(
        &self,
        keys: &[K],
        creator: impl FnOnce(&[&str]) -> Vec<T>,
    ) -> Result<Vec<T>> {
        self.try_get_or_create_multi(keys, &CreateOptions::default(), |ks| {
            Ok::<_, Infallible>(creator(ks))
        })
        .map_err(CreateError::into_cache_error)
    }

    /// [`get_or_create_multi`](CacheRegion::get_or_create_multi) with per-call options and a
    /// creator that can fail.
    ///
    /// The resilience options (the region's, and the call's over them) apply to each key by the
    /// rules of one key's call: when the creator fails (or panics, with fail-safe on), each key
    /// it was to make gets its expired value within `fail_safe_max_duration` (counted in
    /// [`Stats::fail_safe_served`](crate::Stats::fail_safe_served)) and is then throttled, and
    /// a throttled key is served without going to the creator; keys due for `eager_refresh` or
    /// XFetch are refreshed once, inline, in the creator's one call. The creator borrows from
    /// the caller and runs on its thread, so `soft_timeout` cannot bound it (refused on the
    /// call), and `hard_timeout` bounds only this call's waits for other callers' creations.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use dogpile_core::{clock::Clock, CacheRegion, CreateOptions, RegionConfig};
    ///
    /// let (clock, time) = Clock::manual(SystemTime::now());
    /// let region: CacheRegion = CacheRegion::new();
    /// let backend = dogpile_core::testing::MapBackend::default();
    /// region.configure(RegionConfig::with_backend(backend).expiration_time(60).clock(clock)).unwrap();
    /// region.set("a", 1u8).unwrap();
    /// region.set("b", 2u8).unwrap();
    /// time.advance(Duration::from_secs(61));
    /// let options = CreateOptions::new().fail_safe_max_duration(Duration::from_secs(600));
    /// let down = |_: &[&str]| Err::<Vec<u8>, _>("database down");
    /// assert_eq!(region.try_get_or_create_multi(&["a", "b"], &options, down).unwrap(), [1, 2]);
    /// // A key with no expired value to give fails the batch, as its own call would fail.
    /// assert!(region.try_get_or_create_multi(&["a", "c"], &options, down).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`CreateError::Creator`] with the creator's error (nothing is stored) when a key it was
    /// to make has no value to fall back to; [`Error::Config`](crate::Error::Config) naming
    /// `soft_timeout` when the call sets it, or an option set to a value no region can use;
    /// [`CreateError::Cache`] with any error of
    /// [`get_or_create_multi`](CacheRegion::get_or_create_multi).
    ///
    /// # Panics
    ///
    /// As [`get_or_create_multi`](CacheRegion::get_or_create_multi).
    pub fn try_get_or_create_multi<T: CacheValue, K: AsRef<str>, E>(
        &self,
        keys: &[K],
        options: &CreateOptions<T>,
        creator: impl FnOnce(&[&str]) -> Result<Vec<T>, E>,
    ) -> Result<Vec<T>, CreateError<E>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = self.configured()?;
        if !options.tags.is_empty() {
            // A batch's keys would each need their own tags: refused rather than ignored.
            return Err(CreateError::Cache(crate::Error::config(
                "tags",
                "tags apply to single-key get-or-create calls; tag each key with get_or_create_with",
            )));
        }
        // The call's resilience options, checked once for the whole batch.
        let opts = cfg.resilience.for_call(options.resilience.as_ref())?;
        if options
            .resilience
            .as_ref()
            .is_some_and(|r| r.soft_timeout.is_some())
        {
            // A batch creator borrows from its caller, so it runs on the caller's thread and
            // nothing can give the caller a value while it runs: refused rather than ignored.
            return Err(CreateError::Cache(crate::Error::config(
                "soft_timeout",
                "a batch creator borrows from its caller and runs on its thread, so no timeout can bound it; soft_timeout applies to single-key calls whose creator can move (get_or_create_in_background)",
            )));
        }
        let judging = opts.acts_on_creation();
        let ttl = cfg.ttl(options.expiration_time.as_ref());
        self.check_soft(&cfg, ttl, keys[0].as_ref())?;
        let mkeys: Vec<String> = keys
            .iter()
            .map(|k| cfg.mangle(k.as_ref()).into_owned())
            .collect();
        let refs: Vec<&str> = mkeys.iter().map(String::as_str).collect();
        let mut out: Vec<Option<T>> = (0..keys.len()).map(|_| None).collect();

        // Distinct keys that need a value, in the one lock order (sorted by mangled key), each
        // with every place it has in the caller's list, its first read and what it saw.
        let mut pending: std::collections::BTreeMap<&str, (Vec<usize>, Lookup<T>, Seen)> =
            Default::default();
        for (i, (found, stamp)) in self.read_multi(&cfg, &refs, ttl)?.into_iter().enumerate() {
            // Each key by the one-key rule: a fresh value due for an early refresh is stale to
            // this call.
            let (found, early) = match judging {
                true => self.judge_early(&cfg, &opts, found, stamp, ttl, refs[i]),
                false => (found, None),
            };
            let seen = Seen {
                stamp,
                early,
                ..Seen::default()
            };
            match found {
                Lookup::Fresh(v) => out[i] = Some(v),
                // A key whose creator failed recently: its stale value, no creation.
                found => match self.serve_throttled(&cfg, &opts, ttl, refs[i], &found, seen) {
                    Some(v) => out[i] = Some(v),
                    None => pending
                        .entry(refs[i])
                        .or_insert((Vec::new(), found, seen))
                        .0
                        .push(i),
                },
            }
        }
        if !pending.is_empty() {
            let mut slots = Vec::with_capacity(pending.len());
            let mut firsts = Vec::with_capacity(pending.len());
            let mut places = Vec::with_capacity(pending.len());
            for (mkey, (at, found, seen)) in pending {
                slots.push(KeySlot::new(keys[at[0]].as_ref(), mkey, at[0]));
                firsts.push((found, seen));
                places.push(at);
            }
            let mut source = RegionSource::new(
                self,
                &cfg,
                &mut slots,
                ttl,
                options,
                BatchCreator(creator),
                Io::Blocking,
            );
            let mut states = Vec::with_capacity(firsts.len());
            for (k, (found, seen)) in firsts.into_iter().enumerate() {
                source.watch_from(k, &found, seen);
                states.push(KeyState::new(found));
            }
            // The blocking source never yields, so this drives the algorithm on this thread.
            let ran = lock::block_on(source.run_catching(&mut states));
            // A failed creator (an error, or a panic caught for fail-safe): the keys it was to
            // make get what they fall back to, each by the one-key rule, or the batch fails.
            let fell_back = match ran {
                Ok(Ok(())) => Vec::new(),
                Ok(Err(CreateError::Creator(e))) => source
                    .fall_back_batch(&states)
                    .ok_or(CreateError::Creator(e))?,
                Ok(Err(e)) => return Err(e),
                Err(panic) => match source.fall_back_batch(&states) {
                    Some(values) => values,
                    None => std::panic::resume_unwind(panic),
                },
            };
            let early: Vec<bool> = (0..states.len())
                .map(|k| source.watch.is_early(k))
                .collect();
            drop(source);
            let mut fell_back = fell_back.into_iter().peekable();
            for (k, (state, at)) in states.into_iter().zip(places).enumerate() {
                let value = match fell_back.next_if(|(i, _)| *i == k) {
                    Some((_, v)) => v,
                    None => self.key_outcome(state, slots[k].mkey(), early[k]),
                };
                for &i in &at {
                    out[i] = Some(value.clone());
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}
