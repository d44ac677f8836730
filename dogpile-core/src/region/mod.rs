//! [`CacheRegion`]: the front end. Get, set and delete values; get-or-create them under the
//! dogpile lock; invalidate; configure the backend at run time.
//!
//! The methods live beside what they do, each file with its own `impl CacheRegion` block:
//! `configure` (building and configuring), `read` (get, set, delete, one key or many), `create`
//! (get-or-create of one key, and the creators), `source` (the region as the lock algorithm's
//! source, and the creation guard), `batch` (get-or-create of many keys), `resilience`
//! (fail-safe, creator timeouts, early refresh, jitter), `tiers` (the local tier and the
//! backplane on the read and write paths) and `tags` (`invalidate_tag`, the calls' tags). This
//! file holds the region's state and the helpers they share: the hit path's lookup among them.

mod batch;
mod configure;
mod create;
mod read;
mod resilience;
mod source;
mod tags;
mod tiers;

pub use read::CachedEntry;

use std::any::Any;
use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use smallvec::SmallVec;

use crate::backend::{
    Backend, CachedValue, CachedValueRef, Metadata, Payload, PayloadKind, PayloadRef,
    FORMAT_VERSION,
};
use crate::backplane::Subscription;
use crate::clock::{Clock, Timestamp};
use crate::codec::{self, WireFormat};
use crate::config::RegionConfig;
use crate::error::{CreateError, Error, Result};
use crate::expiration::{is_expired, Expiration};
use crate::fleet::Fleet;
use crate::invalidation::{DefaultInvalidation, RegionInvalidationStrategy};
use crate::key::{FunctionKeyGenerator, FunctionMultiKeyGenerator, KeyMangler, BATCH_ON_STACK};
use crate::lock::{AsyncCreationRunner, Lookup, Outcome};
use crate::mutex::{KeyMutex, LocalLocks};
use crate::registry::{BackendCatalog, NoBuiltins};
use crate::serializer::Serializer;
use crate::slot::Slot;
use crate::stats::{Counter, RegionStats, Stats};
use crate::tags::TagTimes;
use crate::tier::Tier;

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
    /// The tags of the value: [`CacheRegion::invalidate_tag`] of any of them invalidates it.
    tags: Vec<String>,
    /// The caller has no error to give back, so `hard_timeout` does not bound it: a decorated
    /// function that returns its value.
    waits_for_creator: bool,
    /// Resilience options of this call over the region's (`resilience.rs`).
    resilience: Option<crate::config::Resilience>,
}

