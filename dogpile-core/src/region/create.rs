//! Get-or-create of one key under the dogpile lock: the creators and the lock source.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CacheRegion, CacheValue, Configured, CreateOptions};
use crate::clock::{Clock, Timestamp};
use crate::error::{CreateError, Error, Result};
use crate::lock::{self, AsyncCreation, Lookup, Source};
use crate::mutex::{CacheMutex, LockGuard};
use crate::registry::BackendCatalog;
use crate::stats::{CountSink, Counter};

/// Which way a source does its I/O.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Io {
    Blocking,
    Async,
}

/// A value creator as the lock algorithm runs it.
trait Creator<T, E>: Sized {
    async fn create(self) -> Result<T, E>;

    /// The creator as a job that can run on another thread (`None` from the job: it failed);
    /// `Err(self)` when it cannot move.
    fn detach(self) -> Result<Box<dyn FnOnce() -> Option<T> + Send>, Self> {
        Err(self)
    }
}

struct BlockingCreator<F>(F);

impl<T, E, F: FnOnce() -> Result<T, E>> Creator<T, E> for BlockingCreator<F> {
    async fn create(self) -> Result<T, E> {
        (self.0)()
    }
}

struct AsyncCreator<F>(F);

impl<T, E, F, Fut> Creator<T, E> for AsyncCreator<F>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    async fn create(self) -> Result<T, E> {
        (self.0)().await
    }
}

struct DetachableCreator<F>(F);

impl<T, F> Creator<T, Infallible> for DetachableCreator<F>
where
    F: FnOnce() -> T + Send + 'static,
{
    async fn create(self) -> Result<T, Infallible> {
        Ok((self.0)())
    }

    fn detach(self) -> Result<Box<dyn FnOnce() -> Option<T> + Send>, Self> {
        let f = self.0;
        Ok(Box::new(move || Some(f())))
    }
}

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
            made: None,
        }
    }

    /// The creation time of the values this creation makes: when it started.
    pub(super) fn created_at(&self) -> Timestamp {
        self.created_at
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
        self.stats
            .add_time(Counter::CreationNanos, self.start.elapsed());
        match self.made {
            Some(n) => self.stats.add(Counter::Creations, n),
            None => self.stats.incr(Counter::CreatorErrors),
        }
    }
}

/// One key of one get-or-create call, as the lock algorithm sees it.
struct RegionSource<'a, C: BackendCatalog, T, E, Cr> {
    region: &'a CacheRegion<C>,
    cfg: &'a Arc<Configured>,
    key: &'a str,
    mkey: &'a str,
    ttl: Option<Duration>,
    should_cache: Option<fn(&T) -> bool>,
    creator: Option<Cr>,
    io: Io,
    mutex: Option<Box<dyn CacheMutex>>,
    guard: Option<LockGuard>,
    /// Whether this caller has waited for another's creation.
    waited: bool,
    _error: PhantomData<fn() -> E>,
}

impl<C: BackendCatalog, T: CacheValue, E, Cr: Creator<T, E>> RegionSource<'_, C, T, E, Cr> {
    /// Releases the held lock: on the async path without blocking the task's thread.
    async fn release(&mut self) {
        if let Some(guard) = self.guard.take() {
            match self.io {
                Io::Blocking => drop(guard),
                Io::Async => guard.release_async().await,
            }
        }
    }

    fn mutex(&mut self) -> &dyn CacheMutex {
        let (region, cfg, mkey) = (self.region, self.cfg, self.mkey);
        &**self
            .mutex
            .get_or_insert_with(|| region.mutex_for(cfg, mkey))
    }
}

