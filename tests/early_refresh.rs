//! Early refresh (`eager_refresh`) and probabilistic early expiration (`early_expiration_beta`,
//! XFetch): a hot value is refreshed before it expires by one caller while every other caller
//! keeps the current value; invalidation, the async creation runner, the async path and a
//! distributed lock held elsewhere keep their rules; XFetch never regenerates a value twice at
//! once. Value ages run on a manual clock.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dogpile::clock::{Clock, ManualClock};
use dogpile::lock::AsyncCreation;
use dogpile::{make_region, CacheRegion, CreateOptions, RegionBuilder, RegionConfig};
use support::{wait_for, within};

const TTL: u64 = 100;

fn eager(clock: Clock) -> RegionConfig {
    RegionConfig::new("dogpile.cache.memory")
        .expiration_time(TTL)
        .clock(clock)
        .eager_refresh(0.8)
}

fn region_on(
    builder: RegionBuilder,
    config: impl FnOnce(Clock) -> RegionConfig,
) -> (Arc<CacheRegion>, Arc<ManualClock>) {
    let (clock, time) = Clock::manual(SystemTime::now());
    (Arc::new(builder.configure(config(clock)).unwrap()), time)
}

/// A creator that counts its calls and returns `value` once the test sends on the channel (see
/// [`support::gated`]; typed here, so a literal is the `u32` the tests store).
fn gated(
    value: u32,
    calls: &Arc<AtomicUsize>,
) -> (Sender<()>, impl FnOnce() -> u32 + Send + 'static) {
    support::gated(value, calls)
}

fn until_stored(region: &Arc<CacheRegion>, value: u32) {
    support::wait_stored(region, "k", value);
}

#[test]
fn the_first_hit_past_the_fraction_refreshes_in_the_background_and_callers_keep_the_value() {
    let (region, time) = region_on(make_region(), eager);
    region.set("k", 1u32).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let options = CreateOptions::new();
    time.advance(Duration::from_secs(79));
    let (_, early) = gated(9, &calls);
    assert_eq!(
        region
            .get_or_create_in_background("k", &options, early)
            .unwrap(),
        1
    );
    assert_eq!(
        region.stats().eager_refreshes,
        0,
        "refreshed before 80% of its life"
    );

    time.advance(Duration::from_secs(6));
    let (open, refresh) = gated(2, &calls);
    let r = region.clone();
    let got = within("the hit that starts the refresh", move || {
        r.get_or_create_in_background("k", &CreateOptions::new(), refresh)
    });
    assert_eq!(got.unwrap(), 1);
    // While the refresh runs every caller gets the current value, and none starts another.
    for _ in 0..10 {
        let (_, another) = gated(3, &calls);
        assert_eq!(
            region
                .get_or_create_in_background("k", &options, another)
                .unwrap(),
            1
        );
    }
    open.send(()).unwrap();
    until_stored(&region, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = region.stats();
    assert_eq!(
        (stats.eager_refreshes, stats.stale_served, stats.waits),
        (1, 0, 0)
    );
    // The new value is young: no refresh.
    assert_eq!(region.get_or_create("k", || 4u32).unwrap(), 2);
    assert_eq!(region.stats().eager_refreshes, 1);
}

#[test]
fn a_creator_that_cannot_move_is_run_by_the_caller_that_takes_the_lock() {
    let (region, time) = region_on(make_region(), eager);
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(85));
    let (open, gate) = channel::<()>();
    let r = region.clone();
    let refresher = std::thread::spawn(move || {
        r.get_or_create("k", || {
            let _ = gate.recv();
            2u32
        })
    });
    let r = region.clone();
    within("the refresh taking the lock", move || {
        wait_for("the lock taken", || r.key_is_locked("k").unwrap())
    });
    // Another caller does not wait and does not create: the current value.
    assert_eq!(region.get_or_create("k", || 3u32).unwrap(), 1);
    open.send(()).unwrap();
    assert_eq!(
        within("the refresher", move || refresher.join().unwrap()).unwrap(),
        2
    );
    assert_eq!(region.get::<u32>("k").unwrap(), Some(2));
    assert_eq!(region.stats().eager_refreshes, 1);
    assert_eq!(region.stats().waits, 0);
}

