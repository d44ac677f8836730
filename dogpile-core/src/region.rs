//! [`CacheRegion`]: the front end. Get, set and delete values; get-or-create them under the
//! dogpile lock; invalidate; configure the backend at run time.

use std::any::Any;
use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{Backend, CachedValue, Metadata, Payload, PayloadKind, FORMAT_VERSION};
use crate::clock::Clock;
use crate::codec;
use crate::config::{BackendSpec, RegionConfig};
use crate::error::{CreateError, Error, Result};
use crate::expiration::{is_expired, Expiration};
use crate::invalidation::{DefaultInvalidation, RegionInvalidationStrategy};
use crate::key::{FunctionKeyGenerator, FunctionMultiKeyGenerator, KeyMangler};
use crate::lock::{self, AsyncCreation, AsyncCreationRunner, Lookup, Outcome, Source};
use crate::mutex::{CacheMutex, LocalLocks, LockGuard};
use crate::proxy::wrap_chain;
use crate::registry::{make_backend, BackendCatalog, NoBuiltins};
use crate::slot::Slot;
use crate::stats::{CountSink, Counter, RegionStats, Stats};

/// A value a region can cache: any `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`
/// type. Serializable even where the memory backend never serializes it, so that moving a region
/// to Redis is a configuration change.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: a cached value must be `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`",
    label = "this type is cached",
    note = "derive `serde::Serialize`, `serde::Deserialize` and `Clone` for it, or cache an owned type that has them"
)]
pub trait CacheValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> CacheValue for T {}

/// Per-call options of the get-or-create methods.
#[derive(Clone)]
pub struct CreateOptions<T> {
    expiration_time: Option<Expiration>,
    should_cache_fn: Option<fn(&T) -> bool>,
}

impl<T> Default for CreateOptions<T> {
    fn default() -> Self {
        CreateOptions {
            expiration_time: None,
            should_cache_fn: None,
        }
    }
}

impl<T> CreateOptions<T> {
    /// No per-call options: the region's expiration, every value stored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overrides the region's expiration for this call (`-1` or [`Expiration::Never`]: never).
    pub fn expiration_time(mut self, expiration: impl Into<Expiration>) -> Self {
        self.expiration_time = Some(expiration.into());
        self
    }

    /// Overrides the region's expiration for this call when `Some`.
    pub fn maybe_expiration_time(mut self, expiration: Option<Expiration>) -> Self {
        self.expiration_time = expiration.or(self.expiration_time);
        self
    }

    /// Stores a created value only when `f` returns true; the value is returned either way.
    pub fn should_cache_fn(mut self, f: fn(&T) -> bool) -> Self {
        self.should_cache_fn = Some(f);
        self
    }
}

impl<T> fmt::Debug for CreateOptions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateOptions")
            .field("expiration_time", &self.expiration_time)
            .field("should_cache_fn", &self.should_cache_fn.is_some())
            .finish()
    }
}

/// The region's choice of key mangler.
#[derive(Clone, Debug)]
enum ManglerChoice {
    /// The backend's recommended mangler, if it has one.
    BackendDefault,
    /// No mangling at all, even where the backend recommends one.
    Disabled,
    /// This mangler.
    Use(KeyMangler),
}

/// What `configure` sets up; swapped as one piece so a reader sees either the old or the new.
struct Configured {
    backend: Arc<dyn Backend>,
    backend_name: String,
    kind: PayloadKind,
    never_blocks: bool,
    expiration: Option<Expiration>,
    mangler: Option<KeyMangler>,
    clock: Clock,
    invalidator: Option<Arc<dyn RegionInvalidationStrategy>>,
}

