//! Issue 11, case 5 in the core: every wait for another caller's creation is bounded
//! (`lock_blocking_timeout`), blocking and async, with the decorated function's fallback to its
//! body past the bound, and lost locks counted.
//!
//! A hang is detected by a generous deadline on a helper thread, never by a tight wall-clock bound.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use dogpile::backend::PayloadKind;
use dogpile::testing::MapBackend;
use dogpile::{make_region, Backend, CacheRegion, CachedValue, Error, RegionConfig, Result};

mod support;
use support::within;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The bound on waiting.

/// Holds `key`'s creation open on a thread until the returned sender is dropped or sent to.
fn hold_creation(region: &Arc<CacheRegion>, key: &'static str) -> mpsc::Sender<()> {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let region = region.clone();
    std::thread::spawn(move || {
        let _ = region.get_or_create(key, || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
            1u32
        });
    });
    started_rx.recv().unwrap();
    release_tx
}

fn bounded_region(bound: Duration) -> Arc<CacheRegion> {
    Arc::new(
        make_region()
            .name("bounded")
            .configure(RegionConfig::new("dogpile.cache.memory").lock_blocking_timeout(bound))
            .unwrap(),
    )
}

fn assert_lock_timeout(err: &Error, bound: Duration) {
    match err {
        Error::LockTimeout {
            region,
            key,
            waited,
        } => {
            assert_eq!((region.as_str(), key.as_str()), ("bounded", "k"));
            assert!(*waited >= bound, "waited {waited:?}, bound {bound:?}");
        }
        other => panic!("expected a lock timeout, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with("region bounded: gave up waiting for the creation of \"k\""),
        "{text}"
    );
}

#[test]
fn a_waiter_gives_up_past_lock_blocking_timeout_with_an_error_naming_the_key() {
    let bound = Duration::from_millis(150);
    let region = bounded_region(bound);
    let _holder = hold_creation(&region, "k");
    let err = within("a bounded blocking wait", {
        let region = region.clone();
        move || region.get_or_create("k", || 2u32).unwrap_err()
    });
    assert_lock_timeout(&err, bound);
    assert_eq!(region.stats().lock_timeouts, 1);
    // A batch waits under the same bound.
    let err = within("a bounded batch wait", {
        let region = region.clone();
        move || {
            region
                .get_or_create_multi(&["k", "other"], |keys| vec![3u32; keys.len()])
                .unwrap_err()
        }
    });
    assert_lock_timeout(&err, bound);
    assert_eq!(region.stats().lock_timeouts, 2);
}

#[test]
fn an_async_waiter_gives_up_past_the_bound_on_a_current_thread_runtime() {
    let bound = Duration::from_millis(150);
    let region = bounded_region(bound);
    let _holder = hold_creation(&region, "k");
    let err = within("a bounded async wait", {
        let region = region.clone();
        move || {
            current_thread().block_on(async move {
                region
                    .get_or_create_async("k", || async { 2u32 })
                    .await
                    .unwrap_err()
            })
        }
    });
    assert_lock_timeout(&err, bound);
}

#[test]
fn lock_blocking_false_means_do_not_wait() {
    let region = Arc::new(
        make_region()
            .name("bounded")
            .configure(RegionConfig::new("dogpile.cache.memory").lock_blocking(false))
            .unwrap(),
    );
    let _holder = hold_creation(&region, "k");
    let err = within("a non-blocking caller", {
        let region = region.clone();
        move || region.get_or_create("k", || 2u32).unwrap_err()
    });
    assert_lock_timeout(&err, Duration::ZERO);
}

/// The memory backend with a `lock_blocking_timeout` of its own, as the Redis backend reads it
/// from its arguments.
struct BackendBound(MapBackend, Duration);

impl Backend for BackendBound {
    fn name(&self) -> &str {
        "backend with a bound"
    }
    fn payload_kind(&self) -> PayloadKind {
        self.0.payload_kind()
    }
    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        self.0.get(key)
    }
    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        self.0.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.0.delete(key)
    }
    fn lock_blocking_timeout(&self) -> Option<Duration> {
        Some(self.1)
    }
}

