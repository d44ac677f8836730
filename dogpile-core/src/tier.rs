//! The local tier: copies of values in this process, in front of a shared backend.
//!
//! A region on Redis pays a round trip for every hit; one on the memory backend cannot tell its
//! sibling processes that a value changed. A [`LocalTier`] keeps the best of both: hits are
//! answered from a bounded map in this process (the objects themselves, nothing decoded), misses
//! read the shared backend and fill the map, and every write goes to the shared backend first. A
//! [backplane](crate::backplane) tells the other processes, which drop their copies.
//!
//! When is a local copy served? Only while all of these hold:
//! - the region would call the value fresh (expiration, invalidation), as for any backend;
//! - it was put in the local tier less than the tier's
//!   [`expiration_time`](LocalTier::expiration_time) ago: a copy never outlives that, whatever
//!   the backplane does (a lost message costs at most that much staleness);
//! - with a backplane, the link was heard from (a message or a heartbeat) within
//!   [`max_silence`](LocalTier::max_silence), and the copy was made after the link last came up:
//!   messages lost during an outage cannot leave a stale copy behind.
//!
//! Otherwise the region reads the shared backend, which always has the truth.
//!
//! ```
//! use std::time::Duration;
//! use dogpile_core::{CacheRegion, LocalTier, RegionConfig};
//! use dogpile_core::testing::{LoopbackBackplane, MapBackend};
//!
//! let shared = std::sync::Arc::new(MapBackend::bytes()); // Redis, in production
//! let bus = LoopbackBackplane::new(); // Redis pub/sub, in production
//! let config = |tier| {
//!     RegionConfig::with_backend(shared.clone())
//!         .expiration_time(600)
//!         .local_tier(tier)
//!         .backplane(bus.clone())
//! };
//! let tier = || LocalTier::with_store(MapBackend::default()).expiration_time(Duration::from_secs(30));
//! // Two processes' regions: one name, so one channel.
//! let (a, b): (CacheRegion, CacheRegion) = (CacheRegion::named("users"), CacheRegion::named("users"));
//! a.configure(config(tier())).unwrap();
//! b.configure(config(tier())).unwrap();
//!
//! a.set("greeting", "hello".to_string()).unwrap();
//! assert_eq!(b.get::<String>("greeting").unwrap().as_deref(), Some("hello")); // from Redis
//! assert_eq!(b.get::<String>("greeting").unwrap().as_deref(), Some("hello")); // local
//! a.set("greeting", "bonjour".to_string()).unwrap(); // b is told, and drops its copy
//! assert_eq!(b.get::<String>("greeting").unwrap().as_deref(), Some("bonjour"));
//! assert_eq!(b.stats().local_hits, 1);
//! ```

use std::any::Any;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, CachedValue, Metadata, Payload, PayloadKind};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::fleet::{nanos, LinkTrust};

/// The default bound on a local copy's life: short, because without a backplane nothing else
/// bounds how stale it can be.
pub const DEFAULT_LOCAL_EXPIRATION: Duration = Duration::from_secs(30);

/// The default bound on the backplane's silence before local copies stop being served.
pub const DEFAULT_MAX_SILENCE: Duration = Duration::from_secs(1);

/// The local tier of a region: how many values it holds and how long a copy may be served. Set
/// with [`RegionConfig::local_tier`](crate::RegionConfig::local_tier), or in a config map:
///
/// ```text
/// cache.users.local_tier.max_size = 10000
/// cache.users.local_tier.expiration_time = 30
/// cache.users.local_tier.max_silence = 1
/// ```
///
/// The copies live in the memory backend (`dogpile.cache.memory`, bounded by `max_size`) unless
/// [`with_store`](LocalTier::with_store) names another object backend.
#[derive(Clone)]
pub struct LocalTier {
    pub(crate) max_size: Option<u64>,
    pub(crate) expiration: Duration,
    pub(crate) max_silence: Duration,
    pub(crate) store: Option<Arc<dyn Backend>>,
}

impl Default for LocalTier {
    fn default() -> Self {
        LocalTier {
            max_size: None,
            expiration: DEFAULT_LOCAL_EXPIRATION,
            max_silence: DEFAULT_MAX_SILENCE,
            store: None,
        }
    }
}

