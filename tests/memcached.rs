//! `dogpile.cache.memcached` against real servers on free loopback ports: region round trips,
//! two servers, awkward keys, a dead and restarted server, the distributed lock across regions
//! and processes.
#![cfg(feature = "memcached")]

mod support;

use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use dogpile::backend::memcached::MemcachedBackend;
use dogpile::clock::Clock;
use dogpile::config::Arguments;
use dogpile::{Backend, CacheRegion, RegionConfig};
use support::{append_line, child_role, env_path, spawn_child, wait_for, Server, TempDir};

fn memcached() -> Option<Server> {
    Server::memcached()
}

fn config(url: impl Into<dogpile::config::ArgValue>) -> RegionConfig {
    RegionConfig::new("dogpile.cache.memcached")
        .expiration_time(60)
        .argument("url", url)
        .argument("socket_timeout", 2.0)
}

fn mc_region(url: impl Into<dogpile::config::ArgValue>) -> CacheRegion {
    dogpile::make_region()
        .configure(config(url))
        .expect("configuring memcached")
}

#[test]
fn region_round_trips_on_one_server() {
    if child_role().is_some() {
        return;
    }
    let Some(server) = memcached() else { return };
    let (clock, manual) = Clock::manual(SystemTime::now());
    let region = dogpile::make_region()
        .configure(config(server.addr()).clock(clock))
        .unwrap();

    support::check_region_operations(&region, &manual);

    // Bytes that are not a dogpile envelope are a miss, and get overwritten.
    let backend = region.backend().unwrap();
    let raw =
        MemcachedBackend::from_arguments(&Arguments::new().with("url", server.addr())).unwrap();
    assert_eq!(raw.servers(), vec![server.addr()]);
    drop(backend);
    raw_set(&server.addr(), "foreign", b"not a dogpile value");
    assert_eq!(region.get::<String>("foreign").unwrap(), None);
    assert_eq!(region.get_or_create("foreign", || 5u8).unwrap(), 5);
}

/// Writes raw bytes at a key with memcached's text protocol, as another client would.
fn raw_set(addr: &str, key: &str, value: &[u8]) {
    use std::io::{BufRead, BufReader};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "set {key} 0 0 {}\r\n", value.len()).unwrap();
    s.write_all(value).unwrap();
    s.write_all(b"\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!(line, "STORED\r\n");
}

#[test]
fn python_names_and_config_maps_work_unchanged() {
    if child_role().is_some() {
        return;
    }
    let Some(a) = memcached() else { return };
    let Some(b) = memcached() else { return };
    for name in [
        "dogpile.cache.pylibmc",
        "dogpile.cache.pymemcache",
        "dogpile.cache.bmemcached",
    ] {
        let map = [
            ("cache.memcached.backend", name.to_string()),
            (
                "cache.memcached.arguments.url",
                format!("memcache://{}, {}", a.addr(), b.addr()),
            ),
            ("cache.memcached.arguments.distributed_lock", "true".into()),
            ("cache.memcached.arguments.lock_timeout", "5".into()),
            (
                "cache.memcached.arguments.memcached_expire_time",
                "600".into(),
            ),
            ("cache.memcached.arguments.socket_timeout", "0.5".into()),
        ];
        let region = CacheRegion::new();
        region
            .configure_from_config(map, "cache.memcached.")
            .unwrap();
        assert_eq!(
            region.get_or_create(name, || name.len()).unwrap(),
            name.len()
        );
        assert_eq!(region.get::<usize>(name).unwrap(), Some(name.len()));
    }
    let err = |c: RegionConfig| dogpile::make_region().configure(c).unwrap_err().to_string();
    assert!(err(RegionConfig::new("dogpile.cache.memcached")).starts_with("arguments.url: missing"));
    assert!(
        err(config(a.addr()).argument("servers", "x")).starts_with(
            "arguments.servers: unknown argument for dogpile.cache.memcached; it takes: url, memcached_expire_time, distributed_lock, lock_timeout, socket_timeout"
        )
    );
    assert!(err(config(a.addr()).argument("lock_timeout", "soon"))
        .starts_with("arguments.lock_timeout:"));
    assert!(err(config("http://127.0.0.1:1")).contains("unsupported scheme"));
}

