//! The resilience options at work (their settings are in `config/resilience.rs`): fail-safe,
//! creator timeouts, early refresh, XFetch and expiration jitter.
//!
//! They ride on the lock algorithm of `lock.rs` rather than beside it, so the one-creator-per-key
//! guarantee holds for each of them:
//! - *Early refresh* and *XFetch* turn a fresh value judged due into a stale one for this call
//!   only; the call then runs the algorithm's stale path (take the lock or return the value), and
//!   the read under the lock stays stale only while the stored value is the one judged (same
//!   creation stamp), so a caller that takes the lock just after another's refresh finds the new
//!   value and creates nothing.
//! - *Fail-safe* keeps the last stale value a call saw; when the creator fails (or panics, which
//!   is caught only with fail-safe on) that value is returned, and the key is throttled.
//! - *Timeouts* run a creator that can move to another thread on a thread of its own, which
//!   stores the value and releases the lock when it finishes; the caller waits on a channel with
//!   a bound.
//! - *Jitter* is a per-value addition to the expiration time, derived from the value's key and
//!   creation stamp (see [`ResilienceState::jittered`]).

use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::create::{Creator, Io};
use super::source::RegionSource;
use super::{CacheRegion, CacheValue, Configured, CreateOptions};
use crate::clock::Timestamp;
use crate::config::Resilience;
use crate::error::{CreateError, Error, Result};
use crate::lock::{AsyncCreation, AsyncCreationRunner, KeyState, Lookup};
use crate::registry::BackendCatalog;
use crate::stats::Counter;
use crate::tags::Floors;

/// Why a fresh value is regenerated before it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EarlyKind {
    /// Past `eager_refresh` of its life.
    Eager,
    /// Drawn by XFetch.
    XFetch,
}

impl EarlyKind {
    fn counter(self) -> Counter {
        match self {
            EarlyKind::Eager => Counter::EagerRefreshes,
            EarlyKind::XFetch => Counter::EarlyExpirations,
        }
    }
}

/// What a call's first read saw, beside the value: its creation stamp, and whether it is to be
/// regenerated early.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Seen {
    pub(super) stamp: Option<Timestamp>,
    pub(super) early: Option<EarlyKind>,
    /// The latest invalidations of the call's tags, read once for the whole call.
    pub(super) floors: Floors,
}

impl Seen {
    /// What a first read saw when nothing judges it further: its stamp alone.
    #[inline]
    pub(super) fn stamped(stamp: Option<Timestamp>) -> Self {
        Seen {
            stamp,
            ..Seen::default()
        }
    }
}

/// What the resilience options keep of one key of a get-or-create call.
pub(super) struct KeyWatch<T> {
    /// The value being regenerated early: its stamp, and why.
    early: Option<(Timestamp, EarlyKind)>,
    /// The last stale (or, for an early refresh, current) value read, with its stamp: what
    /// fail-safe and a soft timeout give back.
    stale: Option<(T, Timestamp)>,
}

/// What a get-or-create call (one key, or a batch) keeps for the resilience options.
pub(super) struct Watch<T> {
    /// The options of this call: the region's, with the call's own over them.
    opts: Resilience,
    /// Whether any option acts on creation: reads then keep the creation stamps.
    on: bool,
    /// One per key slot of the call; empty when no option acts on creation.
    keys: Vec<KeyWatch<T>>,
    /// Whether the hard timeout bounds this call: not for a caller that has no error to return.
    hard_timeout: bool,
}

impl<T> Watch<T> {
    /// The watch of a call over `keys` key slots.
    pub(super) fn new(cfg: &Configured, options: &CreateOptions<T>, keys: usize) -> Self {
        // Checked on the call's first read already; a call that got here has valid options.
        let opts = cfg
            .resilience
            .for_call(options.resilience.as_ref())
            .map_or_else(|_| cfg.resilience.options.clone(), Cow::into_owned);
        let on = opts.acts_on_creation();
        Watch {
            on,
            opts,
            keys: match on {
                true => (0..keys)
                    .map(|_| KeyWatch {
                        early: None,
                        stale: None,
                    })
                    .collect(),
                false => Vec::new(),
            },
            hard_timeout: !options.waits_for_creator,
        }
    }

    /// Whether `key` is being regenerated early.
    pub(super) fn is_early(&self, key: usize) -> bool {
        self.keys.get(key).is_some_and(|k| k.early.is_some())
    }