impl Configured {
    #[inline]
    fn mangle<'k>(&self, key: &'k str) -> Cow<'k, str> {
        match &self.mangler {
            None => Cow::Borrowed(key),
            Some(m) => Cow::Owned(m.mangle(key)),
        }
    }

    /// The expiration in force for one call.
    #[inline]
    fn ttl(&self, per_call: Option<&Expiration>) -> Option<Duration> {
        per_call
            .or(self.expiration.as_ref())
            .and_then(Expiration::resolve)
    }

    /// Wraps a value for this backend: the object itself, or its bytes.
    fn wrap_value<T: CacheValue>(&self, key: &str, value: &T) -> Result<CachedValue> {
        let payload = match self.kind {
            PayloadKind::Object => Payload::Object(Arc::new(value.clone())),
            PayloadKind::Bytes => Payload::Bytes(Arc::from(codec::encode_value(value).map_err(
                |message| Error::Encode {
                    key: key.to_owned(),
                    message,
                },
            )?)),
        };
        Ok(CachedValue {
            payload,
            metadata: Metadata::new(self.clock.now()),
        })
    }

    /// Stores a value at an already mangled key.
    fn store<T: CacheValue>(&self, mkey: &str, value: &T) -> Result<()> {
        self.backend.set(mkey, self.wrap_value(mkey, value)?)
    }

    /// Stores a value at an already mangled key, through the backend's async path.
    async fn store_async<T: CacheValue>(&self, mkey: &str, value: &T) -> Result<()> {
        let wrapped = self.wrap_value(mkey, value)?;
        if self.never_blocks {
            self.backend.set(mkey, wrapped)
        } else {
            self.backend.set_async(mkey, wrapped).await
        }
    }
}

/// Reads the `T` out of a stored payload; `None` (logged) when it holds something else.
#[inline]
fn decode_payload<T: CacheValue>(payload: &Payload, mkey: &str, backend: &str) -> Option<T> {
    match payload {
        Payload::Object(obj) => {
            let v = (&**obj as &dyn Any).downcast_ref::<T>().cloned();
            if v.is_none() {
                tracing::warn!(
                    backend,
                    key = mkey,
                    expected = std::any::type_name::<T>(),
                    "cache entry holds a value of another type; read as a miss"
                );
            }
            v
        }
        Payload::Bytes(bytes) => match codec::decode_value::<T>(bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(backend, key = mkey, error = %e, "undecodable cache entry read as a miss");
                None
            }
        },
    }
}

/// A cache region: the front end to one configured backend.
///
/// A region is a plain value: it can live in a `static` (see [`CacheRegion::new`]) and be named
/// by `#[cache_on_arguments]` at compile time; its backend is chosen at run time with
/// [`configure`](CacheRegion::configure) or
/// [`configure_from_config`](CacheRegion::configure_from_config).
///
/// The type parameter is the catalog of built-in backend names; the `dogpile` facade fixes it to
/// every backend this build has, so users write `dogpile::CacheRegion` without it.
pub struct CacheRegion<C: BackendCatalog = NoBuiltins> {
    name: Option<Cow<'static, str>>,
    key_mangler: ManglerChoice,
    function_key_generator: Option<FunctionKeyGenerator>,
    function_multi_key_generator: Option<FunctionMultiKeyGenerator>,
    async_creation_runner: Option<Arc<dyn AsyncCreationRunner>>,
    state: Slot<Configured>,
    configure_lock: parking_lot::Mutex<()>,
    invalidation: DefaultInvalidation,
    locks: OnceLock<Arc<LocalLocks>>,
    stats: RegionStats,
    _catalog: PhantomData<fn() -> C>,
}

impl<C: BackendCatalog> Default for CacheRegion<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: BackendCatalog> fmt::Debug for CacheRegion<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.get();
        f.debug_struct("CacheRegion")
            .field("name", &self.name())
            .field("backend", &state.as_ref().map(|c| c.backend_name.as_str()))
            .field(
                "expiration",
                &state.as_ref().and_then(|c| c.expiration.clone()),
            )
            .finish_non_exhaustive()
    }
}

/// Builds a region with the options dogpile's `make_region()` takes.
///
/// ```
/// use dogpile_core::{sha1_mangle_key, CacheRegion, RegionBuilder};
///
/// let region: CacheRegion = RegionBuilder::new()
///     .name("users")
///     .key_mangler(sha1_mangle_key)
///     .build();
/// assert_eq!(region.name(), "users");
/// ```
pub struct RegionBuilder<C: BackendCatalog = NoBuiltins> {
    region: CacheRegion<C>,
}

