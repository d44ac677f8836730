//! Get-or-create under the dogpile lock: the creators (blocking, async, detachable, batch) and
//! the region's public `get_or_create*` methods. The region as the lock algorithm's source is in
//! `source.rs`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use smallvec::smallvec;

use super::resilience::Seen;
use super::source::{KeySlot, RegionSource};
use super::{CacheRegion, CacheValue, Configured, CreateOptions};
use crate::clock::Timestamp;
use crate::error::{CreateError, Error, Result};
use crate::lock::{self, KeyState, Lookup, Outcome, PerKey};
use crate::registry::BackendCatalog;
use crate::stats::Counter;

/// Which way a source does its I/O.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Io {
    Blocking,
    Async,
}

/// A value creator as the lock algorithm runs it: for one key or a batch.
pub(super) trait Creator<T, E>: Sized {
    /// The values of `keys` (the caller's keys, in the caller's order), in that order.
    async fn create(self, keys: &[&str]) -> Result<PerKey<T>, E>;

    /// The creator as a job that can run on another thread (`None` from the job: it failed);
    /// `Err(self)` when it cannot move.
    fn detach(self) -> Result<Box<dyn FnOnce() -> Option<T> + Send>, Self> {
        Err(self)
    }
}

struct BlockingCreator<F>(F);

impl<T, E, F: FnOnce() -> Result<T, E>> Creator<T, E> for BlockingCreator<F> {
    async fn create(self, _: &[&str]) -> Result<PerKey<T>, E> {
        (self.0)().map(|v| smallvec![v])
    }
}

struct AsyncCreator<F>(F);

impl<T, E, F, Fut> Creator<T, E> for AsyncCreator<F>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    async fn create(self, _: &[&str]) -> Result<PerKey<T>, E> {
        (self.0)().await.map(|v| smallvec![v])
    }
}

struct DetachableCreator<F>(F);

impl<T, F> Creator<T, Infallible> for DetachableCreator<F>
where
    F: FnOnce() -> T + Send + 'static,
{
    async fn create(self, _: &[&str]) -> Result<PerKey<T>, Infallible> {
        Ok(smallvec![(self.0)()])
    }

    fn detach(self) -> Result<Box<dyn FnOnce() -> Option<T> + Send>, Self> {
        let f = self.0;
        Ok(Box::new(move || Some(f())))
    }
}

/// The creator of a batch: the missing keys in, their values out, in the same order.
pub(super) struct BatchCreator<F>(pub(super) F);

