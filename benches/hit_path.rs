//! The hit path on the memory backend, beside the peers, in one run: one and two threads.
//!
//! Workload (DESIGN section 6): a `u64` argument, a 32-byte `String` value, a warm cache of 1,000
//! keys cycled through.
//!
//! - `decorated #[cache_on_arguments]`: `dogpile`'s attribute on a `fn(u64) -> String` (the bar);
//! - `region get_or_create`: `CacheRegion::get_or_create` called by hand with the decorated fn's
//!   own key (`module::path:fn|n`), built with `format!` (`format! key`) or written into a reused
//!   thread-local buffer as the macro does, with `KeyArg` (`reused key`);
//! - `region get`: `CacheRegion::get` with the same key in a reused buffer;
//! - `cached #[cached]`: `cached`'s attribute on a `fn(u64) -> String`, default and
//!   `sync_writes = "by_key"`;
//! - `moka get_with`: `moka::sync::Cache::get_with`;
//! - `dashmap`: a `DashMap<u64, String>`, read then insert on a miss (a plain-map peer);
//! - `floor`: `parking_lot::RwLock<HashMap<String, String>>` with a `format!` key;
//! - `floor papaya`: what any shared, string-keyed, type-erased cache pays at least: the
//!   decorated fn's key written into a reused buffer, a lookup in `papaya`'s lock-free map of
//!   `String` to `Arc<dyn Any>` (foldhash, as the memory backend), a downcast and a clone. No
//!   expiration, statistics, configuration or fallback.
//! - `typed index prototype`: issue 19 item 3's ceiling, hand-written (no library code): a
//!   per-function `papaya` map of the argument's own value (`u64`, foldhash, no key text) to an
//!   `Arc` holding the very `Arc<dyn Any>` payload and created-at stamp the memory backend holds
//!   for the decorated fn's key, checked on every hit the way a coherent index would have to: a
//!   configuration generation, a liveness flag that the text-key operations would clear, the
//!   region's hard-invalidation time, the expiration from the stamp on the coarse clock, then the
//!   downcast, the clone and a per-thread hit counter. Its most optimistic form: it skips
//!   everything the real hit judges that is off in this bench (soft invalidation, early refresh,
//!   tags, the local tier).
//! - `typed index prototype, text-keyed twin`: the same prototype and checks, its map keyed by
//!   the decorated fn's key text (written into the reused buffer, as the macro does) instead of
//!   the argument: the difference between the two is what the key text alone costs.
//!
//! - `hit/async`: the decorated `async fn` awaited in a loop inside a tokio (current-thread)
//!   runtime, beside the same loop over the blocking decorated fn, both timed the same way (one
//!   thread): what an async hit costs over a blocking one.
//!
//! Instruction counts: with `HIT_COUNT=N` in the environment the bench does `N` blocking and `N`
//! async decorated hits (each in a function of its own, not inlined; the async one polled once
//! with a no-op waker, as an executor polls a ready future) and exits, for
//! `valgrind --tool=callgrind --toggle-collect='*one_hit_*'`; the same mode does `N` hits of the
//! typed index prototype (`one_hit_typed`), `N` of `region.get` and `N` of
//! `region.get_or_create_async` on the decorated fn's key (`one_hit_get`,
//! `one_hit_region_async`) and `N` of `cached` (`one_hit_cached`), each function its own
//! `--toggle-collect`.
//!
//! Region statistics are always on (per-thread counters), so every region figure includes them.
//!
//! Two-thread groups report the time per call on each thread; throughput scaling is
//! `2 x one-thread time / two-thread time`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dashmap::DashMap;
use dogpile::{CacheRegion, KeyArg, RegionConfig};
use parking_lot::RwLock;

const KEYS: u64 = 1000;

fn value(n: u64) -> String {
    format!("{n:032}")
}

/// Runs `op(i)` for `iters` calls on each of `threads` threads at once; returns the wall time.
fn run_threads<F: Fn(u64) + Send + Sync + 'static>(
    threads: usize,
    iters: u64,
    op: Arc<F>,
) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (op, barrier) = (op.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..iters {
                    op((i + t as u64 * 7) % KEYS);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("bench thread");
    }
    start.elapsed()
}

fn bench_one<F: Fn(u64) + Send + Sync + 'static>(c: &mut Criterion, name: &str, op: F) {
    let op = Arc::new(op);
    for n in 0..KEYS {
        op(n); // warm
    }
    let mut group = c.benchmark_group(format!("hit/{name}"));
    let one = op.clone();
    group.bench_function("1 thread", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 1) % KEYS;
            one(i)
        })
    });
    group.bench_function("2 threads", |b| {
        b.iter_custom(|iters| run_threads(2, iters, op.clone()))
    });
    group.finish();
}