    /// The hard timeout that bounds this call's waits for another caller's creation: none for
    /// a caller with no error to return (a decorated function that returns its value).
    pub(super) fn hard_wait(&self) -> Option<Duration> {
        self.opts.hard_timeout.filter(|_| self.hard_timeout)
    }

    /// Fail-safe's throttle, when it is on for this call.
    pub(super) fn fail_safe_throttle(&self) -> Option<Duration> {
        self.opts.fail_safe_throttle()
    }
}

/// The region's resilience settings and the state they need, part of its configuration.
pub(super) struct ResilienceState {
    /// The region's options.
    pub(super) options: Resilience,
    /// Whether any of the region's options acts on creation, decided once: with none, and no
    /// options on the call, a hit asks nothing more.
    acts_on_creation: bool,
    /// splitmix64's state: XFetch's draws. One atomic add per draw, only with XFetch on.
    rng: AtomicU64,
    /// XFetch's δ: the region's creation time, nanoseconds, smoothed over the last creations.
    creation_nanos: AtomicU64,
    /// Fail-safe: keys whose creator failed, and when one caller may try again. Per process.
    throttled: parking_lot::Mutex<HashMap<String, Timestamp>>,
}

/// splitmix64's increment.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function: a good 64-bit mix of `z`.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// XFetch's rule: regenerate now when `δ·β·(−ln u) ≥ remaining`, `u` uniform in (0, 1]; so the
/// chance at a read is `exp(−remaining / (δ·β))`.
pub(super) fn xfetch_due(remaining: Duration, delta: Duration, beta: f64, u: f64) -> bool {
    delta.as_secs_f64() * beta * -u.ln() >= remaining.as_secs_f64()
}

