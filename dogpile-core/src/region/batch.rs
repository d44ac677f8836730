//! Get-or-create of many keys in one call.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use super::create::CreationGuard;
use super::{CacheRegion, CacheValue, CreateOptions};
use crate::error::{CreateError, Error, Result};
use crate::lock::Lookup;
use crate::mutex::LockGuard;
use crate::registry::BackendCatalog;
use crate::stats::Counter;

impl<C: BackendCatalog> CacheRegion<C> {
    /// The values at `keys`, in the caller's order; `creator` runs once, with only the keys that
    /// are missing or expired (and whose lock this caller took), and returns their values in the
    /// order given. Locks are taken in one fixed order, so overlapping batches do not deadlock.
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
        let ttl = cfg.ttl(options.expiration_time.as_ref());
        self.check_soft(&cfg, ttl, keys[0].as_ref())?;
        let mkeys: Vec<String> = keys
            .iter()
            .map(|k| cfg.mangle(k.as_ref()).into_owned())
            .collect();
        let refs: Vec<&str> = mkeys.iter().map(String::as_str).collect();
        let mut out: Vec<Option<T>> = (0..keys.len()).map(|_| None).collect();

        // Distinct keys that need a value, in the one lock order: sorted by mangled key.
        let mut pending: std::collections::BTreeMap<&str, (Vec<usize>, Option<T>)> =
            Default::default();
        for (i, found) in self.read_multi(&cfg, &refs, ttl)?.into_iter().enumerate() {
            match found {
                Lookup::Fresh(v) => out[i] = Some(v),
                Lookup::Stale(v) => {
                    let e = pending.entry(refs[i]).or_default();
                    e.0.push(i);
                    e.1 = Some(v);
                }
                Lookup::Absent => pending.entry(refs[i]).or_default().0.push(i),
            }
        }

        let mut held: Vec<(&str, LockGuard)> = Vec::new();
        for (&mkey, (indices, stale)) in pending.iter_mut() {
            let mutex = self.mutex_for(&cfg, mkey);
            if let Some(stale) = stale.take() {
                if mutex.try_acquire()? {
                    held.push((mkey, LockGuard::new(mutex)));
                } else {
                    self.stats.incr(Counter::StaleServed);
                    indices.iter().for_each(|&i| out[i] = Some(stale.clone()));
                }
                continue;
            }
            let mut counted = false;
            loop {
                if mutex.try_acquire()? {
                    held.push((mkey, LockGuard::new(mutex)));
                    break;
                }
                if !std::mem::replace(&mut counted, true) {
                    self.stats.incr(Counter::Waits);
                }
                let start = Instant::now();
                let waited = mutex.wait(start + Duration::from_secs(3600));
                self.stats.add_time(Counter::WaitNanos, start.elapsed());
                waited.map_err(|e| self.backend_failed(e, mkey))?;
                match self.lookup::<T>(&cfg, mkey, ttl)? {
                    Lookup::Fresh(v) | Lookup::Stale(v) => {
                        indices.iter().for_each(|&i| out[i] = Some(v.clone()));
                        break;
                    }
                    Lookup::Absent => {}
                }
            }
        }
        if held.is_empty() {
            return Ok(out.into_iter().flatten().collect());
        }

        // Under the locks, read again: another caller may have created some meanwhile.
        let locked: Vec<&str> = held.iter().map(|(k, _)| *k).collect();
        let again = cfg.backend.get_multi(&locked)?;
        let mut to_create: Vec<&str> = Vec::new();
        for (mkey, raw) in locked.iter().zip(again) {
            match raw.map(|v| self.classify::<T>(&cfg, &v, ttl, mkey)) {
                Some(Lookup::Fresh(v)) => {
                    pending[mkey]
                        .0
                        .iter()
                        .for_each(|&i| out[i] = Some(v.clone()));
                }
                _ => to_create.push(mkey),
            }
        }
        if !to_create.is_empty() {
            // The creator sees the caller's keys, not the mangled ones.
            let originals: Vec<&str> = to_create
                .iter()
                .map(|mkey| keys[pending[mkey].0[0]].as_ref())
                .collect();
            let creation = CreationGuard::start(&self.stats, &cfg.clock);
            let created_at = creation.created_at();
            let values = creation
                .finish(creator(&originals), |values| values.len() as u64)
                .map_err(CreateError::Creator)?;
            if values.len() != originals.len() {
                return Err(CreateError::Cache(Error::Key(format!(
                    "the multi creator returned {} values for {} keys",
                    values.len(),
                    originals.len()
                ))));
            }
            let mut store = Vec::new();
            for (mkey, value) in to_create.iter().zip(values) {
                if options.should_cache_fn.is_none_or(|f| f(&value)) {
                    match cfg.wrap_value(mkey, &value, created_at) {
                        Ok(w) => store.push(((*mkey).to_owned(), w)),
                        Err(e) => {
                            tracing::warn!(key = mkey, error = %e, "encoding a created value failed")
                        }
                    }
                }
                pending[mkey]
                    .0
                    .iter()
                    .for_each(|&i| out[i] = Some(value.clone()));
            }
            if !store.is_empty() {
                if let Err(e) = cfg.backend.set_multi(store) {
                    self.backend_failed(e, to_create[0]);
                }
            }
        }
        drop(held);
        Ok(out.into_iter().flatten().collect())
    }
}
