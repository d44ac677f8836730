//! `dogpile.cache.redis_sentinel` against real processes on loopback: a master, a replica and
//! three sentinels (`redis-server --sentinel`). Values are written, the master is killed, the
//! sentinels promote the replica, and within a bounded time the same region (not reconfigured)
//! reads and writes again, and its distributed lock still gives one creator.
//!
//! Without `redis-server` the test prints SKIPPED and passes, unless
//! `DOGPILE_REQUIRE_SERVERS=1`.
#![cfg(feature = "redis")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile::RegionConfig;
use support::recording_sink::RecordingSink;
use support::{raw_redis as raw, redis_args, redis_cmd as cmd, redis_sentinel, within, Server};

/// The bound on replication, the sentinels and a failover, which take a few seconds: under
/// `within`'s 60 s, so a stuck failover fails with its own message, not as a hang.
const BOUND: Duration = Duration::from_secs(45);

/// Waits (polling every 50 ms, within [`BOUND`]) for replication, the sentinels, the failover.
fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    support::wait_for_within(what, Duration::from_millis(50), BOUND, cond);
}

/// One field of `INFO replication` on the server at `addr`; `None` also while the server
/// refuses or resets connections (it does so for a moment when its role changes).
fn replication(addr: &str, field: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://{addr}")).ok()?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .ok()?;
    let info: String = redis::cmd("INFO").arg("replication").query(&mut con).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// A master, its replica (synced) and three sentinels that know both and each other.
fn topology(tag: &str) -> Option<(Server, Server, Vec<Server>)> {
    let master = Server::redis()?;
    let master_port = master.port;
    let replica = Server::start("redis-server", |port| {
        let mut args = redis_args(port);
        args.extend(["--replicaof", "127.0.0.1", &master_port.to_string()].map(String::from));
        args
    })?;
    wait_until("the replica syncing", || {
        replication(&replica.addr(), "master_link_status").as_deref() == Some("up")
    });
    let sentinels: Vec<Server> = (0..3)
        .map(|i| redis_sentinel(master_port, &format!("{tag}-{i}")).expect("a sentinel"))
        .collect();
    for s in &sentinels {
        wait_until("a sentinel seeing the replica and its peers", || {
            let mut con = raw(&s.addr());
            let replicas: Vec<redis::Value> = cmd(&mut con, &["SENTINEL", "REPLICAS", "mymaster"]);
            let peers: Vec<redis::Value> = cmd(&mut con, &["SENTINEL", "SENTINELS", "mymaster"]);
            replicas.len() == 1 && peers.len() == 2
        });
    }
    Some((master, replica, sentinels))
}

/// A Sentinel region on `sentinels`, not to be reconfigured.
fn sentinel_region(sentinels: &[Server]) -> Arc<dogpile::CacheRegion> {
    let addrs: Vec<String> = sentinels.iter().map(Server::addr).collect();
    Arc::new(
        dogpile::make_region()
            .configure(
                RegionConfig::new("dogpile.cache.redis_sentinel")
                    .expiration_time(600)
                    .argument("sentinels", addrs.join(", "))
                    .argument("service_name", "mymaster")
                    .argument("socket_timeout", 1)
                    .argument("lock_timeout", 30),
            )
            .unwrap(),
    )
}

/// Asks the sentinels for a failover (`SENTINEL FAILOVER`) and waits until the replica is the
/// master and the old master its replica.
fn planned_failover(master: &Server, replica: &Server, sentinels: &[Server]) {
    let _: String = cmd(
        &mut raw(&sentinels[0].addr()),
        &["SENTINEL", "FAILOVER", "mymaster"],
    );
    wait_until("the replica promoted", || {
        replication(&replica.addr(), "role").as_deref() == Some("master")
    });
    wait_until("the old master demoted", || {
        replication(&master.addr(), "role").as_deref() == Some("slave")
    });
}

/// A planned failover (`SENTINEL FAILOVER`) keeps the old master alive, as a replica: the
/// region's writes reach the new master, not the old one, without reconfiguring. (Redis drops
/// its clients when it is demoted, so the backend's reconnect does the work here; a connection
/// that survived would answer `READONLY`, which the backend also treats as broken.)
#[test]
fn after_a_planned_failover_writes_go_to_the_new_master() {
    let Some((master, replica, sentinels)) = topology("planned") else {
        return;
    };
    let region = sentinel_region(&sentinels);
    region.set("before", 1u32).unwrap();
    planned_failover(&master, &replica, &sentinels);
    let region2 = region.clone();
    within("the region writing to the new master", move || {
        wait_until("a write after the planned failover", || {
            region2.set("after", 2u32).is_ok()
        })
    });
    // The write is on the new master (the old one, a replica now, could not take it).
    let on_new: Option<Vec<u8>> = cmd(&mut raw(&replica.addr()), &["GET", "after"]);
    assert!(on_new.is_some(), "the write did not reach the new master");
    assert_eq!(region.get::<u32>("after").unwrap(), Some(2));
    assert_eq!(region.get::<u32>("before").unwrap(), Some(1));
}

/// The backend's backplane follows a planned failover too: the old master drops its
/// subscriber when it is demoted, the subscription reconnects through the sentinels to the new
/// master (`connected` again), and what the backplane publishes afterwards reaches it there.
#[test]
fn after_a_planned_failover_the_backplane_follows_the_new_master() {
    let Some((master, replica, sentinels)) = topology("backplane") else {
        return;
    };
    let backplane = sentinel_region(&sentinels)
        .backend()
        .unwrap()
        .backplane()
        .unwrap()
        .expect("a Sentinel backend's backplane");
    let sink = Arc::new(RecordingSink::default());
    let _subscription = backplane.subscribe("failover", sink.clone()).unwrap();
    support::wait_for("connected()", || sink.times_connected() == 1);
    backplane.publish("failover", b"before").unwrap();
    sink.wait_count(1, "a message before the failover");

    planned_failover(&master, &replica, &sentinels);
    // At least one reconnect (a subscription may reach the old master once more, just before
    // it is demoted, and reconnect again): the proof is the count on the new master below.
    wait_until("the subscription reconnected", || {
        sink.times_connected() >= 2
    });
    assert!(sink.times_disconnected() >= 1);
    // Subscribed on the new master: it counts this subscriber (the old one has none).
    let on_new: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("failover")
        .query(&mut raw(&replica.addr()))
        .unwrap();
    assert_eq!(on_new, [("failover".to_owned(), 1)]);
    let backplane2 = backplane.clone();
    within("publishing to the new master", move || {
        wait_until("a publish after the failover", || {
            backplane2.publish("failover", b"after").is_ok()
        })
    });
    sink.wait_count(2, "the message after the failover");
    assert_eq!(sink.payloads(), [b"before".to_vec(), b"after".to_vec()]);
}

#[test]
fn after_a_failover_the_region_finds_the_new_master_by_itself() {
    let Some((mut master, replica, sentinels)) = topology("killed") else {
        return;
    };
    let region = sentinel_region(&sentinels);
    region
        .set("before", "written before the failover".to_string())
        .unwrap();
    // Replicated before the master dies (WAIT: one replica has it).
    let acked: i64 = cmd(&mut raw(&master.addr()), &["WAIT", "1", "5000"]);
    assert_eq!(acked, 1);

    master.kill();
    let killed = Instant::now();
    // The same region, not reconfigured: calls fail while there is no master, then work.
    let region2 = region.clone();
    within("the region finding the new master", move || {
        wait_until("a write after the failover", || {
            region2.set("after", 1u32).is_ok()
        })
    });
    eprintln!(
        "writes again {:?} after the master was killed",
        killed.elapsed()
    );
    assert_eq!(
        replication(&replica.addr(), "role").as_deref(),
        Some("master")
    );
    assert_eq!(region.get::<u32>("after").unwrap(), Some(1));
    assert_eq!(
        region.get::<String>("before").unwrap().as_deref(),
        Some("written before the failover")
    );
    // The distributed lock (on by default for Sentinel, as in dogpile) on the new master.
    let (values, creations) = support::threads_on_one_cold_key(
        &region,
        6,
        Duration::from_millis(200),
        "made once".to_string(),
    );
    assert_eq!(values, vec!["made once".to_string(); 6]);
    assert_eq!(creations, 1);
    let locks: Vec<String> = cmd(&mut raw(&replica.addr()), &["KEYS", "_lock*"]);
    assert!(locks.is_empty(), "{locks:?}");
    // The async path finds the new master too.
    support::async_round_trip(&region);
}

#[test]
fn the_valkey_sentinel_name_is_the_same_backend() {
    let Some(master) = Server::redis() else {
        return;
    };
    let Some(sentinel) = redis_sentinel(master.port, "valkey-sentinel") else {
        return;
    };
    let region = dogpile::make_region()
        .configure(
            RegionConfig::new("dogpile.cache.valkey_sentinel")
                .argument("sentinels", sentinel.addr())
                .argument("socket_timeout", 2),
        )
        .unwrap();
    region.set("k", 9u8).unwrap();
    assert_eq!(region.get::<u8>("k").unwrap(), Some(9));
    // An unknown service is an error that names it, not a hang.
    let lost = dogpile::make_region()
        .configure(
            RegionConfig::new("dogpile.cache.valkey_sentinel")
                .argument("sentinels", sentinel.addr())
                .argument("service_name", "nosuch")
                .argument("socket_timeout", 2),
        )
        .unwrap();
    let err = lost.get::<u8>("k").unwrap_err().to_string();
    assert!(err.contains("\"nosuch\""), "{err}");
}
