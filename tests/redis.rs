//! `dogpile.cache.redis` and `dogpile.cache.redis_cluster` against real servers started on free
//! loopback ports. Without `redis-server` the tests print SKIPPED and pass, unless
//! `DOGPILE_REQUIRE_SERVERS=1`.
#![cfg(feature = "redis")]

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dogpile::clock::Clock;
use dogpile::{CacheRegion, RegionConfig};
use support::{
    child_role, exclusive_ports, raw_redis as raw, redis_cmd as cmd, shared_ports, spawn_child,
    Server, TempDir,
};

fn redis_server() -> Option<Server> {
    Server::redis()
}

fn url(server: &Server) -> String {
    format!("redis://{}", server.addr())
}

fn region_with(config: RegionConfig) -> CacheRegion {
    dogpile::make_region()
        .configure(config)
        .expect("configuring the region")
}

fn redis_config(server: &Server) -> RegionConfig {
    RegionConfig::new("dogpile.cache.redis")
        .expiration_time(60)
        .argument("url", url(server))
        .argument("socket_timeout", 10)
}

/// Every region operation, on one server.
#[test]
fn region_operations() {
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let (clock, manual) = Clock::manual(SystemTime::now());
    let region = region_with(
        redis_config(&server)
            .argument("distributed_lock", true)
            .clock(clock),
    );
    support::check_region_operations(&region, &manual);
}

/// Expiration with a manual clock; the server TTL stays far away.
#[test]
fn expiration_with_a_manual_clock() {
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let (clock, hand) = Clock::manual(SystemTime::now());
    let region = region_with(
        redis_config(&server)
            .expiration_time(10)
            .argument("redis_expiration_time", 3600)
            .clock(clock),
    );
    region.set("k", 1u32).unwrap();
    hand.advance(Duration::from_secs(5));
    assert_eq!(region.get::<u32>("k").unwrap(), Some(1));
    hand.advance(Duration::from_secs(6));
    assert_eq!(region.get::<u32>("k").unwrap(), None, "expired");
    assert_eq!(region.get_ignore_expiration::<u32>("k").unwrap(), Some(1));
    assert_eq!(region.get_or_create("k", || 2u32).unwrap(), 2);
    assert_eq!(region.get::<u32>("k").unwrap(), Some(2));
    // Soft invalidation: one caller regenerates.
    hand.advance(Duration::from_millis(1));
    region.invalidate(false);
    hand.advance(Duration::from_millis(1));
    assert_eq!(region.get_or_create("k", || 3u32).unwrap(), 3);
}

/// `redis_expiration_time` reaches the server as a TTL, for set and set_multi, and a TTL at or
/// below the region's expiration is refused at configuration.
#[test]
fn redis_expiration_time_reaches_the_server() {
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let region = region_with(redis_config(&server).argument("redis_expiration_time", 300));
    region.set("one", 1u32).unwrap();
    region.set_multi([("two", 2u32), ("three", 3)]).unwrap();
    region.get_or_create("four", || 4u32).unwrap();
    let mut con = raw(&server.addr());
    for key in ["one", "two", "three", "four"] {
        let pttl: i64 = cmd(&mut con, &["PTTL", key]);
        assert!(pttl > 0 && pttl <= 300_000, "{key}: PTTL {pttl}");
    }
    // Without the argument there is no TTL.
    let plain = region_with(redis_config(&server));
    plain.set("five", 5u32).unwrap();
    plain.set_multi([("six", 6u32)]).unwrap();
    assert_eq!(cmd::<i64>(&mut con, &["PTTL", "five"]), -1);
    assert_eq!(cmd::<i64>(&mut con, &["PTTL", "six"]), -1);

    let err = dogpile::make_region()
        .configure(redis_config(&server).argument("redis_expiration_time", 60))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "arguments.redis_expiration_time: 60 s must exceed the region's expiration_time (60 s)"
        ),
        "{err}"
    );
}

