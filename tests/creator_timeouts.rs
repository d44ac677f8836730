//! Creator timeouts (`soft_timeout`, `hard_timeout`): past the soft one a caller with a stale
//! value gets it while the creator finishes and stores; past the hard one a caller with no value
//! gets `Error::CreatorTimeout`, and the creator still stores. Value ages run on a manual clock;
//! the creators block on a channel the test opens, so only the timeouts themselves take time.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dogpile::clock::{Clock, ManualClock};
use dogpile::{make_region, CacheRegion, CreateOptions, Error, RegionConfig};
use support::{wait_for, within};

const TTL: u64 = 60;
const SOFT: Duration = Duration::from_millis(30);
const HARD: Duration = Duration::from_millis(60);

fn region_with(
    f: impl FnOnce(RegionConfig) -> RegionConfig,
) -> (Arc<CacheRegion>, Arc<ManualClock>) {
    let (clock, time) = Clock::manual(SystemTime::now());
    let config = RegionConfig::new("dogpile.cache.memory")
        .expiration_time(TTL)
        .clock(clock);
    (Arc::new(make_region().configure(f(config)).unwrap()), time)
}

/// A creator held open until the test sends on the channel (see [`support::gated`]).
fn gated(value: u32) -> (Sender<()>, impl FnOnce() -> u32 + Send + 'static) {
    support::gated(value, &Arc::default())
}

/// Another caller's creation of `key` on its own thread, held open until the sender sends (or
/// is dropped); returns once that caller holds the key's lock.
fn creating_held_open(
    region: &'static CacheRegion,
    key: &'static str,
    value: u32,
) -> (Sender<()>, std::thread::JoinHandle<dogpile::Result<u32>>) {
    let (open, creator) = gated(value);
    let first = std::thread::spawn(move || region.get_or_create(key, creator));
    within("the creation starting", move || {
        wait_for("the lock taken", || region.key_is_locked(key).unwrap())
    });
    (open, first)
}

fn stored(region: &Arc<CacheRegion>, value: u32) {
    support::wait_stored(region, "k", value);
}

#[test]
fn past_the_soft_timeout_the_stale_value_while_the_creator_finishes() {
    let (region, time) = region_with(|c| c.soft_timeout(SOFT).hard_timeout(HARD));
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(TTL + 1));
    let (open, creator) = gated(2);
    let r = region.clone();
    let got = within("a caller past its soft timeout", move || {
        r.get_or_create_in_background("k", &CreateOptions::new(), creator)
    });
    assert_eq!(got.unwrap(), 1);
    assert_eq!(region.stats().soft_timeouts, 1);
    // The creator holds the lock while it runs: other callers get the stale value at once.
    assert!(region.key_is_locked("k").unwrap());
    assert_eq!(region.get_or_create("k", || 3u32).unwrap(), 1);
    open.send(()).unwrap();
    stored(&region, 2);
    let r = region.clone();
    within("the lock released", move || {
        wait_for("the lock released", || !r.key_is_locked("k").unwrap())
    });
    assert_eq!(region.stats().creations, 1);
}

#[test]
fn past_the_hard_timeout_a_caller_with_no_value_gets_an_error_and_the_value_is_stored() {
    let (region, _time) = region_with(|c| c.soft_timeout(SOFT).hard_timeout(HARD));
    let (open, creator) = gated(7);
    let r = region.clone();
    let got = within("a caller past its hard timeout", move || {
        r.get_or_create_in_background("k", &CreateOptions::new(), creator)
    });
    match got {
        Err(Error::CreatorTimeout { key, timeout, .. }) => {
            assert_eq!((key.as_str(), timeout), ("k", HARD));
        }
        other => panic!("expected a creator timeout, got {other:?}"),
    }
    assert_eq!(region.stats().hard_timeouts, 1);
    open.send(()).unwrap();
    stored(&region, 7);
}