#[test]
fn keys_spread_over_two_servers_by_a_stable_hash() {
    if child_role().is_some() {
        return;
    }
    let Some(a) = memcached() else { return };
    let Some(b) = memcached() else { return };
    let both = vec![a.addr(), b.addr()];
    let region = mc_region(both.clone());
    let keys: Vec<String> = (0..200).map(|i| format!("key:{i}")).collect();
    region
        .set_multi(keys.iter().enumerate().map(|(i, k)| (k.as_str(), i as u32)))
        .unwrap();
    assert_eq!(
        region.get_multi::<u32, _>(&keys).unwrap(),
        (0..200).map(Some).collect::<Vec<_>>()
    );

    // Each key sits on the one server the hash names, and both servers hold some.
    let placement =
        MemcachedBackend::from_arguments(&Arguments::new().with("url", both.clone())).unwrap();
    let singles: Vec<MemcachedBackend> = [a.addr(), b.addr()]
        .iter()
        .map(|u| {
            MemcachedBackend::from_arguments(&Arguments::new().with("url", u.clone())).unwrap()
        })
        .collect();
    let mut per_server = [0usize; 2];
    for k in &keys {
        let home = placement.server_for(k).to_owned();
        for (i, s) in singles.iter().enumerate() {
            let here = s.get(k).unwrap().is_some();
            assert_eq!(here, s.servers()[0] == home, "{k} on {}", s.servers()[0]);
            per_server[i] += usize::from(here);
        }
    }
    assert_eq!(per_server[0] + per_server[1], 200);
    assert!(per_server[0] > 40 && per_server[1] > 40, "{per_server:?}");

    // Another configuration, servers listed the other way round, finds every value.
    let reversed = mc_region(vec![b.addr(), a.addr()]);
    assert_eq!(
        reversed.get_multi::<u32, _>(&keys).unwrap(),
        (0..200).map(Some).collect::<Vec<_>>()
    );
    reversed.delete_multi(&keys).unwrap();
    assert!(region
        .get_multi::<u32, _>(&keys)
        .unwrap()
        .iter()
        .all(Option::is_none));
}

#[test]
fn awkward_keys_never_become_protocol_errors() {
    if child_role().is_some() {
        return;
    }
    let Some(a) = memcached() else { return };
    let Some(b) = memcached() else { return };
    let long = "x".repeat(10 * 1024);
    let keys: Vec<String> = vec![
        "with some spaces".into(),
        "new\nline".into(),
        "\r\n\0\u{7}controls".into(),
        long.clone(),
        format!("{long}y"),
        "ключ".into(),
        "日本語 の キー".into(),
        "".into(),
        "get foo\r\nflush_all".into(),
        "x".repeat(250),
        "x".repeat(251),
    ];
    let plain = mc_region(vec![a.addr(), b.addr()]);
    // A region whose own mangler lets anything through: the backend's key rule still applies.
    let prefixed = dogpile::make_region()
        .key_mangler_fn(|k| format!("app: {k}"))
        .configure(config(vec![a.addr(), b.addr()]))
        .unwrap();
    let unmangled = dogpile::make_region()
        .no_key_mangler()
        .configure(config(vec![a.addr(), b.addr()]))
        .unwrap();
    for region in [&plain, &prefixed, &unmangled] {
        for (i, k) in keys.iter().enumerate() {
            region.set(k, i).unwrap();
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(region.get::<usize>(k).unwrap(), Some(i), "{k:?}");
        }
        assert_eq!(
            region.get_multi::<usize, _>(&keys).unwrap(),
            (0..keys.len()).map(Some).collect::<Vec<_>>()
        );
        region.delete(&keys[0]).unwrap();
        assert_eq!(region.get_or_create(&keys[0], || 99usize).unwrap(), 99);
        region.delete_multi(&keys).unwrap();
        assert_eq!(region.get::<usize>(&keys[3]).unwrap(), None);
    }
    // The server never saw "flush_all" as a command: values set before are still there.
    plain.set("survivor", 1u8).unwrap();
    plain.set("get foo\r\nflush_all", 2u8).unwrap();
    assert_eq!(plain.get::<u8>("survivor").unwrap(), Some(1));
}