impl ResilienceState {
    pub(super) fn new(options: Resilience) -> Self {
        let seed = options.random_seed.unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            mix(nanos ^ u64::from(std::process::id()))
        });
        ResilienceState {
            acts_on_creation: options.acts_on_creation(),
            options,
            rng: AtomicU64::new(seed),
            creation_nanos: AtomicU64::new(0),
            throttled: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The expiration time of the value stored at `mkey` with creation stamp `created_at`:
    /// `ttl` plus its jitter.
    ///
    /// The jitter has to be decided when the value is stored and seen alike by every reader, and
    /// the stored format has no room for it. Shifting the stored creation stamp would do, but the
    /// stamp is also what invalidation judges (`invalidate(true)` at `t` drops values stamped
    /// before `t`), so a shifted stamp could turn a value made after an invalidation into one
    /// made before it, or back. Instead the jitter is a hash of the key and the stamp, both
    /// stored, both fixed when the value is written: every reader with this setting computes the
    /// same expiry, values stored by one `set_multi` (one stamp) spread by their keys, and the
    /// stamp keeps its meaning.
    #[inline]
    pub(super) fn jittered(
        &self,
        ttl: Option<Duration>,
        created_at: Timestamp,
        mkey: &str,
    ) -> Option<Duration> {
        match (ttl, self.options.expiration_jitter) {
            (Some(ttl), Some(jitter)) if !ttl.is_zero() && !jitter.is_zero() => {
                // FNV-1a over the key, then the stamp, through splitmix's mix: every process
                // computes the same jitter for a value.
                let h = mix(crate::stable_hash::fnv1a(mkey.as_bytes()) ^ created_at.as_nanos());
                let span = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
                let extra = Duration::from_nanos(h % span.saturating_add(1));
                Some(ttl.saturating_add(extra))
            }
            _ => ttl,
        }
    }

    /// The options of one call: the region's, with the call's own (from its [`CreateOptions`])
    /// over them; an error names an option the call set to a value no region can use.
    #[inline]
    pub(super) fn for_call<'a>(&'a self, call: Option<&Resilience>) -> Result<Cow<'a, Resilience>> {
        match call {
            None => Ok(Cow::Borrowed(&self.options)),
            Some(call) => {
                let merged = self.options.overlaid(call);
                merged.check()?;
                Ok(Cow::Owned(merged))
            }
        }
    }

    /// A draw uniform in (0, 1].
    fn next_unit(&self) -> f64 {
        let s = self
            .rng
            .fetch_add(GOLDEN, Ordering::Relaxed)
            .wrapping_add(GOLDEN);
        ((mix(s) >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Notes how long a creation took (XFetch's δ): two relaxed atomic operations per creation.
    pub(super) fn record_creation(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let old = self.creation_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            took
        } else {
            old - old / 8 + took / 8
        };
        self.creation_nanos.store(new, Ordering::Relaxed);
    }

    /// Whether a fresh value stamped `created_at` is to be regenerated now, and why.
    fn early_due(
        &self,
        opts: &Resilience,
        ttl: Option<Duration>,
        created_at: Timestamp,
        now: Timestamp,
        mkey: &str,
    ) -> Option<EarlyKind> {
        let ttl = self.jittered(ttl, created_at, mkey)?;
        let age = now.saturating_since(created_at);
        if let Some(fraction) = opts.eager_refresh {
            if age.as_secs_f64() >= ttl.as_secs_f64() * fraction {
                return Some(EarlyKind::Eager);
            }
        }
        if let Some(beta) = opts.early_expiration_beta {
            let delta = Duration::from_nanos(self.creation_nanos.load(Ordering::Relaxed));
            if !delta.is_zero()
                && xfetch_due(ttl.saturating_sub(age), delta, beta, self.next_unit())
            {
                return Some(EarlyKind::XFetch);
            }
        }
        None
    }

    /// Whether fail-safe may serve a value stamped `created_at` now: it is on, and the value is
    /// at most `fail_safe_max_duration` past its expiry.
    fn fail_safe_covers(
        &self,
        opts: &Resilience,
        ttl: Option<Duration>,
        created_at: Timestamp,
        now: Timestamp,
        mkey: &str,
    ) -> bool {
        let (Some(max), Some(ttl)) = (
            opts.fail_safe_max_duration,
            self.jittered(ttl, created_at, mkey),
        ) else {
            return false;
        };
        now <= created_at.saturating_add(ttl).saturating_add(max)
    }

    /// Whether `mkey`'s creator failed less than a throttle ago.
    fn throttled(&self, mkey: &str, now: Timestamp) -> bool {
        let mut map = self.throttled.lock();
        match map.get(mkey) {
            Some(&retry_at) if now < retry_at => true,
            Some(_) => {
                map.remove(mkey);
                false
            }
            None => false,
        }
    }

    /// Throttles `mkey` for `throttle` after a failed creation at `now`.
    fn throttle(&self, mkey: &str, now: Timestamp, throttle: Duration) {
        let mut map = self.throttled.lock();
        // Keys of sources that came back are never asked again: drop them as the map grows.
        if map.len() >= 4096 {
            map.retain(|_, retry_at| now < *retry_at);
        }
        map.insert(mkey.to_owned(), now.saturating_add(throttle));
    }
}

/// Runs `fut`, catching a panic when `catch` (fail-safe is on): one helper for the blocking
/// path (driven by `lock::block_on`) and the async one.
pub(super) async fn catching<F: Future>(fut: F, catch: bool) -> std::thread::Result<F::Output> {
    if !catch {
        return Ok(fut.await);
    }
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        },
    )
    .await
}

/// The runner of an early refresh on a region with no [`AsyncCreationRunner`]: a new thread.
fn thread_runner() -> Arc<dyn AsyncCreationRunner> {
    Arc::new(|creation: AsyncCreation| {
        let spawned = std::thread::Builder::new()
            .name("dogpile-refresh".into())
            .spawn(move || creation.run());
        if let Err(e) = spawned {
            // The creation is dropped with the closure: its lock is released, the value stays.
            tracing::warn!(error = %e, "could not start a thread for an early refresh");
        }
    })
}

/// What a creator moved to its own thread sends back: its value, or its panic.
pub(super) type Sent<T> = std::result::Result<T, Box<dyn Any + Send>>;

/// One call's resilience options, over the region's (see the builder methods of
/// [`RegionConfig`](crate::RegionConfig), which say what each does): what the attributes'
/// options of the same names set. `expiration_jitter` is the region's alone: it decides how
/// every reader judges a stored value, so one call site cannot change it.
impl<T> CreateOptions<T> {
    fn resilience_mut(&mut self) -> &mut Resilience {
        self.resilience.get_or_insert_with(Resilience::default)
    }

