//! Fail-safe (`fail_safe_max_duration`, `fail_safe_throttle`): an expired value stands in for a
//! failed or panicking creator, within its bound past expiry; the failing key is retried at most
//! once per throttle; hard invalidation leaves nothing to serve; the lock is released; the async
//! path and the async creation runner follow the same rule. On a manual clock: no sleeps.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dogpile::clock::{Clock, ManualClock};
use dogpile::lock::AsyncCreation;
use dogpile::{make_region, CacheRegion, CreateError, CreateOptions, RegionConfig};
use support::within;

const TTL: u64 = 60;

fn config(clock: Clock) -> RegionConfig {
    RegionConfig::new("dogpile.cache.memory")
        .expiration_time(TTL)
        .clock(clock)
}

/// Fail-safe for 100 s past expiry, with a 10 s throttle.
fn fail_safe_config(clock: Clock) -> RegionConfig {
    config(clock)
        .fail_safe_max_duration(Duration::from_secs(100))
        .fail_safe_throttle(Duration::from_secs(10))
}

/// A region of [`fail_safe_config`] with `k` = 1 already expired.
fn failing_over() -> (CacheRegion, Arc<ManualClock>) {
    let (clock, time) = Clock::manual(SystemTime::now());
    let region = make_region().configure(fail_safe_config(clock)).unwrap();
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(TTL + 1));
    (region, time)
}

fn fail(region: &CacheRegion) -> Result<u32, CreateError<&'static str>> {
    region.try_get_or_create("k", &CreateOptions::new(), || Err("down"))
}

#[test]
fn an_expired_value_stands_in_for_a_failed_creator_within_its_bound() {
    let (region, time) = failing_over();
    assert_eq!(fail(&region).unwrap(), 1);
    assert_eq!(region.stats().fail_safe_served, 1);
    assert_eq!(region.stats().creator_errors, 1);
    // Not stored again: it is still expired for plain reads.
    assert_eq!(region.get::<u32>("k").unwrap(), None);
    // Past 100 s after its expiry the error reaches the caller.
    time.advance(Duration::from_secs(100));
    assert!(matches!(fail(&region), Err(CreateError::Creator("down"))));
    assert_eq!(region.stats().fail_safe_served, 1);
    assert!(!region.key_is_locked("k").unwrap());
}

#[test]
fn off_by_default_the_error_reaches_the_caller() {
    let (clock, time) = Clock::manual(SystemTime::now());
    let region = make_region().configure(config(clock)).unwrap();
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(TTL + 1));
    assert!(matches!(fail(&region), Err(CreateError::Creator("down"))));
    assert_eq!(region.stats().fail_safe_served, 0);
}

#[test]
fn a_panicking_creator_is_caught_and_its_lock_released() {
    let (region, _time) = failing_over();
    let got = region.get_or_create("k", || -> u32 { panic!("planned panic") });
    assert_eq!(got.unwrap(), 1);
    assert!(!region.key_is_locked("k").unwrap());
    assert_eq!(region.lock_registry_len(), 0);
    assert_eq!(region.stats().creator_errors, 1);
}

#[test]
fn without_a_value_a_panic_still_unwinds_to_its_caller() {
    let (clock, _time) = Clock::manual(SystemTime::now());
    let region = make_region()
        .configure(config(clock).fail_safe_max_duration(Duration::from_secs(100)))
        .unwrap();
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        region.get_or_create("cold", || -> u32 { panic!("planned panic") })
    }));
    assert!(unwound.is_err());
    assert!(!region.key_is_locked("cold").unwrap());
    assert_eq!(region.get_or_create("cold", || 5u32).unwrap(), 5);
}