impl<T> Default for CreateOptions<T> {
    fn default() -> Self {
        CreateOptions {
            expiration_time: None,
            should_cache_fn: None,
            tags: Vec::new(),
            waits_for_creator: false,
            resilience: None,
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

    /// For the attributes' generated code: this call has no error to give back in place of a
    /// value (a decorated function falls back to running its body on an error, which is the
    /// stampede the lock prevents), so `hard_timeout` bounds neither its creation nor its waits.
    #[doc(hidden)]
    pub fn waits_for_creator(mut self) -> Self {
        self.waits_for_creator = true;
        self
    }

    /// Tags the value: once [`invalidate_tag`](CacheRegion::invalidate_tag) names one of them,
    /// values created before count as absent (hard) or expired (soft), in every process that
    /// shares the backend. A tag is a property of the calls that name it: the get-or-create
    /// calls with these options, [`get_with_options`](CacheRegion::get_with_options), and
    /// functions with `#[cache_on_arguments(tags = [...])]`. Plain `get` does not know a key's
    /// tags.
    ///
    /// ```
    /// use dogpile_core::{CacheRegion, CreateOptions, RegionConfig};
    /// # let region: CacheRegion = CacheRegion::new();
    /// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::bytes())).unwrap();
    /// let user = CreateOptions::new().tags(["user:42", "users"]);
    /// let profile = region.get_or_create_with("profile:42", &user, || "Ada".to_string()).unwrap();
    /// assert_eq!(profile, "Ada");
    /// # std::thread::sleep(std::time::Duration::from_millis(2));
    /// region.invalidate_tag("user:42", true).unwrap();
    /// let profile = region.get_or_create_with("profile:42", &user, || "Ada L.".to_string()).unwrap();
    /// assert_eq!(profile, "Ada L.");
    /// ```
    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }
}

impl<T> fmt::Debug for CreateOptions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateOptions")
            .field("expiration_time", &self.expiration_time)
            .field("should_cache_fn", &self.should_cache_fn.is_some())
            .field("tags", &self.tags)
            .field("resilience", &self.resilience)
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
    /// The backend through its proxies: what every call goes to.
    backend: Arc<dyn Backend>,
    /// The backend under its proxies.
    actual_backend: Arc<dyn Backend>,
    backend_name: String,
    kind: PayloadKind,
    never_blocks: bool,
    expiration: Option<Expiration>,
    mangler: Option<KeyMangler>,
    clock: Clock,
    invalidator: Option<Arc<dyn RegionInvalidationStrategy>>,
    /// How long a caller may wait for another's creation (`lock_blocking_timeout`).
    lock_wait: Duration,
    /// How values become the payloads of byte backends.
    serializer: Arc<dyn Serializer>,
    /// How byte backends lay out the values this region writes.
    wire_format: WireFormat,
    /// The local tier in front of the backend, if any.
    tier: Option<Arc<Tier>>,
    /// The backplane to the other processes, if any.
    fleet: Option<Arc<Fleet>>,
    /// What this region knows of its tags' invalidations.
    tags: Arc<TagTimes>,
    /// The backplane subscription: ended when this configuration is replaced (the old one may
    /// live on a while in readers' hands and in deferred reclamation).
    subscription: parking_lot::Mutex<Option<Subscription>>,
    /// Fail-safe, creator timeouts, early refresh, XFetch and jitter (`resilience.rs`).
    resilience: resilience::ResilienceState,
}

impl Configured {
    #[inline]
    fn mangle<'k>(&self, key: &'k str) -> Cow<'k, str> {
        match &self.mangler {
            None => Cow::Borrowed(key),
            Some(m) => m.mangle(key),
        }
    }

    /// The expiration in force for one call.
    #[inline]
    fn ttl(&self, per_call: Option<&Expiration>) -> Option<Duration> {
        per_call
            .or(self.expiration.as_ref())
            .and_then(Expiration::resolve)
    }

    /// Wraps a value for this backend, the object itself or its bytes, stamped as created at
    /// `created_at`. An owned value goes into an object backend's entry as it is; a borrowed one
    /// (a created value that also goes back to its caller) is cloned.
    fn wrap_value<T: CacheValue>(
        &self,
        key: &str,
        value: Cow<'_, T>,
        created_at: Timestamp,
    ) -> Result<CachedValue> {
        let payload = match self.kind {
            PayloadKind::Object => Payload::Object(Arc::new(value.into_owned())),
            PayloadKind::Bytes => Payload::Bytes(
                crate::serializer::encode_shared_with(&*self.serializer, &*value).map_err(
                    |message| Error::Encode {
                        key: key.to_owned(),
                        message,
                    },
                )?,
            ),
        };
        Ok(CachedValue {
            payload,
            metadata: self.metadata(created_at),
        })
    }

    /// The metadata of a value this region writes, created at `created_at`.
    fn metadata(&self, created_at: Timestamp) -> Metadata {
        Metadata {
            wire: self.wire_format,
            ..Metadata::new(created_at)
        }
    }

    /// Stores a value created at `created_at` at an already mangled key.
    fn store<T: CacheValue>(
        &self,
        mkey: &str,
        value: Cow<'_, T>,
        created_at: Timestamp,
    ) -> Result<()> {
        self.backend
            .set(mkey, self.wrap_value(mkey, value, created_at)?)?;
        self.wrote(&[mkey]);
        Ok(())
    }

    /// Stores a value at an already mangled key, through the backend's async path.
    async fn store_async<T: CacheValue>(
        &self,
        mkey: &str,
        value: Cow<'_, T>,
        created_at: Timestamp,
    ) -> Result<()> {
        let wrapped = self.wrap_value(mkey, value, created_at)?;
        if self.never_blocks {
            self.backend.set(mkey, wrapped)?;
        } else {
            self.backend.set_async(mkey, wrapped).await?;
        }
        self.wrote_async(mkey).await;
        Ok(())
    }
}