#[test]
fn a_dead_server_is_an_error_naming_it_and_the_backend_recovers() {
    if child_role().is_some() {
        return;
    }
    let Some(mut server) = memcached() else {
        return;
    };
    let region = mc_region(server.addr());
    region.set("k", 1u32).unwrap();
    server.kill();
    for _ in 0..3 {
        let err = region.get::<u32>("k").unwrap_err();
        assert!(err.is_backend(), "{err}");
        assert!(err.to_string().contains(&server.addr()), "{err}");
        let err = region.set("k", 2u32).unwrap_err();
        assert!(err.to_string().contains(&server.addr()), "{err}");
    }
    // get_or_create gives the creator's value, or an error naming the server: never a panic.
    match region.get_or_create("fallback", || 7u32) {
        Ok(v) => assert_eq!(v, 7),
        Err(e) => assert!(e.to_string().contains(&server.addr()), "{e}"),
    }

    server.restart();
    // The broken connections are dropped and new ones made: the first call works.
    region.set("k", 3u32).unwrap();
    assert_eq!(region.get::<u32>("k").unwrap(), Some(3));
    assert_eq!(region.get_or_create("after", || 8u32).unwrap(), 8);

    // Restarted under a live connection: the next call reconnects by itself.
    server.restart();
    assert_eq!(region.get::<u32>("k").unwrap(), None);
    region.set("k", 4u32).unwrap();
    assert_eq!(region.get::<u32>("k").unwrap(), Some(4));

    // Too large for memcached's 1 MB items: an error naming the server, and the connection
    // stays usable.
    let err = region.set("huge", "x".repeat(2 << 20)).unwrap_err();
    assert!(err.to_string().contains(&server.addr()), "{err}");
    assert_eq!(region.get::<u32>("k").unwrap(), Some(4));

    // A server that accepts connections and never answers: socket_timeout turns it into an
    // error naming the address instead of a hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    silent.set_nonblocking(true).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok((conn, _)) = silent.accept() {
                    held.push(conn);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mute = dogpile::make_region()
        .configure(config(silent_addr.clone()).argument("socket_timeout", 0.2))
        .unwrap();
    let err = mute.get::<u32>("k").unwrap_err().to_string();
    assert!(err.contains(&silent_addr), "{err}");
    done.store(true, Ordering::SeqCst);
    holder.join().unwrap();

    // Nobody listens at all: an error naming the address, at the first call, not at configure.
    let nobody = format!("127.0.0.1:{}", support::free_port());
    let lonely = mc_region(nobody.clone());
    let err = lonely.get::<u32>("k").unwrap_err().to_string();
    assert!(err.contains(&nobody), "{err}");
}

#[test]
fn the_distributed_lock_is_shared_released_only_by_its_owner_and_expires() {
    if child_role().is_some() {
        return;
    }
    let Some(server) = memcached() else { return };
    let backend = |timeout: u64| {
        MemcachedBackend::from_arguments(
            &Arguments::new()
                .with("url", server.addr())
                .with("distributed_lock", true)
                .with("lock_timeout", timeout),
        )
        .unwrap()
    };
    let (one, two) = (backend(1), backend(1));
    let m1 = one.get_mutex("k").expect("a distributed mutex");
    let m2 = two.get_mutex("k").expect("a distributed mutex");
    assert!(!m2.locked().unwrap());
    assert!(m1.try_acquire().unwrap());
    assert!(!m2.try_acquire().unwrap());
    assert!(m2.locked().unwrap());
    m1.release().unwrap();
    assert!(!m2.locked().unwrap());
    m2.wait(Instant::now() + Duration::from_secs(60)).unwrap();

    // A holder that dies keeps the lock only until lock_timeout.
    assert!(m2.try_acquire().unwrap());
    let m3 = one.get_mutex("k").unwrap();
    wait_for("the dead holder's lock to expire", || {
        m3.try_acquire().unwrap()
    });
    // The late holder's release must not free the lock that now belongs to m3.
    m2.release().unwrap();
    assert!(one.get_mutex("k").unwrap().locked().unwrap());
    m3.release().unwrap();
    assert!(!one.get_mutex("k").unwrap().locked().unwrap());

    // Without distributed_lock, the region's in-process lock is used.
    let local =
        MemcachedBackend::from_arguments(&Arguments::new().with("url", server.addr())).unwrap();
    assert!(local.get_mutex("k").is_none());
}

