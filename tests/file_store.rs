//! The embedded file store, `dogpile.cache.dbm`: region round trips, persistence, several OS
//! processes on one key, a creator killed while holding the lock, and bad files.
#![cfg(feature = "file")]

mod support;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use dogpile::clock::Clock;
use dogpile::{CacheRegion, RegionConfig};
use support::{append_line, child_role, env_path, spawn_child, wait_child, wait_for, TempDir};

fn store_config(path: &Path) -> RegionConfig {
    RegionConfig::new("dogpile.cache.dbm")
        .expiration_time(60)
        .argument("filename", path.to_string_lossy().into_owned())
}

fn region_at(path: &Path) -> CacheRegion {
    dogpile::make_region()
        .configure(store_config(path))
        .expect("configuring the file store")
}

fn count_lines(path: &Path) -> usize {
    fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn round_trips_of_every_region_operation() {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("file-roundtrip");
    let path = dir.path().join("cache.db");
    let (clock, manual) = Clock::manual(SystemTime::now());
    let region = dogpile::make_region()
        .configure(store_config(&path).clock(clock))
        .unwrap();

    support::check_region_operations(&region, &manual);

    // The dogpile lock is the file lock: visible inside a creation, free again after it.
    let locked_inside = region
        .get_or_create("locked", || region.key_is_locked("locked").unwrap())
        .unwrap();
    assert!(locked_inside);
    assert!(!region.key_is_locked("locked").unwrap());
}

#[test]
fn values_survive_a_restart_and_configs_read_as_in_dogpile() {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("file-restart");
    let path = dir.path().join("file.dbm");
    {
        let region = region_at(&path);
        region.set("kept", vec![1u8, 2, 3]).unwrap();
        region.set("big", "x".repeat(1 << 20)).unwrap();
    }
    let map = [
        ("cache.local.backend", "dogpile.cache.dbm".to_string()),
        ("cache.local.expiration_time", "300".to_string()),
        (
            "cache.local.arguments.filename",
            path.to_string_lossy().into_owned(),
        ),
        ("cache.local.arguments.rw_lockfile", "false".to_string()),
        (
            "cache.local.arguments.dogpile_lockfile",
            dir.path().join("locks").to_string_lossy().into_owned(),
        ),
    ];
    let region = CacheRegion::new();
    region.configure_from_config(map, "cache.local.").unwrap();
    assert_eq!(region.get::<Vec<u8>>("kept").unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(
        region.get::<String>("big").unwrap().map(|s| s.len()),
        Some(1 << 20)
    );
    // The lock file given is the one used.
    region.get_or_create("x", || 1u8).unwrap();
    assert!(dir.path().join("locks").exists());
}

#[test]
fn several_regions_in_one_process_share_the_store_and_the_lock() {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("file-threads");
    let path = dir.path().join("cache.db");
    let regions: Vec<CacheRegion> = (0..4).map(|_| region_at(&path)).collect();
    let calls = AtomicUsize::new(0);
    let results: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let region = &regions[i % regions.len()];
                let calls = &calls;
                s.spawn(move || {
                    region
                        .get_or_create("cold", || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(100));
                            42u64
                        })
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(results.iter().all(|v| *v == 42));
}

/// A child process's part in the multi-process tests: wait for the go file, then
/// `get_or_create` the key, counting creations in the counter file.
fn contender() {
    let store = env_path("DOGPILE_TEST_STORE");
    let counter = env_path("DOGPILE_TEST_COUNTER");
    let go = env_path("DOGPILE_TEST_GO");
    let ready = env_path("DOGPILE_TEST_READY");
    let key = std::env::var("DOGPILE_TEST_KEY").unwrap();
    let region = region_at(&store);
    fs::write(&ready, b"ready").unwrap();
    wait_for("the go file", || go.exists());
    let value: String = region
        .get_or_create(&key, || {
            append_line(&counter, &std::process::id().to_string());
            // Long enough that every contender arrives while the creator runs.
            std::thread::sleep(Duration::from_millis(300));
            "new".to_string()
        })
        .unwrap();
    assert!(value == "new" || value == "old", "got {value:?}");
    append_line(
        &counter.with_extension("results"),
        &format!("{key} {value}"),
    );
}

fn run_contenders(test_name: &str, dir: &TempDir, store: &Path, key: &str) -> Vec<String> {
    let counter = dir.path().join(format!("{key}.count"));
    let go = dir.path().join(format!("{key}.go"));
    let mut children = Vec::new();
    let mut readies = Vec::new();
    for i in 0..4 {
        let ready = dir.path().join(format!("{key}.ready{i}"));
        readies.push(ready.clone());
        children.push(spawn_child(
            test_name,
            "contender",
            &[
                ("DOGPILE_TEST_STORE", store.to_string_lossy().into_owned()),
                (
                    "DOGPILE_TEST_COUNTER",
                    counter.to_string_lossy().into_owned(),
                ),
                ("DOGPILE_TEST_GO", go.to_string_lossy().into_owned()),
                ("DOGPILE_TEST_READY", ready.to_string_lossy().into_owned()),
                ("DOGPILE_TEST_KEY", key.to_string()),
            ],
        ));
    }
    wait_for("every contender to be ready", || {
        readies.iter().all(|r| r.exists())
    });
    fs::write(&go, b"go").unwrap();
    for (i, c) in children.iter_mut().enumerate() {
        let status = wait_child(c, "a contender to finish");
        assert!(status.success(), "contender {i} failed: {status}");
    }
    assert_eq!(
        count_lines(&counter),
        1,
        "the creator ran more than once across processes"
    );
    fs::read_to_string(counter.with_extension("results"))
        .unwrap()
        .lines()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect()
}

#[test]
fn four_processes_on_one_key_run_the_creator_once() {
    if child_role().as_deref() == Some("contender") {
        contender();
        return;
    }
    let dir = TempDir::new("file-procs");
    let store = dir.path().join("cache.db");
    // An expired value: written an hour ago by a region on a manual clock.
    let (clock, _manual) = Clock::manual(SystemTime::now() - Duration::from_secs(3600));
    let old = dogpile::make_region()
        .configure(store_config(&store).clock(clock))
        .unwrap();
    old.set("stale", "old".to_string()).unwrap();

    let test = "four_processes_on_one_key_run_the_creator_once";
    let stale = run_contenders(test, &dir, &store, "stale");
    assert_eq!(stale.len(), 4);
    assert!(stale.contains(&"new".to_string()));
    // A key with no value, in a store the four processes create together: the others wait for
    // the creator and get its value.
    let fresh = dir.path().join("fresh.db");
    let cold = run_contenders(test, &dir, &fresh, "cold");
    assert_eq!(cold, vec!["new"; 4]);

    assert_eq!(
        region_at(&store).get::<String>("stale").unwrap().as_deref(),
        Some("new")
    );
    assert_eq!(
        region_at(&fresh).get::<String>("cold").unwrap().as_deref(),
        Some("new")
    );
}

#[test]
fn a_creator_killed_while_holding_the_lock_does_not_block_the_others() {
    let role = child_role();
    if role.as_deref() == Some("holder") || role.as_deref() == Some("waiter") {
        let store = env_path("DOGPILE_TEST_STORE");
        let signal = env_path("DOGPILE_TEST_SIGNAL");
        let region = region_at(&store);
        if role.as_deref() == Some("holder") {
            let _: String = region
                .get_or_create("k", || {
                    fs::write(&signal, b"in the creator").unwrap();
                    // Killed here, lock held.
                    std::thread::sleep(Duration::from_secs(600));
                    "never".to_string()
                })
                .unwrap();
        } else {
            fs::write(&signal, b"waiting").unwrap();
            let v: String = region.get_or_create("k", || "waiter".to_string()).unwrap();
            fs::write(signal.with_extension("result"), v).unwrap();
        }
        return;
    }
    let dir = TempDir::new("file-kill");
    let store = dir.path().join("cache.db");
    let region = region_at(&store);
    let test = "a_creator_killed_while_holding_the_lock_does_not_block_the_others";
    let holder_signal = dir.path().join("holder.signal");
    let waiter_signal = dir.path().join("waiter.signal");
    let env = |signal: &Path| {
        vec![
            ("DOGPILE_TEST_STORE", store.to_string_lossy().into_owned()),
            ("DOGPILE_TEST_SIGNAL", signal.to_string_lossy().into_owned()),
        ]
    };
    let mut holder = spawn_child(test, "holder", &env(&holder_signal));
    wait_for("the holder to enter its creator", || holder_signal.exists());
    assert!(region.key_is_locked("k").unwrap());

    let mut waiter = spawn_child(test, "waiter", &env(&waiter_signal));
    wait_for("the waiter to start", || waiter_signal.exists());

    holder.kill().unwrap(); // SIGKILL: no destructor runs, the kernel drops the file lock.
    holder.wait().unwrap();

    let status = wait_child(&mut waiter, "the waiter to get a value");
    assert!(status.success(), "waiter failed: {status}");
    assert_eq!(
        fs::read_to_string(waiter_signal.with_extension("result")).unwrap(),
        "waiter"
    );
    assert!(!region.key_is_locked("k").unwrap());
    assert_eq!(
        region.get::<String>("k").unwrap().as_deref(),
        Some("waiter")
    );
}

#[test]
fn bad_files_and_arguments_are_clear_errors() {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("file-bad");
    let garbage = dir.path().join("garbage.db");
    fs::write(
        &garbage,
        (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let err = dogpile::make_region()
        .configure(store_config(&garbage))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&*garbage.to_string_lossy()), "{err}");
    assert!(err.contains("not a database"), "{err}");

    let text = dir.path().join("notes.txt");
    fs::write(&text, "just some text, not a cache\n".repeat(20)).unwrap();
    let err = dogpile::make_region()
        .configure(store_config(&text))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&*text.to_string_lossy()), "{err}");

    let nowhere = dir.path().join("no-such-dir").join("cache.db");
    let err = dogpile::make_region()
        .configure(store_config(&nowhere))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&*nowhere.to_string_lossy()), "{err}");

    let err = dogpile::make_region()
        .configure(RegionConfig::new("dogpile.cache.dbm"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "arguments.filename: missing: the path of the store is required"
    );
    let err = dogpile::make_region()
        .configure(store_config(&dir.path().join("ok.db")).argument("file_name", "x"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("arguments.file_name: unknown argument for dogpile.cache.dbm"),
        "{err}"
    );
    let err = dogpile::make_region()
        .configure(store_config(&dir.path().join("ok.db")).argument("dogpile_lockfile", 3))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("arguments.dogpile_lockfile: expected a file path, true or false"),
        "{err}"
    );
}

