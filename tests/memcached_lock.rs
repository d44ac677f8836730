//! The memcached lock (issue 11, items 4 and 8): a live holder keeps its lock past
//! `lock_timeout`, a release deletes only our own lock, an add whose answer was lost is
//! recognised or deleted, an add or a delete sent twice over a broken connection is taken for
//! what its first send did, and releasing a lock not held is an error; and the shared soak
//! (`tests/support/soak.rs`): 8 threads under faults that come and go, one creator per key, no
//! lock left. Real servers on free loopback ports; the loopback fault proxy makes the lost and
//! late answers.
#![cfg(feature = "memcached")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile::backend::memcached::MemcachedBackend;
use dogpile::config::Arguments;
use dogpile::{Backend, CacheMutex};
use support::fault_proxy::{Fault, FaultProxy};
use support::log_recorder::Recorder;
use support::{memcached_locking_region as region, within, Server};
use tracing::Level;

fn backend(addr: &str, lock_timeout: u64, socket_timeout: f64) -> MemcachedBackend {
    MemcachedBackend::from_arguments(
        &Arguments::new()
            .with("url", addr)
            .with("distributed_lock", true)
            .with("lock_timeout", lock_timeout)
            .with("socket_timeout", socket_timeout),
    )
    .unwrap()
}

fn mutex(b: &MemcachedBackend, key: &str) -> Box<dyn CacheMutex> {
    b.get_mutex(key).expect("a distributed mutex")
}

