//! A hot key across its expiry, with and without `eager_refresh`: 8 threads read one key in a
//! loop for `HOT_RUN_MS` while its value expires every `HOT_TTL_MS`, and the creator takes
//! `CREATE_MS`. Counted: how many calls ran the creator on their own thread or waited for
//! another's creation (the goal with `eager_refresh` is zero), and the worst latency of a call.
//!
//! Calls go through `get_or_create_in_background`, whose creator can move to another thread:
//! without `eager_refresh` the caller that finds the value expired runs it (the others get the
//! stale value); with it, the first hit past 80% of the value's life starts the refresh on a
//! thread of its own and every caller keeps the current value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use dogpile::{make_region, CreateOptions, RegionConfig};

/// Threads reading the key.
const HOT_THREADS: usize = 8;
/// The value's expiration time.
const HOT_TTL_MS: u64 = 500;
/// How long the threads read: several expiries.
const HOT_RUN_MS: u64 = 2_600;

/// What one configuration did.
pub struct HotRow {
    pub label: &'static str,
    pub calls: u64,
    /// Calls that ran the creator on their own thread.
    pub ran_creator: u64,
    /// Calls that waited for another caller's creation (the region's `waits`).
    pub waited: u64,
    pub creations: u64,
    pub worst: Duration,
    /// Calls slower than 1 ms (on 2 cores, 8 threads are also descheduled: that is most of them).
    pub slow: u64,
    /// Calls that took 80% of a creation or more: waits for a creation show here.
    pub creation_long: u64,
    pub eager_refreshes: u64,
}

fn run(label: &'static str, eager: bool, create_ms: u64) -> HotRow {
    let mut config = RegionConfig::new("dogpile.cache.memory")
        .expiration_time(Duration::from_millis(HOT_TTL_MS));
    if eager {
        config = config.eager_refresh(0.8);
    }
    let region = Arc::new(make_region().configure(config).expect("a memory region"));
    region.set("hot", 0u64).expect("the first value");
    let ran_creator = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(HOT_THREADS));
    let stop = Instant::now() + Duration::from_millis(HOT_RUN_MS);
    let threads: Vec<_> = (0..HOT_THREADS)
        .map(|_| {
            let (region, ran_creator, start) = (region.clone(), ran_creator.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let me = std::thread::current().id();
                let (mut calls, mut worst, mut slow, mut long) = (0u64, Duration::ZERO, 0u64, 0u64);
                let creation_long = Duration::from_millis(create_ms * 4 / 5);
                let options = CreateOptions::new();
                while Instant::now() < stop {
                    let ran_creator = ran_creator.clone();
                    let t0 = Instant::now();
                    let v: u64 = region
                        .get_or_create_in_background("hot", &options, move || {
                            if std::thread::current().id() == me {
                                ran_creator.fetch_add(1, Ordering::Relaxed);
                            }
                            std::thread::sleep(Duration::from_millis(create_ms));
                            1
                        })
                        .expect("get_or_create on a hot key");
                    let took = t0.elapsed();
                    std::hint::black_box(v);
                    calls += 1;
                    worst = worst.max(took);
                    slow += u64::from(took > Duration::from_millis(1));
                    long += u64::from(took >= creation_long);
                }
                (calls, worst, slow, long)
            })
        })
        .collect();
    let (mut calls, mut worst, mut slow, mut creation_long) = (0, Duration::ZERO, 0, 0);
    for t in threads {
        let (c, w, s, l) = t.join().expect("a hot-key thread");
        calls += c;
        worst = worst.max(w);
        slow += s;
        creation_long += l;
    }
    // Let a refresh still running finish, so its creation is counted.
    std::thread::sleep(Duration::from_millis(create_ms * 2));
    let stats = region.stats();
    HotRow {
        label,
        calls,
        ran_creator: ran_creator.load(Ordering::Relaxed),
        waited: stats.waits,
        creations: stats.creations,
        worst,
        slow,
        creation_long,
        eager_refreshes: stats.eager_refreshes,
    }
}

/// Both configurations, one after the other, and their table.
pub fn hot_key_table(create_ms: u64) -> String {
    let rows = [
        run("dogpile (no early refresh)", false, create_ms),
        run("eager_refresh = 0.8", true, create_ms),
    ];
    let mut out = format!(
        "\n## A hot key across its expiry: {HOT_THREADS} threads for {HOT_RUN_MS} ms, expiration {HOT_TTL_MS} ms, creator {create_ms} ms (memory)\n\n"
    );
    out.push_str("| configuration | calls | calls that ran the creator | calls that waited for a creation | creations | eager refreshes | calls over 1 ms | calls over 80% of a creation | worst call |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2?} |\n",
            r.label,
            r.calls,
            r.ran_creator,
            r.waited,
            r.creations,
            r.eager_refreshes,
            r.slow,
            r.creation_long,
            r.worst
        ));
    }
    let eager = &rows[1];
    out.push_str(&format!(
        "\n- with eager_refresh, callers that ran or waited for a creation: {} ({}); calls over 80% of a creation: {} (without it: {})\n",
        eager.ran_creator + eager.waited,
        if eager.ran_creator + eager.waited == 0 {
            "HOLDS: zero"
        } else {
            "FAILS: not zero"
        },
        eager.creation_long,
        rows[0].creation_long,
    ));
    out
}