/// Bytes not written by dogpile are a miss, and get overwritten.
#[test]
fn foreign_bytes_are_a_miss() {
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let region = region_with(redis_config(&server));
    let mut con = raw(&server.addr());
    let _: () = cmd(&mut con, &["SET", "k", "not a dogpile value"]);
    assert_eq!(region.get::<String>("k").unwrap(), None);
    assert_eq!(region.get_multi::<String, _>(&["k"]).unwrap(), vec![None]);
    assert_eq!(
        region.get_or_create("k", || "new".to_string()).unwrap(),
        "new"
    );
    assert_eq!(region.get::<String>("k").unwrap().as_deref(), Some("new"));
    // A value of another type is a miss too.
    assert_eq!(region.get::<u64>("k").unwrap(), None);
    // So is a key of another Redis type.
    let _: i64 = cmd(&mut con, &["RPUSH", "list", "x"]);
    assert_eq!(region.get::<String>("list").unwrap(), None);
    assert_eq!(
        region.get_multi::<String, _>(&["list"]).unwrap(),
        vec![None]
    );
    assert_eq!(
        region.get_or_create("list", || "mine".to_string()).unwrap(),
        "mine"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _: i64 = cmd(&mut con, &["RPUSH", "list2", "x"]);
    assert_eq!(
        rt.block_on(region.get_async::<String>("list2")).unwrap(),
        None
    );
}

/// The distributed mutex: one holder, compare-and-delete release, expiry.
#[test]
fn distributed_mutex() {
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let region = region_with(
        redis_config(&server)
            .argument("distributed_lock", true)
            .argument("lock_timeout", 30),
    );
    let backend = region.backend().unwrap();
    let a = backend.get_mutex("k").expect("a distributed mutex");
    let b = backend.get_mutex("k").expect("a distributed mutex");
    assert!(!a.locked().unwrap());
    assert!(a.try_acquire().unwrap());
    assert!(!b.try_acquire().unwrap());
    assert!(b.locked().unwrap());
    assert!(region.key_is_locked("k").unwrap());
    let mut con = raw(&server.addr());
    let pttl: i64 = cmd(&mut con, &["PTTL", "_lockk"]);
    assert!(pttl > 0 && pttl <= 30_000, "lock PTTL {pttl}");
    // A handle that does not hold the lock cannot release it: an error naming the key, and the
    // holder's lock stays.
    let e = b.release().unwrap_err().to_string();
    assert!(e.contains("no acquire held for key \"k\""), "{e}");
    assert!(a.locked().unwrap());
    // Nor can a holder whose lock expired and was taken by another.
    let _: () = cmd(&mut con, &["SET", "_lockk", "somebody else"]);
    a.release().unwrap();
    assert_eq!(
        cmd::<Option<String>>(&mut con, &["GET", "_lockk"]).as_deref(),
        Some("somebody else")
    );
    let _: () = cmd(&mut con, &["DEL", "_lockk"]);
    assert!(b.try_acquire().unwrap());
    b.release().unwrap();
    assert!(!region.key_is_locked("k").unwrap());
    // Released once: a second release is an error too.
    assert!(b.release().is_err());

    // Waiters return once the holder releases, and find the value it stored.
    let region = Arc::new(region);
    assert!(a.try_acquire().unwrap());
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let r = region.clone();
            std::thread::spawn(move || r.get_or_create("k", || 999u32).unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    region.set("k", 7u32).unwrap();
    a.release().unwrap();
    for w in waiters {
        assert_eq!(w.join().unwrap(), 7);
    }
}

/// Many threads on one cold key, with the distributed lock: one creation.
#[test]
fn threads_on_a_cold_key_create_once() {
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let region = Arc::new(region_with(
        redis_config(&server).argument("distributed_lock", true),
    ));
    let (values, creations) = support::threads_on_one_cold_key(
        &region,
        16,
        Duration::from_millis(100),
        "made".to_string(),
    );
    assert_eq!(values, vec!["made".to_string(); 16]);
    assert_eq!(creations, 1);
}

/// `pool_size` bounds the blocking connections: more threads than that share them.
#[test]
fn pool_size_bounds_the_connections() {
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let region = Arc::new(region_with(
        redis_config(&server)
            .argument("pool_size", 2)
            .argument("distributed_lock", true),
    ));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let r = region.clone();
            std::thread::spawn(move || {
                for i in 0..50u32 {
                    let key = format!("t{t}-{i}");
                    r.set(&key, i).unwrap();
                    assert_eq!(r.get::<u32>(&key).unwrap(), Some(i));
                    assert_eq!(
                        r.get_or_create(&format!("shared{}", i % 5), || i % 5)
                            .unwrap(),
                        i % 5
                    );
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let mut con = raw(&server.addr());
    let clients: String = cmd(&mut con, &["CLIENT", "LIST"]);
    // Two pooled connections, and this one.
    assert_eq!(clients.lines().count(), 3, "{clients}");
}

/// The child side of the multi-process tests: eight threads calling get_or_create on one key,
/// each creation counted with INCR on the server. On an expired key, the threads that get the
/// stale value count it too, and the creator finishes only once all the others (in both
/// processes) got the stale value: they were served at once, without waiting for it.
fn child_creates(addr: &str, key: &str, expired: bool) {
    let region = Arc::new(region_with(
        RegionConfig::new("dogpile.cache.redis")
            .expiration_time(60)
            .argument("url", format!("redis://{addr}"))
            .argument("distributed_lock", true),
    ));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (r, addr, key) = (region.clone(), addr.to_owned(), key.to_owned());
            std::thread::spawn(move || {
                let mut con = raw(&addr);
                let v = r
                    .get_or_create(&key, || {
                        let _: i64 = cmd(&mut raw(&addr), &["INCR", "creations"]);
                        if expired {
                            wait_for_count(&addr, "stale_served", 2 * THREADS - 1);
                        } else {
                            std::thread::sleep(Duration::from_millis(300));
                        }
                        "fresh".to_string()
                    })
                    .unwrap();
                if v == "stale" {
                    let _: i64 = cmd(&mut con, &["INCR", "stale_served"]);
                }
                v
            })
        })
        .collect();
    for t in threads {
        let v = t.join().unwrap();
        assert!(
            v == "fresh" || (expired && v == "stale"),
            "unexpected value {v:?}"
        );
    }
}

const THREADS: i64 = 8;

/// Waits until the counter at `key` reaches `n` (a readiness wait, not a timing assertion).
fn wait_for_count(addr: &str, key: &str, n: i64) {
    let mut con = raw(addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    while cmd::<Option<i64>>(&mut con, &["GET", key]).unwrap_or(0) < n {
        assert!(Instant::now() < deadline, "{key} never reached {n}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn run_children(test: &str, addr: &str, key: &str) {
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            spawn_child(
                test,
                "creator",
                &[
                    ("DOGPILE_TEST_REDIS", addr.to_owned()),
                    ("DOGPILE_TEST_KEY", key.to_owned()),
                ],
            )
        })
        .collect();
    for c in &mut children {
        assert!(c.wait().unwrap().success(), "a child process failed");
    }
}

fn child_env() -> (String, String) {
    (
        std::env::var("DOGPILE_TEST_REDIS").unwrap(),
        std::env::var("DOGPILE_TEST_KEY").unwrap(),
    )
}

/// Two OS processes, eight threads each, on one cold key: one creation.
#[test]
fn two_processes_on_a_cold_key_create_once() {
    if child_role().is_some() {
        let (addr, key) = child_env();
        return child_creates(&addr, &key, false);
    }
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    run_children(
        "two_processes_on_a_cold_key_create_once",
        &server.addr(),
        "cold",
    );
    let mut con = raw(&server.addr());
    assert_eq!(cmd::<i64>(&mut con, &["GET", "creations"]), 1);
    let region = region_with(redis_config(&server));
    assert_eq!(
        region.get::<String>("cold").unwrap().as_deref(),
        Some("fresh")
    );
}

/// Two OS processes on one expired key: one creation; the fifteen other callers get the stale
/// value while it runs.
#[test]
fn two_processes_on_an_expired_key_create_once() {
    if child_role().is_some() {
        let (addr, key) = child_env();
        return child_creates(&addr, &key, true);
    }
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    // Stored by a region whose clock is an hour behind: expired for the children.
    let (clock, _hand) = Clock::manual(SystemTime::now() - Duration::from_secs(3600));
    region_with(redis_config(&server).clock(clock))
        .set("expired", "stale".to_string())
        .unwrap();
    run_children(
        "two_processes_on_an_expired_key_create_once",
        &server.addr(),
        "expired",
    );
    let mut con = raw(&server.addr());
    assert_eq!(cmd::<i64>(&mut con, &["GET", "creations"]), 1);
    assert_eq!(
        cmd::<i64>(&mut con, &["GET", "stale_served"]),
        2 * THREADS - 1
    );
    let region = region_with(redis_config(&server));
    assert_eq!(
        region.get::<String>("expired").unwrap().as_deref(),
        Some("fresh")
    );
}

/// A creation that outlasts `lock_timeout` keeps its lock while its process lives: the lock is
/// extended, and nobody else creates.
#[test]
fn a_live_holders_lock_is_extended() {
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let region = Arc::new(region_with(
        redis_config(&server)
            .argument("distributed_lock", true)
            .argument("lock_timeout", 1),
    ));
    let calls = Arc::new(AtomicUsize::new(0));
    let holder = {
        let (r, calls, addr) = (region.clone(), calls.clone(), server.addr());
        std::thread::spawn(move || {
            r.get_or_create("slow", || {
                calls.fetch_add(1, Ordering::SeqCst);
                let _: () = cmd(&mut raw(&addr), &["SET", "holding", "1"]);
                std::thread::sleep(Duration::from_millis(2500));
                "slow value".to_string()
            })
            .unwrap()
        })
    };
    wait_for_count(&server.addr(), "holding", 1);
    // A second backend: another process, as far as the lock can tell.
    let other = Arc::new(region_with(
        redis_config(&server)
            .argument("distributed_lock", true)
            .argument("lock_timeout", 1),
    ));
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let (r, calls) = (other.clone(), calls.clone());
            std::thread::spawn(move || {
                r.get_or_create("slow", || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    "second creation".to_string()
                })
                .unwrap()
            })
        })
        .collect();
    assert_eq!(holder.join().unwrap(), "slow value");
    for w in waiters {
        assert_eq!(w.join().unwrap(), "slow value");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A process holding the lock is killed mid-creation: its lock expires after `lock_timeout`, and
/// a waiter then creates the value.
#[test]
fn a_killed_holders_lock_expires() {
    if child_role().is_some() {
        let (addr, key) = child_env();
        let region = region_with(
            RegionConfig::new("dogpile.cache.redis")
                .expiration_time(60)
                .argument("url", format!("redis://{addr}"))
                .argument("distributed_lock", true)
                .argument("lock_timeout", 1),
        );
        let _ = region.get_or_create(&key, || {
            let _: () = cmd(&mut raw(&addr), &["SET", "holding", "1"]);
            // Killed while here.
            std::thread::sleep(Duration::from_secs(600));
            "from the dead".to_string()
        });
        return;
    }
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let addr = server.addr();
    let mut child = spawn_child(
        "a_killed_holders_lock_expires",
        "holder",
        &[
            ("DOGPILE_TEST_REDIS", addr.clone()),
            ("DOGPILE_TEST_KEY", "k".to_owned()),
        ],
    );
    let mut con = raw(&addr);
    // A readiness wait, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cmd::<Option<String>>(&mut con, &["GET", "holding"]).is_none() {
        assert!(Instant::now() < deadline, "the child never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no release.
    child.wait().unwrap();
    let region = region_with(
        redis_config(&server)
            .argument("distributed_lock", true)
            .argument("lock_timeout", 1),
    );
    assert!(
        region.key_is_locked("k").unwrap(),
        "the dead holder's lock is still there"
    );
    let pttl: i64 = cmd(&mut con, &["PTTL", "_lockk"]);
    assert!(pttl > 0 && pttl <= 1000, "lock PTTL {pttl}");
    let calls = AtomicUsize::new(0);
    let v = region
        .get_or_create("k", || {
            calls.fetch_add(1, Ordering::SeqCst);
            "alive".to_string()
        })
        .unwrap();
    assert_eq!(v, "alive");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(!region.key_is_locked("k").unwrap());
}

/// The server restarts mid-test: calls fail while it is down, with errors naming it, and work
/// again once it is back, with no reconfiguration.
#[test]
fn server_restart_recovers() {
    let _ports = exclusive_ports();
    let Some(mut server) = redis_server() else {
        return;
    };
    let region = region_with(
        redis_config(&server)
            .argument("distributed_lock", true)
            .argument("socket_timeout", 5),
    );
    region.set("k", 1u32).unwrap();
    assert_eq!(region.get::<u32>("k").unwrap(), Some(1));
    server.kill();
    let err = region.get::<u32>("k").unwrap_err();
    assert!(err.is_backend());
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("dogpile.cache.redis at {}: ", server.addr())),
        "{text}"
    );
    assert!(region.get_or_create("k", || 5u32).is_err());
    server.restart();
    // The restarted server is empty (no persistence).
    assert_eq!(region.get::<u32>("k").unwrap(), None);
    region.set("k", 2u32).unwrap();
    assert_eq!(region.get::<u32>("k").unwrap(), Some(2));
    assert_eq!(region.get_or_create("j", || 3u32).unwrap(), 3);
    // Again, with idle pooled connections from several threads broken by the restart.
    let region = Arc::new(region);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let r = region.clone();
            std::thread::spawn(move || r.set(&format!("t{i}"), i).unwrap())
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    server.restart();
    for i in 0..4u32 {
        assert_eq!(region.get::<u32>(&format!("t{i}")).unwrap(), None);
        region.set(&format!("t{i}"), i).unwrap();
    }
    assert_eq!(
        region.get_multi::<u32, _>(&["t0", "t3"]).unwrap(),
        vec![Some(0), Some(3)]
    );
}

/// The async path: the multiplexed connection, the async lock, and recovery.
#[test]
fn async_operations() {
    let _ports = exclusive_ports();
    let Some(mut server) = redis_server() else {
        return;
    };
    let region = Arc::new(region_with(
        redis_config(&server).argument("distributed_lock", true),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        region.set_async("a", 1u32).await.unwrap();
        assert_eq!(region.get_async::<u32>("a").await.unwrap(), Some(1));
        assert_eq!(region.get::<u32>("a").unwrap(), Some(1));
        region.delete_async("a").await.unwrap();
        assert_eq!(region.get_async::<u32>("a").await.unwrap(), None);

        // Many tasks on one cold key: one creation.
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (r, calls) = (region.clone(), calls.clone());
                tokio::spawn(async move {
                    r.get_or_create_async("cold", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        "made".to_string()
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "made");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // The creator released the lock (through the async connection) before returning.
        assert!(!region.key_is_locked("cold").unwrap());
    });

    // The server restarts under a live runtime: the shared connection is replaced.
    rt.block_on(async {
        region.set_async("before", 1u32).await.unwrap();
        server.restart();
        assert_eq!(region.get_async::<u32>("before").await.unwrap(), None);
        region.set_async("after", 2u32).await.unwrap();
        assert_eq!(region.get_async::<u32>("after").await.unwrap(), Some(2));
        assert_eq!(
            region
                .get_or_create_async("after-cold", || async { 3u32 })
                .await
                .unwrap(),
            3
        );
    });
    drop(rt);

    // The shared connection outlives its runtime and the server: both are replaced.
    server.restart();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(region.get_async::<String>("cold").await.unwrap(), None);
        region.set_async("b", 2u32).await.unwrap();
        assert_eq!(region.get_async::<u32>("b").await.unwrap(), Some(2));
        // A creation on a single-threaded runtime takes and releases the lock asynchronously.
        let made = region
            .get_or_create_async("one-thread", || async { 4u32 })
            .await
            .unwrap();
        assert_eq!(made, 4);
        assert!(!region.key_is_locked("one-thread").unwrap());
    });
    // Outside tokio, the async methods use the blocking connections.
    let v = futures_block_on(region.get_async::<u32>("b"));
    assert_eq!(v.unwrap(), Some(2));
}

/// Drives a future on this thread, outside any tokio runtime.
fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// A Python dogpile configuration file, as a string map, configures the backend unchanged.
#[test]
fn configure_from_a_python_style_config() {
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let map = [
        ("cache.redis.backend", "dogpile.cache.redis".to_owned()),
        ("cache.redis.expiration_time", "3600".to_owned()),
        ("cache.redis.arguments.host", "127.0.0.1".to_owned()),
        ("cache.redis.arguments.port", server.port.to_string()),
        ("cache.redis.arguments.db", "1".to_owned()),
        (
            "cache.redis.arguments.redis_expiration_time",
            "7200".to_owned(),
        ),
        ("cache.redis.arguments.distributed_lock", "True".to_owned()),
        (
            "cache.redis.arguments.thread_local_lock",
            "False".to_owned(),
        ),
        ("cache.redis.arguments.lock_timeout", "30".to_owned()),
        ("cache.redis.arguments.socket_timeout", "5".to_owned()),
    ];
    let region: CacheRegion = CacheRegion::new();
    region
        .configure_from_config(map.clone(), "cache.redis.")
        .unwrap();
    assert_eq!(region.get_or_create("k", || 1u32).unwrap(), 1);
    let mut con = raw(&server.addr());
    let _: () = cmd(&mut con, &["SELECT", "1"]);
    let pttl: i64 = cmd(&mut con, &["PTTL", "k"]);
    assert!(pttl > 3_600_000 && pttl <= 7_200_000, "PTTL {pttl}");

    // A server TTL below the region's expiration is refused, naming the configuration key.
    let mut low = map.to_vec();
    low[5].1 = "600".to_owned();
    let err = CacheRegion::new()
        .configure_from_config(low, "cache.redis.")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cache.redis.arguments.redis_expiration_time: 600 s must exceed the region's expiration_time (3600 s)"),
        "{err}"
    );
}

/// dogpile's lock arguments from a config map (string values, coerced as dogpile does):
/// `lock_prefix` names the lock key, `lock_blocking_timeout` and `lock_blocking` are reported by
/// `Backend::lock_blocking_timeout` (`lock_blocking = false` is zero: never wait), and a prefix
/// outside dogpile's rule is an error naming its configuration key. On main these arguments were
/// unknown, so each configuration failed.
#[test]
fn lock_arguments_from_a_config_map() {
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let map = |extra: &[(&str, &str)]| {
        let mut map = vec![
            (
                "cache.redis.backend".to_owned(),
                "dogpile.cache.redis".to_owned(),
            ),
            ("cache.redis.arguments.url".to_owned(), url(&server)),
            (
                "cache.redis.arguments.distributed_lock".to_owned(),
                "true".to_owned(),
            ),
        ];
        for (k, v) in extra {
            map.push((format!("cache.redis.arguments.{k}"), (*v).to_owned()));
        }
        map
    };
    let configured = |extra: &[(&str, &str)]| -> dogpile::Result<CacheRegion> {
        let region: CacheRegion = CacheRegion::new();
        region.configure_from_config(map(extra), "cache.redis.")?;
        Ok(region)
    };

    let region = configured(&[
        ("lock_prefix", "dp:lk."),
        ("lock_blocking", "true"),
        ("lock_blocking_timeout", "2.5"),
    ])
    .unwrap();
    let backend = region.backend().unwrap();
    assert_eq!(
        backend.lock_blocking_timeout(),
        Some(Duration::from_millis(2500))
    );
    let lock = backend.get_mutex("k").unwrap();
    assert!(lock.try_acquire().unwrap());
    let mut con = raw(&server.addr());
    assert!(cmd::<bool>(&mut con, &["EXISTS", "dp:lk.k"]));
    assert!(!cmd::<bool>(&mut con, &["EXISTS", "_lockk"]));
    assert!(region.key_is_locked("k").unwrap());
    lock.release().unwrap();
    assert!(!cmd::<bool>(&mut con, &["EXISTS", "dp:lk.k"]));

    let region =
        configured(&[("lock_blocking", "False"), ("lock_blocking_timeout", "10")]).unwrap();
    assert_eq!(
        region.backend().unwrap().lock_blocking_timeout(),
        Some(Duration::ZERO)
    );
    // Python dogpile's defaults: the `_lock` prefix, and no bound of the backend's own.
    let region = configured(&[]).unwrap();
    let backend = region.backend().unwrap();
    assert_eq!(backend.lock_blocking_timeout(), None);
    let lock = backend.get_mutex("k").unwrap();
    assert!(lock.try_acquire().unwrap());
    assert!(cmd::<bool>(&mut con, &["EXISTS", "_lockk"]));
    lock.release().unwrap();

    for (name, value, says) in [
        ("lock_prefix", "x", "expected 2 to 10 letters"),
        ("lock_prefix", "far_too_long", "expected 2 to 10 letters"),
        ("lock_prefix", "no spaces", "expected 2 to 10 letters"),
        ("lock_blocking", "maybe", "expected true or false"),
        (
            "lock_blocking_timeout",
            "soon",
            "expected a number of seconds",
        ),
    ] {
        let err = configured(&[(name, value)]).err().map(|e| e.to_string());
        let err = err.unwrap_or_else(|| panic!("{name}={value:?} was accepted"));
        assert!(
            err.starts_with(&format!("cache.redis.arguments.{name}: {says}")),
            "{name}={value:?}: {err}"
        );
    }
}

/// Bad arguments are errors that name them.
#[test]
fn unknown_arguments_are_errors() {
    let err = dogpile::make_region()
        .configure(RegionConfig::new("dogpile.cache.redis").argument("hostname", "x"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("arguments.hostname: unknown argument for dogpile.cache.redis"),
        "{err}"
    );
    let err = dogpile::make_region()
        .configure(RegionConfig::new("dogpile.cache.redis_cluster"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("arguments.startup_nodes: missing"), "{err}");
}

/// A three-master cluster on free loopback ports.
struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let dir = TempDir::new("redis-cluster");
            let path = dir.path().to_string_lossy().into_owned();
            let server = Server::start("redis-server", |port| {
                let mut args = support::redis_args(port);
                args.extend(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("{path}/nodes-{port}.conf"),
                        "--cluster-node-timeout",
                        "5000",
                        "--dir",
                        &path,
                    ]
                    .map(String::from),
                );
                args
            })?;
            nodes.push(server.with_dir(dir));
        }
        let cli = support::find_binary("redis-cli");
        let Some(cli) = cli else {
            if support::servers_required() {
                panic!("redis-cli is not installed, and DOGPILE_REQUIRE_SERVERS=1 requires it");
            }
            eprintln!("SKIPPED: redis-cli is not installed");
            return None;
        };
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(Server::addr))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes };
        cluster.wait_ok();
        Some(cluster)
    }

    /// A readiness wait: every node must see the whole cluster as ok.
    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in &self.nodes {
            let mut con = raw(&node.addr());
            loop {
                let info: String = cmd(&mut con, &["CLUSTER", "INFO"]);
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster never became ok: {info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn config(&self) -> RegionConfig {
        self.config_named("dogpile.cache.redis_cluster")
    }

    /// The cluster backend under `name` (Redis's or Valkey's).
    fn config_named(&self, name: &str) -> RegionConfig {
        let nodes: Vec<String> = self.nodes.iter().map(Server::addr).collect();
        RegionConfig::new(name)
            .expiration_time(60)
            .argument("startup_nodes", nodes)
            .argument("socket_timeout", 10)
    }
}

/// Every region operation on a cluster, under the Redis name and the Valkey one; multi-key
/// operations span slots on all three masters.
#[test]
fn cluster_operations() {
    let _ports = shared_ports();
    let Some(cluster) = Cluster::start() else {
        return;
    };
    for name in [
        "dogpile.cache.redis_cluster",
        "dogpile.cache.valkey_cluster",
    ] {
        for node in &cluster.nodes {
            let _: () = cmd(&mut raw(&node.addr()), &["FLUSHALL"]);
        }
        cluster_operations_on(&cluster, name);
    }
}

fn cluster_operations_on(cluster: &Cluster, name: &str) {
    let region = region_with(
        cluster
            .config_named(name)
            .argument("distributed_lock", true)
            .argument("redis_expiration_time", 300),
    );
    region.set("a", "alpha".to_string()).unwrap();
    assert_eq!(region.get::<String>("a").unwrap().as_deref(), Some("alpha"));
    region.delete("a").unwrap();
    assert_eq!(region.get::<String>("a").unwrap(), None);

    let keys: Vec<String> = (0..60).map(|i| format!("key{i}")).collect();
    region
        .set_multi(keys.iter().enumerate().map(|(i, k)| (k.as_str(), i as u32)))
        .unwrap();
    let got = region.get_multi::<u32, _>(&keys).unwrap();
    assert_eq!(got, (0..60).map(|i| Some(i as u32)).collect::<Vec<_>>());
    // The keys are spread over the three masters, each with the server TTL.
    for node in &cluster.nodes {
        let mut con = raw(&node.addr());
        let n: i64 = cmd(&mut con, &["DBSIZE"]);
        assert!(n > 0, "a master holds no key");
        let some: Vec<String> = cmd(&mut con, &["KEYS", "key*"]);
        let pttl: i64 = cmd(&mut con, &["PTTL", &some[0]]);
        assert!(pttl > 0 && pttl <= 300_000, "PTTL {pttl}");
    }
    // Without a server TTL, set_multi is one MSET, which the cluster client splits per slot.
    let no_ttl = region_with(cluster.config_named(name));
    no_ttl
        .set_multi(keys.iter().map(|k| (k.as_str(), k.len() as u32)))
        .unwrap();
    assert_eq!(
        no_ttl.get_multi::<u32, _>(&keys).unwrap(),
        keys.iter()
            .map(|k| Some(k.len() as u32))
            .collect::<Vec<_>>()
    );
    region
        .set_multi(keys.iter().enumerate().map(|(i, k)| (k.as_str(), i as u32)))
        .unwrap();
    region.delete_multi(&keys[..30]).unwrap();
    let got = region.get_multi::<u32, _>(&keys).unwrap();
    assert!(got[..30].iter().all(Option::is_none));
    assert!(got[30..].iter().all(Option::is_some));

    // get_or_create with the distributed lock, from many threads.
    let region = Arc::new(region);
    let (values, creations) =
        support::threads_on_one_cold_key(&region, 8, Duration::from_millis(100), 7u64);
    assert_eq!(values, [7; 8]);
    assert_eq!(creations, 1);
    assert!(!region.key_is_locked("cold").unwrap());

    let got = region
        .get_or_create_multi(&["x1", "key40", "x2"], |ks| {
            ks.iter().map(|_| 1000u32).collect()
        })
        .unwrap();
    assert_eq!(got, vec![1000, 40, 1000]);

    // Async, on the cluster's async connection.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        region.set_async("async", 5u32).await.unwrap();
        assert_eq!(region.get_async::<u32>("async").await.unwrap(), Some(5));
        region.delete_async("async").await.unwrap();
        assert_eq!(region.get_async::<u32>("async").await.unwrap(), None);
        assert_eq!(
            region
                .get_or_create_async("async-cold", || async { 9u32 })
                .await
                .unwrap(),
            9
        );
    });
}