impl<C: BackendCatalog> Default for RegionBuilder<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: BackendCatalog> RegionBuilder<C> {
    /// A builder with every option at its default.
    pub fn new() -> Self {
        RegionBuilder {
            region: CacheRegion::new(),
        }
    }

    /// The region's name, for logs and errors.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.region.name = Some(name.into());
        self
    }

    /// A function applied to every key before it reaches the backend.
    pub fn key_mangler(mut self, mangler: fn(&str) -> String) -> Self {
        self.region.key_mangler = ManglerChoice::Use(KeyMangler::Fn(mangler));
        self
    }

    /// A closure applied to every key before it reaches the backend.
    pub fn key_mangler_fn(
        mut self,
        mangler: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.region.key_mangler = ManglerChoice::Use(KeyMangler::closure(mangler));
        self
    }

    /// No key mangling, even where the backend recommends a mangler.
    pub fn no_key_mangler(mut self) -> Self {
        self.region.key_mangler = ManglerChoice::Disabled;
        self
    }

    /// The key generator of `#[cache_on_arguments]` functions on this region.
    pub fn function_key_generator(mut self, generator: FunctionKeyGenerator) -> Self {
        self.region.function_key_generator = Some(generator);
        self
    }

    /// The key generator of `#[cache_multi_on_arguments]` functions on this region.
    pub fn function_multi_key_generator(mut self, generator: FunctionMultiKeyGenerator) -> Self {
        self.region.function_multi_key_generator = Some(generator);
        self
    }

    /// Creates values for stale keys away from the caller (see [`AsyncCreationRunner`]).
    pub fn async_creation_runner(mut self, runner: impl AsyncCreationRunner) -> Self {
        self.region.async_creation_runner = Some(Arc::new(runner));
        self
    }

    /// The region, not yet configured.
    pub fn build(self) -> CacheRegion<C> {
        self.region
    }

    /// The region, configured.
    pub fn configure(self, config: impl Into<RegionConfig>) -> Result<CacheRegion<C>> {
        let region = self.region;
        region.configure(config)?;
        Ok(region)
    }
}

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

/// Counts a creator error when dropped: forgotten when the creator returns.
struct FailureCounter<'a, S: CountSink>(&'a S);

impl<S: CountSink> Drop for FailureCounter<'_, S> {
    fn drop(&mut self) {
        self.0.incr(Counter::CreatorErrors);
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
        let stats = &self.region.stats;
        let start = Instant::now();
        // Counts a creator that panics (unwinds through here) or fails as a creator error.
        let failed = FailureCounter(stats);
        let created = creator.create().await;
        std::mem::forget(failed);
        stats.add_time(Counter::CreationNanos, start.elapsed());
        let value = created.map_err(|e| {
            stats.incr(Counter::CreatorErrors);
            CreateError::Creator(e)
        })?;
        stats.incr(Counter::Creations);
        if self.should_cache.is_none_or(|f| f(&value)) {
            let stored = match self.io {
                Io::Blocking => self.cfg.store(self.mkey, &value),
                Io::Async => self.cfg.store_async(self.mkey, &value).await,
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
                let start = Instant::now();
                let failed = FailureCounter(&stats);
                let created = job();
                std::mem::forget(failed);
                stats.add_time(Counter::CreationNanos, start.elapsed());
                match created {
                    Some(value) => {
                        stats.incr(Counter::Creations);
                        if should_cache.is_none_or(|f| f(&value)) {
                            if let Err(e) = cfg.store(&mkey, &value) {
                                stats.incr(Counter::BackendErrors);
                                tracing::warn!(key = mkey, error = %e, "storing a value created in the background failed");
                            }
                        }
                    }
                    None => stats.incr(Counter::CreatorErrors),
                }
                drop(guard);
            }),
        ));
        true
    }
}

impl<C: BackendCatalog> CacheRegion<C> {
    /// A region with no name and default options, not yet configured. A `const fn`, so a region
    /// can be a `static`:
    ///
    /// ```
    /// use dogpile_core::CacheRegion;
    /// static REGION: CacheRegion = CacheRegion::new();
    /// assert!(!REGION.is_configured());
    /// ```
    pub const fn new() -> Self {
        Self::with_name(None)
    }