#[test]
fn with_a_stale_value_and_only_a_hard_timeout_the_stale_value() {
    let (region, time) = region_with(|c| c.hard_timeout(HARD));
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(TTL + 1));
    let (open, creator) = gated(2);
    let r = region.clone();
    let got = within("a caller past its hard timeout", move || {
        r.get_or_create_in_background("k", &CreateOptions::new(), creator)
    });
    assert_eq!(got.unwrap(), 1);
    assert_eq!(region.stats().hard_timeouts, 1);
    open.send(()).unwrap();
    stored(&region, 2);
}

#[test]
fn a_creator_within_its_timeouts_gives_its_own_value() {
    let (region, time) = region_with(|c| {
        c.soft_timeout(Duration::from_secs(30))
            .hard_timeout(Duration::from_secs(30))
    });
    assert_eq!(
        region
            .get_or_create_in_background("k", &CreateOptions::new(), || 1u32)
            .unwrap(),
        1
    );
    time.advance(Duration::from_secs(TTL + 1));
    assert_eq!(
        region
            .get_or_create_in_background("k", &CreateOptions::new(), || 2u32)
            .unwrap(),
        2
    );
    let stats = region.stats();
    assert_eq!(
        (stats.soft_timeouts, stats.hard_timeouts, stats.creations),
        (0, 0, 2)
    );
    assert!(!region.key_is_locked("k").unwrap());
}

#[test]
fn a_panic_on_the_creators_thread_unwinds_to_its_caller_and_frees_the_lock() {
    let (region, _time) = region_with(|c| c.hard_timeout(Duration::from_secs(30)));
    let r = region.clone();
    let unwound = within("a panicking timed creator", move || {
        catch_unwind(AssertUnwindSafe(|| {
            r.get_or_create_in_background("k", &CreateOptions::new(), || -> u32 {
                panic!("planned panic")
            })
        }))
        .is_err()
    });
    assert!(unwound);
    assert!(!region.key_is_locked("k").unwrap());
    assert_eq!(region.get_or_create("k", || 4u32).unwrap(), 4);
}