    /// Fail-safe for this call (see
    /// [`RegionConfig::fail_safe_max_duration`](crate::RegionConfig::fail_safe_max_duration)).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use dogpile_core::{clock::Clock, CacheRegion, CreateOptions, RegionConfig};
    ///
    /// let (clock, time) = Clock::manual(SystemTime::now());
    /// let region: CacheRegion = CacheRegion::new();
    /// let backend = dogpile_core::testing::MapBackend::default();
    /// region.configure(RegionConfig::with_backend(backend).expiration_time(60).clock(clock)).unwrap();
    /// region.set("k", 1u8).unwrap();
    /// time.advance(Duration::from_secs(61));
    /// let options = CreateOptions::new().fail_safe_max_duration(Duration::from_secs(60));
    /// assert_eq!(region.try_get_or_create("k", &options, || Err::<u8, _>("down")).unwrap(), 1);
    /// ```
    pub fn fail_safe_max_duration(mut self, max_duration: Duration) -> Self {
        self.resilience_mut().fail_safe_max_duration = Some(max_duration);
        self
    }

    /// Fail-safe's throttle for this call (see
    /// [`RegionConfig::fail_safe_throttle`](crate::RegionConfig::fail_safe_throttle)).
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = dogpile_core::CreateOptions::<u8>::new()
    ///     .fail_safe_max_duration(Duration::from_secs(600))
    ///     .fail_safe_throttle(Duration::from_secs(5));
    /// # let _ = options;
    /// ```
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.resilience_mut().fail_safe_throttle = Some(throttle);
        self
    }

    /// The soft timeout for this call (see
    /// [`RegionConfig::soft_timeout`](crate::RegionConfig::soft_timeout)).
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = dogpile_core::CreateOptions::<u8>::new().soft_timeout(Duration::from_millis(200));
    /// # let _ = options;
    /// ```
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.resilience_mut().soft_timeout = Some(timeout);
        self
    }

    /// The hard timeout for this call (see
    /// [`RegionConfig::hard_timeout`](crate::RegionConfig::hard_timeout)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dogpile_core::{CacheRegion, CreateOptions, Error, RegionConfig};
    ///
    /// let region: CacheRegion = CacheRegion::new();
    /// region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())).unwrap();
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let options = CreateOptions::new().hard_timeout(Duration::from_millis(10));
    /// let got = region.get_or_create_in_background("k", &options, move || {
    ///     let _ = wait.recv();
    ///     1u8
    /// });
    /// assert!(matches!(got, Err(Error::CreatorTimeout { .. })));
    /// release.send(()).unwrap();
    /// ```
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.resilience_mut().hard_timeout = Some(timeout);
        self
    }

    /// Early refresh for this call (see
    /// [`RegionConfig::eager_refresh`](crate::RegionConfig::eager_refresh)); a fraction outside
    /// (0, 1) makes the call fail with [`Error::Config`] naming `eager_refresh`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use dogpile_core::{clock::Clock, CacheRegion, CreateOptions, RegionConfig};
    ///
    /// let (clock, time) = Clock::manual(SystemTime::now());
    /// let region: CacheRegion = CacheRegion::new();
    /// let backend = dogpile_core::testing::MapBackend::default();
    /// region.configure(RegionConfig::with_backend(backend).expiration_time(100).clock(clock)).unwrap();
    /// region.set("k", 1u8).unwrap();
    /// time.advance(Duration::from_secs(90));
    /// let options = CreateOptions::new().eager_refresh(0.8);
    /// assert_eq!(region.get_or_create_with("k", &options, || 2).unwrap(), 2);
    /// let bad = CreateOptions::new().eager_refresh(2.0);
    /// assert!(region.get_or_create_with("k", &bad, || 3).is_err());
    /// ```
    pub fn eager_refresh(mut self, fraction: f64) -> Self {
        self.resilience_mut().eager_refresh = Some(fraction);
        self
    }

    /// XFetch's β for this call (see
    /// [`RegionConfig::early_expiration_beta`](crate::RegionConfig::early_expiration_beta)); a
    /// value that is not positive makes the call fail with [`Error::Config`].
    ///
    /// ```
    /// let options = dogpile_core::CreateOptions::<u8>::new().early_expiration_beta(2.0);
    /// # let _ = options;
    /// ```
    pub fn early_expiration_beta(mut self, beta: f64) -> Self {
        self.resilience_mut().early_expiration_beta = Some(beta);
        self
    }
}