impl<C: BackendCatalog, T: CacheValue, E, Cr: Creator<T, E>> Source
    for RegionSource<'_, C, T, E, Cr>
{
    type Value = T;
    type Error = CreateError<E>;

    async fn lookup(&mut self) -> Result<Lookup<T>, CreateError<E>> {
        Ok(match self.io {
            Io::Async => {
                self.region
                    .lookup_async(self.cfg, self.mkey, self.ttl)
                    .await?
            }
            Io::Blocking => self.region.lookup(self.cfg, self.mkey, self.ttl)?,
        })
    }

    async fn try_lock(&mut self) -> Result<bool, CreateError<E>> {
        // A crowd on a stale value finds the lock held: it learns so from the registry without
        // taking a handle, so it writes nothing shared. A backend with its own lock leaves the
        // registry empty and answers below; the one exception is a creation still running under
        // the in-process lock of a configuration since replaced, which does hold the key.
        if self.mutex.is_none() && self.region.held_here(self.mkey) {
            return Ok(false);
        }
        let io = self.io;
        let m = self.mutex();
        let taken = match io {
            Io::Blocking => m.try_acquire(),
            Io::Async => m.try_acquire_async().await,
        }
        .map_err(|e| self.region.backend_failed(e, self.mkey))?;
        if taken {
            self.guard = self.mutex.take().map(LockGuard::new);
        }
        Ok(taken)
    }

    async fn wait(&mut self) -> Result<(), CreateError<E>> {
        let io = self.io;
        // A caller counts once however many times it waits, and whether it then gets another's
        // value or creates one itself (after a failed creator), so the mean wait is per caller.
        let stats = &self.region.stats;
        if !std::mem::replace(&mut self.waited, true) {
            stats.incr(Counter::Waits);
        }
        let m = self.mutex();
        let start = Instant::now();
        // TODO(issue 11): the region's bound on waiting (lock_blocking_timeout).
        let deadline = start + Duration::from_secs(3600);
        let waited = match io {
            Io::Blocking => m.wait(deadline),
            Io::Async => m.wait_async(deadline).await,
        };
        stats.add_time(Counter::WaitNanos, start.elapsed());
        waited.map_err(|e| self.region.backend_failed(e, self.mkey).into())
    }

    async fn unlock(&mut self) {
        self.release().await;
    }

    async fn create(&mut self) -> Result<T, CreateError<E>> {
        let creator = self
            .creator
            .take()
            .expect("the lock algorithm creates at most once per call");
        tracing::debug!(key = self.mkey, backend = %self.cfg.backend_name, "creating value");
        let creation = CreationGuard::start(&self.region.stats, &self.cfg.clock);
        let created_at = creation.created_at();
        let value = creation
            .finish(creator.create().await, |_| 1)
            .map_err(CreateError::Creator)?;
        if self.should_cache.is_none_or(|f| f(&value)) {
            let stored = match self.io {
                Io::Blocking => self.cfg.store(self.mkey, &value, created_at),
                Io::Async => self.cfg.store_async(self.mkey, &value, created_at).await,
            };
            if let Err(e) = stored {
                // The value is good: hand it out, and let the next caller try to store again.
                self.region.backend_failed(e, self.mkey);
            }
        }
        self.release().await;
        Ok(value)
    }

    fn hand_off(&mut self) -> bool {
        let Some(runner) = self.region.async_creation_runner.clone() else {
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
        let guard = self.guard.take();
        let cfg = self.cfg.clone();
        let mkey = self.mkey.to_owned();
        let should_cache = self.should_cache;
        let stats = self.region.stats.handle();
        runner.run(AsyncCreation::new(
            self.key.to_owned(),
            Box::new(move || {
                let creation = CreationGuard::start(&stats, &cfg.clock);
                let created_at = creation.created_at();
                if let Ok(value) = creation.finish(job().ok_or(()), |_| 1) {
                    if should_cache.is_none_or(|f| f(&value)) {
                        if let Err(e) = cfg.store(&mkey, &value, created_at) {
                            stats.incr(Counter::BackendErrors);
                            tracing::warn!(key = mkey, error = %e, "storing a value created in the background failed");
                        }
                    }
                }
                drop(guard);
            }),
        ));
        true
    }
}

impl<C: BackendCatalog> CacheRegion<C> {
    /// The value at `key`; when it is missing or expired, one caller runs `creator` and stores
    /// its value, while the others get the stale value at once or, with no value to give, wait
    /// for the new one.
    ///
    /// ```
    /// # use dogpile_core::{CacheRegion, RegionConfig};
    /// # let region: CacheRegion = CacheRegion::new();
    /// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())).unwrap();
    /// let v = region.get_or_create("answer", || 42).unwrap();
    /// assert_eq!(v, 42);
    /// // A hit: the creator does not run.
    /// assert_eq!(region.get_or_create("answer", || 0).unwrap(), 42);
    /// ```
    #[inline]
    pub fn get_or_create<T: CacheValue>(
        &self,
        key: &str,
        creator: impl FnOnce() -> T,
    ) -> Result<T> {
        self.get_or_create_with(key, &CreateOptions::default(), creator)
    }

    /// [`get_or_create`](CacheRegion::get_or_create) with per-call options: an expiration, and
    /// a `should_cache_fn` that decides whether a created value is stored.
    ///
    /// ```
    /// # use dogpile_core::{CacheRegion, CreateOptions, RegionConfig};
    /// # let region: CacheRegion = CacheRegion::new();
    /// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())).unwrap();
    /// fn dont_cache_none(value: &Option<String>) -> bool {
    ///     value.is_some()
    /// }
    /// let options = CreateOptions::new().should_cache_fn(dont_cache_none);
    /// let v = region.get_or_create_with("some key", &options, || None).unwrap();
    /// assert_eq!(v, None);
    /// assert_eq!(region.get::<Option<String>>("some key").unwrap(), None); // not stored
    /// ```
    #[inline]
    pub fn get_or_create_with<T: CacheValue>(
        &self,
        key: &str,
        options: &CreateOptions<T>,
        creator: impl FnOnce() -> T,
    ) -> Result<T> {
        self.try_get_or_create(key, options, || Ok::<T, Infallible>(creator()))
            .map_err(CreateError::into_cache_error)
    }

    /// [`get_or_create_with`](CacheRegion::get_or_create_with) for a creator that can fail: its
    /// error reaches this caller only, nothing is stored, and the lock is released for the next.
    ///
    /// A [`CreateError::Cache`] means the creator did not run: once it has made a value, the
    /// value is returned even if storing it fails (the failure is logged and counted).
    #[inline]
    pub fn try_get_or_create<T: CacheValue, E>(
        &self,
        key: &str,
        options: &CreateOptions<T>,
        creator: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, CreateError<E>> {
        self.get_or_create_blocking(key, options, BlockingCreator(creator))
            .map_err(|(e, _)| e)
    }

    /// The blocking get-or-create: the hit path inline, the rest in `create_slow`. On an error,
    /// the creator comes back when it has not run.
    #[inline]
    fn get_or_create_blocking<T: CacheValue, E, Cr: Creator<T, E>>(
        &self,
        key: &str,
        options: &CreateOptions<T>,
        creator: Cr,
    ) -> Result<T, (CreateError<E>, Option<Cr>)> {
        self.state.with(|cfg| {
            let Some(cfg) = cfg else {
                return Err((self.not_configured().into(), Some(creator)));
            };
            let ttl = cfg.ttl(options.expiration_time.as_ref());
            if let Err(e) = self.check_soft(cfg, ttl, key) {
                return Err((e.into(), Some(creator)));
            }
            let mkey = cfg.mangle(key);
            let first = match self.lookup::<T>(cfg, &mkey, ttl) {
                Ok(first) => first,
                Err(e) => return Err((e.into(), Some(creator))),
            };
            if let Lookup::Fresh(v) = first {
                self.stats.incr(Counter::Hits);
                return Ok(v);
            }
            self.create_slow(cfg, key, &mkey, ttl, options, first, creator, Io::Blocking)
        })
    }

    /// [`get_or_create_with`](CacheRegion::get_or_create_with) whose creator can run on the
    /// region's [`AsyncCreationRunner`]: for a stale value, the runner creates the new one while
    /// this caller gets the stale one at once. Without a runner it is `get_or_create_with`.
    /// (`get_or_create` cannot hand its creator to another thread: it may borrow from the
    /// caller.)
    pub fn get_or_create_in_background<T: CacheValue>(
        &self,
        key: &str,
        options: &CreateOptions<T>,
        creator: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        self.get_or_create_blocking(key, options, DetachableCreator(creator))
            .map_err(|(e, _)| e.into_cache_error())
    }

    /// [`get_or_create_in_background`](CacheRegion::get_or_create_in_background) that gives the
    /// creator back with the error when it has not run, so a caller can run it without the
    /// cache. For `#[cache_on_arguments]`.
    #[doc(hidden)]
    pub fn get_or_create_detachable<T: CacheValue, F: FnOnce() -> T + Send + 'static>(
        &self,
        key: &str,
        options: &CreateOptions<T>,
        creator: F,
    ) -> Result<T, (Error, Option<F>)> {
        self.get_or_create_blocking(key, options, DetachableCreator(creator))
            .map_err(|(e, c)| (e.into_cache_error(), c.map(|c| c.0)))
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn create_slow<T: CacheValue, E, Cr: Creator<T, E>>(
        &self,
        cfg: &Arc<Configured>,
        key: &str,
        mkey: &str,
        ttl: Option<Duration>,
        options: &CreateOptions<T>,
        first: Lookup<T>,
        creator: Cr,
        io: Io,
    ) -> Result<T, (CreateError<E>, Option<Cr>)> {
        let _span = tracing::debug_span!(
            "get_or_create",
            region = self.name(),
            key = mkey,
            backend = %cfg.backend_name
        )
        .entered();
        self.count_read(&first);
        let mut source = RegionSource {
            region: self,
            cfg,
            key,
            mkey,
            ttl,
            should_cache: options.should_cache_fn,
            creator: Some(creator),
            io,
            mutex: None,
            guard: None,
            waited: false,
            _error: PhantomData,
        };
        // The blocking source never yields, so this drives the algorithm on this thread.
        match pollster::block_on(lock::get_or_create(&mut source, first)) {
            Ok((value, outcome)) => {
                self.count_outcome(outcome, mkey);
                Ok(value)
            }
            Err(e) => Err((e, source.creator.take())),
        }
    }

    /// [`get_or_create`](CacheRegion::get_or_create) for async code: waiters `.await` instead
    /// of blocking a thread, and backends with an async client do their I/O without blocking.
    pub async fn get_or_create_async<T, F, Fut>(&self, key: &str, creator: F) -> Result<T>
    where
        T: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.try_get_or_create_async(key, &CreateOptions::default(), || async {
            Ok::<T, Infallible>(creator().await)
        })
        .await
        .map_err(CreateError::into_cache_error)
    }

    /// [`try_get_or_create`](CacheRegion::try_get_or_create) for async code.
    pub async fn try_get_or_create_async<T, E, F, Fut>(
        &self,
        key: &str,
        options: &CreateOptions<T>,
        creator: F,
    ) -> Result<T, CreateError<E>>
    where
        T: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cfg = self.configured()?;
        let ttl = cfg.ttl(options.expiration_time.as_ref());
        self.check_soft(&cfg, ttl, key)?;
        let mkey = cfg.mangle(key);
        let mut source = RegionSource {
            region: self,
            cfg: &cfg,
            key,
            mkey: &mkey,
            ttl,
            should_cache: options.should_cache_fn,
            creator: Some(AsyncCreator(creator)),
            io: Io::Async,
            mutex: None,
            guard: None,
            waited: false,
            _error: PhantomData,
        };
        let first = source.lookup().await?;
        self.count_read(&first);
        if let Lookup::Fresh(v) = first {
            return Ok(v);
        }
        let span = tracing::debug_span!(
            "get_or_create",
            region = self.name(),
            key = &*mkey,
            backend = %cfg.backend_name
        );
        let (value, outcome) =
            tracing::Instrument::instrument(lock::get_or_create(&mut source, first), span).await?;
        self.count_outcome(outcome, &mkey);
        Ok(value)
    }
}