/// `cached`'s attribute on the same workload: the fastest peer.
#[cached::proc_macro::cached]
fn cached_value(n: u64) -> String {
    value(n)
}

/// `cached`'s attribute with one body run per key under concurrent first calls.
#[cached::proc_macro::cached(sync_writes = "by_key")]
fn cached_by_key(n: u64) -> String {
    value(n)
}

/// The region of the decorated function, and of the hand-written calls beside it.
static REGION: CacheRegion = CacheRegion::named("bench");

/// `dogpile`'s attribute on the same workload.
#[dogpile::cache_on_arguments(region = REGION)]
fn decorated(n: u64) -> String {
    value(n)
}

/// `dogpile`'s attribute on an `async fn` with the same workload.
#[dogpile::cache_on_arguments(region = REGION)]
async fn decorated_async(n: u64) -> String {
    value(n)
}

/// The async decorated hit beside the blocking one, each timed over a loop of `iters` calls on
/// this thread; the async loop runs inside one `block_on` of a tokio runtime, as a request
/// handler's calls would.
fn bench_async(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        for n in 0..KEYS {
            decorated_async(n).await; // warm
        }
    });
    for n in 0..KEYS {
        decorated(n);
    }
    let mut group = c.benchmark_group("hit/async");
    group.bench_function("decorated fn, 1 thread", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                black_box(decorated(black_box(i % KEYS)));
            }
            start.elapsed()
        })
    });
    group.bench_function("decorated async fn in tokio, 1 thread", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(decorated_async(black_box(i % KEYS)).await);
                }
                start.elapsed()
            })
        })
    });
    let keys = decorated_keys();
    group.bench_function("region get_or_create_async in tokio, 1 thread", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let n = black_box(i % KEYS);
                    let got = REGION
                        .get_or_create_async(&keys[n as usize], || async move { value(n) })
                        .await;
                    black_box(got.expect("memory backend"));
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// The decorated fn's keys, as the macro writes them.
fn decorated_keys() -> Vec<String> {
    (0..KEYS).map(|n| with_key(n, str::to_owned)).collect()
}

/// One async `region.get_or_create_async` hit, its future made and polled once.
#[inline(never)]
fn one_hit_region_async(key: &str, n: u64) -> String {
    ready_at_first_poll(REGION.get_or_create_async(key, || async move { value(n) }))
        .expect("memory backend")
}

/// `fut`'s value from its first poll, as an executor polls a ready future (a no-op waker).
#[inline(always)]
fn ready_at_first_poll<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("a memory-backend hit is ready at once"),
    }
}

/// One blocking decorated hit, in a function of its own for callgrind's `--toggle-collect`.
#[inline(never)]
fn one_hit_sync(n: u64) -> String {
    decorated(n)
}

/// One async decorated hit: the future made and polled once, as an executor would.
#[inline(never)]
fn one_hit_async(n: u64) -> String {
    ready_at_first_poll(decorated_async(n))
}

/// One typed-index-prototype hit, for callgrind.
#[inline(never)]
fn one_hit_typed(index: &TypedIndex, n: u64) -> String {
    index.call(n)
}

/// One hit of the prototype's text-keyed twin, for callgrind.
#[inline(never)]
fn one_hit_text(index: &TypedIndex, n: u64) -> String {
    index.call_by_text(n)
}

/// One `cached` hit, for callgrind.
#[inline(never)]
fn one_hit_cached(n: u64) -> String {
    cached_value(n)
}

/// One `region.get` hit of the decorated fn's key (written into a reused buffer), for callgrind.
#[inline(never)]
fn one_hit_get(n: u64) -> Option<String> {
    with_key(n, |key| REGION.get::<String>(key).expect("memory backend"))
}

/// `HIT_COUNT=N`: `N` blocking and `N` async decorated hits and `N` `region.get` hits on a warm
/// cache, `N` typed index prototype hits, `N` of its text-keyed twin and `N` `cached` hits, then
/// exit.
fn count_mode(count: u64) -> ! {
    let index = TypedIndex::new();
    for n in 0..KEYS {
        index.call(n);
        cached_value(n);
    }
    for i in 0..count {
        black_box(one_hit_typed(&index, black_box(i % KEYS)));
        black_box(one_hit_text(&index, black_box(i % KEYS)));
        black_box(one_hit_cached(black_box(i % KEYS)));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        for n in 0..KEYS {
            decorated_async(n).await;
            decorated(n);
        }
        let keys = decorated_keys();
        for i in 0..count {
            black_box(one_hit_sync(black_box(i % KEYS)));
            black_box(one_hit_async(black_box(i % KEYS)));
            black_box(one_hit_get(black_box(i % KEYS)));
            let n = black_box(i % KEYS);
            black_box(one_hit_region_async(&keys[n as usize], n));
        }
    });
    eprintln!(
        "{count} hits each: blocking, async, region get, typed index prototype, its text-keyed twin, cached"
    );
    std::process::exit(0)
}