/// Waits up to `bound` for `cond`; whether it came true.
fn eventually(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn a_creation_longer_than_lock_timeout_keeps_one_creator() {
    let Some(server) = Server::memcached() else {
        return;
    };
    // Two regions stand for two processes: only the memcached lock is shared.
    let (a, b) = (
        Arc::new(region(&server.addr(), 2)),
        Arc::new(region(&server.addr(), 2)),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let slow = {
        let (a, calls) = (a.clone(), calls.clone());
        std::thread::spawn(move || {
            a.get_or_create("slow", || {
                calls.fetch_add(1, Ordering::SeqCst);
                // Three times lock_timeout: the lock lives only because it is extended.
                std::thread::sleep(Duration::from_secs(6));
                "first".to_string()
            })
            .unwrap()
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let late = {
        let calls = calls.clone();
        within("the second caller", move || {
            b.get_or_create("slow", || {
                calls.fetch_add(1, Ordering::SeqCst);
                "second".to_string()
            })
            .unwrap()
        })
    };
    assert_eq!(slow.join().unwrap(), "first");
    assert_eq!(late, "first", "a second creator ran while the first lived");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(!a.key_is_locked("slow").unwrap());
}

#[test]
fn a_late_release_does_not_delete_the_lock_another_holder_took() {
    let Some(server) = Server::memcached() else {
        return;
    };
    let proxy = FaultProxy::start(&server.addr());
    let ours = backend(&proxy.addr(), 30, 10.0);
    let theirs = backend(&server.addr(), 30, 2.0);
    let m = mutex(&ours, "k");
    assert!(m.try_acquire().unwrap());
    // Each way takes a second now: a release that checks the token and then deletes sends its
    // delete two seconds after the check reached the server.
    proxy.set(Fault::Latency(Duration::from_secs(1)));
    let release = std::thread::spawn(move || m.release());
    std::thread::sleep(Duration::from_secs(2));
    // Meanwhile our lock is gone (as if it expired) and another holder takes it.
    support::memcached_line(&server.addr(), b"delete _lockk\r\n");
    let other = mutex(&theirs, "k");
    assert!(other.try_acquire().unwrap());
    within("the late release", move || release.join().unwrap()).unwrap();
    assert!(
        other.locked().unwrap(),
        "our late release deleted the other holder's lock"
    );
    other.release().unwrap();
    assert!(!other.locked().unwrap());
}

/// One counter of memcached's `stats`.
fn stat(addr: &str, name: &str) -> u64 {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"stats\r\n").unwrap();
    let mut lines = BufReader::new(s).lines();
    let prefix = format!("STAT {name} ");
    loop {
        let line = lines.next().expect("a stats line").unwrap();
        assert_ne!(line, "END", "no stat {name}");
        if let Some(v) = line.strip_prefix(&prefix) {
            return v.parse().unwrap();
        }
    }
}

/// A backend through a fault proxy (`ours`, 0.3 s socket timeout) and one straight to the
/// server (`direct`), both with a 60 s lock_timeout.
fn proxied(server: &Server) -> (FaultProxy, MemcachedBackend, MemcachedBackend) {
    let proxy = FaultProxy::start(&server.addr());
    let ours = backend(&proxy.addr(), 60, 0.3);
    let direct = backend(&server.addr(), 60, 2.0);
    (proxy, ours, direct)
}

/// Whether the lock of "k" exists, as another process sees it.
fn k_locked(direct: &MemcachedBackend) -> bool {
    mutex(direct, "k").locked().unwrap()
}

/// An add sent through a link slower than `socket_timeout`: the caller gets an error, and the
/// add reaches the server afterwards and stores the handle's token (its answer is lost).
fn add_with_a_lost_answer(proxy: &FaultProxy, m: Box<dyn CacheMutex>) -> Box<dyn CacheMutex> {
    proxy.set(Fault::Latency(Duration::from_millis(1500)));
    let (m, taken) = within("an add over a slow link", move || {
        let r = m.try_acquire();
        (m, r)
    });
    assert!(taken.is_err(), "{taken:?}");
    // New connections are fast again; the add already sent is still on its way.
    proxy.set(Fault::Pass);
    m
}

#[test]
fn an_add_whose_answer_is_lost_leaves_no_lock_once_the_fault_clears() {
    let Some(server) = Server::memcached() else {
        return;
    };
    let (proxy, ours, direct) = proxied(&server);
    let m = add_with_a_lost_answer(&proxy, mutex(&ours, "k"));
    // The caller gave up on the lock (the region runs the body without it).
    drop(m);
    assert!(
        eventually(Duration::from_secs(10), || stat(&server.addr(), "delete_hits") > 0
            && !k_locked(&direct)),
        "a lock of ours that nobody holds is still there 10 s after the fault cleared (lock_timeout is 60 s)"
    );
}

#[test]
fn a_retried_add_recognises_our_own_lock() {
    let Some(server) = Server::memcached() else {
        return;
    };
    let (proxy, ours, direct) = proxied(&server);
    let m = add_with_a_lost_answer(&proxy, mutex(&ours, "k"));
    assert!(
        eventually(Duration::from_secs(10), || k_locked(&direct)),
        "the slow add never reached the server"
    );
    // Our own first add stored the lock: trying again finds it ours, not someone else's.
    assert!(
        m.try_acquire().unwrap(),
        "our own lock was taken for another's"
    );
    m.release().unwrap();
    assert!(!k_locked(&direct));
}

#[test]
fn an_add_stored_before_its_connection_broke_is_ours_when_sent_again() {
    let Some(server) = Server::memcached() else {
        return;
    };
    let (proxy, ours, direct) = proxied(&server);
    // One call first, so the add goes out on a pooled connection: a broken pooled connection
    // is the one a request is sent again on.
    assert!(!mutex(&ours, "warm").locked().unwrap());
    let m = mutex(&ours, "k");
    proxy.set(Fault::LoseNextReply);
    // The server stores the add; its answer is lost with the connection, the client sends the
    // add again on a new one and hears "already held": by our own token.
    let taken = m.try_acquire().unwrap();
    assert_eq!(proxy.fault(), Fault::Pass, "the fault never fired");
    assert!(k_locked(&direct), "the add never reached the server");
    assert!(
        taken,
        "our own stored add was taken for another holder's lock: nobody holds it, and every \
         waiter waits for lock_timeout (60 s)"
    );
    m.release().unwrap();
    assert!(!k_locked(&direct), "the release left our lock behind");
}

#[test]
fn a_release_whose_delete_landed_before_its_connection_broke_is_no_lost_lock() {
    let Some(server) = Server::memcached() else {
        return;
    };
    let (proxy, ours, direct) = proxied(&server);
    let m = mutex(&ours, "k");
    assert!(m.try_acquire().unwrap());
    assert!(k_locked(&direct));
    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        // The server deletes our lock; the answer is lost with the connection, and the delete
        // sent again on a new one hears "not found": deleted by its own first send.
        proxy.set(Fault::LoseNextReply);
        m.release().unwrap();
    });
    assert_eq!(proxy.fault(), Fault::Pass, "the fault never fired");
    assert!(!k_locked(&direct), "the release left our lock behind");
    let warnings = recorder.at(Level::WARN);
    assert!(
        warnings.is_empty(),
        "a release done by its first send was logged as a lost lock: {warnings:?}"
    );
    assert!(
        recorder
            .at(Level::DEBUG)
            .iter()
            .any(|t| t.contains("sent again") && t.contains("_lockk")),
        "{:?}",
        recorder.events()
    );
}

#[test]
fn releasing_a_lock_not_held_is_an_error() {
    let Some(server) = Server::memcached() else {
        return;
    };
    let b = backend(&server.addr(), 30, 2.0);
    let m = mutex(&b, "k");
    let err = m.release().unwrap_err().to_string();
    assert!(
        err.contains("no acquire held") && err.contains("_lockk"),
        "{err}"
    );
    assert!(m.try_acquire().unwrap());
    let other = mutex(&b, "k");
    assert!(other.release().is_err());
    assert!(
        other.locked().unwrap(),
        "a release by a handle that did not hold the lock freed it"
    );
    m.release().unwrap();
    assert!(m.release().is_err(), "a second release");
    assert!(!other.locked().unwrap());
}

/// The lock keys on the server (memcached's `lru_crawler metadump`, read directly, not through
/// the proxy), URL-encoded as memcached prints them.
fn lock_keys(addr: &str) -> Vec<String> {
    // memcached answers BUSY while its own LRU crawler runs (often, with the soak's short
    // expirations): ask again shortly.
    for _ in 0..1000 {
        if let Some(keys) = try_lock_keys(addr) {
            return keys;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("memcached's lru_crawler stayed busy for 10 s");
}

/// [`lock_keys`], or `None` when the crawler is busy.
fn try_lock_keys(addr: &str) -> Option<Vec<String>> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"lru_crawler metadump all\r\n").unwrap();
    let mut keys = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = line.expect("a metadump line");
        if line == "END" {
            break;
        }
        if line.starts_with("BUSY") {
            return None;
        }
        assert!(!line.starts_with("ERROR"), "{line}");
        let key = line
            .split(' ')
            .find_map(|field| field.strip_prefix("key="))
            .unwrap_or_else(|| panic!("a metadump line without a key: {line}"));
        if key.starts_with("_lock") {
            keys.push(key.to_string());
        }
    }
    keys.sort();
    Some(keys)
}

#[test]
fn lock_keys_lists_a_held_lock_and_only_locks() {
    let Some(server) = Server::memcached() else {
        return;
    };
    let b = backend(&server.addr(), 30, 2.0);
    support::memcached_line(&server.addr(), b"set plain 0 0 1\r\nx\r\n");
    assert_eq!(lock_keys(&server.addr()), Vec::<String>::new());
    let m = mutex(&b, "k");
    assert!(m.try_acquire().unwrap());
    assert_eq!(lock_keys(&server.addr()), vec!["_lockk".to_string()]);
    m.release().unwrap();
    assert_eq!(lock_keys(&server.addr()), Vec::<String>::new());
}

/// The shared soak (`tests/support/soak.rs`) on memcached: 8 threads under faults that come and
/// go; every call returns within a bound with the right value, no key has two creators under
/// the lock, and no lock is left once the faults stop (well before their 300 s lease).
#[test]
fn decorated_functions_under_faults_that_come_and_go() {
    let Some(server) = Server::memcached() else {
        return;
    };
    let proxy = FaultProxy::start(&server.addr());
    let config = dogpile::RegionConfig::new("dogpile.cache.memcached")
        .expiration_time(Duration::from_millis(200))
        .argument("url", proxy.addr())
        .argument("socket_timeout", 0.3)
        .argument("distributed_lock", true)
        .argument("lock_timeout", 300);
    let addr = server.addr();
    support::soak::run(config, &proxy, &|| lock_keys(&addr));
}