/// A cluster master restarts (empty, with its node file): the backend reconnects by itself.
#[test]
fn cluster_node_restart_recovers() {
    let _ports = exclusive_ports();
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let region = region_with(cluster.config().argument("distributed_lock", true));
    let keys: Vec<String> = (0..30).map(|i| format!("key{i}")).collect();
    region
        .set_multi(keys.iter().map(|k| (k.as_str(), 1u32)))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { region.set_async("async", 1u32).await.unwrap() });

    cluster.nodes[0].restart();
    cluster.wait_ok();

    // The restarted master lost its keys; the others kept theirs.
    let got = region.get_multi::<u32, _>(&keys).unwrap();
    let kept = got.iter().filter(|v| v.is_some()).count();
    assert!(
        kept > 0 && kept < keys.len(),
        "kept {kept} of {}",
        keys.len()
    );
    region
        .set_multi(keys.iter().map(|k| (k.as_str(), 2u32)))
        .unwrap();
    assert_eq!(
        region.get_multi::<u32, _>(&keys).unwrap(),
        vec![Some(2); keys.len()]
    );
    assert_eq!(region.get_or_create("after", || 3u32).unwrap(), 3);
    rt.block_on(async {
        region.set_async("async", 4u32).await.unwrap();
        assert_eq!(region.get_async::<u32>("async").await.unwrap(), Some(4));
    });
}