/// Logs an entry of another format version, read as a miss (out of the hit path's way).
#[cold]
#[inline(never)]
fn other_version(mkey: &str, version: u8) {
    tracing::debug!(
        key = mkey,
        version,
        "entry of another format version read as a miss"
    );
}

/// Reads the `T` out of a stored payload; `None` (logged) when it holds something else.
///
/// The memory backend's hit (the object, of the type asked for) is inlined; bytes to decode and
/// a value of another type go out of line, so that their logging does not weigh on the hit. The
/// inlined part is a downcast and a clone, small enough to copy into the batch paths too.
#[inline(always)]
fn decode_payload<T: CacheValue>(
    payload: PayloadRef<'_>,
    mkey: &str,
    cfg: &Configured,
) -> Option<T> {
    if let PayloadRef::Object(obj) = payload {
        if let Some(v) = (&**obj as &dyn Any).downcast_ref::<T>() {
            return Some(v.clone());
        }
    }
    decode_payload_out_of_line(payload, mkey, cfg)
}

/// The rest of [`decode_payload`]: bytes to decode, and an object of another type (logged).
#[inline(never)]
fn decode_payload_out_of_line<T: CacheValue>(
    payload: PayloadRef<'_>,
    mkey: &str,
    cfg: &Configured,
) -> Option<T> {
    let backend = cfg.backend_name.as_str();
    match payload {
        PayloadRef::Object(obj) => {
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
        PayloadRef::Bytes(bytes) => match codec::decode_value_with::<T>(&*cfg.serializer, bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(
                    backend,
                    key = mkey,
                    serializer = cfg.serializer.name(),
                    error = %e,
                    "undecodable cache entry read as a miss"
                );
                None
            }
        },
    }
}

