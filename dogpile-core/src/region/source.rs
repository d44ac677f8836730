//! The region as the source the dogpile lock algorithm (`lock.rs`) runs on, for one key or a
//! batch: reads, locks, waits, creation and storing; the key slots it holds, and the creation
//! guard that keeps a creator run's books.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::create::{Creator, Io};
use super::resilience::{self, Sent, Watch};
use super::{CacheRegion, CacheValue, Configured, CreateOptions};
use crate::clock::{Clock, Timestamp};
use crate::error::{CreateError, Error};
use crate::lock::{self, AsyncCreation, KeyState, Lookup, PerKey, Source};
use crate::mutex::{KeyMutex, LockGuard};
use crate::registry::BackendCatalog;
use crate::stats::{CountSink, Counter};
use crate::tags::Floors;

/// The bookkeeping of one creator run, written once for the three creators and the batch: the
/// time it took, the values it made, and a creator error when it ends without a value (it
/// failed, or panicked and unwound through the guard).
///
/// It also stamps the values: a value counts as created when its creation started, so a value
/// whose creator was running when `invalidate(true)` came is not fresh after it.
pub(super) struct CreationGuard<'s, S: CountSink> {
    stats: &'s S,
    start: Instant,
    created_at: Timestamp,
    /// How long the creator ran, once it returned: read once, for XFetch and the statistics.
    took: Option<Duration>,
    /// How many values the creator made; `None` until it returned them.
    made: Option<u64>,
}

impl<'s, S: CountSink> CreationGuard<'s, S> {
    /// Starts the clock of a creation; `clock` stamps its values.
    pub(super) fn start(stats: &'s S, clock: &Clock) -> Self {
        CreationGuard {
            stats,
            start: Instant::now(),
            created_at: clock.now(),
            took: None,
            made: None,
        }
    }

    /// The creation time of the values this creation makes: when it started.
    pub(super) fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// How long the creation took: call it when the creator has returned (the time is read
    /// once, and the guard's statistics use it too).
    pub(super) fn stop(&mut self) -> Duration {
        *self.took.get_or_insert_with(|| self.start.elapsed())
    }

    /// Passes the creator's result through; a success counts `count(&value)` creations.
    pub(super) fn finish<T, E>(
        mut self,
        created: Result<T, E>,
        count: impl FnOnce(&T) -> u64,
    ) -> Result<T, E> {
        if let Ok(value) = &created {
            self.made = Some(count(value));
        }
        created
    }
}

impl<S: CountSink> Drop for CreationGuard<'_, S> {
    fn drop(&mut self) {
        let took = self.took.unwrap_or_else(|| self.start.elapsed());
        self.stats.add_time(Counter::CreationNanos, took);
        match self.made {
            Some(n) => self.stats.add(Counter::Creations, n),
            None => self.stats.incr(Counter::CreatorErrors),
        }
    }
}

/// One key of a get-or-create call: its names, its mutex handle and its held lock.
pub(super) struct KeySlot<'k> {
    /// The caller's key, as the creator sees it.
    key: &'k str,
    /// The key as the backend sees it.
    mkey: &'k str,
    /// Where the key first stands in the caller's list: the creator gets keys in that order.
    order: usize,
    mutex: Option<KeyMutex>,
    guard: Option<LockGuard>,
}

impl<'k> KeySlot<'k> {
    pub(super) fn new(key: &'k str, mkey: &'k str, order: usize) -> Self {
        KeySlot {
            key,
            mkey,
            order,
            mutex: None,
            guard: None,
        }
    }

    /// The key as the backend sees it.
    pub(super) fn mkey(&self) -> &'k str {
        self.mkey
    }

    /// The caller's key, as the creator sees it.
    pub(super) fn key(&self) -> &'k str {
        self.key
    }
}

