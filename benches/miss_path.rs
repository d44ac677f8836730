//! The miss path on the memory backend: what one call costs when the key is absent, so the creator
//! runs and its value is stored. One thread; every peer in the same run.
//!
//! Each measured call is a true miss on a distinct key: the key is removed in criterion's batch
//! setup (not timed), then the timed routine asks for it. Keys cycle through 100,000 ids, so the
//! maps stay at their working size (they neither grow without bound nor shrink to nothing). The
//! creator is the hit-path workload's: a `u64` in, a 32-byte `String` out (one `format!`).
//!
//! - `decorated #[cache_on_arguments]`: removed with the generated `decorated_invalidate(n)`;
//! - `region get_or_create`: by hand, with a `format!` key made in the setup;
//! - `region get_or_create (max_size)`: the same on a bounded memory backend (`max_size`);
//! - `region get_or_create_async`: the same through the async call, its future polled to the
//!   end on this thread (the memory backend never makes it wait);
//! - `region set`: the store alone, for scale;
//! - `cached #[cached]` (default and `sync_writes = "by_key"`): removed with `cache_remove`;
//! - `moka get_with`: removed with `invalidate`;
//! - `floor papaya<String, Arc<dyn Any>>`: what any shared, string-keyed, type-erased cache
//!   with lock-free reads pays at least on a miss (the hit path's `floor papaya`, missed): the
//!   decorated fn's key made with `format!`, a lookup that finds nothing in `papaya`'s map of
//!   `String` to `Arc<dyn Any>` (foldhash, as the memory backend), the body, the value's
//!   `Arc`, the insert and the caller's clone. No lock per key, expiration stamp, statistics,
//!   configuration or second read;
//! - `floor RwLock<HashMap<String, Arc<dyn Any>>>`: the same behind one `parking_lot` lock,
//!   the store `#[cached]` has but with the key text and the type erasure.
//!
//! Instruction counts: with `MISS_COUNT=N` in the environment the bench does only `N` misses of
//! the decorated fn, `N` of `#[cached]`, `N` of `region.get_or_create_async`
//! (`one_miss_region_async`) and `N` of the papaya floor (`one_miss_floor_papaya`), each in a
//! function of its own, not inlined, and exits,
//! for `valgrind --tool=callgrind --toggle-collect='*one_miss*'` (BENCHMARKS.md, "Issue 19"):
//!
//! ```text
//! MISS_COUNT=20000 valgrind --tool=callgrind --toggle-collect='*one_miss_decorated*' \
//!     <target>/release/deps/miss_path-<hash> --bench
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cached::Cached;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion};
use dogpile::{CacheRegion, RegionConfig};

const KEYS: u64 = 100_000;

fn value(n: u64) -> String {
    format!("{n:032}")
}

#[cached::proc_macro::cached]
fn cached_value(n: u64) -> String {
    value(n)
}

#[cached::proc_macro::cached(sync_writes = "by_key")]
fn cached_by_key(n: u64) -> String {
    value(n)
}

static REGION: CacheRegion = CacheRegion::named("miss");

#[dogpile::cache_on_arguments(region = REGION)]
fn decorated(n: u64) -> String {
    value(n)
}

/// A value as a type-erased store keeps it.
type Erased = Arc<dyn Any + Send + Sync>;

/// The decorated fn's key text for `n`, as its generated code writes it.
fn floor_key(n: u64) -> String {
    format!("{}:decorated|{n}", module_path!())
}

/// The floor maps: `papaya`'s lock-free map (the memory backend's) and one behind a lock.
struct Floors {
    papaya: papaya::HashMap<String, Erased, foldhash::fast::RandomState>,
    locked: parking_lot::RwLock<HashMap<String, Erased, foldhash::fast::RandomState>>,
}

impl Floors {
    fn new() -> Self {
        Floors {
            papaya: papaya::HashMap::with_hasher(Default::default()),
            locked: parking_lot::RwLock::new(HashMap::with_hasher(Default::default())),
        }
    }

    /// A get-or-create on the papaya map: the read, the body, the store.
    fn papaya_get_or_create(&self, n: u64) -> String {
        let key = floor_key(n);
        let map = self.papaya.pin();
        if let Some(v) = map.get(key.as_str()) {
            return v.downcast_ref::<String>().expect("a String").clone();
        }
        let v = value(n);
        map.insert(key, Arc::new(v.clone()));
        v
    }

    /// The same on the locked map: a read under the shared lock, the store under the exclusive.
    fn locked_get_or_create(&self, n: u64) -> String {
        let key = floor_key(n);
        if let Some(v) = self.locked.read().get(key.as_str()) {
            return v.downcast_ref::<String>().expect("a String").clone();
        }
        let v = value(n);
        self.locked.write().insert(key, Arc::new(v.clone()));
        v
    }
}

/// A counter cycling through the key space: each call of the setup gives the next id.
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> u64 {
        self.0 = (self.0 + 1) % KEYS;
        self.0
    }
}

/// Runs `routine` on ids whose entries `remove` deleted in the (untimed) setup.
///
/// Batches of 1,000 keep the ids of one batch distinct (the key space is 100,000).
fn bench_miss<I>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    remove: impl Fn(u64) -> I,
    routine: impl Fn(I) -> String,
) {
    let mut ids = Ids(0);
    g.bench_function(name, |b| {
        b.iter_batched(
            || remove(ids.next()),
            |input| black_box(routine(input)),
            BatchSize::NumIterations(1000),
        )
    });
}

/// One decorated miss, in a function of its own for callgrind's `--toggle-collect`.
#[inline(never)]
fn one_miss_decorated(n: u64) -> String {
    decorated(n)
}

/// One `#[cached]` miss, likewise.
#[inline(never)]
fn one_miss_cached(n: u64) -> String {
    cached_value(n)
}