    const fn with_name(name: Option<Cow<'static, str>>) -> Self {
        CacheRegion {
            name,
            key_mangler: ManglerChoice::BackendDefault,
            function_key_generator: None,
            function_multi_key_generator: None,
            async_creation_runner: None,
            state: Slot::empty(),
            configure_lock: parking_lot::Mutex::new(()),
            invalidation: DefaultInvalidation::new(),
            locks: OnceLock::new(),
            stats: RegionStats::new(),
            _catalog: PhantomData,
        }
    }

    /// A named region with default options; also a `const fn`.
    pub const fn named(name: &'static str) -> Self {
        Self::with_name(Some(Cow::Borrowed(name)))
    }

    /// A builder for the options of dogpile's `make_region()`.
    pub fn builder() -> RegionBuilder<C> {
        RegionBuilder::new()
    }

    /// The region's name, or `<unnamed>`.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("<unnamed>")
    }

    /// The key generator set for `#[cache_on_arguments]` functions, if any.
    pub fn function_key_generator(&self) -> Option<FunctionKeyGenerator> {
        self.function_key_generator
    }

    /// The key generator set for `#[cache_multi_on_arguments]` functions, if any.
    pub fn function_multi_key_generator(&self) -> Option<FunctionMultiKeyGenerator> {
        self.function_multi_key_generator
    }

    /// Configures the backend: a name and its arguments, or an instance, with the default
    /// expiration, proxies, and whether to replace a backend already configured.
    ///
    /// ```
    /// use dogpile_core::{CacheRegion, RegionConfig, register_backend};
    /// # use dogpile_core::{Backend, CachedValue, PayloadKind, Result};
    /// # struct Nothing;
    /// # impl Backend for Nothing {
    /// #     fn name(&self) -> &str { "nothing" }
    /// #     fn payload_kind(&self) -> PayloadKind { PayloadKind::Object }
    /// #     fn get(&self, _: &str) -> Result<Option<CachedValue>> { Ok(None) }
    /// #     fn set(&self, _: &str, _: CachedValue) -> Result<()> { Ok(()) }
    /// #     fn delete(&self, _: &str) -> Result<()> { Ok(()) }
    /// # }
    /// register_backend("nothing", |_| Ok(Nothing));
    ///
    /// static REGION: CacheRegion = CacheRegion::new();
    /// REGION.configure(RegionConfig::new("nothing").expiration_time(3600)).unwrap();
    /// assert!(REGION.is_configured());
    /// // A second configure needs replace_existing_backend.
    /// assert!(REGION.configure("nothing").is_err());
    /// REGION.configure(RegionConfig::new("nothing").replace_existing_backend(true)).unwrap();
    /// ```
    pub fn configure(&self, config: impl Into<RegionConfig>) -> Result<&Self> {
        let config = config.into();
        let _serial = self.configure_lock.lock();
        if let Some(existing) = self.state.get() {
            if !config.replace_existing_backend {
                return Err(Error::AlreadyConfigured {
                    region: self.name().to_owned(),
                    backend: existing.backend_name.clone(),
                });
            }
        }
        let (backend, backend_name) = match &config.backend {
            BackendSpec::Name(name) => {
                let backend = make_backend::<C>(name, &config.arguments).map_err(|e| match e {
                    Error::UnknownBackend {
                        key: None,
                        name,
                        hint,
                        known,
                    } => Error::UnknownBackend {
                        key: config.backend_key.clone(),
                        name,
                        hint,
                        known,
                    },
                    other => other,
                })?;
                (backend, name.clone())
            }
            BackendSpec::Instance(b) => (b.clone(), b.name().to_owned()),
        };
        backend.check_region_expiration(config.expiration_time.as_ref())?;
        let mangler = match &self.key_mangler {
            ManglerChoice::BackendDefault => backend.key_mangler().map(KeyMangler::Fn),
            ManglerChoice::Disabled => None,
            ManglerChoice::Use(m) => Some(m.clone()),
        };
        let backend = wrap_chain(backend, &config.wrap);
        let configured = Configured {
            kind: backend.payload_kind(),
            never_blocks: backend.never_blocks(),
            backend,
            backend_name,
            expiration: config.expiration_time,
            mangler,
            clock: config.clock,
            invalidator: config.region_invalidator,
        };
        self.state.store(Arc::new(configured));
        tracing::debug!(region = self.name(), "configured");
        Ok(self)
    }

    /// Configures from a string map with dogpile's key layout under `prefix` (see
    /// [`RegionConfig::from_config`]).
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use dogpile_core::CacheRegion;
    ///
    /// let config: HashMap<String, String> = HashMap::from([
    ///     ("cache.local.backend".into(), "no.such.backend".into()),
    /// ]);
    /// let region: CacheRegion = CacheRegion::new();
    /// let err = region.configure_from_config(&config, "cache.local.").unwrap_err();
    /// assert!(err.to_string().starts_with("cache.local.backend: unknown backend \"no.such.backend\""));
    /// ```
    pub fn configure_from_config<I, K, V>(&self, map: I, prefix: &str) -> Result<&Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        self.configure(RegionConfig::from_config(map, prefix)?)
    }

    /// Whether a backend is configured.
    pub fn is_configured(&self) -> bool {
        self.state.is_some()
    }

    /// The name of the configured backend.
    pub fn backend_name(&self) -> Option<String> {
        self.state.get().map(|c| c.backend_name.clone())
    }

    /// The configured backend, proxies included: for calls the region does not offer.
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        Ok(self.configured()?.backend.clone())
    }

    fn configured(&self) -> Result<Arc<Configured>> {
        self.state.get().ok_or_else(|| self.not_configured())
    }

    #[cold]
    fn not_configured(&self) -> Error {
        Error::NotConfigured {
            region: self.name().to_owned(),
        }
    }

    fn invalidator<'a>(&'a self, cfg: &'a Configured) -> &'a dyn RegionInvalidationStrategy {
        match &cfg.invalidator {
            Some(custom) => &**custom,
            None => &self.invalidation,
        }
    }

    /// The strategy to ask about a value, or `None` when nothing can have been invalidated: the
    /// default strategy, never used, is the common case and one load decides it.
    #[inline]
    fn active_invalidator<'a>(
        &'a self,
        cfg: &'a Configured,
    ) -> Option<&'a dyn RegionInvalidationStrategy> {
        match &cfg.invalidator {
            None if !self.invalidation.ever_invalidated() => None,
            _ => Some(self.invalidator(cfg)),
        }
    }

    fn local_locks(&self) -> &Arc<LocalLocks> {
        self.locks.get_or_init(|| Arc::new(LocalLocks::new()))
    }

    /// Whether a caller in this process holds `mkey`'s in-process lock.
    fn held_here(&self, mkey: &str) -> bool {
        self.locks.get().is_some_and(|l| l.is_locked(mkey))
    }

    fn mutex_for(&self, cfg: &Configured, mkey: &str) -> Box<dyn CacheMutex> {
        cfg.backend
            .get_mutex(mkey)
            .unwrap_or_else(|| Box::new(self.local_locks().mutex(mkey)))
    }

    /// Soft invalidation turns values into expired ones; with no expiration that is undefined.
    #[inline(always)]
    fn check_soft(&self, cfg: &Configured, ttl: Option<Duration>, key: &str) -> Result<()> {
        if ttl.is_none()
            && self
                .active_invalidator(cfg)
                .is_some_and(|inv| inv.was_soft_invalidated())
        {
            return Err(self.soft_without_expiration(key));
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn soft_without_expiration(&self, key: &str) -> Error {
        Error::SoftInvalidationWithoutExpiration {
            region: self.name().to_owned(),
            key: key.to_owned(),
        }
    }

    /// Sorts a stored value into fresh, stale or absent.
    #[inline]
    fn classify<T: CacheValue>(
        &self,
        cfg: &Configured,
        value: &CachedValue,
        ttl: Option<Duration>,
        mkey: &str,
    ) -> Lookup<T> {
        let meta = value.metadata;
        if meta.version != FORMAT_VERSION {
            tracing::debug!(
                key = mkey,
                version = meta.version,
                "entry of another format version read as a miss"
            );
            return Lookup::Absent;
        }
        let inv = self.active_invalidator(cfg);
        if inv.is_some_and(|inv| inv.is_hard_invalidated(meta.created_at)) {
            return Lookup::Absent;
        }
        let Some(v) = decode_payload::<T>(&value.payload, mkey, &cfg.backend_name) else {
            return Lookup::Absent;
        };
        let expired = is_expired(ttl, meta.created_at, || cfg.clock.now_coarse());
        if expired || inv.is_some_and(|inv| inv.is_soft_invalidated(meta.created_at)) {
            Lookup::Stale(v)
        } else {
            Lookup::Fresh(v)
        }
    }

    /// Reads and classifies one key: the hit path.
    #[inline]
    fn lookup<T: CacheValue>(
        &self,
        cfg: &Configured,
        mkey: &str,
        ttl: Option<Duration>,
    ) -> Result<Lookup<T>> {
        let mut found = Lookup::Absent;
        cfg.backend
            .visit(mkey, &mut |v| found = self.classify(cfg, v, ttl, mkey))
            .map_err(|e| self.backend_failed(e, mkey))?;
        Ok(found)
    }

    /// [`lookup`](Self::lookup) through the backend's async path (its blocking one for a backend
    /// that never blocks).
    async fn lookup_async<T: CacheValue>(
        &self,
        cfg: &Configured,
        mkey: &str,
        ttl: Option<Duration>,
    ) -> Result<Lookup<T>> {
        if cfg.never_blocks {
            return self.lookup(cfg, mkey, ttl);
        }
        let raw = cfg
            .backend
            .get_async(mkey)
            .await
            .map_err(|e| self.backend_failed(e, mkey))?;
        Ok(raw.map_or(Lookup::Absent, |v| self.classify(cfg, &v, ttl, mkey)))
    }

    /// Reads and classifies several keys in one backend call, counting what it found.
    fn read_multi<T: CacheValue>(
        &self,
        cfg: &Configured,
        mkeys: &[&str],
        ttl: Option<Duration>,
    ) -> Result<Vec<Lookup<T>>> {
        let raw = cfg
            .backend
            .get_multi(mkeys)
            .map_err(|e| self.backend_failed(e, mkeys.first().copied().unwrap_or_default()))?;
        Ok(raw
            .into_iter()
            .zip(mkeys)
            .map(|(v, mkey)| {
                let found = v.map_or(Lookup::Absent, |v| self.classify(cfg, &v, ttl, mkey));
                self.count_read(&found);
                found
            })
            .collect())
    }

    /// Counts what a first read found.
    #[inline]
    fn count_read<T>(&self, found: &Lookup<T>) {
        self.stats.incr(match found {
            Lookup::Fresh(_) => Counter::Hits,
            Lookup::Stale(_) => Counter::StaleFound,
            Lookup::Absent => Counter::Misses,
        });
    }

    /// Counts what a get-or-create call ended with, and logs it.
    fn count_outcome(&self, outcome: Outcome, mkey: &str) {
        let counter = match outcome {
            Outcome::Fresh | Outcome::Created | Outcome::Waited => None,
            Outcome::Stale => Some(Counter::StaleServed),
            Outcome::HandedOff => Some(Counter::AsyncRefreshes),
        };
        if let Some(counter) = counter {
            self.stats.incr(counter);
        }
        tracing::debug!(region = self.name(), key = mkey, ?outcome, "get_or_create");
    }

    /// Counts and logs a backend error, and gives it back.
    #[cold]
    fn backend_failed(&self, e: Error, mkey: &str) -> Error {
        if e.is_backend() {
            self.stats.incr(Counter::BackendErrors);
            tracing::warn!(region = self.name(), key = mkey, error = %e, "cache backend error");
        }
        e
    }

    /// A snapshot of this region's statistics: hits, misses, creations, stale values served,
    /// waits, backend errors. Counting costs no shared write on the hit path.
    ///
    /// ```
    /// # use dogpile_core::{CacheRegion, RegionConfig};
    /// # let region: CacheRegion = CacheRegion::new();
    /// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())).unwrap();
    /// region.get_or_create("k", || 1).unwrap();
    /// region.get_or_create("k", || 1).unwrap();
    /// let stats = region.stats();
    /// assert_eq!((stats.misses, stats.creations, stats.hits), (1, 1, 1));
    /// println!("{stats}");
    /// ```
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    // ----------------------------------------------------------------------------------------
    // get / set / delete

    /// The value at `key`, or `None` when there is none, it has expired (under the region's
    /// expiration) or it was invalidated. A cached `None`, `0` or empty value is a hit.
    pub fn get<T: CacheValue>(&self, key: &str) -> Result<Option<T>> {
        self.get_inner(key, None, false)
    }

    /// [`get`](CacheRegion::get) with an expiration that overrides the region's for this call.
    pub fn get_with_expiration<T: CacheValue>(
        &self,
        key: &str,
        expiration_time: impl Into<Expiration>,
    ) -> Result<Option<T>> {
        self.get_inner(key, Some(&expiration_time.into()), false)
    }

    /// [`get`](CacheRegion::get) that returns any value present, however old or invalidated.
    pub fn get_ignore_expiration<T: CacheValue>(&self, key: &str) -> Result<Option<T>> {
        self.get_inner(key, None, true)
    }

    fn get_inner<T: CacheValue>(
        &self,
        key: &str,
        expiration: Option<&Expiration>,
        ignore_expiration: bool,
    ) -> Result<Option<T>> {
        self.state.with(|cfg| {
            let cfg = cfg.ok_or_else(|| self.not_configured())?;
            let mkey = cfg.mangle(key);
            if ignore_expiration {
                let mut out = None;
                cfg.backend.visit(&mkey, &mut |v| {
                    if v.metadata.version == FORMAT_VERSION {
                        out = decode_payload::<T>(&v.payload, &mkey, &cfg.backend_name);
                    }
                })?;
                return Ok(out);
            }
            let ttl = cfg.ttl(expiration);
            self.check_soft(cfg, ttl, key)?;
            let found = self.lookup::<T>(cfg, &mkey, ttl)?;
            self.count_read(&found);
            Ok(found.fresh())
        })
    }

    /// The values at `keys`, in order; `None` where [`get`](CacheRegion::get) would give `None`.
    pub fn get_multi<T: CacheValue, K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<T>>> {
        let cfg = self.configured()?;
        let ttl = cfg.ttl(None);
        if let Some(k) = keys.first() {
            self.check_soft(&cfg, ttl, k.as_ref())?;
        }
        let mkeys: Vec<Cow<'_, str>> = keys.iter().map(|k| cfg.mangle(k.as_ref())).collect();
        let refs: Vec<&str> = mkeys.iter().map(|k| &**k).collect();
        let raw = self.read_multi(&cfg, &refs, ttl)?;
        Ok(raw.into_iter().map(Lookup::fresh).collect())
    }

    /// Stores `value` at `key`, created now.
    pub fn set<T: CacheValue>(&self, key: &str, value: T) -> Result<()> {
        self.state.with(|cfg| {
            let cfg = cfg.ok_or_else(|| self.not_configured())?;
            cfg.store(&cfg.mangle(key), &value)
        })
    }

    /// Stores every pair, in one backend call where the backend has a batch command.
    pub fn set_multi<T: CacheValue, K: AsRef<str>>(
        &self,
        items: impl IntoIterator<Item = (K, T)>,
    ) -> Result<()> {
        let cfg = self.configured()?;
        let wrapped = items
            .into_iter()
            .map(|(k, v)| {
                let mkey = cfg.mangle(k.as_ref()).into_owned();
                let value = cfg.wrap_value(&mkey, &v)?;
                Ok((mkey, value))
            })
            .collect::<Result<Vec<_>>>()?;
        if wrapped.is_empty() {
            return Ok(());
        }
        cfg.backend.set_multi(wrapped)
    }

    /// Removes `key`. Removing a missing key is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        let cfg = self.configured()?;
        cfg.backend.delete(&cfg.mangle(key))
    }

    /// Removes every key.
    pub fn delete_multi<K: AsRef<str>>(&self, keys: &[K]) -> Result<()> {
        let cfg = self.configured()?;
        let mkeys: Vec<Cow<'_, str>> = keys.iter().map(|k| cfg.mangle(k.as_ref())).collect();
        let refs: Vec<&str> = mkeys.iter().map(|k| &**k).collect();
        if refs.is_empty() {
            return Ok(());
        }
        cfg.backend.delete_multi(&refs)
    }

    /// [`get`](CacheRegion::get) for async callers: backends with an async client do not block
    /// the executor.
    pub async fn get_async<T: CacheValue>(&self, key: &str) -> Result<Option<T>> {
        let cfg = self.configured()?;
        if cfg.never_blocks {
            return self.get(key);
        }
        let mkey = cfg.mangle(key);
        let ttl = cfg.ttl(None);
        self.check_soft(&cfg, ttl, key)?;
        // Counted and logged as the blocking read is.
        let found = self.lookup_async::<T>(&cfg, &mkey, ttl).await?;
        self.count_read(&found);
        Ok(found.fresh())
    }

    /// [`set`](CacheRegion::set) for async callers.
    pub async fn set_async<T: CacheValue>(&self, key: &str, value: T) -> Result<()> {
        let cfg = self.configured()?;
        cfg.store_async(&cfg.mangle(key), &value).await
    }

    /// [`delete`](CacheRegion::delete) for async callers.
    pub async fn delete_async(&self, key: &str) -> Result<()> {
        let cfg = self.configured()?;
        if cfg.never_blocks {
            return cfg.backend.delete(&cfg.mangle(key));
        }
        cfg.backend.delete_async(&cfg.mangle(key)).await
    }

    // ----------------------------------------------------------------------------------------
    // get-or-create

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
            let start = Instant::now();
            let failed = FailureCounter(&self.stats);
            let created = creator(&originals);
            std::mem::forget(failed);
            self.stats.add_time(Counter::CreationNanos, start.elapsed());
            let values = created.map_err(|e| {
                self.stats.incr(Counter::CreatorErrors);
                CreateError::Creator(e)
            })?;
            self.stats.add(Counter::Creations, values.len() as u64);
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
                    match cfg.wrap_value(mkey, &value) {
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

    // ----------------------------------------------------------------------------------------
    // invalidation, locks, metadata

    /// Invalidates every value created before now. Hard: they count as absent, and callers wait
    /// for new ones. Soft: they count as expired, so one caller creates while the others get the
    /// old value (this needs an expiration time).
    pub fn invalidate(&self, hard: bool) {
        match self.state.get() {
            Some(cfg) => self.invalidator(&cfg).invalidate(hard, cfg.clock.now()),
            None => self.invalidation.invalidate(hard, Clock::System.now()),
        }
    }

    /// Whether a caller holds the creation lock of `key` now. Never takes the lock.
    pub fn key_is_locked(&self, key: &str) -> Result<bool> {
        let cfg = self.configured()?;
        let mkey = cfg.mangle(key);
        match cfg.backend.get_mutex(&mkey) {
            Some(m) => m.locked(),
            None => Ok(self.held_here(&mkey)),
        }
    }

    /// The metadata (creation time, format version) of the value at `key`, if it is present
    /// and neither expired nor invalidated.
    pub fn get_value_metadata(&self, key: &str) -> Result<Option<Metadata>> {
        let cfg = self.configured()?;
        let mkey = cfg.mangle(key);
        let ttl = cfg.ttl(None);
        let inv = self.invalidator(&cfg);
        Ok(cfg.backend.get(&mkey)?.and_then(|v| {
            let m = v.metadata;
            let fresh = m.version == FORMAT_VERSION
                && !inv.is_invalidated(m.created_at)
                && !is_expired(ttl, m.created_at, || cfg.clock.now());
            fresh.then_some(m)
        }))
    }

    /// How many keys have an entry in the in-process lock registry: entries exist only while a
    /// key's lock is held or waited on.
    #[doc(hidden)]
    pub fn lock_registry_len(&self) -> usize {
        self.locks.get().map_or(0, |l| l.len())
    }
}

impl CreateError<Infallible> {
    /// The cache error, for creators that cannot fail.
    fn into_cache_error(self) -> Error {
        match self {
            CreateError::Cache(e) => e,
            CreateError::Creator(never) => match never {},
        }
    }
}