#[test]
fn waiters_on_a_timed_creation_get_its_value() {
    let (region, _time) = region_with(|c| c.hard_timeout(Duration::from_secs(30)));
    let (open, creator) = gated(9);
    let r = region.clone();
    let first = std::thread::spawn(move || {
        r.get_or_create_in_background("k", &CreateOptions::new(), creator)
    });
    let r = region.clone();
    within("the creation starting", move || {
        wait_for("the lock taken", || r.key_is_locked("k").unwrap())
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let (r, c) = (region.clone(), calls.clone());
    let waiter = std::thread::spawn(move || {
        r.get_or_create("k", || {
            c.fetch_add(1, Ordering::SeqCst);
            0u32
        })
    });
    // The waiter is waiting on the creation (else it could see a fresh value and prove nothing).
    let r = region.clone();
    within("the waiter waiting", move || {
        wait_for("a waiter", || r.stats().waits == 1)
    });
    open.send(()).unwrap();
    assert_eq!(
        within("the creator", move || first.join().unwrap()).unwrap(),
        9
    );
    assert_eq!(
        within("the waiter", move || waiter.join().unwrap()).unwrap(),
        9
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_decorated_function_that_returns_its_value_waits_past_the_hard_timeout() {
    use dogpile::cache_on_arguments;
    static REGION: CacheRegion = CacheRegion::new();
    static GATE: parking_lot::Mutex<Option<Receiver<()>>> = parking_lot::Mutex::new(None);

    #[cache_on_arguments(region = REGION, background = true)]
    fn slow(x: u32) -> u32 {
        if let Some(gate) = GATE.lock().take() {
            let _ = gate.recv();
        }
        x * 2
    }

    REGION
        .configure(
            RegionConfig::new("dogpile.cache.memory").hard_timeout(Duration::from_millis(20)),
        )
        .unwrap();
    let (open, gate) = channel();
    *GATE.lock() = Some(gate);
    let call = std::thread::spawn(|| slow(21));
    // The creator finishes five hard timeouts later (a wall-clock bound: no clock to move);
    // the call, which has no error to return, is still waiting for its value then.
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        open.send(()).unwrap();
    });
    assert_eq!(
        within("the decorated call", move || call.join().unwrap()),
        42
    );
    opener.join().unwrap();
    assert_eq!(REGION.stats().hard_timeouts, 0);
}

#[test]
fn a_calls_own_timeouts_bound_it_on_a_region_without_them() {
    let (region, time) = region_with(|c| c);
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(TTL + 1));
    let (open, creator) = gated(2);
    let r = region.clone();
    let got = within("a caller past its own soft timeout", move || {
        let options = CreateOptions::new().soft_timeout(SOFT);
        r.get_or_create_in_background("k", &options, creator)
    });
    assert_eq!(got.unwrap(), 1);
    assert_eq!(region.stats().soft_timeouts, 1);
    open.send(()).unwrap();
    stored(&region, 2);
}

#[test]
fn a_waiter_with_no_value_gets_the_error_past_the_hard_timeout() {
    // lock_blocking_timeout far longer than the hard timeout: before the fix, the waiter waited
    // for it and got Error::LockTimeout.
    let (region, _time) = region_with(|c| {
        c.hard_timeout(Duration::from_secs(30))
            .lock_blocking_timeout(Duration::from_secs(20))
    });
    let (open, creator) = gated(9);
    let r = region.clone();
    let first = std::thread::spawn(move || {
        r.get_or_create_in_background("k", &CreateOptions::new(), creator)
    });
    let r = region.clone();
    within("the creation starting", move || {
        wait_for("the lock taken", || r.key_is_locked("k").unwrap())
    });
    // This caller's own hard timeout is short; it waits on the other's creation.
    let r = region.clone();
    let waited = within("a waiter past its hard timeout", move || {
        r.try_get_or_create("k", &CreateOptions::new().hard_timeout(HARD), || {
            Ok::<_, std::convert::Infallible>(0u32)
        })
    });
    match waited {
        Err(dogpile::CreateError::Cache(Error::CreatorTimeout { timeout, .. })) => {
            assert_eq!(timeout, HARD)
        }
        other => panic!("expected CreatorTimeout, got {other:?}"),
    }
    assert_eq!(region.stats().hard_timeouts, 1);
    open.send(()).unwrap();
    assert_eq!(
        within("the creator", move || first.join().unwrap()).unwrap(),
        9
    );
    stored(&region, 9);
}

#[test]
fn a_decorated_waiter_past_the_hard_timeout_waits_and_never_runs_its_body_beside_the_creator() {
    use dogpile::cache_on_arguments;
    static REGION: CacheRegion = CacheRegion::new();
    static BODIES: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION, key = "k", ignore = [x])]
    fn plain(x: u32) -> u32 {
        BODIES.fetch_add(1, Ordering::SeqCst);
        x
    }

    REGION
        .configure(RegionConfig::new("dogpile.cache.memory").hard_timeout(HARD))
        .unwrap();
    // Another caller creates `k` (the decorated function's key) and is held open.
    let (open, creator) = gated(7);
    let first = std::thread::spawn(move || {
        REGION.get_or_create_in_background("k", &CreateOptions::new(), creator)
    });
    within("the creation starting", || {
        wait_for("the lock taken", || REGION.key_is_locked("k").unwrap())
    });
    let call = std::thread::spawn(|| plain(1));
    within("the decorated call waiting", || {
        wait_for("a waiter", || REGION.stats().waits == 1)
    });
    // Well past the hard timeout (a wall-clock pause: the wait itself is what is measured).
    std::thread::sleep(HARD * 3);
    open.send(()).unwrap();
    // Before the fix the waiter got CreatorTimeout and ran its body beside the creator.
    assert_eq!(
        within("the decorated call", move || call.join().unwrap()),
        7
    );
    assert_eq!(BODIES.load(Ordering::SeqCst), 0);
    let _ = within("the creator", move || first.join().unwrap());
}

/// The error of a decorated function that takes dogpile's errors: a waiter past `hard_timeout`
/// returns the timeout as its `Err`.
#[derive(Debug)]
enum LoadError {
    Cache(Error),
}

impl From<Error> for LoadError {
    fn from(e: Error) -> Self {
        LoadError::Cache(e)
    }
}

