//! The soak shared by the distributed backends' fault tests (`tests/redis_faults.rs`,
//! `tests/memcached_lock.rs`): 8 threads call a decorated function and `get_or_create` for a
//! few seconds while the loopback fault proxy cycles through latency, blackholes, resets, closes
//! and replies slower than the reply timeout.
//!
//! It asserts that every call returns within [`CALL_BOUND`] with the right value (or, for region
//! methods, an error); that no key ever has two creators under the lock; and that once the faults
//! stop, no lock is left on the server, well before the region's `lock_timeout` (which the
//! caller sets far above [`HANG`], so expiry cannot be what clears them).
//!
//! The soak's region and decorated function live here, one of each per test binary: a test
//! hands [`run`] the region's configuration (on the proxy, with the distributed lock).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};

use super::fault_proxy::{Fault, FaultProxy};
use super::within;

/// The keys the soak spreads its calls over.
pub const KEYS: usize = 12;

/// How long the soak waits for locks to go once the faults have cleared; the region's
/// `lock_timeout` must be far longer.
pub const HANG: Duration = Duration::from_secs(60);

/// The bound on one round of calls (the decorated one and `get_or_create`): a few reply timeouts
/// (0.3 s each) at most in theory; stated generously so that a loaded machine never fails it,
/// while a leaked lock (waited on for its `lock_timeout`) does.
pub const CALL_BOUND: Duration = Duration::from_secs(20);

/// Creations of each key running now (the decorated body included: it runs as the creator, or
/// as the fallback when the backend fails), and those that ran under the lock.
static RUNNING: [AtomicUsize; KEYS] = [const { AtomicUsize::new(0) }; KEYS];
static LOCKED_RUNNING: [AtomicUsize; KEYS] = [const { AtomicUsize::new(0) }; KEYS];
/// Times a `get_or_create` creator found another creator of its key running under the lock.
static TWO_CREATORS: AtomicUsize = AtomicUsize::new(0);

/// The soak's region.
pub static REGION: CacheRegion = CacheRegion::new();

/// The soak's decorated function: `x * x + 1`, slowly.
#[cache_on_arguments(region = REGION)]
pub fn square(x: u64) -> u64 {
    creating(x, || x * x + 1)
}

/// A creation that takes a little while, so overlapping creations would be seen.
pub fn creating<T>(x: u64, f: impl FnOnce() -> T) -> T {
    let i = x as usize % KEYS;
    RUNNING[i].fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(15));
    let v = f();
    RUNNING[i].fetch_sub(1, Ordering::SeqCst);
    v
}

/// Waits (at most [`HANG`]) until `lock_keys` lists no lock on the server.
pub fn wait_no_locks(what: &str, lock_keys: &dyn Fn() -> Vec<String>) {
    let deadline = Instant::now() + HANG;
    loop {
        let left = lock_keys();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: locks left on the server {HANG:?} after the fault cleared: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Configures [`REGION`] with `config` (on `proxy`, with its distributed lock and a
/// `lock_timeout` far over [`HANG`]) and runs the soak; `lock_keys` lists the lock keys on the
/// server, read directly (not through the proxy).
pub fn run(config: RegionConfig, proxy: &FaultProxy, lock_keys: &dyn Fn() -> Vec<String>) {
    REGION
        .configure(config)
        .expect("configuring the soak's region");
    let region = &REGION;
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let (stop, calls, slowest) = (stop.clone(), calls.clone(), slowest.clone());
            std::thread::spawn(move || {
                let mut x = w;
                while !stop.load(Ordering::SeqCst) {
                    let k = x % KEYS as u64;
                    let start = Instant::now();
                    assert_eq!(square(k), k * k + 1, "square({k})");
                    let got = region.get_or_create(&format!("k{k}"), || {
                        let i = k as usize;
                        if LOCKED_RUNNING[i].fetch_add(1, Ordering::SeqCst) > 0 {
                            TWO_CREATORS.fetch_add(1, Ordering::SeqCst);
                        }
                        let v = creating(k, || format!("v{k}"));
                        LOCKED_RUNNING[i].fetch_sub(1, Ordering::SeqCst);
                        v
                    });
                    if let Ok(v) = got {
                        assert_eq!(v, format!("v{k}"));
                    }
                    let took = start.elapsed();
                    slowest.fetch_max(took.as_millis() as u64, Ordering::SeqCst);
                    assert!(
                        took < CALL_BOUND,
                        "two calls on key {k} took {took:?}, over the bound {CALL_BOUND:?}"
                    );
                    calls.fetch_add(1, Ordering::SeqCst);
                    x = x.wrapping_mul(7).wrapping_add(3);
                }
            })
        })
        .collect();

    // Each round: latency, a blackhole, resets and closes, replies later than the reply
    // timeout, and a flicker between a fast link and one slower than the reply timeout (a
    // lookup answered, then the acquire's reply lost: its lock is set after the caller gave up).
    let mut faults = vec![
        (Fault::Pass, 300),
        (Fault::Latency(Duration::from_millis(40)), 300),
        (Fault::Blackhole, 500),
        (Fault::Pass, 200),
        (Fault::Reset, 50),
        (Fault::Pass, 200),
        (Fault::Latency(Duration::from_millis(450)), 600),
        (Fault::Pass, 200),
        (Fault::Close, 50),
        (Fault::Blackhole, 200),
    ];
    for _ in 0..20 {
        faults.push((Fault::Pass, 25));
        faults.push((Fault::Latency(Duration::from_millis(450)), 25));
    }
    faults.push((Fault::Pass, 300));
    let soak_start = Instant::now();
    let soak_until = soak_start + Duration::from_secs(6);
    let mut rounds = 0;
    while Instant::now() < soak_until {
        for &(fault, ms) in &faults {
            proxy.set(fault);
            std::thread::sleep(Duration::from_millis(ms));
        }
        rounds += 1;
    }
    proxy.set(Fault::Pass);
    // Workers go on with the faults gone; every lock left behind must go.
    eprintln!("faults for {:?}", soak_start.elapsed());
    let cleared = Instant::now();
    eprintln!("locks when the faults stopped: {:?}", lock_keys());
    wait_no_locks("the soak", lock_keys);
    eprintln!("no lock left {:?} after the faults", cleared.elapsed());
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        if let Err(panic) = within("a soak worker", move || w.join()) {
            std::panic::resume_unwind(panic);
        }
    }
    wait_no_locks("the soak, workers stopped", lock_keys);
    assert_eq!(
        TWO_CREATORS.load(Ordering::SeqCst),
        0,
        "a key had two creators under the lock"
    );
    assert!(RUNNING.iter().all(|r| r.load(Ordering::SeqCst) == 0));
    let calls = calls.load(Ordering::SeqCst);
    assert!(calls > 0, "no call finished during the soak");
    eprintln!(
        "soak: {calls} calls over {rounds} fault rounds, slowest {} ms, stats {:?}",
        slowest.load(Ordering::SeqCst),
        region.stats()
    );
}
