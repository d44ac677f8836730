//! The hit path on the memory backend, beside the peers, in one run: one and two threads.
//!
//! Workload (DESIGN section 6): a `u64` argument, a 32-byte `String` value, a warm cache of 1,000
//! keys cycled through.
//!
//! - `cached #[cached]`: `cached`'s attribute on a `fn(u64) -> String`;
//! - `floor`: `parking_lot::RwLock<HashMap<String, String>>` with a `format!` key;
//! - `moka`: `moka::sync::Cache::get_with`;
//! - `region`: `CacheRegion::get_or_create` called by hand with a `format!` key.
//!
//! Two-thread groups report the time per call on each thread; throughput scaling is
//! `2 x one-thread time / two-thread time`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dogpile::{CacheRegion, RegionConfig};
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

fn hit_path(c: &mut Criterion) {
    bench_one(c, "cached #[cached]", |n| {
        black_box(cached_value(n));
    });

    let floor: Arc<RwLock<HashMap<String, String>>> = Arc::default();
    bench_one(c, "floor", move |n| {
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

    let moka: moka::sync::Cache<u64, String> = moka::sync::Cache::new(10_000);
    bench_one(c, "moka get_with", move |n| {
        black_box(moka.get_with(n, || value(n)));
    });

    static REGION: CacheRegion = CacheRegion::named("bench");
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory").expiration_time(3600))
        .expect("memory region");
    bench_one(c, "region get_or_create", |n| {
        let key = format!("bench:{n}");
        black_box(
            REGION
                .get_or_create(&key, || value(n))
                .expect("memory backend"),
        );
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