#[test]
fn a_decorated_result_waiter_past_the_hard_timeout_gets_it_as_its_err() {
    use dogpile::cache_on_arguments;
    static REGION: CacheRegion = CacheRegion::new();
    static BODIES: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION, key = "k", ignore = [x])]
    fn load(x: u32) -> Result<u32, LoadError> {
        BODIES.fetch_add(1, Ordering::SeqCst);
        Ok(x)
    }

    REGION
        .configure(
            RegionConfig::new("dogpile.cache.memory")
                .hard_timeout(HARD)
                .lock_blocking_timeout(Duration::from_secs(30)),
        )
        .unwrap();
    // Another caller creates `k` (the function's key) on its own thread, held open.
    let (open, first) = creating_held_open(&REGION, "k", 7);
    // Before: the waiter waited out the creation (30 s here), so `within` called it a hang.
    let waited = within("the decorated waiter", || load(1));
    match waited {
        Err(LoadError::Cache(Error::CreatorTimeout { timeout, .. })) => assert_eq!(timeout, HARD),
        other => panic!("expected the timeout as the Err, got {other:?}"),
    }
    assert_eq!(
        BODIES.load(Ordering::SeqCst),
        0,
        "the body never runs beside the creator"
    );
    assert_eq!(REGION.stats().hard_timeouts, 1);
    open.send(()).unwrap();
    assert_eq!(
        within("the creator", move || first.join().unwrap()).unwrap(),
        7
    );
    // The creator stored its value: the next call has it.
    assert_eq!(load(1).unwrap(), 7);
    assert_eq!(BODIES.load(Ordering::SeqCst), 0);
}

#[test]
fn a_decorated_result_waiter_whose_error_takes_no_dogpile_error_waits_past_the_hard_timeout() {
    use dogpile::cache_on_arguments;
    static REGION: CacheRegion = CacheRegion::new();
    static BODIES: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION, key = "k", ignore = [x])]
    fn load(x: u32) -> Result<u32, String> {
        BODIES.fetch_add(1, Ordering::SeqCst);
        Ok(x)
    }

    REGION
        .configure(RegionConfig::new("dogpile.cache.memory").hard_timeout(HARD))
        .unwrap();
    let (open, first) = creating_held_open(&REGION, "k", 7);
    let call = std::thread::spawn(|| load(1));
    within("the decorated call waiting", || {
        wait_for("a waiter", || REGION.stats().waits == 1)
    });
    // Well past the hard timeout (a wall-clock pause: the wait itself is what is measured).
    std::thread::sleep(HARD * 3);
    assert!(
        !call.is_finished(),
        "a String error cannot hold the timeout: it waits"
    );
    open.send(()).unwrap();
    assert_eq!(
        within("the decorated call", move || call.join().unwrap()),
        Ok(7)
    );
    assert_eq!(BODIES.load(Ordering::SeqCst), 0);
    assert_eq!(REGION.stats().hard_timeouts, 0);
    let _ = within("the creator", move || first.join().unwrap());
}

#[test]
fn an_async_decorated_result_waiter_past_the_hard_timeout_gets_it_as_its_err() {
    use dogpile::cache_on_arguments;
    static REGION: CacheRegion = CacheRegion::new();
    static BODIES: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION, key = "k", ignore = [x])]
    async fn load(x: u32) -> Result<u32, LoadError> {
        BODIES.fetch_add(1, Ordering::SeqCst);
        Ok(x)
    }

    REGION
        .configure(
            RegionConfig::new("dogpile.cache.memory")
                .hard_timeout(HARD)
                .lock_blocking_timeout(Duration::from_secs(30)),
        )
        .unwrap();
    let (open, first) = creating_held_open(&REGION, "k", 7);
    let waited = within("the async decorated waiter", || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(load(1))
    });
    assert!(
        matches!(waited, Err(LoadError::Cache(Error::CreatorTimeout { .. }))),
        "{waited:?}"
    );
    assert_eq!(BODIES.load(Ordering::SeqCst), 0);
    open.send(()).unwrap();
    assert_eq!(
        within("the creator", move || first.join().unwrap()).unwrap(),
        7
    );
}