impl<C: BackendCatalog> CacheRegion<C> {
    /// Whether [`judge_first`](Self::judge_first) leaves a call's first read as it is: no
    /// per-call resilience option, and none of the region's that acts on a creation (so no early
    /// refresh to judge). The call's tags are its caller's to ask about.
    #[inline(always)]
    pub(super) fn first_read_is_final<T>(
        &self,
        cfg: &Configured,
        options: &CreateOptions<T>,
    ) -> bool {
        options.resilience.is_none() && !cfg.resilience.acts_on_creation
    }

    /// Judges a call's first read: a fresh value due for an early refresh (eager or XFetch)
    /// comes back stale, for this call's algorithm only. An error names an option the call set
    /// to a value no region can use.
    #[inline]
    pub(super) fn judge_first<T>(
        &self,
        cfg: &Configured,
        options: &CreateOptions<T>,
        found: Lookup<T>,
        stamp: Option<Timestamp>,
        ttl: Option<Duration>,
        mkey: &str,
    ) -> Result<(Lookup<T>, Seen)> {
        let mut seen = Seen::stamped(stamp);
        // The common case, nothing on: no merge, no check.
        if self.first_read_is_final(cfg, options) {
            return Ok((found, seen));
        }
        let opts = cfg.resilience.for_call(options.resilience.as_ref())?;
        if !opts.acts_on_creation() {
            return Ok((found, seen));
        }
        let (found, early) = self.judge_early(cfg, &opts, found, stamp, ttl, mkey);
        seen.early = early;
        Ok((found, seen))
    }

    /// The rule of early refresh for one key's first read, under the call's options `opts`: a
    /// fresh value due for an early refresh (eager or XFetch) comes back stale, with why. For
    /// the first read of one key and of each key of a batch.
    #[inline]
    pub(super) fn judge_early<T>(
        &self,
        cfg: &Configured,
        opts: &Resilience,
        found: Lookup<T>,
        stamp: Option<Timestamp>,
        ttl: Option<Duration>,
        mkey: &str,
    ) -> (Lookup<T>, Option<EarlyKind>) {
        match (found, stamp) {
            (Lookup::Fresh(v), Some(stamp)) => {
                match cfg
                    .resilience
                    .early_due(opts, ttl, stamp, cfg.clock.now_coarse(), mkey)
                {
                    Some(kind) => (Lookup::Stale(v), Some(kind)),
                    None => (Lookup::Fresh(v), None),
                }
            }
            (found, _) => (found, None),
        }
    }

    /// Fail-safe's throttle: the stale value of a key whose creator failed less than a throttle
    /// ago (under the call's options `opts`), served without running the creator. For one key
    /// and for each key of a batch.
    pub(super) fn serve_throttled<T: Clone>(
        &self,
        cfg: &Configured,
        opts: &Resilience,
        ttl: Option<Duration>,
        mkey: &str,
        first: &Lookup<T>,
        seen: Seen,
    ) -> Option<T> {
        let (Lookup::Stale(v), Some(stamp), None) = (first, seen.stamp, seen.early) else {
            return None;
        };
        let now = cfg.clock.now();
        if opts.fail_safe_max_duration.is_none()
            || !cfg.resilience.throttled(mkey, now)
            || !cfg.resilience.fail_safe_covers(opts, ttl, stamp, now, mkey)
        {
            return None;
        }
        self.stats.incr(Counter::FailSafeServed);
        tracing::debug!(
            region = self.name(),
            key = mkey,
            "its creator failed recently: serving the expired value (fail-safe throttle)"
        );
        Some(v.clone())
    }

    /// The end of a one-key call whose algorithm ran (`ran`, a panic caught when fail-safe is
    /// on): its value; or, when the creator failed, the value fail-safe or an early refresh
    /// gives back; or the error (a panic resumed).
    pub(super) fn settle<T: CacheValue, E, Cr: Creator<T, E>>(
        &self,
        ran: std::thread::Result<Result<(), CreateError<E>>>,
        source: &mut RegionSource<'_, '_, C, T, E, Cr>,
        keys: [KeyState<T>; 1],
        mkey: &str,
    ) -> Result<T, (CreateError<E>, Option<Cr>)> {
        let failure = match ran {
            Ok(Ok(())) => return Ok(self.one_outcome(keys, mkey, source.watch.is_early(0))),
            Ok(Err(CreateError::Creator(e))) => Ok(CreateError::Creator(e)),
            Ok(Err(e)) => return Err((e, source.creator.take())),
            Err(panic) => Err(panic),
        };
        let now = source.cfg.clock.now();
        match (source.fall_back(0, now), failure) {
            (Some(v), _) => Ok(v),
            (None, Ok(e)) => Err((e, source.creator.take())),
            (None, Err(panic)) => std::panic::resume_unwind(panic),
        }
    }
}