#[test]
fn a_store_damaged_while_in_use_gives_errors_naming_it_or_misses() {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("file-damaged");
    let path = dir.path().join("cache.db");
    let region = region_at(&path);
    for i in 0..50u32 {
        region.set(&format!("k{i}"), i).unwrap();
    }
    // Another program overwrites the file while the region has it open.
    let size = fs::metadata(&path).unwrap().len().max(8192) as usize;
    fs::write(&path, vec![0xA5u8; size]).unwrap();
    let _ = fs::remove_file(dir.path().join("cache.db-wal"));
    let _ = fs::remove_file(dir.path().join("cache.db-shm"));
    let name = path.to_string_lossy().into_owned();
    for i in 0..50u32 {
        let key = format!("k{i}");
        match region.get::<u32>(&key) {
            Ok(v) => assert!(v.is_none() || v == Some(i)),
            Err(e) => assert!(e.to_string().contains(&name), "{e}"),
        }
        if let Err(e) = region.set(&key, i) {
            assert!(e.to_string().contains(&name), "{e}");
        }
        match region.get_or_create(&key, || i) {
            Ok(v) => assert_eq!(v, i),
            Err(e) => assert!(e.to_string().contains(&name), "{e}"),
        }
    }
    // A new configuration on the damaged file is refused, naming the file.
    let err = dogpile::make_region()
        .configure(store_config(&path))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&name), "{err}");
}