/// The keys of one get-or-create call (one, or a batch in lock order), as the lock algorithm
/// sees them.
pub(super) struct RegionSource<'a, 'k, C: BackendCatalog, T, E, Cr> {
    pub(super) region: &'a CacheRegion<C>,
    pub(super) cfg: &'a Arc<Configured>,
    pub(super) slots: &'a mut [KeySlot<'k>],
    pub(super) ttl: Option<Duration>,
    pub(super) should_cache: Option<fn(&T) -> bool>,
    pub(super) creator: Option<Cr>,
    pub(super) io: Io,
    /// When this call first waited: its bound on waiting runs from there.
    pub(super) wait_start: Option<Instant>,
    pub(super) _error: PhantomData<fn() -> E>,
    /// What the resilience options need of this call (see `resilience.rs`).
    pub(super) watch: Watch<T>,
    /// The latest invalidations of the call's tags (see `tags.rs`).
    pub(super) floors: Floors,
}

impl<'a, 'k, C: BackendCatalog, T: CacheValue, E, Cr: Creator<T, E>>
    RegionSource<'a, 'k, C, T, E, Cr>
{
    pub(super) fn new(
        region: &'a CacheRegion<C>,
        cfg: &'a Arc<Configured>,
        slots: &'a mut [KeySlot<'k>],
        ttl: Option<Duration>,
        options: &CreateOptions<T>,
        creator: Cr,
        io: Io,
    ) -> Self {
        let watch = Watch::new(cfg, options, slots.len());
        RegionSource {
            region,
            cfg,
            slots,
            ttl,
            should_cache: options.should_cache_fn,
            creator: Some(creator),
            io,
            wait_start: None,
            _error: PhantomData,
            watch,
            // Set by the call, which has read them for its first read already.
            floors: Floors::default(),
        }
    }

    /// Runs the lock algorithm over `keys` (the first reads, one per slot), counting each key's
    /// outcome. The blocking source never yields, so `lock::block_on` drives it on this thread.
    pub(super) async fn run(&mut self, keys: &mut [KeyState<T>]) -> Result<(), CreateError<E>> {
        lock::get_or_create(self, keys).await
    }

    /// Releases `key`'s held lock: on the async path without blocking the task's thread.
    async fn release(&mut self, key: usize) {
        if let Some(guard) = self.slots[key].guard.take() {
            match self.io {
                Io::Blocking => drop(guard),
                Io::Async => guard.release_async().await,
            }
        }
    }

    /// `key`'s mutex, looked up (a registry entry taken) the first time.
    fn mutex(&mut self, key: usize) -> &KeyMutex {
        let (region, cfg) = (self.region, self.cfg);
        let slot = &mut self.slots[key];
        slot.mutex
            .get_or_insert_with(|| region.mutex_for(cfg, slot.mkey, false).0)
    }

    /// `taken`, after moving `key`'s mutex into its guard when it is.
    fn held_if(&mut self, key: usize, taken: bool) -> bool {
        if taken {
            let slot = &mut self.slots[key];
            let guard = match self.io {
                Io::Blocking => LockGuard::held,
                Io::Async => LockGuard::held_async,
            };
            slot.guard = slot.mutex.take().map(guard);
        }
        taken
    }

    /// The error for a waiter with no value past the hard timeout, counted and logged.
    #[cold]
    fn waited_past_hard_timeout(&self, key: usize, timeout: Duration) -> CreateError<E> {
        let key = self.slots[key].key;
        self.region.stats.incr(Counter::HardTimeouts);
        tracing::warn!(
            region = self.region.name(),
            key,
            ?timeout,
            "waited past hard_timeout for another caller's creation, with no value to give"
        );
        CreateError::Cache(Error::CreatorTimeout {
            region: self.region.name().to_owned(),
            key: key.to_owned(),
            timeout,
        })
    }

    /// The error past the bound on waiting, counted and logged.
    #[cold]
    fn gave_up(&self, key: usize, waited: Duration) -> CreateError<E> {
        let key = self.slots[key].key;
        self.region.stats.incr(Counter::LockTimeouts);
        tracing::warn!(
            region = self.region.name(),
            key,
            ?waited,
            "gave up waiting for another caller's creation (lock_blocking_timeout)"
        );
        CreateError::Cache(Error::LockTimeout {
            region: self.region.name().to_owned(),
            key: key.to_owned(),
            waited,
        })
    }
}