impl<C: BackendCatalog, T: CacheValue, E, Cr: Creator<T, E>> RegionSource<'_, '_, C, T, E, Cr> {
    /// Whether a failed creation leaves `key` a value at `now` (see [`fall_back`](Self::fall_back)).
    fn falls_back(&self, key: usize, now: Timestamp) -> bool {
        let Some(KeyWatch {
            early,
            stale: Some((_, stamp)),
        }) = self.watch.keys.get(key)
        else {
            return false;
        };
        let opts = &self.watch.opts;
        early.is_some()
            || (opts.fail_safe_throttle().is_some()
                && self.cfg.resilience.fail_safe_covers(
                    opts,
                    self.ttl,
                    *stamp,
                    now,
                    self.slots[key].mkey(),
                ))
    }

    /// The value a failed creation leaves `key`'s caller at `now`, if any: the current value of
    /// an early refresh (it has not expired), or the stale value fail-safe covers (the key is
    /// then throttled).
    pub(super) fn fall_back(&mut self, key: usize, now: Timestamp) -> Option<T> {
        if !self.falls_back(key, now) {
            return None;
        }
        let (region, cfg, mkey) = (self.region, self.cfg, self.slots[key].mkey());
        let watch = &mut self.watch.keys[key];
        let (v, _) = watch.stale.take()?;
        if watch.early.is_some() {
            tracing::warn!(
                region = region.name(),
                key = mkey,
                "an early refresh failed: the current value stays"
            );
            return Some(v);
        }
        if let Some(throttle) = self.watch.opts.fail_safe_throttle() {
            cfg.resilience.throttle(mkey, now, throttle);
        }
        region.stats.incr(Counter::FailSafeServed);
        tracing::warn!(
            region = region.name(),
            key = mkey,
            "the creator failed: serving the expired value (fail-safe)"
        );
        Some(v)
    }

