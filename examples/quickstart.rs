//! The main job: a region on the in-process memory backend, and what the dogpile lock does when
//! 32 threads want one value at once.
//!
//! Run with `cargo run --release --example quickstart`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use dogpile::{CacheRegion, RegionConfig};

/// One region for the whole program, configured at run time.
static REGION: CacheRegion = CacheRegion::named("quickstart");

/// The expensive thing being cached: 50 ms of "database work".
fn load_user(id: u64) -> String {
    std::thread::sleep(Duration::from_millis(50));
    format!("user #{id:<26}") // 32 bytes
}

struct Stampede {
    creator_calls: usize,
    stale: usize,
    fresh: usize,
    /// How long after the new value was stored the last waiter returned.
    last_waiter_after_store: Duration,
    /// Median time for callers that got the stale value.
    median_stale: Duration,
}

/// 32 threads call `get_or_create` on `key` at once.
fn stampede(key: &'static str, stale_value: Option<&str>) -> Stampede {
    let creations = Arc::new(AtomicUsize::new(0));
    let stored_at = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let barrier = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (creations, stored_at, barrier) =
                (creations.clone(), stored_at.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let v = REGION
                    .get_or_create(key, || {
                        creations.fetch_add(1, Ordering::SeqCst);
                        let v = load_user(1);
                        // The region stores the value right after the creator returns.
                        *stored_at.lock() = Some(Instant::now());
                        v
                    })
                    .expect("the memory backend does not fail");
                (v, start, Instant::now())
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("no panic"))
        .collect();
    let stored = stored_at.lock().expect("one creation");
    let mut stale_times: Vec<Duration> = results
        .iter()
        .filter(|(v, _, _)| Some(v.as_str()) == stale_value)
        .map(|(_, start, end)| *end - *start)
        .collect();
    stale_times.sort();
    let fresh_ends = results
        .iter()
        .filter(|(v, _, _)| Some(v.as_str()) != stale_value);
    Stampede {
        creator_calls: creations.load(Ordering::SeqCst),
        stale: stale_times.len(),
        fresh: results.len() - stale_times.len(),
        last_waiter_after_store: fresh_ends
            .map(|(_, _, end)| end.saturating_duration_since(stored))
            .max()
            .unwrap_or_default(),
        median_stale: stale_times
            .get(stale_times.len() / 2)
            .copied()
            .unwrap_or_default(),
    }
}

fn main() -> dogpile::Result<()> {
    REGION.configure(
        RegionConfig::new("dogpile.cache.memory").expiration_time(Duration::from_secs(2)),
    )?;

    // A first call runs the creator; a second one is a hit.
    let start = Instant::now();
    let first = REGION.get_or_create("user:7", || load_user(7))?;
    let first_call = start.elapsed();
    const HITS: u32 = 1_000_000;
    let start = Instant::now();
    for _ in 0..HITS {
        let hit = REGION.get_or_create("user:7", || load_user(7))?;
        std::hint::black_box(hit);
    }
    let hit = start.elapsed() / HITS;
    assert_eq!(REGION.get::<String>("user:7")?, Some(first));

    let cold = stampede("cold", None);
    REGION.set("expired", "the old value".to_string())?;
    std::thread::sleep(Duration::from_millis(2100));
    let expired = stampede("expired", Some("the old value"));

    println!(
        "dogpile quickstart: region {:?} on dogpile.cache.memory",
        REGION.name()
    );
    println!();
    let rows = [
        (
            "first call (creator sleeps 50 ms)",
            format!("{:.2} ms", ms(first_call)),
        ),
        (
            &*format!("hit (mean of {HITS} calls)"),
            format!("{} ns", hit.as_nanos()),
        ),
        (
            "cold key, 32 threads: creator calls",
            cold.creator_calls.to_string(),
        ),
        (
            "cold key: callers that waited",
            (cold.fresh - 1).to_string(),
        ),
        (
            "cold key: last waiter after the store",
            format!("{:.3} ms", ms(cold.last_waiter_after_store)),
        ),
        (
            "expired key, 32 threads: creator calls",
            expired.creator_calls.to_string(),
        ),
        (
            "expired key: got the stale value",
            expired.stale.to_string(),
        ),
        ("expired key: got the new value", expired.fresh.to_string()),
        (
            "expired key: median stale answer",
            format!("{:.3} µs", expired.median_stale.as_secs_f64() * 1e6),
        ),
    ];
    println!("| {:<40} | {:>12} |", "what", "result");
    println!("|{:-<42}|{:->14}|", "", "");
    for (what, result) in rows {
        println!("| {what:<40} | {result:>12} |");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
