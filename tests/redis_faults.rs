//! The Redis backend never hangs and never leaves a lock behind, against a real `redis-server`
//! reached through the loopback fault proxy (`tests/support/fault_proxy.rs`):
//!
//! * a blackholed server with default settings: every call returns (a decorated function its
//!   body's value, region methods an error) within a bound;
//! * a wait for a pooled connection is bounded by `pool_timeout`;
//! * an acquire whose reply is lost, an async acquire cancelled mid-flight, and an acquire
//!   retried after a broken connection: no lock is left on the server once the fault clears
//!   (our own token is deleted, or recognised and taken);
//! * held locks are all extended in one round trip, so a slow link does not make them expire;
//! * a soak: 8 threads call decorated functions and `get_or_create` while faults come and go.
//!
//! A hang is detected by a generous deadline on a helper thread, never by a tight wall-clock
//! bound. Without `redis-server` the tests print SKIPPED and pass, unless
//! `DOGPILE_REQUIRE_SERVERS=1`.
#![cfg(feature = "redis")]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile::{CacheRegion, RegionConfig};
use support::fault_proxy::{Fault, FaultProxy};
use support::{raw_redis as raw, redis_cmd as cmd, within, Server};

/// How long the tests wait for locks to go once a fault has cleared: far less than their
/// `lock_timeout`, so expiry cannot be what clears them.
const HANG: Duration = support::soak::HANG;

/// The lock keys on the server, read directly (not through the proxy).
fn lock_keys(server: &Server) -> Vec<String> {
    let mut keys: Vec<String> = cmd(&mut raw(&server.addr()), &["KEYS", "_lock*"]);
    keys.sort();
    keys
}

/// Waits (at most [`HANG`]) until no lock key is left on the server.
fn wait_no_locks(server: &Server, what: &str) {
    support::soak::wait_no_locks(what, &|| lock_keys(server));
}

/// A server and a fault proxy in front of it.
fn server_and_proxy() -> Option<(Server, FaultProxy)> {
    let server = Server::redis()?;
    let proxy = FaultProxy::start(&server.addr());
    Some((server, proxy))
}

/// A region on the proxy, with the distributed lock and the arguments `more` adds.
fn region_on(proxy: &FaultProxy, more: impl FnOnce(RegionConfig) -> RegionConfig) -> CacheRegion {
    let config = RegionConfig::new("dogpile.cache.redis")
        .expiration_time(600)
        .argument("url", format!("redis://{}", proxy.addr()))
        .argument("distributed_lock", true);
    dogpile::make_region().configure(more(config)).unwrap()
}

// ------------------------------------------------------------------------------------------------
// default settings on a blackholed server

mod blackholed {
    use dogpile::{cache_on_arguments, CacheRegion};

    pub static REGION: CacheRegion = CacheRegion::new();

    #[cache_on_arguments(region = REGION)]
    pub fn square(x: u64) -> u64 {
        x * x + 1
    }
}

/// With default settings (no timeout given), a server that accepts and never answers makes
/// every call fail within the default bounds (3 s per reply), never hang: a decorated function
/// returns its body's value, region methods (blocking and async) return an error. Measured here
/// about 3 s per call; the stated bound is [`HANG`].
#[test]
fn a_blackholed_redis_with_default_settings_never_hangs() {
    let Some((_server, proxy)) = server_and_proxy() else {
        return;
    };
    blackholed::REGION
        .configure(
            RegionConfig::new("dogpile.cache.redis")
                .expiration_time(600)
                .argument("url", format!("redis://{}", proxy.addr()))
                .argument("distributed_lock", true),
        )
        .unwrap();
    let region = &blackholed::REGION;
    // Connections made while the server answers, then the blackhole.
    assert_eq!(blackholed::square(3), 10);
    region.set("async", 1u32).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(region.get_async::<u32>("async")).unwrap(),
        Some(1)
    );
    proxy.set(Fault::Blackhole);

    let start = Instant::now();
    assert_eq!(within("a decorated call", || blackholed::square(4)), 17);
    assert_eq!(within("a decorated hit", || blackholed::square(3)), 10);
    let e = within("region.get", || region.get::<u32>("k")).unwrap_err();
    assert!(e.is_backend(), "{e}");
    let e = within("region.get_or_create", || {
        region.get_or_create("k", || 5u32)
    })
    .unwrap_err();
    assert!(e.is_backend(), "{e}");
    let e = within("region.get_async", move || {
        rt.block_on(region.get_async::<u32>("async"))
    })
    .unwrap_err();
    assert!(e.is_backend(), "{e}");
    eprintln!("five calls on a blackholed server: {:?}", start.elapsed());

    // The fault clears: caching resumes by itself.
    proxy.set(Fault::Pass);
    let deadline = Instant::now() + HANG;
    while region.set("after", 2u32).is_err() {
        assert!(Instant::now() < deadline, "no recovery after the blackhole");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(region.get::<u32>("after").unwrap(), Some(2));
}

