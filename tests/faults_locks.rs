//! A crashed lock holder: a child process takes the distributed lock (in its creator) and is
//! killed with SIGKILL. While it lived, nobody else created; after its death two waiting processes
//! go on, and exactly one of them creates: after `lock_timeout` on memcached (the lock is a key
//! that expires), at once on the file store (the kernel drops a dead process's file locks).
//!
//! (`tests/memcached.rs` checks the expiry of a lock whose holder stopped in-process, and
//! `tests/file_store.rs` a killed holder with one waiter; this adds real processes on memcached,
//! several waiters, and the check that nobody created while the holder lived.)
#![cfg(any(feature = "file", feature = "memcached"))]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use dogpile::{make_region, CacheRegion, RegionConfig};
use support::{append_line, child_role, spawn_child, wait_child, wait_for, TempDir};

/// memcached's lock timeout here: long enough that the holder dies well before it expires.
const LOCK_TIMEOUT: u64 = 6;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The region a process uses, from `DOGPILE_TEST_BACKEND` and `DOGPILE_TEST_WHERE`.
fn region(backend: &str, at: &str) -> CacheRegion {
    let config = match backend {
        "file" => RegionConfig::new("dogpile.cache.dbm").argument("filename", at.to_string()),
        "memcached" => RegionConfig::new("dogpile.cache.memcached")
            .argument("url", at.to_string())
            .argument("distributed_lock", true)
            .argument("lock_timeout", LOCK_TIMEOUT)
            .argument("socket_timeout", 5.0),
        other => panic!("unknown backend {other}"),
    };
    make_region()
        .configure(config.expiration_time(600))
        .unwrap()
}

/// The child processes' part: a holder that dies in its creator, or a waiter.
fn child(role: &str) {
    let region = region(&env("DOGPILE_TEST_BACKEND"), &env("DOGPILE_TEST_WHERE"));
    let dir = PathBuf::from(env("DOGPILE_TEST_DIR"));
    let creations = dir.join("creations");
    if role == "holder" {
        let _: String = region
            .get_or_create("k", || {
                append_line(&creations, "holder");
                fs::write(dir.join("holder.in"), b"in the creator").unwrap();
                // Killed here, holding the lock.
                std::thread::sleep(Duration::from_secs(600));
                "never".to_string()
            })
            .unwrap();
        unreachable!("the holder is killed in its creator");
    }
    fs::write(dir.join(format!("{role}.ready")), b"ready").unwrap();
    let v: String = region
        .get_or_create("k", || {
            append_line(&creations, role);
            format!("made by {role}")
        })
        .unwrap();
    fs::write(dir.join(format!("{role}.result")), v).unwrap();
}

fn crashed_holder(test: &str, backend: &str, at: &str) {
    let dir = TempDir::new(&format!("faults-lock-{backend}"));
    let creations = dir.path().join("creations");
    let envs = [
        ("DOGPILE_TEST_BACKEND", backend.to_string()),
        ("DOGPILE_TEST_WHERE", at.to_string()),
        (
            "DOGPILE_TEST_DIR",
            dir.path().to_string_lossy().into_owned(),
        ),
    ];
    let observer = region(backend, at);

    let mut holder = spawn_child(test, "holder", &envs);
    wait_for("the holder to enter its creator", || {
        dir.path().join("holder.in").exists()
    });
    assert!(observer.key_is_locked("k").unwrap());

    let mut waiters: Vec<Child> = ["waiter1", "waiter2"]
        .iter()
        .map(|role| spawn_child(test, role, &envs))
        .collect();
    wait_for("the waiters to start", || {
        ["waiter1", "waiter2"]
            .iter()
            .all(|r| dir.path().join(format!("{r}.ready")).exists())
    });
    // Give the waiters time to reach the lock: they must be blocked on it, not creating.
    std::thread::sleep(Duration::from_millis(300));
    // A live holder keeps its lock on every backend: the file lock is held by its process, and
    // the Redis and memcached locks are extended by a keeper thread of the holder.
    assert_eq!(
        lines(&creations),
        vec!["holder"],
        "nobody else creates while the holder lives"
    );
    for w in &mut waiters {
        assert!(
            w.try_wait().unwrap().is_none(),
            "a waiter finished while the lock was held"
        );
    }
    assert!(observer.key_is_locked("k").unwrap());

    holder.kill().unwrap(); // SIGKILL: no destructor, no release.
    holder.wait().unwrap();

    for (w, role) in waiters.iter_mut().zip(["waiter1", "waiter2"]) {
        let status = wait_child(w, "a waiter to get a value");
        assert!(status.success(), "{role}: {status}");
    }
    let made = lines(&creations);
    assert_eq!(made.len(), 2, "the holder and one waiter create: {made:?}");
    assert_eq!(made[0], "holder");
    let expected = format!("made by {}", made[1]);
    for role in ["waiter1", "waiter2"] {
        let result = fs::read_to_string(dir.path().join(format!("{role}.result"))).unwrap();
        assert_eq!(result, expected, "{role}");
    }
    assert_eq!(
        observer.get::<String>("k").unwrap().as_deref(),
        Some(expected.as_str())
    );
    assert!(!observer.key_is_locked("k").unwrap());
}

#[cfg(feature = "file")]
#[test]
fn file_store_holder_killed_with_sigkill() {
    if let Some(role) = child_role() {
        return child(&role);
    }
    let dir = TempDir::new("faults-lock-store");
    let store = dir.path().join("cache.db");
    crashed_holder(
        "file_store_holder_killed_with_sigkill",
        "file",
        &store.to_string_lossy(),
    );
}

#[cfg(feature = "memcached")]
#[test]
fn memcached_holder_killed_with_sigkill() {
    if let Some(role) = child_role() {
        return child(&role);
    }
    let Some(server) = support::Server::memcached() else {
        return;
    };
    crashed_holder(
        "memcached_holder_killed_with_sigkill",
        "memcached",
        &server.addr(),
    );
}