fn locking_region(addr: &str, clock: Option<Clock>) -> CacheRegion {
    let mut c = config(addr.to_string())
        .argument("distributed_lock", true)
        .argument("lock_timeout", 30);
    if let Some(clock) = clock {
        c = c.clock(clock);
    }
    dogpile::make_region().configure(c).unwrap()
}

#[test]
fn one_creator_among_regions_with_the_distributed_lock() {
    if child_role().is_some() {
        return;
    }
    let Some(server) = memcached() else { return };
    // Four regions stand for four processes: only memcached's lock is shared between them.
    let regions: Vec<CacheRegion> = (0..4)
        .map(|_| locking_region(&server.addr(), None))
        .collect();
    let (old_clock, _m) = Clock::manual(SystemTime::now() - Duration::from_secs(3600));
    locking_region(&server.addr(), Some(old_clock))
        .set("stale", "old".to_string())
        .unwrap();
    for key in ["cold", "stale"] {
        let calls = AtomicUsize::new(0);
        let results: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let region = &regions[i % regions.len()];
                    let calls = &calls;
                    s.spawn(move || {
                        region
                            .get_or_create(key, || {
                                calls.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(100));
                                "new".to_string()
                            })
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{key}");
        if key == "cold" {
            assert!(results.iter().all(|v| v == "new"), "{results:?}");
        } else {
            assert!(results.iter().all(|v| v == "new" || v == "old"));
            assert!(results.iter().any(|v| v == "new"));
        }
        assert!(!regions[0].key_is_locked(key).unwrap());
    }
}

#[test]
fn four_processes_on_one_expired_key_run_the_creator_once() {
    if child_role().as_deref() == Some("contender") {
        let addr = std::env::var("DOGPILE_TEST_ADDR").unwrap();
        let counter = env_path("DOGPILE_TEST_COUNTER");
        let go = env_path("DOGPILE_TEST_GO");
        let region = locking_region(&addr, None);
        fs::write(env_path("DOGPILE_TEST_READY"), b"ready").unwrap();
        wait_for("the go file", || go.exists());
        let v: String = region
            .get_or_create("stale", || {
                append_line(&counter, "created");
                std::thread::sleep(Duration::from_millis(300));
                "new".to_string()
            })
            .unwrap();
        assert!(v == "new" || v == "old", "{v}");
        return;
    }
    let Some(server) = memcached() else { return };
    let (old_clock, _m) = Clock::manual(SystemTime::now() - Duration::from_secs(3600));
    locking_region(&server.addr(), Some(old_clock))
        .set("stale", "old".to_string())
        .unwrap();
    let dir = TempDir::new("mc-procs");
    let counter = dir.path().join("count");
    let go = dir.path().join("go");
    let mut children = Vec::new();
    let mut readies = Vec::new();
    for i in 0..4 {
        let ready = dir.path().join(format!("ready{i}"));
        readies.push(ready.clone());
        children.push(spawn_child(
            "four_processes_on_one_expired_key_run_the_creator_once",
            "contender",
            &[
                ("DOGPILE_TEST_ADDR", server.addr()),
                (
                    "DOGPILE_TEST_COUNTER",
                    counter.to_string_lossy().into_owned(),
                ),
                ("DOGPILE_TEST_GO", go.to_string_lossy().into_owned()),
                ("DOGPILE_TEST_READY", ready.to_string_lossy().into_owned()),
            ],
        ));
    }
    wait_for("every contender to be ready", || {
        readies.iter().all(|r| r.exists())
    });
    fs::write(&go, b"go").unwrap();
    for c in &mut children {
        let mut status = None;
        wait_for("a contender to finish", || {
            status = c.try_wait().unwrap();
            status.is_some()
        });
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
    }
    let created = fs::read_to_string(&counter).unwrap();
    assert_eq!(created.lines().count(), 1, "creations: {created:?}");
    assert_eq!(
        locking_region(&server.addr(), None)
            .get::<String>("stale")
            .unwrap()
            .as_deref(),
        Some("new")
    );
}
