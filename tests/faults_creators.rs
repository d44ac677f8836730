//! Panicking and failing creators: 8 threads over 100 keys on the memory backend, where the
//! creator panics in 5% of its calls and returns `Err` in another 5%. The test finishes (no
//! deadlock, no poisoned state), each panic or error reaches only the caller whose creator made it,
//! every other caller gets the key's correct value, and the lock registry is empty at the end.
//!
//! (Alone in its file: it installs a panic hook that keeps the planned panics quiet.)

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use dogpile::{make_region, CreateError, CreateOptions, Expiration, RegionConfig};

const THREADS: u64 = 8;
const KEYS: u64 = 100;
const ROUNDS: u64 = 25;

/// A well-mixed hash (splitmix64's finalizer): the plan of each call is fixed by its thread, key
/// and round, so a failure replays the same way.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Panic,
    Fail,
    Succeed,
}

fn plan(thread: u64, key: u64, round: u64) -> (Plan, bool) {
    let h = mix((thread << 40) | (key << 20) | round) % 100;
    let plan = match h {
        0..5 => Plan::Panic,
        5..10 => Plan::Fail,
        _ => Plan::Succeed,
    };
    // In another 5% of the calls the caller deletes the key first, so callers also meet an absent
    // value (and wait) rather than only an expired one (and get it at once).
    (plan, (10..15).contains(&h))
}

fn value(key: u64) -> String {
    format!("value of key {key}")
}

fn panic_message(thread: u64, key: u64, round: u64) -> String {
    format!("planned panic: thread {thread} key {key} round {round}")
}

#[derive(Debug, PartialEq, Eq)]
struct Failure {
    thread: u64,
    key: u64,
    round: u64,
}

#[test]
fn panicking_and_failing_creators_hurt_only_their_callers() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let planned = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.starts_with("planned panic"));
        if !planned {
            default_hook(info);
        }
    }));

    // Expiration 0: every value is expired at once, so nearly every call takes the lock and runs
    // its creator (or, when another caller holds it, gets the expired value at once).
    let region = Arc::new(
        make_region()
            .configure(
                RegionConfig::new("dogpile.cache.memory")
                    .expiration_time(Expiration::After(std::time::Duration::ZERO)),
            )
            .unwrap(),
    );
    let panics = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let creations = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(THREADS as usize));

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (region, start) = (region.clone(), start.clone());
            let (panics, failures) = (panics.clone(), failures.clone());
            let (creations, hits) = (creations.clone(), hits.clone());
            std::thread::spawn(move || {
                start.wait();
                let options = CreateOptions::new();
                for round in 0..ROUNDS {
                    for i in 0..KEYS {
                        // Each thread walks the keys in its own order.
                        let key = (i * 37 + t * 11 + round * 7) % KEYS;
                        let name = format!("key:{key}");
                        let (plan, delete_first) = plan(t, key, round);
                        if delete_first {
                            region.delete(&name).unwrap();
                        }
                        let mut ran = false;
                        let outcome = catch_unwind(AssertUnwindSafe(|| {
                            region.try_get_or_create(&name, &options, || {
                                ran = true;
                                if key % 3 == 0 {
                                    // Some slow creators, so that others meet the held lock.
                                    std::thread::yield_now();
                                }
                                match plan {
                                    Plan::Panic => panic!("{}", panic_message(t, key, round)),
                                    Plan::Fail => Err(Failure {
                                        thread: t,
                                        key,
                                        round,
                                    }),
                                    Plan::Succeed => Ok(value(key)),
                                }
                            })
                        }));
                        match outcome {
                            Err(payload) => {
                                let message = payload.downcast_ref::<String>().cloned();
                                assert!(ran && plan == Plan::Panic, "{message:?}");
                                assert_eq!(message, Some(panic_message(t, key, round)));
                                panics.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Err(CreateError::Creator(f))) => {
                                assert!(ran && plan == Plan::Fail, "{f:?}");
                                assert_eq!(
                                    f,
                                    Failure {
                                        thread: t,
                                        key,
                                        round
                                    }
                                );
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Err(CreateError::Cache(e))) => panic!("cache error: {e}"),
                            Ok(Ok(v)) => {
                                assert!(!ran || plan == Plan::Succeed, "{plan:?}");
                                assert_eq!(v, value(key));
                                if ran {
                                    creations.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    hits.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a caller thread failed");
    }

    let (panics, failures) = (
        panics.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst),
    );
    let (creations, hits) = (
        creations.load(Ordering::SeqCst),
        hits.load(Ordering::SeqCst),
    );
    eprintln!("{panics} panics, {failures} errors, {creations} creations, {hits} without creating");
    assert_eq!(
        panics + failures + creations + hits,
        (THREADS * KEYS * ROUNDS) as usize
    );
    assert!(panics > 0 && failures > 0 && creations > 0);

    // Nothing is left locked, and every key works.
    assert_eq!(region.lock_registry_len(), 0);
    for key in 0..KEYS {
        let name = format!("key:{key}");
        assert!(!region.key_is_locked(&name).unwrap());
        assert_eq!(
            region.get_or_create(&name, || value(key)).unwrap(),
            value(key)
        );
    }
    assert_eq!(region.lock_registry_len(), 0);
}

/// The same on an absent key with several waiters: the holder's creator panics while the others
/// wait; one of the waiters takes over and every waiter gets its value.
#[test]
fn waiters_survive_a_panicking_holder() {
    let region = Arc::new(make_region().configure("dogpile.cache.memory").unwrap());
    for round in 0..50u64 {
        let key = format!("cold:{round}");
        let entered = Arc::new(Barrier::new(2));
        let holder = {
            let (region, key, entered) = (region.clone(), key.clone(), entered.clone());
            std::thread::spawn(move || {
                catch_unwind(AssertUnwindSafe(|| {
                    region.get_or_create(&key, || -> String {
                        entered.wait();
                        std::thread::yield_now();
                        panic!("{}", panic_message(99, round, round))
                    })
                }))
                .is_err()
            })
        };
        entered.wait();
        let waiters: Vec<_> = (0..3u64)
            .map(|w| {
                let (region, key) = (region.clone(), key.clone());
                std::thread::spawn(move || {
                    region
                        .get_or_create(&key, || format!("made by waiter {w}"))
                        .unwrap()
                })
            })
            .collect();
        assert!(
            holder.join().unwrap(),
            "the holder's panic reaches the holder"
        );
        let got: Vec<String> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        assert!(got.windows(2).all(|w| w[0] == w[1]), "{got:?}");
        assert!(got[0].starts_with("made by waiter"), "{got:?}");
        assert_eq!(region.lock_registry_len(), 0);
    }
}