impl fmt::Debug for LocalTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTier")
            .field("max_size", &self.max_size)
            .field("expiration", &self.expiration)
            .field("max_silence", &self.max_silence)
            .field("store", &self.store.as_ref().map(|s| s.name().to_owned()))
            .finish()
    }
}

impl LocalTier {
    /// A tier in the memory backend, unbounded, copies served for
    /// [`DEFAULT_LOCAL_EXPIRATION`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use dogpile_core::LocalTier;
    /// let tier = LocalTier::new().max_size(10_000).expiration_time(Duration::from_secs(10));
    /// # let _ = tier;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A tier whose copies live in `store`, an object backend (one whose
    /// [`payload_kind`](Backend::payload_kind) is `Object`); `max_size` is then the store's
    /// business.
    pub fn with_store(store: impl Backend) -> Self {
        LocalTier {
            store: Some(Arc::new(store)),
            ..Self::default()
        }
    }

    /// At most this many copies (the memory backend's `max_size`: it evicts by S3-FIFO).
    pub fn max_size(mut self, n: u64) -> Self {
        self.max_size = Some(n);
        self
    }

    /// How long a copy may be served after it was put in the tier. At most the region's
    /// expiration (a longer one is shortened to it at configure time).
    pub fn expiration_time(mut self, d: Duration) -> Self {
        self.expiration = d;
        self
    }

    /// How long the backplane may be silent (no message, no heartbeat reply) before local copies
    /// stop being served: the bound on staleness when the link to the other processes is cut.
    pub fn max_silence(mut self, d: Duration) -> Self {
        self.max_silence = d;
        self
    }
}

/// A copy in the local tier: the value, and when it was put there.
struct Local<T> {
    put_at: u64,
    /// The tier's epoch when the value was read (or written): a copy of an older epoch is not
    /// served.
    epoch: u64,
    value: T,
}

/// Buckets of the fill guard: a reader fills the tier only if no write or message touched its
/// key's bucket while it read the shared backend. A fill and a drop of the same bucket take the
/// bucket's lock (hits take none): a drop then either removes a copy made before it or makes a
/// later fill of an older read give up, and no reader can see an older copy in between.
const BUCKETS: usize = 64;

/// The running local tier of a configured region.
pub(crate) struct Tier {
    store: Arc<dyn Backend>,
    expiration: Duration,
    expiration_nanos: u64,
    /// The link's epoch and word: a copy of an earlier epoch is not served, which drops every
    /// copy at once without walking the map. (A counter, not a time: a copy made in the same
    /// clock tick as a reconnect must not pass for a later one.)
    trust: Arc<LinkTrust>,
    /// One counter per bucket of keys, moved by every write and message (see [`BUCKETS`]).
    seq: [AtomicU64; BUCKETS],
    /// The bucket locks of fills and drops (see [`BUCKETS`]).
    locks: [parking_lot::Mutex<()>; BUCKETS],
    hasher: foldhash::fast::FixedState,
}

/// What a reader notes before it reads the shared backend, to fill the tier afterwards.
#[derive(Clone, Copy)]
pub(crate) struct FillTicket {
    bucket: usize,
    seq: u64,
    epoch: u64,
}

impl Tier {
    /// The running tier for `config`; `region_ttl` shortens the tier's expiration to the
    /// region's; `make_memory` builds the memory backend when no store was given.
    pub(crate) fn start(
        config: &LocalTier,
        region_ttl: Option<Duration>,
        trust: Arc<LinkTrust>,
        make_memory: impl FnOnce(Option<u64>) -> Result<Arc<dyn Backend>>,
    ) -> Result<Self> {
        let store = match &config.store {
            Some(s) => s.clone(),
            None => make_memory(config.max_size)?,
        };
        if store.payload_kind() != PayloadKind::Object {
            return Err(Error::config(
                "local_tier",
                format!(
                    "the local tier keeps objects, and backend {:?} keeps bytes: use the memory backend",
                    store.name()
                ),
            ));
        }
        if config.expiration.is_zero() || config.max_silence.is_zero() {
            return Err(Error::config(
                "local_tier",
                "expiration_time and max_silence must be more than zero",
            ));
        }
        let expiration = region_ttl.map_or(config.expiration, |t| t.min(config.expiration));
        Ok(Tier {
            store,
            expiration,
            expiration_nanos: nanos(expiration),
            trust,
            seq: std::array::from_fn(|_| AtomicU64::new(0)),
            locks: std::array::from_fn(|_| parking_lot::Mutex::new(())),
            hasher: foldhash::fast::FixedState::with_seed(0x6c6f_6361_6c74_6965),
        })
    }