/// A caller that finds every pooled connection lent (here the one, stuck on a blackholed
/// server for up to its 30 s reply timeout) waits at most `pool_timeout`, and gets an error
/// that says so. (On main `pool_timeout` did not exist, and the wait had no bound.)
#[test]
fn a_wait_for_a_pooled_connection_is_bounded() {
    let Some((_server, proxy)) = server_and_proxy() else {
        return;
    };
    let region = Arc::new(region_on(&proxy, |c| {
        c.argument("pool_size", 1)
            .argument("socket_timeout", 30)
            .argument("pool_timeout", 0.2)
    }));
    region.set("a", 1u32).unwrap();
    proxy.set(Fault::Blackhole);
    let stuck = {
        let region = region.clone();
        std::thread::spawn(move || region.get::<u32>("a"))
    };
    // The stuck call holds the one connection: wait until it has sent its request.
    std::thread::sleep(Duration::from_millis(300));
    let r = region.clone();
    let e = within("a call waiting for the pool", move || r.get::<u32>("b"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("all 1 connections stayed busy for 0.2 s (pool_size, pool_timeout)"),
        "{e}"
    );
    proxy.set(Fault::Pass);
    assert_eq!(stuck.join().unwrap().unwrap(), Some(1));
}

// ------------------------------------------------------------------------------------------------
// locks possibly ours

/// An acquire whose reply is lost (the proxy delays the request past the 0.5 s reply timeout,
/// so the lock is set after the caller gave up): once the fault clears, the lock (our token) is
/// deleted, long before its 300 s expiry. On main it stayed for `lock_timeout`.
#[test]
fn an_acquire_whose_reply_is_lost_leaves_no_lock() {
    let Some((server, proxy)) = server_and_proxy() else {
        return;
    };
    let region = region_on(&proxy, |c| {
        c.argument("socket_timeout", 0.5)
            .argument("lock_timeout", 300)
    });
    let backend = region.backend().unwrap();
    let lock = backend.get_mutex("lost").unwrap();
    assert!(!lock.locked().unwrap());
    proxy.set(Fault::Latency(Duration::from_secs(2)));
    let e = lock.try_acquire().unwrap_err();
    assert!(e.to_string().contains("taking a lock"), "{e}");
    drop(lock);
    // The late request reaches the server 2 s after it was sent.
    let mut direct = raw(&server.addr());
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut seen = false;
    while Instant::now() < deadline {
        seen |= cmd::<bool>(&mut direct, &["EXISTS", "_locklost"]);
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("the late acquire set the lock on the server: {seen}");
    proxy.set(Fault::Pass);
    wait_no_locks(&server, "an acquire whose reply was lost");
}

/// An async acquire cancelled while its request is on the way (here a timeout around it, with a
/// 1 s latency on the link): the lock it sets is deleted once the handle is dropped and the
/// server answers. On main it stayed for `lock_timeout` (300 s).
#[test]
fn an_async_acquire_cancelled_mid_flight_leaves_no_lock() {
    let Some((server, proxy)) = server_and_proxy() else {
        return;
    };
    let region = region_on(&proxy, |c| {
        c.argument("socket_timeout", 10)
            .argument("lock_timeout", 300)
    });
    let backend = region.backend().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The shared async connection, made while the link is fast.
        region.set_async("warm", 1u32).await.unwrap();
        let lock: Arc<dyn dogpile::CacheMutex> = backend.get_mutex("cancelled").unwrap().into();
        proxy.set(Fault::Latency(Duration::from_secs(1)));
        let cancelled =
            tokio::time::timeout(Duration::from_millis(200), lock.clone().try_acquire_async())
                .await;
        assert!(cancelled.is_err(), "the acquire was to be cancelled");
        drop(lock);
        // The request reaches the server 1 s after it was sent.
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    proxy.set(Fault::Pass);
    wait_no_locks(&server, "a cancelled async acquire");
}

/// An acquire whose connection breaks after the server set the lock and before the reply came
/// back is retried on a new connection: the retry recognises our own token and takes the lock
/// (on main its `SET NX` failed on our own first one: the caller waited on itself for
/// `lock_timeout`). The proxy delays the request 2 s, holds the reply (blackhole), then closes
/// the connection.
#[test]
fn an_acquire_retried_after_a_broken_connection_takes_its_own_lock() {
    let Some((server, proxy)) = server_and_proxy() else {
        return;
    };
    let region = region_on(&proxy, |c| {
        c.argument("socket_timeout", 30)
            .argument("lock_timeout", 300)
    });
    let backend = region.backend().unwrap();
    let lock: Arc<dyn dogpile::CacheMutex> = Arc::from(backend.get_mutex("retried").unwrap());
    // A pooled connection, reused by the acquire (only a reused connection is retried).
    assert!(!lock.locked().unwrap());
    proxy.set(Fault::Latency(Duration::from_secs(2)));
    let acquire = {
        let lock = lock.clone();
        std::thread::spawn(move || lock.try_acquire())
    };
    let mut direct = raw(&server.addr());
    let deadline = Instant::now() + HANG;
    while !cmd::<bool>(&mut direct, &["EXISTS", "_lockretried"]) {
        assert!(
            Instant::now() < deadline,
            "the acquire never reached the server"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // The reply is on its way back, 2 s late: hold it, then break the connection.
    proxy.set(Fault::Blackhole);
    std::thread::sleep(Duration::from_secs(3));
    proxy.set(Fault::Close);
    proxy.set(Fault::Pass);
    let taken = within("the retried acquire", move || acquire.join().unwrap());
    assert!(
        taken.unwrap(),
        "the retry did not recognise its own lock, and would wait on it"
    );
    lock.release().unwrap();
    assert_eq!(lock_keys(&server), Vec::<String>::new());
}

/// Eight locks held by slow creations on a slow link (0.3 s each way): the keeper extends them
/// all in one round trip, so none expires while its holder lives (on main it extended them one
/// after the other, 8 × 0.6 s per round against a 3 s `lock_timeout`, and locks expired).
#[test]
fn held_locks_are_extended_together_on_a_slow_link() {
    let Some((server, proxy)) = server_and_proxy() else {
        return;
    };
    let region = Arc::new(region_on(&proxy, |c| {
        c.argument("socket_timeout", 10).argument("lock_timeout", 3)
    }));
    let creations = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let holders: Vec<_> = (0..8)
        .map(|i| {
            let (region, creations, release) = (region.clone(), creations.clone(), release.clone());
            std::thread::spawn(move || {
                region.get_or_create(&format!("slow{i}"), || {
                    creations.fetch_add(1, Ordering::SeqCst);
                    while !release.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    i
                })
            })
        })
        .collect();
    let deadline = Instant::now() + HANG;
    while lock_keys(&server).len() < 8 {
        assert!(
            Instant::now() < deadline,
            "the holders never took their locks"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    proxy.set(Fault::Latency(Duration::from_millis(300)));
    // Three lock_timeouts: an unextended lock would be gone by then.
    let watch_until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < watch_until {
        let held = lock_keys(&server);
        assert_eq!(
            held.len(),
            8,
            "a lock expired while its holder lived: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy.set(Fault::Pass);
    release.store(true, Ordering::SeqCst);
    for (i, h) in holders.into_iter().enumerate() {
        assert_eq!(h.join().unwrap().unwrap(), i);
    }
    assert_eq!(creations.load(Ordering::SeqCst), 8);
    assert_eq!(lock_keys(&server), Vec::<String>::new());
}

// ------------------------------------------------------------------------------------------------
// the soak

/// The shared soak (`tests/support/soak.rs`) on Redis: 8 threads under faults that come and
/// go; every call returns within a bound with the right value, no key has two creators under
/// the lock, and no lock key is left once the faults stop (well before their 300 s expiry).
#[test]
fn decorated_functions_under_faults_that_come_and_go() {
    let Some((server, proxy)) = server_and_proxy() else {
        return;
    };
    let config = RegionConfig::new("dogpile.cache.redis")
        .expiration_time(Duration::from_millis(200))
        .argument("url", format!("redis://{}", proxy.addr()))
        .argument("socket_timeout", 0.3)
        .argument("socket_connect_timeout", 0.3)
        .argument("distributed_lock", true)
        .argument("lock_timeout", 300);
    support::soak::run(config, &proxy, &|| lock_keys(&server));
}