/// One miss of the papaya floor, likewise.
#[inline(never)]
fn one_miss_floor_papaya(floors: &Floors, n: u64) -> String {
    floors.papaya_get_or_create(n)
}

/// One miss of `region.get_or_create_async`, its future polled to the end (the memory backend
/// never makes it wait), likewise.
#[inline(never)]
fn one_miss_region_async(key: &str, n: u64) -> String {
    let mut fut = std::pin::pin!(REGION.get_or_create_async(key, || async move { value(n) }));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = std::future::Future::poll(fut.as_mut(), &mut cx) {
            return v.expect("memory backend");
        }
    }
}

/// `MISS_COUNT=N`: `N` misses of the decorated fn, of `#[cached]` and of
/// `region.get_or_create_async` on warm maps, then exit.
fn count_mode(count: u64) -> ! {
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory").expiration_time(3600))
        .expect("memory region");
    let keys: Vec<String> = (0..KEYS).map(|n| format!("miss:{n}")).collect();
    let floors = Floors::new();
    for n in 0..KEYS {
        decorated(n);
        cached_value(n);
        floors.papaya_get_or_create(n);
        REGION
            .get_or_create(&keys[n as usize], || value(n))
            .expect("memory");
    }
    for i in 0..count {
        let n = i % KEYS;
        decorated_invalidate(n);
        black_box(one_miss_decorated(black_box(n)));
        let _ = CACHED_VALUE.write().cache_remove(&n);
        black_box(one_miss_cached(black_box(n)));
        REGION.delete(&keys[n as usize]).expect("memory");
        black_box(one_miss_region_async(&keys[n as usize], black_box(n)));
        floors.papaya.pin().remove(floor_key(n).as_str());
        black_box(one_miss_floor_papaya(&floors, black_box(n)));
    }
    eprintln!(
        "{count} misses each: decorated, #[cached], region get_or_create_async, papaya floor"
    );
    std::process::exit(0)
}

fn miss_path(c: &mut Criterion) {
    if let Some(count) = std::env::var("MISS_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        count_mode(count);
    }
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory").expiration_time(3600))
        .expect("memory region");
    let bounded: CacheRegion = dogpile::make_region()
        .name("miss-bounded")
        .configure(
            RegionConfig::new("dogpile.cache.memory")
                .expiration_time(3600)
                .argument("max_size", 2 * KEYS),
        )
        .expect("bounded memory region");
    // Fill every map to its working size first.
    for n in 0..KEYS {
        decorated(n);
        let key = format!("miss:{n}");
        REGION.get_or_create(&key, || value(n)).expect("memory");
        bounded.get_or_create(&key, || value(n)).expect("memory");
        cached_value(n);
        cached_by_key(n);
    }
    let stats = REGION.stats();
    assert_eq!(stats.creations, 2 * KEYS, "every warm-up call was a miss");
    let moka: moka::sync::Cache<u64, String> = moka::sync::Cache::new(2 * KEYS);
    let floors = Floors::new();
    for n in 0..KEYS {
        moka.get_with(n, || value(n));
        floors.papaya_get_or_create(n);
        floors.locked_get_or_create(n);
    }

    let mut g = c.benchmark_group("miss");

    bench_miss(
        &mut g,
        "decorated #[cache_on_arguments]",
        |n| {
            decorated_invalidate(n);
            n
        },
        decorated,
    );

    bench_miss(
        &mut g,
        "region get_or_create",
        |n| {
            let key = format!("miss:{n}");
            REGION.delete(&key).expect("memory");
            (n, key)
        },
        |(n, key)| REGION.get_or_create(&key, || value(n)).expect("memory"),
    );

    bench_miss(
        &mut g,
        "region get_or_create (max_size)",
        |n| {
            let key = format!("miss:{n}");
            bounded.delete(&key).expect("memory");
            (n, key)
        },
        |(n, key)| bounded.get_or_create(&key, || value(n)).expect("memory"),
    );

    bench_miss(
        &mut g,
        "region get_or_create_async",
        |n| {
            let key = format!("miss:{n}");
            REGION.delete(&key).expect("memory");
            (n, key)
        },
        |(n, key)| one_miss_region_async(&key, n),
    );

    bench_miss(
        &mut g,
        "region set",
        |n| (n, format!("miss:{n}"), value(n)),
        |(_, key, v)| {
            REGION.set(&key, v).expect("memory");
            String::new()
        },
    );

    bench_miss(
        &mut g,
        "cached #[cached]",
        |n| {
            let _ = CACHED_VALUE.write().cache_remove(&n);
            n
        },
        cached_value,
    );

    bench_miss(
        &mut g,
        "cached #[cached(sync_writes = by_key)]",
        |n| {
            let _ = CACHED_BY_KEY.write().cache_remove(&n);
            n
        },
        cached_by_key,
    );

    bench_miss(
        &mut g,
        "moka get_with",
        |n| {
            moka.invalidate(&n);
            n
        },
        |n| moka.get_with(n, || value(n)),
    );

    bench_miss(
        &mut g,
        "floor papaya<String, Arc<dyn Any>>",
        |n| {
            floors.papaya.pin().remove(floor_key(n).as_str());
            n
        },
        |n| floors.papaya_get_or_create(n),
    );

    bench_miss(
        &mut g,
        "floor RwLock<HashMap<String, Arc<dyn Any>>>",
        |n| {
            floors.locked.write().remove(floor_key(n).as_str());
            n
        },
        |n| floors.locked_get_or_create(n),
    );

    g.finish();

    let stats = REGION.stats();
    eprintln!(
        "region statistics after the miss benches: {} creations, {} misses, {} hits",
        stats.creations, stats.misses, stats.hits
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = miss_path
}
criterion_main!(benches);