#[test]
fn a_failed_early_refresh_leaves_the_current_value() {
    let (region, time) = region_on(make_region(), eager);
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(85));
    let got = region.try_get_or_create("k", &CreateOptions::new(), || Err::<u32, _>("down"));
    assert_eq!(got.unwrap(), 1);
    assert_eq!(region.get::<u32>("k").unwrap(), Some(1));
}

#[test]
fn soft_and_hard_invalidation_keep_their_rules() {
    let (region, time) = region_on(make_region(), eager);
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(85));
    region.invalidate(false);
    // Soft-invalidated: stale, a plain creation (not an early refresh).
    assert_eq!(region.get_or_create("k", || 2u32).unwrap(), 2);
    assert_eq!(region.stats().eager_refreshes, 0);
    time.advance(Duration::from_secs(85));
    region.invalidate(true);
    assert_eq!(region.get::<u32>("k").unwrap(), None);
    assert_eq!(region.get_or_create("k", || 3u32).unwrap(), 3);
    assert_eq!(region.stats().eager_refreshes, 0);
}

#[test]
fn the_refresh_runs_on_the_regions_async_creation_runner() {
    let pending: Arc<Mutex<Vec<AsyncCreation>>> = Arc::default();
    let queue = pending.clone();
    let builder = make_region().async_creation_runner(move |c: AsyncCreation| {
        queue.lock().unwrap().push(c);
    });
    let (region, time) = region_on(builder, eager);
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(85));
    let options = CreateOptions::new();
    for _ in 0..3 {
        assert_eq!(
            region
                .get_or_create_in_background("k", &options, || 2u32)
                .unwrap(),
            1
        );
    }
    let creations: Vec<AsyncCreation> = std::mem::take(&mut *pending.lock().unwrap());
    assert_eq!(creations.len(), 1, "one refresh for three hits");
    assert_eq!(creations[0].key(), "k");
    creations.into_iter().for_each(AsyncCreation::run);
    assert_eq!(region.get::<u32>("k").unwrap(), Some(2));
    let stats = region.stats();
    assert_eq!((stats.eager_refreshes, stats.async_refreshes), (1, 1));
}

#[tokio::test(flavor = "current_thread")]
async fn the_async_path_refreshes_early_too() {
    let (region, time) = region_on(make_region(), eager);
    region.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(50));
    assert_eq!(
        region
            .get_or_create_async("k", || async { 2u32 })
            .await
            .unwrap(),
        1
    );
    time.advance(Duration::from_secs(35));
    assert_eq!(
        region
            .get_or_create_async("k", || async { 2u32 })
            .await
            .unwrap(),
        2
    );
    assert_eq!(region.stats().eager_refreshes, 1);
}

/// Two regions on one file store share its lock, as two processes would: while the other holds
/// the key's lock, a due hit keeps the current value and starts nothing; once it is free, the
/// next hit refreshes.
#[cfg(all(feature = "file", target_os = "linux"))]
#[test]
fn a_distributed_lock_held_elsewhere_leaves_the_current_value() {
    let dir = support::TempDir::new("early-refresh");
    let path = dir.path().join("store");
    let (clock, time) = Clock::manual(SystemTime::now());
    let here = make_region()
        .configure(
            support::file_store_config(&path)
                .expiration_time(TTL)
                .clock(clock)
                .eager_refresh(0.8),
        )
        .unwrap();
    let elsewhere = support::file_store_region(&path);
    here.set("k", 1u32).unwrap();
    time.advance(Duration::from_secs(85));
    let lock = elsewhere
        .backend()
        .unwrap()
        .get_mutex("k")
        .expect("the file store's lock");
    assert!(lock.try_acquire().unwrap());
    assert!(here.key_is_locked("k").unwrap());
    let calls = AtomicUsize::new(0);
    let create = || {
        calls.fetch_add(1, Ordering::SeqCst);
        2u32
    };
    assert_eq!(here.get_or_create("k", create).unwrap(), 1);
    assert_eq!(
        (calls.load(Ordering::SeqCst), here.stats().eager_refreshes),
        (0, 0)
    );
    lock.release().unwrap();
    assert_eq!(here.get_or_create("k", create).unwrap(), 2);
    assert_eq!(
        (calls.load(Ordering::SeqCst), here.stats().eager_refreshes),
        (1, 1)
    );
}