impl<C: BackendCatalog, T: CacheValue, E, Cr: Creator<T, E>> Source
    for RegionSource<'_, '_, C, T, E, Cr>
{
    type Value = T;
    type Error = CreateError<E>;

    async fn lookup(&mut self, keys: &[usize]) -> Result<PerKey<Lookup<T>>, CreateError<E>> {
        let (region, cfg, ttl) = (self.region, self.cfg, self.ttl);
        if let [key] = *keys {
            let mkey = self.slots[key].mkey;
            // Every read gives the value's creation stamp (the plain lookup drops it).
            let (found, stamp) = match self.io {
                Io::Async => region.lookup_stamped_async(cfg, mkey, ttl).await?,
                Io::Blocking => region.lookup_stamped(cfg, mkey, ttl)?,
            };
            let found = self.floors.demote(found, stamp);
            return Ok(smallvec::smallvec![match self.watching() {
                true => self.observe(key, found, stamp),
                false => found,
            }]);
        }
        let mkeys: Vec<&str> = keys.iter().map(|&i| self.slots[i].mkey).collect();
        let found = region.lookup_multi(cfg, &mkeys, ttl)?;
        Ok(keys
            .iter()
            .zip(found)
            .map(|(&key, (found, stamp))| {
                let found = self.floors.demote(found, stamp);
                match self.watching() {
                    true => self.observe(key, found, stamp),
                    false => found,
                }
            })
            .collect())
    }

    async fn try_lock(&mut self, key: usize, stale: bool) -> Result<bool, CreateError<E>> {
        let mkey = self.slots[key].mkey;
        if self.slots[key].mutex.is_none() {
            // A crowd on a stale value finds the lock held: it learns so from the registry
            // without taking a handle, under its shard's shared lock, so it never queues behind
            // itself.
            if stale && self.region.held_here(mkey) {
                return Ok(false);
            }
            // Otherwise the first try takes a handle and, for the in-process lock, the lock with
            // it (a caller with no value needs the handle to wait).
            let (m, taken) = self.region.mutex_for(self.cfg, mkey, true);
            self.slots[key].mutex = Some(m);
            match taken {
                Some(taken) => return Ok(self.held_if(key, taken)),
                // A backend's own lock leaves the registry empty, but for a creation still
                // running under the in-process lock of a configuration since replaced, which
                // does hold the key (a stale caller asked above).
                None if !stale && self.region.held_here(mkey) => return Ok(false),
                None => {}
            }
        }
        let io = self.io;
        let m = self.mutex(key);
        let taken = match io {
            Io::Blocking => m.try_acquire(),
            Io::Async => m.try_acquire_async().await,
        }
        .map_err(|e| self.region.backend_failed(e, mkey))?;
        Ok(self.held_if(key, taken))
    }

    async fn wait(&mut self, key: usize) -> Result<(), CreateError<E>> {
        let region = self.region;
        let stats = &region.stats;
        let now = Instant::now();
        // A caller counts once however many times it waits, and whether it then gets another's
        // value or creates one itself (after a failed creator), so the mean wait is per caller.
        let since = *self.wait_start.get_or_insert_with(|| {
            stats.incr(Counter::Waits);
            now
        });
        let deadline = since
            .checked_add(self.cfg.lock_wait)
            .unwrap_or(now + LONG_WAIT);
        // A hard timeout bounds a waiter with no value as it bounds the creating caller: past
        // it, the error, while the creation goes on (another caller's, it stores its value).
        let hard = self
            .watch
            .hard_wait()
            .and_then(|h| Some((h, since.checked_add(h)?)))
            .filter(|&(_, at)| at < deadline);
        if let Some((timeout, at)) = hard {
            if now >= at {
                return Err(self.waited_past_hard_timeout(key, timeout));
            }
        }
        if now >= deadline {
            return Err(self.gave_up(key, now - since));
        }
        let deadline = hard.map_or(deadline, |(_, at)| at);
        let io = self.io;
        let m = self.mutex(key);
        let waited = match io {
            Io::Blocking => m.wait(deadline),
            Io::Async => m.wait_async(deadline).await,
        };
        stats.add_time(Counter::WaitNanos, now.elapsed());
        waited.map_err(|e| region.backend_failed(e, self.slots[key].mkey).into())
    }

    async fn unlock(&mut self, key: usize) {
        self.release(key).await;
    }

    async fn create(&mut self, keys: &[usize]) -> Result<PerKey<T>, CreateError<E>> {
        if let [key] = *keys {
            if let Some(timed) = self.create_timed(key) {
                return timed.map(PerKey::from_vec);
            }
            // One key, the usual call: no lists of keys to order, pair and sort.
            let (created_at, values) = self.run_creator(&[self.slots[key].key]).await?;
            let made = [(key, values.into_iter().next().expect("one value, checked"))];
            self.store(&made, created_at).await;
            self.release(key).await;
            let [(_, value)] = made;
            return Ok(smallvec::smallvec![value]);
        }
        // The creator sees the caller's keys in the caller's order, whatever the lock order.
        let mut order = PerKey::<usize>::from_slice(keys);
        order.sort_by_key(|&i| self.slots[i].order);
        let names: Vec<&str> = order.iter().map(|&i| self.slots[i].key).collect();
        let (created_at, values) = self.run_creator(&names).await?;
        let mut made: Vec<(usize, T)> = order.into_iter().zip(values).collect();
        made.sort_by_key(|&(i, _)| i);
        self.store(&made, created_at).await;
        for &(i, _) in &made {
            self.release(i).await;
        }
        Ok(made.into_iter().map(|(_, v)| v).collect())
    }

    fn hand_off(&mut self, key: usize) -> bool {
        let Some(runner) = self
            .region
            .async_creation_runner
            .clone()
            .or_else(|| self.early_runner(key))
        else {
            return false;
        };
        let Some(creator) = self.creator.take() else {
            return false;
        };
        let job = match creator.detach() {
            Ok(job) => job,
            Err(creator) => {
                self.creator = Some(creator);
                return false;
            }
        };
        let name = self.slots[key].key.to_owned();
        runner.run(AsyncCreation::new(
            name,
            self.background_job(key, job, None),
        ));
        true
    }
}