#[test]
fn the_failing_key_is_retried_at_most_once_per_throttle() {
    let (region, time) = failing_over();
    let calls = AtomicUsize::new(0);
    let failing = || {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<u32, _>("down")
    };
    let options = CreateOptions::new();
    for _ in 0..5 {
        assert_eq!(region.try_get_or_create("k", &options, failing).unwrap(), 1);
        time.advance(Duration::from_secs(1));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "retried within the throttle"
    );
    assert_eq!(region.stats().fail_safe_served, 5);
    // Past the throttle one caller tries again (and fails again).
    time.advance(Duration::from_secs(6));
    assert_eq!(region.try_get_or_create("k", &options, failing).unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The source is back: the next retry stores the new value.
    time.advance(Duration::from_secs(11));
    assert_eq!(region.get_or_create("k", || 2u32).unwrap(), 2);
    assert_eq!(region.get::<u32>("k").unwrap(), Some(2));
}

#[test]
fn soft_invalidation_leaves_a_value_to_serve_and_hard_invalidation_none() {
    let (clock, time) = Clock::manual(SystemTime::now());
    let region = make_region()
        .configure(config(clock).fail_safe_max_duration(Duration::from_secs(100)))
        .unwrap();
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(1));
    region.invalidate(false);
    assert_eq!(fail(&region).unwrap(), 1);
    region.invalidate(true);
    time.advance(Duration::from_secs(TTL));
    assert!(matches!(fail(&region), Err(CreateError::Creator("down"))));
}

#[tokio::test(flavor = "current_thread")]
async fn the_async_path_serves_the_expired_value_too() {
    let (region, _time) = failing_over();
    let got = (region.try_get_or_create_async("k", &CreateOptions::new(), || async {
        Err::<u32, _>("down")
    }))
    .await;
    assert_eq!(got.unwrap(), 1);
    let panicked = region
        .get_or_create_async("k", || async {
            if true {
                panic!("planned panic");
            }
            0u32
        })
        .await;
    assert_eq!(panicked.unwrap(), 1);
    assert!(!region.key_is_locked("k").unwrap());
}

#[test]
fn a_failed_creation_on_the_runner_throttles_the_key() {
    let (clock, time) = Clock::manual(SystemTime::now());
    let handed = Arc::new(AtomicUsize::new(0));
    let counted = handed.clone();
    let region = make_region()
        .async_creation_runner(move |creation: AsyncCreation| {
            counted.fetch_add(1, Ordering::SeqCst);
            // The runner's thread: a panic there ends the creation, not the caller.
            let _ = std::thread::spawn(move || creation.run()).join();
        })
        .configure(fail_safe_config(clock))
        .unwrap();
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(TTL + 1));
    let options = CreateOptions::new();
    let panicking = || -> u32 { panic!("planned panic on the runner") };
    assert_eq!(
        region
            .get_or_create_in_background("k", &options, panicking)
            .unwrap(),
        1
    );
    assert_eq!(handed.load(Ordering::SeqCst), 1);
    // Throttled: the stale value, and no new creation handed to the runner.
    for _ in 0..3 {
        assert_eq!(
            region
                .get_or_create_in_background("k", &options, panicking)
                .unwrap(),
            1
        );
    }
    assert_eq!(handed.load(Ordering::SeqCst), 1);
    time.advance(Duration::from_secs(11));
    let ok = within("a creation on the runner", move || {
        region
            .get_or_create_in_background("k", &CreateOptions::new(), || 2u32)
            .unwrap();
        region.get::<u32>("k").unwrap()
    });
    assert_eq!(ok, Some(2));
    assert_eq!(handed.load(Ordering::SeqCst), 2);
}

#[test]
fn a_decorated_function_takes_the_options() {
    use dogpile::cache_on_arguments;
    use std::sync::atomic::AtomicBool;
    static REGION: CacheRegion = CacheRegion::new();
    static DOWN: AtomicBool = AtomicBool::new(false);

    #[cache_on_arguments(region = REGION, fail_safe_max_duration = 100, fail_safe_throttle = 10.0)]
    fn rate(currency: u32) -> Result<u32, String> {
        match DOWN.load(Ordering::SeqCst) {
            true => Err("the rates API is down".into()),
            false => Ok(currency * 2),
        }
    }

    let (clock, time) = Clock::manual(SystemTime::now());
    REGION.configure(config(clock)).unwrap();
    assert_eq!(rate(1), Ok(2));
    time.advance(Duration::from_secs(TTL + 1));
    DOWN.store(true, Ordering::SeqCst);
    assert_eq!(rate(1), Ok(2));
    assert_eq!(REGION.stats().fail_safe_served, 1);
    // Past the bound the function's own error.
    time.advance(Duration::from_secs(100));
    assert_eq!(rate(1), Err("the rates API is down".to_string()));
}