impl<T, E, F: FnOnce(&[&str]) -> Result<Vec<T>, E>> Creator<T, E> for BatchCreator<F> {
    async fn create(self, keys: &[&str]) -> Result<PerKey<T>, E> {
        (self.0)(keys).map(PerKey::from_vec)
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
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`] before [`configure`](CacheRegion::configure);
    /// [`Error::SoftInvalidationWithoutExpiration`] after a soft
    /// [`invalidate`](CacheRegion::invalidate) on a region with no expiration; a backend error
    /// (counted in [`stats`](CacheRegion::stats) and logged) when the first read fails, before the
    /// creator runs; [`Error::LockTimeout`] when another caller's creation outlasts the region's
    /// `lock_blocking_timeout` and there is no value to give. Once the creator has made a value it
    /// is returned, even if storing it fails (logged and counted).
    ///
    /// # Panics
    ///
    /// A panic of `creator` unwinds to this caller, nothing is stored, and the key's lock is
    /// released on the way: a caller waiting for this creation takes the lock and creates.
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
    ///
    /// # Errors
    ///
    /// As [`get_or_create`](CacheRegion::get_or_create).
    ///
    /// # Panics
    ///
    /// As [`get_or_create`](CacheRegion::get_or_create).
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
    /// ```
    /// # use dogpile_core::{CacheRegion, CreateError, CreateOptions, RegionConfig};
    /// # let region: CacheRegion = CacheRegion::new();
    /// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())).unwrap();
    /// let options = CreateOptions::new();
    /// let failed = region.try_get_or_create("k", &options, || Err::<u8, _>("no database"));
    /// assert!(matches!(failed, Err(CreateError::Creator("no database"))));
    /// assert_eq!(region.get::<u8>("k").unwrap(), None); // nothing stored
    /// assert_eq!(region.try_get_or_create("k", &options, || Ok::<_, &str>(3)).unwrap(), 3);
    /// ```
    ///
    /// # Errors
    ///
    /// [`CreateError::Creator`] with the creator's error; [`CreateError::Cache`] with any error of
    /// [`get_or_create`](CacheRegion::get_or_create), which means the creator did not run: once
    /// it has made a value, the value is returned even if storing it fails (the failure is logged
    /// and counted).
    ///
    /// # Panics
    ///
    /// As [`get_or_create`](CacheRegion::get_or_create).
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
            let (first, stamp) = match self.lookup_stamped::<T>(cfg, &mkey, ttl) {
                Ok(first) => first,
                Err(e) => return Err((e.into(), Some(creator))),
            };
            // No tags and nothing to judge (the common call): the read is the answer.
            let (first, seen) = if options.tags.is_empty() && self.first_read_is_final(cfg, options)
            {
                (first, Seen::stamped(stamp))
            } else {
                let floors = self.tag_floors(cfg, &options.tags);
                let first = floors.demote(first, stamp);
                match self.judge_first(cfg, options, first, stamp, ttl, &mkey) {
                    Ok((first, seen)) => (first, Seen { floors, ..seen }),
                    Err(e) => return Err((e.into(), Some(creator))),
                }
            };
            if let Lookup::Fresh(v) = first {
                self.stats.incr(Counter::Hits);
                return Ok(v);
            }
            self.create_slow(
                cfg,
                key,
                &mkey,
                ttl,
                options,
                first,
                creator,
                Io::Blocking,
                seen,
            )
        })
    }

    /// The value a get-or-create call at `key` with `options` would return at once, when
    /// answering it needs no work: a fresh value in a backend that never blocks (the memory
    /// backend) or in the local tier, not invalidated (region or tags), not due for an early
    /// refresh. `None` whenever the call has more to do or to decide (a miss, a stale value, an
    /// early refresh, a backend that does I/O, a tag time not known here, an error to report):
    /// the call itself then reads again. Counted as a hit only when it answers.
    ///
    /// For async callers: a hit is answered before any future of the get-or-create is built,
    /// and without allocating (beyond the value's own clone, and a key mangler's key).
    ///
    /// ```
    /// # use dogpile_core::{CacheRegion, CreateOptions, RegionConfig};
    /// # let region: CacheRegion = CacheRegion::new();
    /// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())).unwrap();
    /// let options = CreateOptions::<u8>::new();
    /// // `MapBackend` may block (it says so), so only the call itself answers:
    /// region.set("k", 3u8).unwrap();
    /// assert_eq!(region.hit_now("k", &options), None);
    /// assert_eq!(region.get_or_create_with("k", &options, || 0).unwrap(), 3);
    /// ```
    // Always inlined: it is the whole of an async hit. With more than one caller for a value type
    // (a decorated `async fn` and a region's own async call) the compiler put it out of line,
    // at about 35 instructions of call and register saving per hit.
    #[inline(always)]
    pub fn hit_now<T: CacheValue>(&self, key: &str, options: &CreateOptions<T>) -> Option<T> {
        // The configuration read without a closure, which the compiler would put out of line
        // just the same.
        let pinned = self.state.pin();
        let cfg = pinned.get()?;
        let ttl = cfg.ttl(options.expiration_time.as_ref());
        // A soft invalidation without an expiration is an error the call reports.
        if ttl.is_none()
            && self
                .active_invalidator(cfg)
                .is_some_and(|inv| inv.was_soft_invalidated())
        {
            return None;
        }
        // XFetch draws at every judged read: a draw here and another in the call would
        // change its odds, so the call alone judges.
        let call_beta = options
            .resilience
            .as_ref()
            .and_then(|r| r.early_expiration_beta);
        if call_beta
            .or(cfg.resilience.options.early_expiration_beta)
            .is_some()
        {
            return None;
        }
        // A backend that may block and no local tier: nothing here can answer, so the key is
        // not even mangled (the call mangles it again).
        if cfg.tier.is_none() && !cfg.never_blocks {
            return None;
        }
        let mkey = cfg.mangle(key);
        let (mut found, stamp, local) = self.peek_fresh::<T>(cfg, &mkey, ttl)?;
        // The common call (no tags, nothing to judge) skips both steps: the read is the answer.
        if !options.tags.is_empty() {
            // Only times already known here: reading them is I/O, the call's to do.
            let floors = cfg
                .tags
                .known_floors(&options.tags, cfg.clock.now_coarse())?;
            found = floors.demote(found, Some(stamp));
        }
        if !self.first_read_is_final(cfg, options) {
            let seen;
            (found, seen) = self
                .judge_first(cfg, options, found, Some(stamp), ttl, &mkey)
                .ok()?;
            debug_assert!(
                !matches!(found, Lookup::Fresh(_)) || seen.early.is_none(),
                "a value due early is judged stale"
            );
        }
        let Lookup::Fresh(v) = found else {
            return None;
        };
        if local {
            self.stats.incr(Counter::LocalHits);
        }
        self.stats.incr(Counter::Hits);
        Some(v)
    }

    /// A fresh value at `mkey` read without I/O, with its creation stamp and whether the local
    /// tier held it; nothing counted (a read that finds anything else is the call's to make and
    /// count). Always inlined, as `hit_now` is, which has already given up on a backend that may
    /// block with no local tier in front of it.
    #[inline(always)]
    fn peek_fresh<T: CacheValue>(
        &self,
        cfg: &Configured,
        mkey: &str,
        ttl: Option<Duration>,
    ) -> Option<(Lookup<T>, Timestamp, bool)> {
        if let Some(tier) = &cfg.tier {
            let now = cfg.clock.now_coarse();
            let (v, stamp) = tier.read::<T, _>(
                mkey,
                now,
                |meta| self.judge_at(cfg, meta, ttl, mkey, Some(now)) == Some(true),
                |v, meta| (v.clone(), meta.created_at),
            )?;
            return Some((Lookup::Fresh(v), stamp, true));
        }
        debug_assert!(
            cfg.never_blocks,
            "hit_now reads only a backend that never blocks"
        );
        let mut found = None;
        cfg.backend
            .visit(mkey, &mut |v| {
                let stamp = v.metadata.created_at;
                if let fresh @ Lookup::Fresh(_) = self.classify(cfg, v, ttl, mkey) {
                    found = Some((fresh, stamp, false));
                }
            })
            .ok()?;
        found
    }

    /// [`get_or_create_with`](CacheRegion::get_or_create_with) whose creator can run on the
    /// region's [`AsyncCreationRunner`](crate::AsyncCreationRunner): for a stale value, the
    /// runner creates the new one while this caller gets the stale one at once. Without a runner
    /// it is `get_or_create_with`.
    /// (`get_or_create` cannot hand its creator to another thread: it may borrow from the
    /// caller.)
    ///
    /// # Errors
    ///
    /// As [`get_or_create`](CacheRegion::get_or_create).
    ///
    /// # Panics
    ///
    /// As [`get_or_create`](CacheRegion::get_or_create) when the creator runs on this caller's
    /// thread; a panic on the runner's thread is the runner's, and the lock is released there.
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
        seen: Seen,
    ) -> Result<T, (CreateError<E>, Option<Cr>)> {
        let _span = tracing::debug_span!(
            "get_or_create",
            region = self.name(),
            key = mkey,
            backend = %cfg.backend_name
        )
        .entered();
        match seen.early {
            // A hit, to be refreshed early.
            Some(_) => self.stats.incr(Counter::Hits),
            None => self.count_read(&first),
        }
        let mut slots = [KeySlot::new(key, mkey, 0)];
        let mut source = RegionSource::new(self, cfg, &mut slots, ttl, options, creator, io);
        source.floors = seen.floors;
        if let Some(v) = source.serve_throttled(&first, seen) {
            return Ok(v);
        }
        source.watch_from(0, &first, seen);
        let mut keys = [KeyState::new(first)];
        // The blocking source never yields, so this drives the algorithm on this thread.
        let ran = lock::block_on(source.run_catching(&mut keys));
        self.settle(ran, &mut source, keys, mkey)
    }

    /// [`get_or_create`](CacheRegion::get_or_create) for async code: waiters `.await` instead
    /// of blocking a thread, and backends with an async client do their I/O without blocking.
    ///
    /// ```
    /// # use dogpile_core::{CacheRegion, RegionConfig};
    /// # let region: CacheRegion = CacheRegion::new();
    /// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())).unwrap();
    /// let v = pollster::block_on(region.get_or_create_async("k", || async { 9u8 })).unwrap();
    /// assert_eq!(v, 9);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get_or_create`](CacheRegion::get_or_create).
    ///
    /// # Panics
    ///
    /// A panic of the creator's future unwinds through this future; the lock is released as the
    /// future is dropped. Dropping the future (a cancelled task, a timeout) releases it too.
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
    ///
    /// A fresh value that needs no I/O (the memory backend, the local tier) is answered by the
    /// first poll, without allocating; the rest of the call (the lock algorithm's state,
    /// hundreds of bytes) is boxed, so this future stays small, hit or not:
    ///
    /// ```
    /// # use dogpile_core::{CacheRegion, CreateOptions, RegionConfig};
    /// # let region: CacheRegion = CacheRegion::new();
    /// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())).unwrap();
    /// let options = CreateOptions::new();
    /// let call = region.try_get_or_create_async("k", &options, || async { Ok::<u8, ()>(1) });
    /// assert!(std::mem::size_of_val(&call) <= 256);
    /// assert_eq!(pollster::block_on(call).unwrap(), 1);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`try_get_or_create`](CacheRegion::try_get_or_create).
    ///
    /// # Panics
    ///
    /// As [`get_or_create_async`](CacheRegion::get_or_create_async).
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
        if let Some(v) = self.hit_now(key, options) {
            return Ok(v);
        }
        Box::pin(self.try_get_or_create_async_past_hit(key, options, creator)).await
    }

    /// [`try_get_or_create_async`](CacheRegion::try_get_or_create_async) once
    /// [`hit_now`](CacheRegion::hit_now) has not answered: the call reads again and runs the lock
    /// algorithm, unboxed. For the attributes' generated code, which asks `hit_now` and boxes
    /// the rest itself; not a public API.
    #[doc(hidden)]
    pub async fn try_get_or_create_async_past_hit<T, E, F, Fut>(
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
        // The read first: nothing of the slow path (the source, its options) is built for a hit
        // that `hit_now` left to the call (a backend that may block, a value to judge). Not the
        // blocking path's shortcut for a call with nothing to judge: the hit that needs no I/O
        // was answered before this, by `hit_now`.
        let floors = self.tag_floors_async(&cfg, &options.tags).await;
        let (first, stamp) = self.lookup_stamped_async(&cfg, &mkey, ttl).await?;
        let first = floors.demote(first, stamp);
        let (first, mut seen) = self.judge_first(&cfg, options, first, stamp, ttl, &mkey)?;
        seen.floors = floors;
        match seen.early {
            Some(_) => self.stats.incr(Counter::Hits),
            None => self.count_read(&first),
        }
        if let Lookup::Fresh(v) = first {
            return Ok(v);
        }
        let mut slots = [KeySlot::new(key, &mkey, 0)];
        let creator = AsyncCreator(creator);
        let mut source =
            RegionSource::new(self, &cfg, &mut slots, ttl, options, creator, Io::Async);
        source.floors = seen.floors;
        if let Some(v) = source.serve_throttled(&first, seen) {
            return Ok(v);
        }
        source.watch_from(0, &first, seen);
        let mut keys = [KeyState::new(first)];
        let span = tracing::debug_span!(
            "get_or_create",
            region = self.name(),
            key = &*mkey,
            backend = %cfg.backend_name
        );
        let ran = tracing::Instrument::instrument(source.run_catching(&mut keys), span).await;
        self.settle(ran, &mut source, keys, &mkey)
            .map_err(|(e, _)| e)
    }

    /// The value of a one-key call the lock algorithm has finished, its outcome counted. An
    /// early refresh that found the lock taken returned a value that has not expired: a hit,
    /// not a stale value served.
    pub(super) fn one_outcome<T>(&self, keys: [KeyState<T>; 1], mkey: &str, early: bool) -> T {
        let [key] = keys;
        self.key_outcome(key, mkey, early)
    }

    /// The value of one key (of one key's call, or of a batch) the lock algorithm has finished,
    /// its outcome counted (see [`one_outcome`](Self::one_outcome)).
    pub(super) fn key_outcome<T>(&self, key: KeyState<T>, mkey: &str, early: bool) -> T {
        let (value, outcome) = key
            .into_done()
            .expect("the lock algorithm finishes every key it returns for");
        let outcome = match outcome {
            Outcome::Stale if early => Outcome::Fresh,
            other => other,
        };
        self.count_outcome(outcome, mkey);
        value
    }
}