    /// The values of a batch whose creator failed (an error, or a panic caught for fail-safe):
    /// each key the creator was to make (those still open) with the value it falls back to; or
    /// `None` when one of them has none, as that key's call alone would then fail, and the batch
    /// fails as a whole (nothing is served, nothing throttled).
    pub(super) fn fall_back_batch(&mut self, keys: &[KeyState<T>]) -> Option<Vec<(usize, T)>> {
        let now = self.cfg.clock.now();
        let open: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].is_open()).collect();
        if !open.iter().all(|&k| self.falls_back(k, now)) {
            return None;
        }
        Some(
            open.into_iter()
                .filter_map(|k| Some((k, self.fall_back(k, now)?)))
                .collect(),
        )
    }

    /// Starts watching `key` for the resilience options, from its first read.
    pub(super) fn watch_from(&mut self, key: usize, first: &Lookup<T>, seen: Seen) {
        let Some(watch) = self.watch.keys.get_mut(key) else {
            return;
        };
        if let (Lookup::Stale(v), Some(stamp)) = (first, seen.stamp) {
            watch.stale = Some((v.clone(), stamp));
            watch.early = seen.early.map(|kind| (stamp, kind));
        }
    }

    /// Whether reads keep the creation stamps.
    pub(super) fn watching(&self) -> bool {
        self.watch.on
    }

    /// A later read of `key`: kept for fail-safe, and for an early refresh turned stale while
    /// the stored value is still the one judged due (another caller has not refreshed it).
    pub(super) fn observe(
        &mut self,
        key: usize,
        found: Lookup<T>,
        stamp: Option<Timestamp>,
    ) -> Lookup<T> {
        let Some(watch) = self.watch.keys.get_mut(key) else {
            return found;
        };
        let found = match (found, watch.early) {
            (Lookup::Fresh(v), Some((judged, kind))) if stamp == Some(judged) => {
                // The refresh starts: this caller holds the lock and the value is unchanged.
                self.region.stats.incr(kind.counter());
                Lookup::Stale(v)
            }
            (found, _) => found,
        };
        watch.stale = match (&found, stamp) {
            (Lookup::Stale(v), Some(stamp)) => Some((v.clone(), stamp)),
            _ => None,
        };
        found
    }

    /// The runner of `key`'s early refresh when the region has none: a thread of its own.
    pub(super) fn early_runner(&self, key: usize) -> Option<Arc<dyn AsyncCreationRunner>> {
        self.watch.is_early(key).then(thread_runner)
    }

    /// Creates `key`'s value on a thread of its own when a timeout bounds this call: the thread
    /// stores the value and releases the lock whenever it finishes, and the caller waits at most
    /// the soft timeout (with a stale value) or the hard one. `None` when no timeout applies, or
    /// the creator cannot move (it then runs here).
    pub(super) fn create_timed(&mut self, key: usize) -> Option<Result<Vec<T>, CreateError<E>>> {
        let options = &self.watch.opts;
        let has_stale = self.watch.keys.get(key).is_some_and(|k| k.stale.is_some());
        let soft = options.soft_timeout.filter(|_| has_stale);
        let hard = options.hard_timeout.filter(|_| self.watch.hard_timeout);
        let bound = soft.or(hard)?;
        if self.io != Io::Blocking {
            return None;
        }
        let job = match self.creator.take()?.detach() {
            Ok(job) => job,
            Err(creator) => {
                self.creator = Some(creator);
                return None;
            }
        };
        let (tx, rx) = mpsc::sync_channel::<Sent<T>>(1);
        let run = self.background_job(key, job, Some(tx));
        let name = self.slots[key].key();
        if let Err(e) = std::thread::Builder::new()
            .name("dogpile-creator".into())
            .spawn(run)
        {
            return Some(Err(CreateError::Cache(Error::backend_msg(
                self.cfg.backend_name.clone(),
                format!("could not start a thread to create {name:?}: {e}"),
            ))));
        }
        Some(match rx.recv_timeout(bound) {
            Ok(Ok(v)) => Ok(vec![v]),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(RecvTimeoutError::Disconnected) => Err(CreateError::Cache(Error::backend_msg(
                self.cfg.backend_name.clone(),
                format!("the creator of {name:?} ended without a value"),
            ))),
            Err(RecvTimeoutError::Timeout) => {
                let (counter, which) = match soft {
                    Some(_) => (Counter::SoftTimeouts, "soft_timeout"),
                    None => (Counter::HardTimeouts, "hard_timeout"),
                };
                self.region.stats.incr(counter);
                let region = self.region.name();
                match self.watch.keys.get_mut(key).and_then(|k| k.stale.take()) {
                    Some((v, _)) => {
                        tracing::info!(region, key = name, ?bound, "the creator ran past {which}: serving the stale value while it finishes");
                        Ok(vec![v])
                    }
                    None => {
                        tracing::warn!(region, key = name, ?bound, "the creator ran past {which} and there is no value to give; it finishes in the background");
                        Err(CreateError::Cache(Error::CreatorTimeout {
                            region: region.to_owned(),
                            key: name.to_owned(),
                            timeout: bound,
                        }))
                    }
                }
            }
        })
    }

    /// Runs the algorithm over the keys of this call, catching a panic when fail-safe is on.
    pub(super) async fn run_catching(
        &mut self,
        keys: &mut [KeyState<T>],
    ) -> std::thread::Result<Result<(), CreateError<E>>> {
        // A panic is caught only for fail-safe, which may have a value to give instead.
        let catch = self.watch.opts.fail_safe_max_duration.is_some();
        catching(self.run(keys), catch).await
    }

    /// Fail-safe's throttle for the one key of this call (see
    /// [`CacheRegion::serve_throttled`]).
    pub(super) fn serve_throttled(&self, first: &Lookup<T>, seen: Seen) -> Option<T> {
        let mkey = self.slots[0].mkey();
        self.region
            .serve_throttled(self.cfg, &self.watch.opts, self.ttl, mkey, first, seen)
    }
}

/// After a background creation failed: with fail-safe on (`throttle` is its throttle), the key
/// is throttled.
pub(super) fn background_failed(cfg: &Configured, mkey: &str, throttle: Option<Duration>) {
    if let Some(throttle) = throttle {
        cfg.resilience.throttle(mkey, cfg.clock.now(), throttle);
    }
}

