//! A memcached server killed while four threads call `get_or_create` in a loop: every call
//! returns the right value or a backend error naming the server, nothing panics, no call hangs
//! (the socket timeout bounds each), and when the server comes back caching resumes without
//! reconfiguring: values are hits again.
//!
//! (`tests/memcached.rs` covers one thread with `get`/`set` on a dead, restarted and silent
//! server; this adds the threads, `get_or_create`, and a silent server under several threads.)
#![cfg(feature = "memcached")]

mod support;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use dogpile::{make_region, CacheRegion, RegionConfig};
use support::{wait_for, Server};

const KEYS: usize = 20;

fn memcached() -> Option<Server> {
    Server::memcached()
}

fn region_on(addr: &str, socket_timeout: f64) -> CacheRegion {
    make_region()
        .configure(
            RegionConfig::new("dogpile.cache.memcached")
                .expiration_time(600)
                .argument("url", addr.to_string())
                .argument("socket_timeout", socket_timeout),
        )
        .unwrap()
}

fn value(key: usize) -> String {
    format!("value of key {key}")
}

#[derive(Default)]
struct Counts {
    calls: AtomicUsize,
    values: AtomicUsize,
    errors: AtomicUsize,
    creations: AtomicUsize,
}

#[test]
fn four_threads_through_a_dead_and_restarted_server() {
    let Some(mut server) = memcached() else {
        return;
    };
    let addr = server.addr();
    let region = Arc::new(region_on(&addr, 1.0));
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));

    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (region, counts, stop, addr) =
                (region.clone(), counts.clone(), stop.clone(), addr.clone());
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::SeqCst) {
                    let key = i % KEYS;
                    i += 1;
                    let name = format!("key:{key}");
                    let result = region.get_or_create(&name, || {
                        counts.creations.fetch_add(1, Ordering::SeqCst);
                        value(key)
                    });
                    match result {
                        Ok(v) => {
                            assert_eq!(v, value(key));
                            counts.values.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            assert!(e.is_backend(), "{e}");
                            assert!(e.to_string().contains(&addr), "{e}");
                            counts.errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    counts.calls.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // Alive: every key created once, then hits.
    wait_for("calls on the live server", || {
        counts.values.load(Ordering::SeqCst) >= 400
    });
    assert_eq!(counts.errors.load(Ordering::SeqCst), 0);
    // Every key was asked for (each thread cycles through all of them), and made once.
    assert_eq!(counts.creations.load(Ordering::SeqCst), KEYS);

    // Dead: errors naming the server (or values, for a call that created before failing).
    server.kill();
    let errors = counts.errors.load(Ordering::SeqCst);
    wait_for("errors from the dead server", || {
        counts.errors.load(Ordering::SeqCst) >= errors + 100
    });

    // Back: the same region, not reconfigured, caches again.
    server.restart();
    let values = counts.values.load(Ordering::SeqCst);
    wait_for("values after the restart", || {
        counts.values.load(Ordering::SeqCst) >= values + 400
    });
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("a caller thread panicked");
    }
    eprintln!(
        "calls {}, values {}, errors {}, creations {}",
        counts.calls.load(Ordering::SeqCst),
        counts.values.load(Ordering::SeqCst),
        counts.errors.load(Ordering::SeqCst),
        counts.creations.load(Ordering::SeqCst),
    );
    assert_eq!(region.lock_registry_len(), 0);

    // Every key is cached once more: a first pass may create (the restarted server is empty), a
    // second pass only hits.
    for key in 0..KEYS {
        let name = format!("key:{key}");
        assert_eq!(
            region.get_or_create(&name, || value(key)).unwrap(),
            value(key)
        );
    }
    let creations = counts.creations.load(Ordering::SeqCst);
    for key in 0..KEYS {
        let name = format!("key:{key}");
        let v = region
            .get_or_create(&name, || {
                counts.creations.fetch_add(1, Ordering::SeqCst);
                value(key)
            })
            .unwrap();
        assert_eq!(v, value(key));
        assert_eq!(region.get::<String>(&name).unwrap(), Some(value(key)));
    }
    assert_eq!(counts.creations.load(Ordering::SeqCst), creations);
}

#[test]
fn four_threads_on_a_server_that_never_answers_get_errors_not_hangs() {
    // A listener that never accepts: the kernel completes the connections, nobody answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let region = Arc::new(region_on(&addr, 0.3));
    let creations = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (region, creations, addr) = (region.clone(), creations.clone(), addr.clone());
            std::thread::spawn(move || {
                for round in 0..3 {
                    let key = format!("k{}", (t + round) % 2);
                    match region.get_or_create(&key, || {
                        creations.fetch_add(1, Ordering::SeqCst);
                        "made".to_string()
                    }) {
                        // Only a creator that ran could have a value to give.
                        Ok(v) => assert_eq!(v, "made"),
                        Err(e) => {
                            assert!(e.is_backend(), "{e}");
                            assert!(e.to_string().contains(&addr), "{e}");
                        }
                    }
                    let err = region.get::<String>(&key).unwrap_err();
                    assert!(err.to_string().contains(&addr), "{err}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a caller thread panicked");
    }
    assert_eq!(region.lock_registry_len(), 0);
    drop(silent);
}
