//! The resilience options on the batch path (`get_or_create_multi`, `try_get_or_create_multi`,
//! `#[cache_multi_on_arguments]`): fail-safe serves each key's stale value for a failing or
//! panicking batch creator, by the one-key rules (an error when a key has none, the throttle per
//! key); eager refresh and XFetch refresh the due keys once, inline with the batch creation; the
//! creator timeouts cannot bound a batch creator and are refused by name. On a manual clock.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dogpile::clock::{Clock, ManualClock};
use dogpile::{
    cache_multi_on_arguments, make_region, CacheRegion, CreateError, CreateOptions, RegionConfig,
};
use support::{wait_for, within};

const TTL: u64 = 60;

fn config(clock: Clock) -> RegionConfig {
    RegionConfig::new("dogpile.cache.memory")
        .expiration_time(TTL)
        .clock(clock)
}

/// A region on a manual clock, configured by `f`.
fn region_with(
    f: impl FnOnce(RegionConfig) -> RegionConfig,
) -> (Arc<CacheRegion>, Arc<ManualClock>) {
    let (clock, time) = Clock::manual(SystemTime::now());
    (
        Arc::new(make_region().configure(f(config(clock))).unwrap()),
        time,
    )
}

/// Fail-safe for 100 s past expiry, with a 10 s throttle; `a` = 1 and `b` = 2 already expired.
fn failing_over() -> (Arc<CacheRegion>, Arc<ManualClock>) {
    let (region, time) = region_with(|c| {
        c.fail_safe_max_duration(Duration::from_secs(100))
            .fail_safe_throttle(Duration::from_secs(10))
    });
    region.set("a", 1u32).unwrap();
    region.set("b", 2u32).unwrap();
    time.advance(Duration::from_secs(TTL + 1));
    (region, time)
}

/// A batch creator that fails, counting its calls and the keys it was given.
fn failing<'a>(
    calls: &'a AtomicUsize,
    given: &'a Mutex<Vec<Vec<String>>>,
) -> impl FnOnce(&[&str]) -> Result<Vec<u32>, &'static str> + 'a {
    move |keys: &[&str]| {
        calls.fetch_add(1, Ordering::SeqCst);
        given
            .lock()
            .unwrap()
            .push(keys.iter().map(|k| k.to_string()).collect());
        Err("down")
    }
}

fn batch(
    region: &CacheRegion,
    keys: &[&str],
    creator: impl FnOnce(&[&str]) -> Result<Vec<u32>, &'static str>,
) -> Result<Vec<u32>, CreateError<&'static str>> {
    region.try_get_or_create_multi(keys, &CreateOptions::new(), creator)
}

#[test]
fn a_failing_batch_creator_gives_the_stale_values_within_the_bound() {
    let (region, time) = failing_over();
    let (calls, given) = (AtomicUsize::new(0), Mutex::new(Vec::new()));
    assert_eq!(
        batch(&region, &["b", "a"], failing(&calls, &given)).unwrap(),
        [2, 1]
    );
    assert_eq!(region.stats().fail_safe_served, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Not stored again: still expired for plain reads; no lock left behind.
    assert_eq!(region.get::<u32>("a").unwrap(), None);
    assert!(!region.key_is_locked("a").unwrap() && !region.key_is_locked("b").unwrap());
    // Past 100 s after their expiry the error reaches the caller.
    time.advance(Duration::from_secs(100));
    assert!(matches!(
        batch(&region, &["a", "b"], failing(&calls, &given)),
        Err(CreateError::Creator("down"))
    ));
    assert_eq!(region.stats().fail_safe_served, 2);
}

#[test]
fn a_key_with_no_stale_value_fails_the_batch_and_nothing_is_throttled() {
    let (region, _time) = failing_over();
    let (calls, given) = (AtomicUsize::new(0), Mutex::new(Vec::new()));
    // `c` has no value: its call alone would fail, so the batch fails, and serves nothing.
    assert!(matches!(
        batch(&region, &["a", "c"], failing(&calls, &given)),
        Err(CreateError::Creator("down"))
    ));
    assert_eq!(region.stats().fail_safe_served, 0);
    // Nothing was served, so nothing is throttled: the next batch runs its creator again.
    assert_eq!(
        batch(&region, &["a", "b"], failing(&calls, &given)).unwrap(),
        [1, 2]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(region.stats().fail_safe_served, 2);
}

#[test]
fn a_panicking_batch_creator_is_caught_and_its_locks_released() {
    let (region, _time) = failing_over();
    let got = region.get_or_create_multi(&["a", "b"], |_| -> Vec<u32> { panic!("planned panic") });
    assert_eq!(got.unwrap(), [1, 2]);
    assert!(!region.key_is_locked("a").unwrap() && !region.key_is_locked("b").unwrap());
    assert_eq!(region.lock_registry_len(), 0);
    // With a key that has nothing to fall back to, the panic reaches the caller.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        region.get_or_create_multi(&["a", "c"], |_| -> Vec<u32> { panic!("planned panic") })
    }));
    assert!(panicked.is_err());
    assert_eq!(region.lock_registry_len(), 0);
}

