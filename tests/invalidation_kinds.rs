//! Hard and soft invalidation kept apart (issue 11, case 6), and dogpile's behaviours around them
//! and around creation times (issue 20, items 1 and 3).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dogpile::clock::Clock;
use dogpile::lock::AsyncCreation;
use dogpile::{make_region, CacheRegion, CreateOptions, Error, RegionConfig};

mod support;
use support::{manual_memory_region, within};

/// A get-or-create held open on another thread: its creator calls `pause`, which holds it there
/// until [`finish`](PausedCall::finish).
struct PausedCall<T> {
    go: mpsc::Sender<()>,
    done: std::thread::JoinHandle<T>,
}

/// Starts `call` on a thread and returns once its creator has paused.
fn paused_call<T: Send + 'static>(
    region: &Arc<CacheRegion>,
    call: impl FnOnce(&CacheRegion, &dyn Fn()) -> T + Send + 'static,
) -> PausedCall<T> {
    let (started_tx, started_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let region = region.clone();
    let done = std::thread::spawn(move || {
        call(&region, &|| {
            started_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        })
    });
    started_rx.recv().unwrap();
    PausedCall { go, done }
}

impl<T: Send + 'static> PausedCall<T> {
    /// Lets the creator go on, and returns the call's result.
    fn finish(self) -> T {
        self.go.send(()).unwrap();
        within("a paused call", move || self.done.join().unwrap())
    }
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
    let (region, clock) = manual_memory_region(60);
    let region = Arc::new(region);
    region.set("k", 1u8).unwrap();
    clock.advance(Duration::from_millis(1));
    region.invalidate(true);
    clock.advance(Duration::from_millis(1));
    region.invalidate(false);

    let creator = paused_call(&region, |region, pause| {
        region.get_or_create("k", || {
            pause();
            3u8
        })
    });
    // This caller finds the lock held and no servable value: it waits for the creation.
    let waiter = {
        let region = region.clone();
        std::thread::spawn(move || region.get_or_create("k", || 4u8).unwrap())
    };
    std::thread::sleep(Duration::from_millis(50));
    let created = creator.finish().unwrap();
    let waited = within("the waiter", move || waiter.join().unwrap());
    assert_eq!(created, 3);
    assert_eq!(
        waited, 3,
        "the waiter gets the new value, not the value from before the hard invalidation"
    );
}

#[test]
fn a_value_whose_creation_started_before_a_hard_invalidation_is_not_fresh_after_it() {
    let (region, clock) = manual_memory_region(60);
    let region = Arc::new(region);
    let creator = paused_call(&region, |region, pause| {
        region.get_or_create("k", || {
            pause();
            1u8
        })
    });
    clock.advance(Duration::from_millis(1));
    region.invalidate(true);
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        creator.finish().unwrap(),
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
    let (region, clock) = manual_memory_region(60);
    let region = Arc::new(region);
    let creator = paused_call(&region, |region, pause| {
        region.get_or_create_multi(&["a", "b"], |keys| {
            pause();
            keys.iter().map(|_| 1u8).collect()
        })
    });
    clock.advance(Duration::from_millis(1));
    region.invalidate(true);
    clock.advance(Duration::from_millis(1));
    assert_eq!(creator.finish().unwrap(), vec![1, 1]);
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
                .get_value_metadata::<u8>(&format!("k{i}"))
                .unwrap()
                .expect("the value is there")
                .metadata
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