impl<C: BackendCatalog, T: CacheValue, E, Cr: Creator<T, E>> RegionSource<'_, '_, C, T, E, Cr> {
    /// Runs the creator for `names` (the caller's keys, in the caller's order), with its
    /// bookkeeping: the values, one per name, and their creation time.
    async fn run_creator(
        &mut self,
        names: &[&str],
    ) -> Result<(Timestamp, PerKey<T>), CreateError<E>> {
        let creator = self
            .creator
            .take()
            .expect("the lock algorithm creates at most once per call");
        match names {
            [key] => tracing::debug!(key, backend = %self.cfg.backend_name, "creating value"),
            keys => tracing::debug!(?keys, backend = %self.cfg.backend_name, "creating values"),
        }
        let mut creation = CreationGuard::start(&self.region.stats, &self.cfg.clock);
        let created_at = creation.created_at();
        let created = creator.create(names).await;
        self.cfg.resilience.record_creation(creation.stop());
        let values = creation
            .finish(created, |v| v.len() as u64)
            .map_err(CreateError::Creator)?;
        if values.len() != names.len() {
            return Err(CreateError::Cache(Error::Key(format!(
                "the multi creator returned {} values for {} keys",
                values.len(),
                names.len()
            ))));
        }
        Ok((created_at, values))
    }