#[test]
fn xfetch_never_regenerates_a_value_twice_at_once() {
    // β so large that every hit after the first creation is drawn early: the lock alone keeps
    // regenerations one at a time.
    let (region, _time) = region_on(make_region(), |clock| {
        RegionConfig::new("dogpile.cache.memory")
            .expiration_time(TTL)
            .clock(clock)
            .early_expiration_beta(1e12)
            .random_seed(17)
    });
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let creations = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (region, in_flight, most, creations) = (
                region.clone(),
                in_flight.clone(),
                most.clone(),
                creations.clone(),
            );
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    region
                        .get_or_create("k", || {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            creations.fetch_add(1, Ordering::SeqCst);
                            for _ in 0..50 {
                                std::thread::yield_now();
                            }
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            t * 1000 + i
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        within("an XFetch reader", move || t.join().unwrap());
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "two regenerations at once");
    let stats = region.stats();
    assert!(stats.early_expirations > 0, "{stats}");
    assert_eq!(
        stats.early_expirations + 1,
        creations.load(Ordering::SeqCst) as u64
    );
    assert_eq!(region.lock_registry_len(), 0);
}

#[test]
fn xfetch_regenerates_near_expiry_and_not_far_from_it() {
    let (region, time) = region_on(make_region(), |clock| {
        RegionConfig::new("dogpile.cache.memory")
            .expiration_time(TTL)
            .clock(clock)
            .early_expiration_beta(1.0)
            .random_seed(3)
    });
    let mut next = 0u32;
    let mut read = || {
        next += 1;
        let n = next;
        region.get_or_create("k", move || n).unwrap()
    };
    assert_eq!(read(), 1);
    // A creation takes microseconds and the value has 99 s left: no early draw.
    time.advance(Duration::from_secs(1));
    for _ in 0..1000 {
        assert_eq!(read(), 1);
    }
    assert_eq!(region.stats().early_expirations, 0);
    // A nanosecond before expiry: drawn early within a few reads.
    time.advance(Duration::from_secs(TTL - 1) - Duration::from_nanos(1));
    let mut reads = 0;
    while read() == 1 {
        reads += 1;
        assert!(reads < 100, "not regenerated a nanosecond before expiry");
    }
    assert_eq!(region.stats().early_expirations, 1);
}

#[test]
fn a_decorated_function_takes_the_options() {
    use dogpile::cache_on_arguments;
    static REGION: CacheRegion = CacheRegion::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION, eager_refresh = 0.8)]
    fn version(id: u32) -> usize {
        id as usize + CALLS.fetch_add(1, Ordering::SeqCst)
    }

    let (clock, time) = Clock::manual(SystemTime::now());
    REGION
        .configure(
            RegionConfig::new("dogpile.cache.memory")
                .expiration_time(TTL)
                .clock(clock),
        )
        .unwrap();
    assert_eq!(version(10), 10);
    time.advance(Duration::from_secs(50));
    assert_eq!(version(10), 10);
    time.advance(Duration::from_secs(35));
    assert_eq!(version(10), 11, "refreshed past 80% of its life");
    assert_eq!(REGION.stats().eager_refreshes, 1);
}

#[test]
fn a_batch_refuses_soft_timeout_and_invalid_options_by_name() {
    // A batch creator borrows, so soft_timeout cannot bound it: refused by name, not dropped;
    // an option no region can use is refused as on a single key.
    let (region, _time) = region_on(make_region(), eager);
    for (options, name) in [
        (
            CreateOptions::new().soft_timeout(Duration::from_millis(5)),
            "soft_timeout",
        ),
        (CreateOptions::new().eager_refresh(2.0), "eager_refresh"),
    ] {
        let err = region
            .try_get_or_create_multi(&["a", "b"], &options, |keys| {
                Ok::<_, std::convert::Infallible>(keys.iter().map(|_| 1u32).collect())
            })
            .unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
    }
    // Early refresh itself applies to a batch (tests/batch_resilience.rs).
    let options = CreateOptions::new().eager_refresh(0.5);
    let got = region.try_get_or_create_multi(&["a", "b"], &options, |keys| {
        Ok::<_, std::convert::Infallible>(keys.iter().map(|_| 1u32).collect())
    });
    assert_eq!(got.unwrap(), [1, 1]);
}