#[test]
fn the_region_setting_wins_over_the_backends_which_wins_over_the_default() {
    // The backend's own bound applies to in-process waiters too.
    let backend_bound = Duration::from_millis(150);
    let region = Arc::new(
        make_region()
            .name("bounded")
            .configure(RegionConfig::with_backend(BackendBound(
                MapBackend::default(),
                backend_bound,
            )))
            .unwrap(),
    );
    let _holder = hold_creation(&region, "k");
    let err = within("the backend's bound", {
        let region = region.clone();
        move || region.get_or_create("k", || 2u32).unwrap_err()
    });
    assert_lock_timeout(&err, backend_bound);

    // The region's explicit setting beats a backend's much longer one.
    let region_bound = Duration::from_millis(150);
    let region = Arc::new(
        make_region()
            .name("bounded")
            .configure(
                RegionConfig::with_backend(BackendBound(
                    MapBackend::default(),
                    Duration::from_secs(3600),
                ))
                .lock_blocking_timeout(region_bound),
            )
            .unwrap(),
    );
    let _holder = hold_creation(&region, "k");
    let err = within("the region's bound", {
        let region = region.clone();
        move || region.get_or_create("k", || 2u32).unwrap_err()
    });
    assert_lock_timeout(&err, region_bound);
    assert_eq!(
        dogpile::config::DEFAULT_LOCK_BLOCKING_TIMEOUT,
        Duration::from_secs(30)
    );
}

#[test]
fn lock_blocking_timeout_and_lock_blocking_in_config_maps() {
    let from_map = |entries: &[(&str, &str)]| {
        RegionConfig::from_config(entries.iter().copied(), "cache.")
            .map(|config| Arc::new(make_region().name("bounded").configure(config).unwrap()))
    };
    let region = from_map(&[
        ("cache.backend", "dogpile.cache.memory"),
        ("cache.lock_blocking_timeout", "0.15"),
    ])
    .unwrap();
    let _holder = hold_creation(&region, "k");
    let err = within("a bound from a config map", {
        let region = region.clone();
        move || region.get_or_create("k", || 2u32).unwrap_err()
    });
    assert_lock_timeout(&err, Duration::from_millis(150));

    // `lock_blocking = false` wins over any timeout: do not wait.
    let region = from_map(&[
        ("cache.backend", "dogpile.cache.memory"),
        ("cache.lock_blocking", "false"),
        ("cache.lock_blocking_timeout", "3600"),
    ])
    .unwrap();
    let _holder = hold_creation(&region, "k");
    let err = within("lock_blocking = false from a config map", {
        let region = region.clone();
        move || region.get_or_create("k", || 2u32).unwrap_err()
    });
    assert_lock_timeout(&err, Duration::ZERO);

    let err = from_map(&[
        ("cache.backend", "dogpile.cache.memory"),
        ("cache.lock_blocking_timeout", "soon"),
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cache.lock_blocking_timeout: expected a number of seconds (0 to 3155760000, a hundred years) or none; got \"soon\""
    );
}

mod decorated {
    use dogpile::{cache_on_arguments, CacheRegion};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::sync::Mutex;

    pub static REGION: CacheRegion = CacheRegion::named("decorated-bounded");
    pub static BODIES: AtomicUsize = AtomicUsize::new(0);
    /// The first call's body blocks until told to go on.
    pub static GATE: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>> = Mutex::new(None);

    #[cache_on_arguments(region = REGION)]
    pub fn slow(x: u32) -> u32 {
        let n = BODIES.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            let gate = GATE.lock().unwrap().take();
            if let Some((started, go_on)) = gate {
                started.send(()).unwrap();
                let _ = go_on.recv();
            }
        }
        x * 10 + n as u32
    }
}

#[test]
fn a_decorated_function_runs_its_body_past_the_bound_and_counts_it() {
    use decorated::*;
    REGION
        .configure(
            RegionConfig::new("dogpile.cache.memory")
                .lock_blocking_timeout(Duration::from_millis(150)),
        )
        .unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    *GATE.lock().unwrap() = Some((started_tx, go_rx));
    let first = std::thread::spawn(|| slow(4));
    started_rx.recv().unwrap();
    // The first call holds the key's lock for as long as its body runs: the second gives up
    // waiting and runs its own body.
    let second = within("a decorated call past the bound", || slow(4));
    assert_eq!(second, 41, "the second call's own body");
    assert_eq!(REGION.stats().lock_timeouts, 1);
    go_tx.send(()).unwrap();
    assert_eq!(first.join().unwrap(), 40);
    assert_eq!(slow(4), 40, "the first call's value is cached");
}

#[test]
fn a_lost_lock_is_counted_and_shown_in_stats() {
    let region: CacheRegion = make_region().configure("dogpile.cache.memory").unwrap();
    let before = region.stats().locks_lost;
    dogpile::lock::lock_lost("test backend", "_lock:k");
    assert!(region.stats().locks_lost > before);
    assert!(region.stats().to_string().contains("locks lost"));
}