    /// A creation that runs away from the caller, owning `key`'s lock: it creates with `job`,
    /// stores the value (where `should_cache_fn` accepts it) and releases the lock. A caller
    /// waiting on `notify` gets the value, or the creator's panic (caught only then).
    pub(super) fn background_job(
        &mut self,
        key: usize,
        job: Box<dyn FnOnce() -> Option<T> + Send>,
        notify: Option<std::sync::mpsc::SyncSender<Sent<T>>>,
    ) -> Box<dyn FnOnce() + Send> {
        let slot = &mut self.slots[key];
        let guard = slot.guard.take();
        let cfg = self.cfg.clone();
        let mkey = slot.mkey.to_owned();
        let should_cache = self.should_cache;
        let stats = self.region.stats.handle();
        let throttle = self.watch.fail_safe_throttle();
        Box::new(move || {
            let mut creation = CreationGuard::start(&stats, &cfg.clock);
            let created_at = creation.created_at();
            let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            cfg.resilience.record_creation(creation.stop());
            let made = match made {
                Ok(made) => made,
                Err(panic) => {
                    drop(creation);
                    resilience::background_failed(&cfg, &mkey, throttle);
                    drop(guard);
                    // A waiting caller gets the panic; else it is the runner's, as it was.
                    match notify {
                        Some(to) => return resilience::notify(Some(&to), Err(panic)),
                        None => std::panic::resume_unwind(panic),
                    }
                }
            };
            match creation.finish(made.ok_or(()), |_| 1) {
                Ok(value) => {
                    let keep = should_cache.is_none_or(|f| f(&value));
                    let store = |value: Cow<'_, T>| {
                        if let Err(e) = cfg.store(&mkey, value, created_at) {
                            stats.incr(Counter::BackendErrors);
                            tracing::warn!(key = mkey, error = %e, "storing a value created in the background failed");
                        }
                    };
                    match notify {
                        // No caller waits: the value is the store's alone, moved, not cloned.
                        None => {
                            if keep {
                                store(Cow::Owned(value));
                            }
                            drop(guard);
                        }
                        Some(to) => {
                            if keep {
                                store(Cow::Borrowed(&value));
                            }
                            drop(guard);
                            resilience::notify(Some(&to), Ok(value));
                        }
                    }
                }
                Err(()) => {
                    resilience::background_failed(&cfg, &mkey, throttle);
                    drop(guard);
                }
            }
        })
    }

    /// Stores the values a creator made (those `should_cache_fn` accepts): a value is good even
    /// when storing it fails, so a failure is logged and counted, and the next caller tries again.
    async fn store(&self, made: &[(usize, T)], created_at: Timestamp) {
        let keep = |v: &T| self.should_cache.is_none_or(|f| f(v));
        if let [(i, v)] = made {
            let mkey = self.slots[*i].mkey;
            let stored = match self.io {
                _ if !keep(v) => return,
                Io::Blocking => self.cfg.store(mkey, Cow::Borrowed(v), created_at),
                Io::Async => {
                    self.cfg
                        .store_async(mkey, Cow::Borrowed(v), created_at)
                        .await
                }
            };
            if let Err(e) = stored {
                self.region.backend_failed(e, mkey);
            }
            return;
        }
        let mut items = Vec::with_capacity(made.len());
        let mut stored = Vec::with_capacity(made.len());
        for (i, v) in made.iter().filter(|(_, v)| keep(v)) {
            let mkey = self.slots[*i].mkey;
            match self.cfg.wrap_value(mkey, Cow::Borrowed(v), created_at) {
                Ok(w) => {
                    items.push((mkey.to_owned(), w));
                    stored.push(mkey);
                }
                Err(e) => tracing::warn!(key = mkey, error = %e, "encoding a created value failed"),
            }
        }
        if items.is_empty() {
            return;
        }
        let first = self.slots[made[0].0].mkey;
        match self.cfg.backend.set_multi(items) {
            Ok(()) => self.cfg.wrote(&stored),
            Err(e) => {
                self.region.backend_failed(e, first);
            }
        }
    }
}

/// The wait bound when `lock_blocking_timeout` is too large to add to an instant.
const LONG_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);
