//! The file store's dogpile lock (`dogpile.cache.dbm` with its lock file): keys that share a
//! lock byte never deadlock, in one process or across processes; waits end by their deadline;
//! a release that holds nothing is an error and frees nothing.
//!
//! The keys that share a byte are found by brute force with the store's own slot function, so
//! the tests follow it if it changes. A hang is caught by a generous deadline on a helper thread.
#![cfg(all(feature = "file", target_os = "linux"))]

mod support;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dogpile_backends::file::{lock_slot, FileBackend};
use support::{
    append_line, child_role, env_path, file_store_region, spawn_child, wait_for, within, TempDir,
};

/// How long the two-process test lets its children run before it counts them as deadlocked.
const HANG: Duration = Duration::from_secs(60);

/// Two keys that start with `prefix` and share a lock byte.
fn slot_mates(prefix: &str) -> (String, String) {
    let mut seen = HashMap::new();
    for i in 0u64.. {
        let k = format!("{prefix}{i}");
        if let Some(other) = seen.insert(lock_slot(&k), k.clone()) {
            return (other, k);
        }
    }
    unreachable!("the key space is unbounded")
}

#[test]
fn a_cold_batch_over_two_keys_on_one_lock_byte_completes() {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("file-lock-batch");
    let region = file_store_region(&dir.path().join("cache.db"));
    let (a, b) = slot_mates("batch:");
    let keys = vec![a.clone(), "batch:other".to_string(), b.clone()];
    let (values, asked) = within("a cold batch over slot-mates", move || {
        let mut asked = Vec::new();
        let values = region
            .get_or_create_multi(&keys, |ks| {
                asked = ks.iter().map(|k| k.to_string()).collect();
                ks.iter().map(|k| format!("v:{k}")).collect::<Vec<_>>()
            })
            .unwrap();
        // The locks are all free again.
        for k in &keys {
            assert!(!region.key_is_locked(k).unwrap(), "{k} still locked");
        }
        (values, asked)
    });
    assert_eq!(asked.len(), 3);
    assert_eq!(
        values,
        vec![
            format!("v:{a}"),
            "v:batch:other".to_string(),
            format!("v:{b}")
        ]
    );
}

#[test]
fn a_creator_that_asks_for_its_slot_mate_completes() {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("file-lock-nested");
    let region = file_store_region(&dir.path().join("cache.db"));
    let (a, b) = slot_mates("nested:");
    let (outer, inner) = within("a creator asking for its slot-mate", move || {
        let outer: String = region
            .get_or_create(&a, || {
                let inner: String = region.get_or_create(&b, || "inner".to_string()).unwrap();
                // The slot-mate's release leaves the outer key held.
                assert!(region.key_is_locked(&a).unwrap());
                assert!(!region.key_is_locked(&b).unwrap());
                format!("outer+{inner}")
            })
            .unwrap();
        assert!(!region.key_is_locked(&a).unwrap());
        (outer, region.get::<String>(&b).unwrap())
    });
    assert_eq!(outer, "outer+inner");
    assert_eq!(inner.as_deref(), Some("inner"));
}

/// The keys of one round of the two-process test: a pair on one lock byte and a third key.
fn round_keys(round: usize) -> Vec<String> {
    let (a, b) = slot_mates(&format!("round{round}:"));
    vec![a, format!("round{round}:solo"), b]
}

const ROUNDS: usize = 12;

/// A child's part: every round's batch, in the order its role says, logging each creation.
fn batcher(reverse: bool) {
    let store = env_path("DOGPILE_TEST_STORE");
    let log = env_path("DOGPILE_TEST_LOG");
    let go = env_path("DOGPILE_TEST_GO");
    let region = file_store_region(&store);
    append_line(&log.with_extension("ready"), "ready");
    wait_for("the go file", || go.exists());
    for round in 0..ROUNDS {
        let mut keys = round_keys(round);
        if reverse {
            keys.reverse();
        }
        let values: Vec<String> = region
            .get_or_create_multi(&keys, |ks| {
                for k in ks {
                    append_line(&log, k);
                }
                // Long enough that the other process arrives while these are held.
                std::thread::sleep(Duration::from_millis(20));
                ks.iter().map(|k| format!("v:{k}")).collect()
            })
            .unwrap();
        let expected: Vec<String> = keys.iter().map(|k| format!("v:{k}")).collect();
        assert_eq!(values, expected, "round {round}");
    }
}

/// A child process, killed if the test ends before it does.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_processes_batching_slot_mates_in_opposite_orders_do_not_deadlock() {
    let test = "two_processes_batching_slot_mates_in_opposite_orders_do_not_deadlock";
    match child_role().as_deref() {
        Some("forward") => return batcher(false),
        Some("reverse") => return batcher(true),
        Some(_) => return,
        None => {}
    }
    let dir = TempDir::new("file-lock-procs");
    let store = dir.path().join("cache.db");
    drop(file_store_region(&store)); // made once here, not raced by the children
    let log = dir.path().join("created.log");
    let go = dir.path().join("go");
    let env = vec![
        ("DOGPILE_TEST_STORE", store.to_string_lossy().into_owned()),
        ("DOGPILE_TEST_LOG", log.to_string_lossy().into_owned()),
        ("DOGPILE_TEST_GO", go.to_string_lossy().into_owned()),
    ];
    let mut children = [
        Child(spawn_child(test, "forward", &env)),
        Child(spawn_child(test, "reverse", &env)),
    ];
    let ready = log.with_extension("ready");
    wait_for("both children to be ready", || {
        fs::read_to_string(&ready).is_ok_and(|s| s.lines().count() == 2)
    });
    fs::write(&go, b"go").unwrap();
    let deadline = Instant::now() + HANG;
    for (i, child) in children.iter_mut().enumerate() {
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "child {i} did not finish within {HANG:?}: the batches deadlock"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(status.success(), "child {i} failed: {status}");
    }
    // Each key was created once, by one of the two processes.
    let created = fs::read_to_string(&log).unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for k in created.lines() {
        *counts.entry(k).or_default() += 1;
    }
    for round in 0..ROUNDS {
        for k in round_keys(round) {
            assert_eq!(counts.get(k.as_str()), Some(&1), "creations of {k}");
        }
    }
    assert_eq!(counts.len(), 3 * ROUNDS);
}