    /// Whether a copy may be served at `now`.
    #[inline]
    fn trusts<T>(&self, local: &Local<T>, now: u64) -> bool {
        now.saturating_sub(local.put_at) < self.expiration_nanos
            && self.trust.trusts(local.epoch, now)
    }

    /// The local copy of `mkey` when it may be served: its value and metadata.
    #[inline]
    pub(crate) fn read<T: Clone + 'static, R>(
        &self,
        mkey: &str,
        now: Timestamp,
        mut judge: impl FnMut(&Metadata) -> bool,
        out: impl FnOnce(&T, &Metadata) -> R,
    ) -> Option<R> {
        let mut found = None;
        let mut out = Some(out);
        let _ = self.store.visit(mkey, &mut |cv| {
            let Payload::Object(obj) = &cv.payload else {
                return;
            };
            let Some(local) = (&**obj as &dyn Any).downcast_ref::<Local<T>>() else {
                return;
            };
            if self.trusts(local, now.as_nanos()) && judge(&cv.metadata) {
                if let Some(out) = out.take() {
                    found = Some(out(&local.value, &cv.metadata));
                }
            }
        });
        found
    }

    fn bucket(&self, mkey: &str) -> usize {
        (self.hasher.hash_one(mkey) as usize) % BUCKETS
    }

    /// Notes `mkey`'s bucket before a read of the shared backend.
    pub(crate) fn ticket(&self, mkey: &str) -> FillTicket {
        let bucket = self.bucket(mkey);
        FillTicket {
            bucket,
            epoch: self.trust.epoch(),
            seq: self.seq[bucket].load(Ordering::SeqCst),
        }
    }

    /// Puts a copy read from the shared backend, unless a write or a message touched the key's
    /// bucket (or the link's epoch moved) since `ticket` was taken: then the value read may be
    /// older than that write, and no copy is made.
    pub(crate) fn fill<T: Send + Sync + 'static>(
        &self,
        mkey: &str,
        value: T,
        metadata: Metadata,
        now: Timestamp,
        ticket: FillTicket,
    ) {
        let _bucket = self.locks[ticket.bucket].lock();
        if self.seq[ticket.bucket].load(Ordering::SeqCst) != ticket.seq
            || self.trust.epoch() != ticket.epoch
        {
            return;
        }
        self.put_raw(mkey, value, metadata, now, ticket.epoch);
    }

    fn put_raw<T: Send + Sync + 'static>(
        &self,
        mkey: &str,
        value: T,
        metadata: Metadata,
        now: Timestamp,
        epoch: u64,
    ) {
        let local = Local {
            put_at: now.as_nanos(),
            epoch,
            value,
        };
        let cv = CachedValue {
            payload: Payload::Object(Arc::new(local)),
            metadata,
        };
        if let Err(e) = self.store.set(mkey, cv) {
            tracing::warn!(key = mkey, error = %e, "local tier write failed");
        }
    }

    /// Drops the copies of `mkeys`: they were written or deleted, here or elsewhere. Called after
    /// the write reached the shared backend, so the next read here fills from what it wrote.
    pub(crate) fn forget<'k>(&self, mkeys: impl IntoIterator<Item = &'k str>) {
        for mkey in mkeys {
            let bucket = self.bucket(mkey);
            let _bucket = self.locks[bucket].lock();
            self.seq[bucket].fetch_add(1, Ordering::SeqCst);
            let _ = self.store.delete(mkey);
        }
    }

    /// The tier's expiration, after shortening to the region's.
    pub(crate) fn expiration(&self) -> Duration {
        self.expiration
    }
}

impl fmt::Debug for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tier")
            .field("store", &self.store.name())
            .field("expiration", &self.expiration)
            .finish()
    }
}