thread_local! {
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Calls `f` with the decorated fn's key for `n`, written into a reused thread-local buffer the
/// way the macro writes it: the prefix, then the argument's `KeyArg` text.
fn with_key<R>(n: u64, f: impl FnOnce(&str) -> R) -> R {
    KEY.with(|k| {
        let mut k = k.borrow_mut();
        k.clear();
        k.push_str(concat!(module_path!(), ":decorated|"));
        n.write_key(&mut k);
        f(&k)
    })
}

// ------------------------------------------------------------------------------------------------
// Issue 19 item 3: the typed hit index, as a hand-written prototype (BENCHMARKS.md, "The typed
// hit index"). Nothing here is library code: it measures what the library could at best reach.

/// The created-at stamps' clock, read as the region's hit reads it (coarse).
#[inline]
fn coarse_now_nanos() -> u64 {
    dogpile::clock::Clock::System.now_coarse().as_nanos()
}

/// One indexed entry: the memory backend's own payload `Arc` and stamp for the decorated fn's
/// key, and the flag a coherent backend would clear when that key is set, deleted or evicted
/// (the real memory backend has no such flag: its entries are values in its map, so a real
/// index would need the backend to keep `Arc`s of entries like this one).
struct TypedEntry {
    value: Arc<dyn std::any::Any + Send + Sync>,
    created_at: u64,
    live: std::sync::atomic::AtomicBool,
}

/// A per-function index of the decorated fn's entries by its argument's own value.
struct TypedIndex {
    map: papaya::HashMap<u64, Arc<TypedEntry>, foldhash::fast::RandomState>,
    /// The same entries by the decorated fn's key text, for the twin that isolates its cost.
    by_text: papaya::HashMap<String, Arc<TypedEntry>, foldhash::fast::RandomState>,
    /// The region's configuration generation the index was filled under: a `configure` would
    /// bump the region's, and every entry of an older one is void.
    generation: std::sync::atomic::AtomicU64,
    /// The region's hard-invalidation time (nanoseconds; 0: none): entries made before it are
    /// void.
    invalidated_at: std::sync::atomic::AtomicU64,
    ttl_nanos: u64,
}

thread_local! {
    /// Per-thread hit counter, as the region's statistics rows.
    static TYPED_HITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl TypedIndex {
    fn new() -> Self {
        TypedIndex {
            map: papaya::HashMap::with_hasher(Default::default()),
            by_text: papaya::HashMap::with_hasher(Default::default()),
            generation: std::sync::atomic::AtomicU64::new(1),
            invalidated_at: std::sync::atomic::AtomicU64::new(0),
            ttl_nanos: 3600 * 1_000_000_000,
        }
    }

    /// The hit, or `None` for the text path to answer.
    #[inline]
    fn hit(&self, n: u64, generation: u64) -> Option<String> {
        if self.generation.load(std::sync::atomic::Ordering::Acquire) != generation {
            return None;
        }
        let map = self.map.pin();
        self.judge(map.get(&n)?)
    }

    /// [`hit`](Self::hit) with the entry found by the decorated fn's key text.
    #[inline]
    fn hit_by_text(&self, n: u64, generation: u64) -> Option<String> {
        if self.generation.load(std::sync::atomic::Ordering::Acquire) != generation {
            return None;
        }
        let map = self.by_text.pin();
        with_key(n, |k| self.judge(map.get(k)?))
    }

    /// The checks of an indexed hit: live, not invalidated, not expired, of the caller's type.
    #[inline]
    fn judge(&self, e: &TypedEntry) -> Option<String> {
        use std::sync::atomic::Ordering::Acquire;
        if !e.live.load(Acquire) || e.created_at < self.invalidated_at.load(Acquire) {
            return None;
        }
        if coarse_now_nanos().saturating_sub(e.created_at) >= self.ttl_nanos {
            return None;
        }
        let v = e.value.downcast_ref::<String>()?.clone();
        TYPED_HITS.with(|c| c.set(c.get() + 1));
        Some(v)
    }

    /// The decorated fn through the index: an indexed hit, else the decorated call, whose entry
    /// (the backend's own `Arc`) is then indexed.
    #[inline]
    fn call(&self, n: u64) -> String {
        if let Some(v) = self.hit(n, 1) {
            return v;
        }
        self.fill(n)
    }

    /// [`call`](Self::call) through the text-keyed twin.
    #[inline]
    fn call_by_text(&self, n: u64) -> String {
        if let Some(v) = self.hit_by_text(n, 1) {
            return v;
        }
        self.fill(n)
    }

    #[cold]
    #[inline(never)]
    fn fill(&self, n: u64) -> String {
        let v = decorated(n);
        let backend = REGION.backend().expect("configured");
        let stored = with_key(n, |k| backend.get(k)).expect("memory backend");
        if let Some(dogpile::CachedValue {
            payload: dogpile::backend::Payload::Object(value),
            metadata,
        }) = stored
        {
            let entry = TypedEntry {
                value,
                created_at: metadata.created_at.as_nanos(),
                live: std::sync::atomic::AtomicBool::new(true),
            };
            let entry = Arc::new(entry);
            with_key(n, |k| {
                self.by_text.pin().insert(k.to_owned(), entry.clone());
            });
            self.map.pin().insert(n, entry);
        }
        v
    }
}

fn hit_path(c: &mut Criterion) {
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory").expiration_time(3600))
        .expect("memory region");
    // The hand-written calls read the entries the decorated fn made: check the key is the same.
    decorated(1);
    assert_eq!(
        with_key(1, |k| REGION.get::<String>(k)).expect("get"),
        Some(value(1)),
        "the hand-written key differs from the decorated fn's"
    );
    if let Some(count) = std::env::var("HIT_COUNT").ok().and_then(|v| v.parse().ok()) {
        count_mode(count);
    }
    bench_async(c);

    bench_one(c, "decorated #[cache_on_arguments]", |n| {
        black_box(decorated(black_box(n)));
    });

    bench_one(c, "region get_or_create (format! key)", |n| {
        let key = format!("{}:decorated|{n}", module_path!());
        black_box(
            REGION
                .get_or_create(&key, || value(n))
                .expect("memory backend"),
        );
    });

    bench_one(c, "region get_or_create (reused key)", |n| {
        black_box(with_key(n, |key| {
            REGION
                .get_or_create(key, || value(n))
                .expect("memory backend")
        }));
    });

    bench_one(c, "region get (reused key)", |n| {
        black_box(with_key(n, |key| {
            REGION.get::<String>(key).expect("memory backend")
        }));
    });

    let typed = TypedIndex::new();
    bench_one(c, "typed index prototype", move |n| {
        black_box(typed.call(black_box(n)));
    });

    let twin = TypedIndex::new();
    bench_one(c, "typed index prototype, text-keyed twin", move |n| {
        black_box(twin.call_by_text(black_box(n)));
    });

    bench_one(c, "cached #[cached]", |n| {
        black_box(cached_value(black_box(n)));
    });

    bench_one(c, "cached #[cached(sync_writes = by_key)]", |n| {
        black_box(cached_by_key(black_box(n)));
    });

    let moka: moka::sync::Cache<u64, String> = moka::sync::Cache::new(10_000);
    bench_one(c, "moka get_with", move |n| {
        black_box(moka.get_with(n, || value(n)));
    });

    let dash: DashMap<u64, String> = DashMap::new();
    bench_one(c, "dashmap", move |n| {
        let hit = dash.get(&n).map(|v| v.clone());
        let v = match hit {
            Some(v) => v,
            None => dash.entry(n).or_insert_with(|| value(n)).clone(),
        };
        black_box(v);
    });

    type Erased = Arc<dyn std::any::Any + Send + Sync>;
    let bare: papaya::HashMap<String, Erased, foldhash::fast::RandomState> =
        papaya::HashMap::with_hasher(Default::default());
    bench_one(c, "floor papaya<String, Arc<dyn Any>>", move |n| {
        let hit = with_key(n, |key| {
            bare.pin()
                .get(key)
                .and_then(|v| v.downcast_ref::<String>().cloned())
        });
        let v = match hit {
            Some(v) => v,
            None => {
                let v = value(n);
                let erased: Erased = Arc::new(v.clone());
                with_key(n, |key| {
                    bare.pin().insert(key.to_owned(), erased);
                });
                v
            }
        };
        black_box(v);
    });

    let floor: Arc<RwLock<HashMap<String, String>>> = Arc::default();
    bench_one(c, "floor RwLock<HashMap>", move |n| {
        let key = format!("bench:{n}");
        let hit = floor.read().get(&key).cloned();
        let v = match hit {
            Some(v) => v,
            None => {
                let v = value(n);
                floor.write().insert(key, v.clone());
                v
            }
        };
        black_box(v);
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = hit_path
}
criterion_main!(benches);