/// The file store at `store`, with its default lock file, as a backend to take locks of.
fn store_backend(store: &Path) -> FileBackend {
    FileBackend::from_arguments(
        &dogpile_core::Arguments::new().with("filename", store.to_string_lossy().into_owned()),
    )
    .unwrap()
}

/// The lock file of a store, and a description of it of our own: what another process holds.
fn foreign_description(store: &Path) -> File {
    let mut lock = store.as_os_str().to_owned();
    lock.push(".dogpile.lock");
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(PathBuf::from(lock))
        .unwrap()
}

/// Takes (or, with `F_UNLCK`, drops) an exclusive OFD lock on `key`'s byte: as another process.
fn foreign_lock(file: &File, key: &str, kind: libc::c_int) -> bool {
    // SAFETY: all-zero bytes are a valid `flock`.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = lock_slot(key) as _;
    fl.l_len = 1;
    // SAFETY: the descriptor is open and `fl` is a valid, live `flock`.
    unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_OFD_SETLK,
            &mut fl as *mut libc::flock,
        ) != -1
    }
}

#[test]
fn a_wait_on_a_key_held_by_another_process_ends_by_its_deadline() {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("file-lock-deadline");
    let store = dir.path().join("cache.db");
    let backend = store_backend(&store);
    let other = foreign_description(&store);
    assert!(foreign_lock(&other, "k", libc::F_WRLCK));
    let m = dogpile_core::Backend::get_mutex(&backend, "k").unwrap();
    assert!(m.locked().unwrap());
    assert!(!m.try_acquire().unwrap());
    let waited = within("a bounded wait on a foreign holder", move || {
        let start = Instant::now();
        m.wait(start + Duration::from_millis(50)).unwrap();
        let waited = start.elapsed();
        (m, waited)
    });
    let (m, waited) = waited;
    assert!(
        waited >= Duration::from_millis(50),
        "returned early: {waited:?}"
    );
    // The holder lets go: now it can be taken.
    assert!(foreign_lock(&other, "k", libc::F_UNLCK));
    assert!(m.try_acquire().unwrap());
    assert!(
        !foreign_lock(&other, "k", libc::F_WRLCK),
        "another process got in"
    );
    m.release().unwrap();
    assert!(foreign_lock(&other, "k", libc::F_WRLCK));
}

#[test]
fn an_async_wait_on_a_key_held_by_another_process_ends_by_its_deadline() {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("file-lock-deadline-async");
    let store = dir.path().join("cache.db");
    let backend = store_backend(&store);
    let other = foreign_description(&store);
    assert!(foreign_lock(&other, "k", libc::F_WRLCK));
    let m: std::sync::Arc<dyn dogpile_core::CacheMutex> =
        dogpile_core::Backend::get_mutex(&backend, "k")
            .unwrap()
            .into();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let waiter = m.clone();
    let ticks = within("a bounded async wait on a foreign holder", move || {
        runtime.block_on(async move {
            let wait = tokio::spawn(waiter.wait_async(Instant::now() + Duration::from_millis(50)));
            // The executor's one thread stays free while the wait polls.
            let mut ticks = 0;
            while !wait.is_finished() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks += 1;
            }
            wait.await.unwrap().unwrap();
            ticks
        })
    });
    assert!(ticks > 0, "the wait held the executor's thread");
    assert!(m.locked().unwrap(), "still held by the other process");
    assert!(foreign_lock(&other, "k", libc::F_UNLCK));
    assert!(!m.locked().unwrap());
}

#[test]
fn releasing_a_lock_not_held_is_an_error_and_frees_nothing() {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("file-lock-release");
    let store = dir.path().join("cache.db");
    let backend = store_backend(&store);
    let mutex = |k: &str| dogpile_core::Backend::get_mutex(&backend, k).unwrap();
    let (a, b) = slot_mates("release:");
    let holder = mutex(&a);
    let stray = mutex(&a);
    let mate = mutex(&b);

    // Never taken: an error naming the key, as dogpile's "No acquire held for key".
    let err = stray.release().unwrap_err().to_string();
    assert!(err.contains("No acquire held for key"), "{err}");
    assert!(err.contains(&a), "{err}");

    assert!(holder.try_acquire().unwrap());
    assert!(mate.try_acquire().unwrap());
    // A stray release of a held key, and of its slot-mate by a handle that does not hold it.
    assert!(stray.release().is_err());
    assert!(mutex(&b).release().is_err());
    assert!(holder.locked().unwrap() && stray.locked().unwrap());
    assert!(
        !stray.try_acquire().unwrap(),
        "the stray release freed the holder's lock"
    );
    let other = foreign_description(&store);
    assert!(
        !foreign_lock(&other, &a, libc::F_WRLCK),
        "the byte was freed"
    );

    // The holder's release frees its key, not its slot-mate's share.
    holder.release().unwrap();
    assert!(
        holder.release().is_err(),
        "a second release is an error too"
    );
    assert!(
        !foreign_lock(&other, &a, libc::F_WRLCK),
        "the mate's share was freed"
    );
    assert!(mate.locked().unwrap());
    mate.release().unwrap();
    assert!(foreign_lock(&other, &a, libc::F_WRLCK));
}