#[test]
fn the_throttle_serves_each_failed_key_without_its_creator() {
    let (region, time) = failing_over();
    let (calls, given) = (AtomicUsize::new(0), Mutex::new(Vec::new()));
    assert_eq!(
        batch(&region, &["a", "b"], failing(&calls, &given)).unwrap(),
        [1, 2]
    );
    // Within the throttle: the failed keys are served as they are, and the creator gets only
    // the key that was not throttled (`c`, which it then makes).
    time.advance(Duration::from_secs(5));
    let got = region
        .try_get_or_create_multi(&["a", "b", "c"], &CreateOptions::new(), |keys| {
            assert_eq!(keys, ["c"], "throttled keys are not created");
            Ok::<_, Infallible>(vec![3u32])
        })
        .unwrap();
    assert_eq!(got, [1, 2, 3]);
    assert_eq!(region.stats().fail_safe_served, 4);
    // Every key throttled: the creator does not run at all.
    assert_eq!(
        batch(&region, &["b", "a"], failing(&calls, &given)).unwrap(),
        [2, 1]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Past the throttle the creator is asked again, for both keys.
    time.advance(Duration::from_secs(6));
    assert_eq!(
        batch(&region, &["a", "b"], |keys| Ok(keys
            .iter()
            .map(|_| 9)
            .collect()))
        .unwrap(),
        [9, 9]
    );
    assert_eq!(given.lock().unwrap().as_slice(), [vec!["a", "b"]]);
}

#[test]
fn eager_refresh_on_a_batch_refreshes_the_due_keys_once() {
    let (region, time) = region_with(|c| c.expiration_time(100).eager_refresh(0.8));
    let calls = AtomicUsize::new(0);
    let create = |keys: &[&str]| -> Vec<u32> {
        calls.fetch_add(1, Ordering::SeqCst);
        keys.iter().map(|k| k.len() as u32 * 10).collect()
    };
    assert_eq!(region.get_or_create_multi(&["a"], create).unwrap(), [10]);
    time.advance(Duration::from_secs(40));
    assert_eq!(
        region.get_or_create_multi(&["a", "bb"], create).unwrap(),
        [10, 20]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // t = 85 s: `a` (85 s old) is past 80% of its life, `bb` (45 s) is not; the batch
    // refreshes `a` alone, once.
    time.advance(Duration::from_secs(45));
    let got = region
        .get_or_create_multi(&["a", "bb"], |keys| {
            assert_eq!(keys, ["a"], "only the due key is refreshed");
            calls.fetch_add(1, Ordering::SeqCst);
            vec![11u32]
        })
        .unwrap();
    assert_eq!(got, [11, 20]);
    assert_eq!(region.stats().eager_refreshes, 1);
    // Refreshed: the next batch creates nothing.
    assert_eq!(
        region.get_or_create_multi(&["a", "bb"], create).unwrap(),
        [11, 20]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(region.stats().eager_refreshes, 1);
}

#[test]
fn a_failed_early_refresh_of_a_batch_keeps_the_current_values() {
    let (region, time) = region_with(|c| c.expiration_time(100).eager_refresh(0.8));
    region.set("a", 1u32).unwrap();
    time.advance(Duration::from_secs(85));
    let got = region.try_get_or_create_multi(&["a"], &CreateOptions::new(), |_| {
        Err::<Vec<u32>, _>("down")
    });
    assert_eq!(got.unwrap(), [1]);
    assert_eq!(region.stats().eager_refreshes, 1);
}

#[test]
fn xfetch_on_a_batch_never_creates_twice() {
    // β so large that every read of a value with a measured creation time is due.
    let (region, _time) = region_with(|c| c.early_expiration_beta(1e12));
    assert_eq!(
        region
            .get_or_create_multi(&["a", "b"], |k| vec![1u32; k.len()])
            .unwrap(),
        [1, 1]
    );
    // One caller refreshes both keys early and is held in its creator.
    let (open, gate) = channel::<()>();
    let calls = Arc::new(AtomicUsize::new(0));
    let (r, c) = (region.clone(), calls.clone());
    let refresher = std::thread::spawn(move || {
        r.get_or_create_multi(&["a", "b"], move |k| {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = gate.recv();
            vec![2u32; k.len()]
        })
    });
    let r = region.clone();
    within("the early refresh starting", move || {
        wait_for("the locks taken", || {
            r.key_is_locked("a").unwrap() && r.key_is_locked("b").unwrap()
        })
    });
    // Every other caller judges the values due too, finds them being refreshed, and gets the
    // current values at once: no second creation, no wait.
    let r = region.clone();
    let others = within("the other callers", move || {
        (0..8)
            .map(|_| {
                r.get_or_create_multi(&["a", "b"], |_| -> Vec<u32> {
                    panic!("a second creation of a value being refreshed")
                })
                .unwrap()
            })
            .collect::<Vec<_>>()
    });
    assert!(others.iter().all(|v| v == &[1, 1]), "{others:?}");
    assert_eq!(region.stats().waits, 0);
    open.send(()).unwrap();
    let refreshed = within("the refresh", move || refresher.join().unwrap());
    assert_eq!(refreshed.unwrap(), [2, 2]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(region.stats().early_expirations, 2);
}

#[test]
fn a_batch_refuses_a_per_call_soft_timeout_and_takes_the_others() {
    let (region, _time) = region_with(|c| c);
    let soft = CreateOptions::new().soft_timeout(Duration::from_millis(5));
    let err = region
        .try_get_or_create_multi(&["a"], &soft, |k| Ok::<_, Infallible>(vec![1u32; k.len()]))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("soft_timeout") && text.contains("batch"),
        "{text}"
    );
    for options in [
        CreateOptions::new().fail_safe_max_duration(Duration::from_secs(5)),
        CreateOptions::new().fail_safe_throttle(Duration::from_secs(5)),
        CreateOptions::new().eager_refresh(0.5),
        CreateOptions::new().early_expiration_beta(1.0),
        // It bounds the batch's waits for other callers' creations.
        CreateOptions::new().hard_timeout(Duration::from_secs(5)),
    ] {
        let got = region.try_get_or_create_multi(&["a"], &options, |k| {
            Ok::<_, Infallible>(vec![1u32; k.len()])
        });
        assert_eq!(got.unwrap(), [1]);
    }
}

#[test]
fn a_batch_waiter_is_bounded_by_its_hard_timeout() {
    let (region, _time) = region_with(|c| c.lock_blocking_timeout(Duration::from_secs(30)));
    let (open, gate) = channel::<()>();
    let r = region.clone();
    let creator = std::thread::spawn(move || {
        r.get_or_create("a", move || {
            let _ = gate.recv();
            1u32
        })
    });
    let r = region.clone();
    within("the creation starting", move || {
        wait_for("the lock taken", || r.key_is_locked("a").unwrap())
    });
    let r = region.clone();
    let waited = within("a batch waiter past its hard timeout", move || {
        let options = CreateOptions::new().hard_timeout(Duration::from_millis(30));
        r.try_get_or_create_multi(&["a"], &options, |k| {
            Ok::<_, Infallible>(vec![0u32; k.len()])
        })
    });
    assert!(
        matches!(
            waited,
            Err(CreateError::Cache(dogpile::Error::CreatorTimeout { .. }))
        ),
        "{waited:?}"
    );
    open.send(()).unwrap();
    assert_eq!(
        within("the creator", move || creator.join().unwrap()).unwrap(),
        1
    );
}

// ------------------------------------------------------------------------------------------------
// #[cache_multi_on_arguments] with each option

#[test]
fn the_multi_attribute_with_fail_safe_and_its_throttle() {
    static REGION: CacheRegion = CacheRegion::new();
    static BODIES: AtomicUsize = AtomicUsize::new(0);
    static FAIL: AtomicBool = AtomicBool::new(false);

    #[cache_multi_on_arguments(region = REGION, fail_safe_max_duration = 100, fail_safe_throttle = Duration::from_secs(10))]
    fn squares(ids: &[u32]) -> Vec<u32> {
        BODIES.fetch_add(1, Ordering::SeqCst);
        if FAIL.load(Ordering::SeqCst) {
            panic!("planned panic: the source is down");
        }
        ids.iter().map(|i| i * i).collect()
    }

    let (clock, time) = Clock::manual(SystemTime::now());
    REGION.configure(config(clock)).unwrap();
    assert_eq!(squares(&[2, 3]), [4, 9]);
    time.advance(Duration::from_secs(TTL + 1));
    FAIL.store(true, Ordering::SeqCst);
    // The body panics: the expired values stand in.
    assert_eq!(squares(&[3, 2]), [9, 4]);
    assert_eq!(REGION.stats().fail_safe_served, 2);
    assert_eq!(BODIES.load(Ordering::SeqCst), 2);
    // Within the throttle the body is not called again.
    time.advance(Duration::from_secs(5));
    assert_eq!(squares(&[2, 3]), [4, 9]);
    assert_eq!(BODIES.load(Ordering::SeqCst), 2);
    // Past it, it is; fixed, its values are stored.
    FAIL.store(false, Ordering::SeqCst);
    time.advance(Duration::from_secs(6));
    assert_eq!(squares(&[2, 3]), [4, 9]);
    assert_eq!(BODIES.load(Ordering::SeqCst), 3);
    assert_eq!(REGION.stats().fail_safe_served, 4);
}

#[test]
fn the_multi_attribute_with_eager_refresh() {
    static REGION: CacheRegion = CacheRegion::new();
    static BODIES: AtomicUsize = AtomicUsize::new(0);

    #[cache_multi_on_arguments(region = REGION, eager_refresh = 0.8)]
    fn versions(ids: &[u32]) -> Vec<usize> {
        let n = BODIES.fetch_add(1, Ordering::SeqCst);
        ids.iter().map(|_| n).collect()
    }

    let (clock, time) = Clock::manual(SystemTime::now());
    REGION
        .configure(config(clock).expiration_time(100))
        .unwrap();
    assert_eq!(versions(&[1, 2]), [0, 0]);
    time.advance(Duration::from_secs(50));
    assert_eq!(versions(&[1, 2]), [0, 0]);
    time.advance(Duration::from_secs(35));
    assert_eq!(
        versions(&[1, 2]),
        [1, 1],
        "refreshed past 80% of their life"
    );
    assert_eq!(versions(&[1, 2]), [1, 1]);
    assert_eq!(BODIES.load(Ordering::SeqCst), 2);
    assert_eq!(REGION.stats().eager_refreshes, 2);
}

#[test]
fn the_multi_attribute_with_early_expiration_beta() {
    static REGION: CacheRegion = CacheRegion::new();
    static BODIES: AtomicUsize = AtomicUsize::new(0);

    // β so large that a value with a measured creation time is always due.
    #[cache_multi_on_arguments(region = REGION, early_expiration_beta = 1e12)]
    fn versions(ids: &[u32]) -> Vec<usize> {
        let n = BODIES.fetch_add(1, Ordering::SeqCst);
        ids.iter().map(|_| n).collect()
    }

    let (clock, _time) = Clock::manual(SystemTime::now());
    REGION.configure(config(clock)).unwrap();
    assert_eq!(versions(&[1]), [0]);
    // A fresh value, regenerated early: the option reached the batch.
    assert_eq!(versions(&[1]), [1]);
    assert_eq!(REGION.stats().early_expirations, 1);
}