/// Sends a background creation's value (or panic) to a caller still waiting; one gone is fine.
pub(super) fn notify<T>(to: Option<&SyncSender<Sent<T>>>, sent: Sent<T>) {
    if let Some(to) = to {
        let _ = to.try_send(sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XFetch over many simulated reads with a seeded random source: the time of the first
    /// regeneration follows the formula. Reads come every `step` over the value's life; the
    /// chance that no read regenerated before the read at time `t` is the product over earlier
    /// reads of `1 − exp(−remaining / (δ·β))`. The empirical frequency at each checkpoint must
    /// be within 4 standard deviations of a binomial proportion (`sqrt(p(1−p)/n)`) of it.
    #[test]
    fn xfetch_first_regeneration_matches_the_formula() {
        let state = ResilienceState::new(Resilience {
            early_expiration_beta: Some(1.0),
            random_seed: Some(0x5EED),
            ..Resilience::default()
        });
        let ttl = Duration::from_secs(100);
        let delta = Duration::from_secs(10);
        let beta = 1.0;
        let step = Duration::from_secs(1);
        let reads = 100;
        let runs = 20_000;
        // first[i]: how many runs first regenerated at read i.
        let mut first = vec![0u32; reads + 1];
        for _ in 0..runs {
            let at = (0..reads)
                .find(|&i| {
                    let remaining = ttl.saturating_sub(step * i as u32);
                    xfetch_due(remaining, delta, beta, state.next_unit())
                })
                .unwrap_or(reads);
            first[at] += 1;
        }
        let mut survive = 1.0f64;
        let mut survived_runs = runs as f64;
        for (i, &n) in first.iter().enumerate().take(reads) {
            let remaining = ttl.saturating_sub(step * i as u32).as_secs_f64();
            let p = (-remaining / (delta.as_secs_f64() * beta)).exp();
            survive *= 1.0 - p;
            survived_runs -= f64::from(n);
            if i % 10 == 9 {
                let observed = survived_runs / runs as f64;
                let sigma = (survive * (1.0 - survive) / runs as f64).sqrt().max(1e-4);
                assert!(
                    (observed - survive).abs() <= 4.0 * sigma,
                    "read {i}: {observed:.4} of runs not yet regenerated, the formula says {survive:.4} (σ {sigma:.4})"
                );
            }
        }
    }

    #[test]
    fn draws_are_in_the_unit_interval_and_seeded() {
        let a = ResilienceState::new(Resilience {
            random_seed: Some(7),
            ..Resilience::default()
        });
        let b = ResilienceState::new(Resilience {
            random_seed: Some(7),
            ..Resilience::default()
        });
        for _ in 0..10_000 {
            let (x, y) = (a.next_unit(), b.next_unit());
            assert_eq!(x, y);
            assert!(x > 0.0 && x <= 1.0, "{x}");
        }
    }

    #[test]
    fn jitter_is_per_key_bounded_and_the_same_for_every_reader() {
        let state = ResilienceState::new(Resilience {
            expiration_jitter: Some(Duration::from_secs(10)),
            ..Resilience::default()
        });
        let ttl = Some(Duration::from_secs(60));
        let stamp = Timestamp::from_nanos(1_700_000_000_000_000_000);
        let ttls: Vec<Duration> = (0..1000)
            .map(|i| state.jittered(ttl, stamp, &format!("k{i}")).unwrap())
            .collect();
        assert!(ttls
            .iter()
            .all(|t| *t >= Duration::from_secs(60) && *t <= Duration::from_secs(70)));
        let spread = ttls
            .iter()
            .max()
            .unwrap()
            .saturating_sub(*ttls.iter().min().unwrap());
        assert!(spread > Duration::from_secs(9), "{spread:?}");
        // Deterministic: another reader (another state, another seed) judges the same.
        let other = ResilienceState::new(Resilience {
            expiration_jitter: Some(Duration::from_secs(10)),
            random_seed: Some(1),
            ..Resilience::default()
        });
        assert_eq!(other.jittered(ttl, stamp, "k3"), Some(ttls[3]));
        // Never-expiring and zero expirations keep their meaning.
        assert_eq!(state.jittered(None, stamp, "k"), None);
        assert_eq!(
            state.jittered(Some(Duration::ZERO), stamp, "k"),
            Some(Duration::ZERO)
        );
    }
}
