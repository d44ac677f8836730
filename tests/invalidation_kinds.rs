//! Hard and soft invalidation kept apart (issue 11, case 6), and dogpile's behaviours around them
//! and around creation times (issue 20, items 1 and 3).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dogpile::{make_region, CacheRegion, CreateOptions, Error, Expiration, RegionConfig};
use dogpile::clock::{Clock, ManualClock};
use dogpile::lock::AsyncCreation;

fn memory_region(expiration: impl Into<Expiration>) -> (CacheRegion, Arc<ManualClock>) {
    let (clock, handle) = Clock::manual(SystemTime::now());
    let region = make_region()
        .configure(
            RegionConfig::new("dogpile.cache.memory")
                .expiration_time(expiration)
                .clock(clock),
        )
        .unwrap();
    (region, handle)
}

#[test]
fn a_soft_invalidation_after_a_hard_one_does_not_revive_older_values() {
    // With an async creation runner a stale value is returned at once while the runner makes a
    // new one; an absent value is created by the caller. So what the caller gets tells which the
    // region took the value for.
    let (clock, manual) = Clock::manual(SystemTime::now());
    let region: CacheRegion = make_region()
        .async_creation_runner(|creation: AsyncCreation| creation.run())
        .configure(
            RegionConfig::new("dogpile.cache.memory")
                .expiration_time(60)
                .clock(clock),
        )
        .unwrap();
    region.set("old", 1u8).unwrap();
    manual.advance(Duration::from_millis(1));
    region.invalidate(true);
    manual.advance(Duration::from_millis(1));
    region.set("between", 2u8).unwrap();
    manual.advance(Duration::from_millis(1));
    region.invalidate(false);

    assert_eq!(
        region
            .get_or_create_in_background("old", &CreateOptions::new(), || 10u8)
            .unwrap(),
        10,
        "a value from before the hard invalidation is absent, never served as stale"
    );
    assert_eq!(
        region
            .get_or_create_in_background("between", &CreateOptions::new(), || 20u8)
            .unwrap(),
        2,
        "a value from between the two is stale: served while the runner creates"
    );
    assert_eq!(region.get::<u8>("between").unwrap(), Some(20));
}

#[test]
fn a_pre_hard_value_is_not_served_stale_while_another_caller_creates() {
    // The stale-while-creating path is where a weakened hard invalidation shows: a caller that
    // finds the lock held gets the stale value at once, so a pre-hard value must be absent there.
    let (region, clock) = memory_region(60);
    let region = Arc::new(region);
    region.set("k", 1u8).unwrap();
    clock.advance(Duration::from_millis(1));
    region.invalidate(true);
    clock.advance(Duration::from_millis(1));
    region.invalidate(false);

    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let creator = {
        let region = region.clone();
        std::thread::spawn(move || {
            region
                .get_or_create("k", || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    3u8
                })
                .unwrap()
        })
    };
    started_rx.recv().unwrap();
    // This caller finds the lock held and no servable value: it waits for the creation.
    let waiter = {
        let region = region.clone();
        std::thread::spawn(move || region.get_or_create("k", || 4u8).unwrap())
    };
    std::thread::sleep(Duration::from_millis(50));
    go_tx.send(()).unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send((creator.join().unwrap(), waiter.join().unwrap()));
    });
    let (created, waited) = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the callers finish");
    assert_eq!(created, 3);
    assert_eq!(
        waited, 3,
        "the waiter gets the new value, not the value from before the hard invalidation"
    );
}

#[test]
fn a_value_whose_creation_started_before_a_hard_invalidation_is_not_fresh_after_it() {
    let (region, clock) = memory_region(60);
    let region = Arc::new(region);
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let creator = {
        let region = region.clone();
        std::thread::spawn(move || {
            region
                .get_or_create("k", || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    1u8
                })
                .unwrap()
        })
    };
    started_rx.recv().unwrap();
    clock.advance(Duration::from_millis(1));
    region.invalidate(true);
    clock.advance(Duration::from_millis(1));
    go_tx.send(()).unwrap();
    assert_eq!(
        creator.join().unwrap(),
        1,
        "its caller gets the value it made"
    );
    assert_eq!(
        region.get::<u8>("k").unwrap(),
        None,
        "a value computed from data the invalidation said is gone does not count as fresh"
    );
    assert_eq!(region.get_or_create("k", || 2u8).unwrap(), 2);
    assert_eq!(region.get::<u8>("k").unwrap(), Some(2));
}

#[test]
fn a_batch_whose_creation_started_before_a_hard_invalidation_is_not_fresh_after_it() {
    let (region, clock) = memory_region(60);
    let region = Arc::new(region);
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let creator = {
        let region = region.clone();
        std::thread::spawn(move || {
            region
                .get_or_create_multi(&["a", "b"], |keys| {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    keys.iter().map(|_| 1u8).collect()
                })
                .unwrap()
        })
    };
    started_rx.recv().unwrap();
    clock.advance(Duration::from_millis(1));
    region.invalidate(true);
    clock.advance(Duration::from_millis(1));
    go_tx.send(()).unwrap();
    assert_eq!(creator.join().unwrap(), vec![1, 1]);
    assert_eq!(
        region.get_multi::<u8, _>(&["a", "b"]).unwrap(),
        vec![None, None]
    );
}

#[test]
fn get_after_a_soft_invalidation_without_expiration_is_a_miss() {
    let region = make_region()
        .name("noexp")
        .configure("dogpile.cache.memory")
        .unwrap();
    region.set("k", 1u8).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    region.invalidate(false);
    assert_eq!(region.get::<u8>("k").unwrap(), None);
    assert_eq!(region.get::<u8>("never-set").unwrap(), None);
    assert_eq!(
        region.get_multi::<u8, _>(&["k", "never-set"]).unwrap(),
        vec![None, None]
    );
    assert_eq!(block_on(region.get_async::<u8>("k")).unwrap(), None);
    // A value stored after the invalidation is a hit.
    region.set("later", 2u8).unwrap();
    assert_eq!(region.get::<u8>("later").unwrap(), Some(2));
    // The creation paths still need an expiration.
    let err = region.get_or_create("k", || 3u8).unwrap_err();
    assert!(
        matches!(err, Error::SoftInvalidationWithoutExpiration { .. }),
        "{err}"
    );
}

#[test]
fn one_set_multi_call_stamps_every_value_with_one_creation_time() {
    // The system clock reads in nanoseconds, so values that each read it get different times.
    let region = make_region()
        .configure(RegionConfig::new("dogpile.cache.memory").expiration_time(60))
        .unwrap();
    region
        .set_multi((0..50).map(|i| (format!("k{i}"), i as u8)))
        .unwrap();
    let times: Vec<_> = (0..50)
        .map(|i| {
            region
                .get_value_metadata(&format!("k{i}"))
                .unwrap()
                .expect("the value is there")
                .created_at
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] == w[1]), "{times:?}");
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}