/// Reads `mkeys` in one backend call ([`Backend::visit_multi`]): for each key, what `decode`
/// makes of its value where the backend holds it, or `absent()`.
///
/// A batch of up to [`BATCH_ON_STACK`] small answers is gathered on the stack and moved into
/// its `Vec` once every value is decoded. Why: the answer's `Vec` is a batch's one large
/// allocation, and glibc's `malloc` merges its freed small blocks (`malloc_consolidate`)
/// whenever a large block is asked for. Allocated first, it sent every value decoded after it
/// (the previous batch's strings just freed) down `malloc`'s slow path: ~230 instructions a
/// value instead of ~50. With the key lists of [`with_mangled`](crate::key::with_mangled) also
/// on the stack, a memcached `get_multi` of 100 counts 8% fewer instructions (BENCHMARKS.md).
fn visit_each<X>(
    backend: &dyn Backend,
    mkeys: &[&str],
    absent: impl Fn() -> X,
    decode: impl FnMut(CachedValueRef<'_>, &str) -> X,
) -> Result<Vec<X>> {
    if mkeys.len() <= BATCH_ON_STACK && std::mem::size_of::<X>() <= SMALL_ANSWER {
        gather::<X, SmallVec<[X; BATCH_ON_STACK]>>(backend, mkeys, absent, decode)
            .map(SmallVec::into_vec)
    } else {
        gather::<X, Vec<X>>(backend, mkeys, absent, decode)
    }
}

/// The largest answer (`size_of`) that [`visit_each`] gathers on the stack: `Option<String>` and
/// the like; 128 of them are 4 KiB.
const SMALL_ANSWER: usize = 32;

/// [`visit_each`] into the list `L`, every slot `absent()` until its value is decoded into it.
/// Not inlined, so a caller does not carry the stack list's frame when it takes the heap one.
#[inline(never)]
fn gather<X, L: FromIterator<X> + std::ops::DerefMut<Target = [X]>>(
    backend: &dyn Backend,
    mkeys: &[&str],
    absent: impl Fn() -> X,
    mut decode: impl FnMut(CachedValueRef<'_>, &str) -> X,
) -> Result<L> {
    let mut out: L = std::iter::repeat_with(absent).take(mkeys.len()).collect();
    backend.visit_multi(mkeys, &mut |i, v| {
        // A position out of range (a faulty backend) is ignored, never a panic.
        if let (Some(slot), Some(mkey)) = (out.get_mut(i), mkeys.get(i)) {
            *slot = decode(v, mkey);
        }
    })?;
    Ok(out)
}

/// What a batch's first read found, before it is added to the counters: the absent keys are the
/// rest.
#[derive(Default, Clone, Copy)]
struct ReadCounts {
    hits: u64,
    stale: u64,
}

impl ReadCounts {
    #[inline]
    fn note<T>(&mut self, found: &Lookup<T>) {
        match found {
            Lookup::Fresh(_) => self.hits += 1,
            Lookup::Stale(_) => self.stale += 1,
            Lookup::Absent => {}
        }
    }
}

/// The counter of what a first read found.
#[inline]
fn read_counter<T>(found: &Lookup<T>) -> Counter {
    match found {
        Lookup::Fresh(_) => Counter::Hits,
        Lookup::Stale(_) => Counter::StaleFound,
        Lookup::Absent => Counter::Misses,
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

impl<C: BackendCatalog> CacheRegion<C> {
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
            Some(custom) if !custom.ever_invalidated() => None,
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

    /// `mkey`'s mutex: the backend's own, or the in-process one. With `take`, the in-process
    /// lock is taken as its handle is made (a new entry starts held, see `LocalLocks::lock`) and
    /// the answer says whether it was; `None` without `take`, and for a backend's lock, which
    /// the caller tries.
    fn mutex_for(&self, cfg: &Configured, mkey: &str, take: bool) -> (KeyMutex, Option<bool>) {
        match cfg.backend.get_mutex(mkey) {
            Some(distributed) => (KeyMutex::Backend(Arc::from(distributed)), None),
            None if take => {
                let (local, taken) = self.local_locks().lock(mkey);
                (KeyMutex::Local(local), Some(taken))
            }
            None => (KeyMutex::Local(self.local_locks().mutex(mkey)), None),
        }
    }

    /// Soft invalidation turns values into expired ones; with no expiration a creation path cannot
    /// tell when to create again, so it is an error there (plain reads treat such values as
    /// misses, as dogpile does).
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

    /// Sorts a stored value (owned, or borrowed from the backend) into fresh, stale or absent.
    #[inline]
    fn classify<'v, T: CacheValue>(
        &self,
        cfg: &Configured,
        value: impl Into<CachedValueRef<'v>>,
        ttl: Option<Duration>,
        mkey: &str,
    ) -> Lookup<T> {
        self.classify_at(cfg, value, ttl, mkey, None)
    }

    /// [`classify`](Self::classify) with the time already read (`None`: read it if needed): a
    /// batch reads the clock once for all its values.
    #[inline(always)]
    fn classify_at<'v, T: CacheValue>(
        &self,
        cfg: &Configured,
        value: impl Into<CachedValueRef<'v>>,
        ttl: Option<Duration>,
        mkey: &str,
        now: Option<Timestamp>,
    ) -> Lookup<T> {
        let value = value.into();
        let Some(fresh) = self.judge_at(cfg, &value.metadata, ttl, mkey, now) else {
            return Lookup::Absent;
        };
        let Some(v) = decode_payload::<T>(value.payload, mkey, cfg) else {
            return Lookup::Absent;
        };
        if fresh {
            Lookup::Fresh(v)
        } else {
            Lookup::Stale(v)
        }
    }

    /// What a value's metadata makes of it: `None` absent (another format, hard-invalidated),
    /// `Some(true)` fresh, `Some(false)` stale (expired or soft-invalidated). `now` is the time
    /// already read (`None`: read it if the expiration needs it), so a caller that has read it
    /// does not read it twice. Inlined: it is most of the hit path's own work, and a call of its
    /// own cost the hit about 20 instructions of saving and restoring registers.
    #[inline(always)]
    fn judge_at(
        &self,
        cfg: &Configured,
        meta: &Metadata,
        ttl: Option<Duration>,
        mkey: &str,
        now: Option<Timestamp>,
    ) -> Option<bool> {
        if meta.version != FORMAT_VERSION {
            other_version(mkey, meta.version);
            return None;
        }
        let inv = self.active_invalidator(cfg);
        if inv.is_some_and(|inv| inv.is_hard_invalidated(meta.created_at)) {
            return None;
        }
        let ttl = cfg.resilience.jittered(ttl, meta.created_at, mkey);
        let expired = is_expired(ttl, meta.created_at, || {
            now.unwrap_or_else(|| cfg.clock.now_coarse())
        });
        Some(!(expired || inv.is_some_and(|inv| inv.is_soft_invalidated(meta.created_at))))
    }

    /// Reads and classifies one key: the hit path.
    #[inline]
    fn lookup<T: CacheValue>(
        &self,
        cfg: &Configured,
        mkey: &str,
        ttl: Option<Duration>,
    ) -> Result<Lookup<T>> {
        Ok(self.lookup_stamped(cfg, mkey, ttl)?.0)
    }

    /// [`lookup`](Self::lookup) through the backend's async path (its blocking one for a backend
    /// that never blocks).
    async fn lookup_async<T: CacheValue>(
        &self,
        cfg: &Configured,
        mkey: &str,
        ttl: Option<Duration>,
    ) -> Result<Lookup<T>> {
        Ok(self.lookup_stamped_async(cfg, mkey, ttl).await?.0)
    }

    /// Reads and classifies one key, with the creation stamp of what it found: the hit path.
    #[inline(always)]
    fn lookup_stamped<T: CacheValue>(
        &self,
        cfg: &Configured,
        mkey: &str,
        ttl: Option<Duration>,
    ) -> Result<(Lookup<T>, Option<Timestamp>)> {
        if let Some(tier) = &cfg.tier {
            return self.lookup_tiered(tier, cfg, mkey, ttl);
        }
        let mut found = (Lookup::Absent, None);
        cfg.backend
            .visit(mkey, &mut |v| {
                found = (
                    self.classify(cfg, v, ttl, mkey),
                    Some(v.metadata.created_at),
                )
            })
            .map_err(|e| self.backend_failed(e, mkey))?;
        Ok(found)
    }

    /// [`lookup_stamped`](Self::lookup_stamped) through the backend's async path (its blocking
    /// one for a backend that never blocks).
    async fn lookup_stamped_async<T: CacheValue>(
        &self,
        cfg: &Configured,
        mkey: &str,
        ttl: Option<Duration>,
    ) -> Result<(Lookup<T>, Option<Timestamp>)> {
        if cfg.never_blocks {
            return self.lookup_stamped(cfg, mkey, ttl);
        }
        if let Some(tier) = &cfg.tier {
            return self.lookup_tiered_async(tier, cfg, mkey, ttl).await;
        }
        let raw = cfg
            .backend
            .get_async(mkey)
            .await
            .map_err(|e| self.backend_failed(e, mkey))?;
        Ok(match raw {
            None => (Lookup::Absent, None),
            Some(v) => (
                self.classify(cfg, &v, ttl, mkey),
                Some(v.metadata.created_at),
            ),
        })
    }

    /// Reads and classifies several keys in one backend call, each value decoded where the
    /// backend holds it ([`Backend::visit_multi`]), with the creation stamp of what it found
    /// (what the resilience options judge a batch's values by).
    fn lookup_multi<T: CacheValue>(
        &self,
        cfg: &Configured,
        mkeys: &[&str],
        ttl: Option<Duration>,
    ) -> Result<Vec<(Lookup<T>, Option<Timestamp>)>> {
        if let Some(tier) = &cfg.tier {
            return self.lookup_multi_tiered(tier, cfg, mkeys, ttl);
        }
        // One clock read for the batch, and none when nothing can expire.
        let now = ttl.map(|_| cfg.clock.now_coarse());
        visit_each(
            &*cfg.backend,
            mkeys,
            || (Lookup::Absent, None),
            |v, mkey| {
                (
                    self.classify_at(cfg, v, ttl, mkey, now),
                    Some(v.metadata.created_at),
                )
            },
        )
        .map_err(|e| self.backend_failed(e, mkeys.first().copied().unwrap_or_default()))
    }

    /// [`lookup_multi`](Self::lookup_multi) as a first read: every key counted (as a hit, a
    /// miss or a stale value found), with at most three additions to the counters.
    fn read_multi<T: CacheValue>(
        &self,
        cfg: &Configured,
        mkeys: &[&str],
        ttl: Option<Duration>,
    ) -> Result<Vec<(Lookup<T>, Option<Timestamp>)>> {
        let found = self.lookup_multi(cfg, mkeys, ttl)?;
        let mut counts = ReadCounts::default();
        for (f, _) in &found {
            counts.note(f);
        }
        self.count_reads(counts, found.len());
        Ok(found)
    }

    /// The fresh values of `mkeys`, `None` for the others, counted as
    /// [`read_multi`](Self::read_multi) counts them: `get_multi`'s read. Each value goes
    /// straight from the backend into its place in the answer, with no list of lookups between.
    fn fresh_multi<T: CacheValue>(
        &self,
        cfg: &Configured,
        mkeys: &[&str],
        ttl: Option<Duration>,
    ) -> Result<Vec<Option<T>>> {
        if cfg.tier.is_some() {
            let found = self.read_multi(cfg, mkeys, ttl)?;
            return Ok(found.into_iter().map(|(f, _)| f.fresh()).collect());
        }
        // One clock read for the batch, and none when nothing can expire.
        let now = ttl.map(|_| cfg.clock.now_coarse());
        let mut counts = ReadCounts::default();
        let out = visit_each(
            &*cfg.backend,
            mkeys,
            || None,
            |v, mkey| {
                let found = self.classify_at(cfg, v, ttl, mkey, now);
                counts.note(&found);
                found.fresh()
            },
        )
        .map_err(|e| self.backend_failed(e, mkeys.first().copied().unwrap_or_default()))?;
        self.count_reads(counts, mkeys.len());
        Ok(out)
    }

    /// Adds a batch's first reads to the counters, at most three additions: the keys of `keys`
    /// that `counts` did not see were absent.
    fn count_reads(&self, counts: ReadCounts, keys: usize) {
        let seen = counts.hits + counts.stale;
        let misses = (keys as u64).saturating_sub(seen);
        for (counter, n) in [
            (Counter::Hits, counts.hits),
            (Counter::StaleFound, counts.stale),
            (Counter::Misses, misses),
        ] {
            if n > 0 {
                self.stats.add(counter, n);
            }
        }
    }

    /// Counts what a first read found.
    #[inline]
    fn count_read<T>(&self, found: &Lookup<T>) {
        self.stats.incr(read_counter(found));
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
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`] before [`configure`](CacheRegion::configure); the backend's error
    /// when its distributed lock cannot be looked at.
    pub fn key_is_locked(&self, key: &str) -> Result<bool> {
        let cfg = self.configured()?;
        let mkey = cfg.mangle(key);
        match cfg.backend.get_mutex(&mkey) {
            Some(m) => m.locked(),
            None => Ok(self.held_here(&mkey)),
        }
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
