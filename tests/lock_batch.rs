//! Issue 11, case 7: a batch get-or-create never waits while it holds a lock, so it cannot close a
//! cycle with a creator that asks for another key; and issue 20 item 4: the batch creator gets the
//! missing keys in the caller's order, whatever the key mangler.
//!
//! A hang is detected by a generous deadline on a helper thread, never by a tight wall-clock bound.

use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use dogpile::{make_region, sha1_mangle_key, CacheRegion};

/// How long the whole test may take before it is called hung.
const HANG: Duration = Duration::from_secs(60);

#[test]
fn a_nested_creator_and_a_batch_over_the_same_keys_never_deadlock() {
    let region: Arc<CacheRegion> =
        Arc::new(make_region().configure("dogpile.cache.memory").unwrap());
    const ROUNDS: usize = 200;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn({
        let region = region.clone();
        move || {
            let barrier = Arc::new(Barrier::new(2));
            for round in 0..ROUNDS {
                region.delete_multi(&["a", "b"]).unwrap();
                // A: holds "b" while its creator asks for "a".
                let nested = {
                    let (region, barrier) = (region.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        region
                            .get_or_create("b", || {
                                // Give the batch time to take "a" and find "b" held.
                                std::thread::sleep(Duration::from_micros(200));
                                region.get_or_create("a", || 1u32).unwrap() + 1
                            })
                            .unwrap()
                    })
                };
                // B: the batch over both keys, which locks "a" first.
                let batch = {
                    let (region, barrier) = (region.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        region
                            .get_or_create_multi(&["a", "b"], |keys| {
                                keys.iter().map(|k| if *k == "a" { 1 } else { 2 }).collect()
                            })
                            .unwrap()
                    })
                };
                let b = nested.join().unwrap();
                let batch = batch.join().unwrap();
                assert_eq!((b, batch.clone()), (2, vec![1, 2]), "round {round}");
            }
            let _ = tx.send(());
        }
    });
    rx.recv_timeout(HANG)
        .expect("a nested creator and a batch deadlocked (no round finished in time)");
    assert_eq!(region.stats().lock_timeouts, 0);
}

#[test]
fn the_batch_creator_gets_missing_keys_in_the_callers_order_under_sha1_mangling() {
    let region: CacheRegion = make_region()
        .key_mangler(sha1_mangle_key)
        .configure("dogpile.cache.memory")
        .unwrap();
    region.set("k3", 3u32).unwrap();
    let keys = ["k5", "k1", "k3", "k4", "k2", "k1"];
    let seen = Mutex::new(Vec::new());
    let values = region
        .get_or_create_multi(&keys, |missing| {
            seen.lock()
                .unwrap()
                .extend(missing.iter().map(|k| k.to_string()));
            missing
                .iter()
                .map(|k| k[1..].parse::<u32>().unwrap())
                .collect()
        })
        .unwrap();
    assert_eq!(values, vec![5, 1, 3, 4, 2, 1]);
    assert_eq!(*seen.lock().unwrap(), vec!["k5", "k1", "k4", "k2"]);
}
