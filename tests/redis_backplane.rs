//! `RedisBackplane`, the Redis pub/sub transport of the backplane, against a real `redis-server`
//! on a free loopback port, and through the loopback fault proxy
//! (`tests/support/fault_proxy.rs`):
//!
//! * two backplanes (as two processes would have): what one publishes reaches the other's sink
//!   intact and in order, and an idle subscription hears heartbeats;
//! * a blackholed, reset or closed link, and a killed server: the sink hears `disconnected`
//!   once, then `connected` when the link heals, and messages flow again;
//! * a publish to a blackholed server fails within its bound, never hangs;
//! * dropping the subscription ends deliveries and its thread;
//! * the backends give a backplane on their own server (`dogpile.cache.redis`, `valkey`,
//!   `redis_sentinel`), a cluster none;
//! * the delivery latency on loopback, printed (run with `--nocapture`).
//!
//! Bounds on waits are generous deadlines (`support::wait_for`, `support::within`), never tight
//! wall-clock assertions; measured times are printed. Without `redis-server` the tests print
//! SKIPPED and pass, unless `DOGPILE_REQUIRE_SERVERS=1`.
#![cfg(feature = "redis")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile::backend::redis::RedisBackplane;
use dogpile::config::Arguments;
use dogpile::RegionConfig;
// The facade does not re-export the backplane module (yet): the core's path.
use dogpile_core::backplane::{Backplane, Subscription};
use support::fault_proxy::{Fault, FaultProxy};
use support::recording_sink::RecordingSink;
use support::{exclusive_ports, redis_sentinel, shared_ports, wait_for, within, Server};

/// The heartbeat of the subscriptions under test: short, so outages show quickly.
const HEARTBEAT: Duration = Duration::from_millis(50);

/// A backplane on `addr` (`host:port`) with short timeouts (0.5 s per reply) and [`HEARTBEAT`].
fn backplane(addr: &str) -> RedisBackplane {
    RedisBackplane::from_arguments(
        &Arguments::new()
            .with("url", format!("redis://{addr}"))
            .with("socket_timeout", 0.5)
            .with("heartbeat", HEARTBEAT.as_secs_f64()),
    )
    .expect("a backplane")
}

/// A subscriber's backplane on `addr` whose replies may take a minute (`socket_timeout` 60 s,
/// connecting 0.5 s): an outage it reports soon is found by its heartbeat pings, not by a
/// reply timeout.
fn patient_backplane(addr: &str) -> RedisBackplane {
    RedisBackplane::from_arguments(
        &Arguments::new()
            .with("url", format!("redis://{addr}"))
            .with("socket_timeout", 60)
            .with("socket_connect_timeout", 0.5)
            .with("heartbeat", HEARTBEAT.as_secs_f64()),
    )
    .expect("a backplane")
}

/// The stated bound on reporting an outage: about two heartbeats are expected (a read timeout,
/// then an unanswered ping), this is two hundred, so a loaded machine never fails it, while a
/// transport that waits for its reply timeout (60 s in [`patient_backplane`]) does.
const DETECTION_BOUND: Duration = Duration::from_secs(10);

/// Waits for `cond` and checks that it took less than [`DETECTION_BOUND`]; returns how long.
fn reported_within_bound(what: &str, since: Instant, cond: impl FnMut() -> bool) -> Duration {
    wait_for(what, cond);
    let took = since.elapsed();
    assert!(
        took < DETECTION_BOUND,
        "{what} took {took:?}, past {DETECTION_BOUND:?}"
    );
    took
}

/// Subscribes `backplane` to `channel` and waits until the subscription is in place.
fn subscribed(backplane: &RedisBackplane, channel: &str) -> (Arc<RecordingSink>, Subscription) {
    let sink = Arc::new(RecordingSink::default());
    let subscription = backplane
        .subscribe(channel, sink.clone())
        .expect("subscribing");
    wait_for("the first connected()", || sink.times_connected() == 1);
    (sink, subscription)
}

/// A server, and two backplanes on it as two processes would have them: `sink` hears what is
/// published on the channel for as long as `subscription` lives; `publisher` publishes.
struct Pair {
    sink: Arc<RecordingSink>,
    subscription: Subscription,
    publisher: RedisBackplane,
    server: Server,
}

/// A [`Pair`] on a new server, subscribed to `channel`; `None` when there is no `redis-server`.
fn pair(channel: &str) -> Option<Pair> {
    let server = Server::redis()?;
    let (sink, subscription) = subscribed(&backplane(&server.addr()), channel);
    let publisher = backplane(&server.addr());
    Some(Pair {
        sink,
        subscription,
        publisher,
        server,
    })
}

/// Publishes one message and waits until the subscriber has it.
fn publish_and_hear(publisher: &RedisBackplane, channel: &str, sink: &RecordingSink) {
    let before = sink.count();
    publisher.publish(channel, b"again").expect("publishing");
    sink.wait_count(before + 1, "a message after the recovery");
    assert_eq!(sink.payloads()[before], b"again");
}

#[test]
fn messages_from_another_backplane_arrive_intact_and_in_order() {
    let _ports = shared_ports();
    let Some(Pair {
        sink,
        publisher,
        subscription: _subscription,
        server: _server,
    }) = pair("orders")
    else {
        return;
    };
    // Every byte value, empty messages, and one of 256 KiB among 1,000 numbered ones.
    let sent: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| match i {
            0 => Vec::new(),
            1 => (0..=255u8).collect(),
            2 => (0..256 * 1024).map(|j| (j % 251) as u8).collect(),
            _ => format!("message {i}\0\r\n").into_bytes(),
        })
        .collect();
    for bytes in &sent {
        publisher.publish("orders", bytes).expect("publishing");
    }
    // Another channel's messages never reach this sink.
    publisher.publish("other", b"not for us").unwrap();
    publisher.publish("orders", b"last").unwrap();
    sink.wait_count(sent.len() + 1, "every message");
    let mut got = sink.payloads();
    assert_eq!(got.pop().as_deref(), Some(&b"last"[..]));
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert!(
            g == s,
            "message {i} differs: {} bytes vs {}",
            g.len(),
            s.len()
        );
    }
    assert_eq!(sink.times_disconnected(), 0);
}

#[test]
fn an_idle_subscription_hears_heartbeats() {
    let _ports = shared_ports();
    // Bound, so that the subscription and the server live to the end of the test.
    let Some(Pair {
        sink,
        subscription: _subscription,
        server: _server,
        ..
    }) = pair("idle")
    else {
        return;
    };
    let before = sink.times_alive();
    let started = Instant::now();
    wait_for("10 heartbeats with no message", || {
        sink.times_alive() >= before + 10
    });
    println!(
        "10 heartbeats (every {HEARTBEAT:?}) took {:?}",
        started.elapsed()
    );
    assert_eq!(sink.count(), 0);
    assert_eq!((sink.times_connected(), sink.times_disconnected()), (1, 0));
}

/// A subscriber through a proxy, a publisher straight to the server: `fault` on the subscriber's
/// link is reported once as `disconnected`, however many reconnection attempts fail; lifting it
/// brings `connected` and messages again.
fn outage_and_recovery(fault: Fault) {
    let _ports = shared_ports();
    let Some(server) = Server::redis() else {
        return;
    };
    let proxy = FaultProxy::start(&server.addr());
    let subscriber = patient_backplane(&proxy.addr());
    let publisher = backplane(&server.addr());
    let (sink, _subscription) = subscribed(&subscriber, "faults");
    publisher.publish("faults", b"before").unwrap();
    sink.wait_count(1, "a message before the fault");

    let accepted = proxy.accepted();
    let cut = Instant::now();
    proxy.set(fault);
    let took = reported_within_bound("disconnected()", cut, || sink.times_disconnected() == 1);
    println!("{fault:?}: disconnected() {took:?} after the fault (heartbeat {HEARTBEAT:?})");
    // The thread keeps trying (and failing) to reconnect; the outage is still reported once.
    wait_for("two more connection attempts", || {
        proxy.accepted() >= accepted + 2
    });
    assert_eq!((sink.times_disconnected(), sink.times_connected()), (1, 1));

    let healed = Instant::now();
    proxy.set(Fault::Pass);
    wait_for("connected() again", || sink.times_connected() == 2);
    println!(
        "{fault:?}: connected() {:?} after the fault was lifted",
        healed.elapsed()
    );
    publish_and_hear(&publisher, "faults", &sink);
    assert_eq!(sink.payloads()[0], b"before");
    assert_eq!(sink.times_disconnected(), 1);
}

#[test]
fn a_blackholed_link_is_reported_and_recovers() {
    outage_and_recovery(Fault::Blackhole);
}

#[test]
fn a_reset_link_is_reported_and_recovers() {
    outage_and_recovery(Fault::Reset);
}

#[test]
fn a_closed_link_is_reported_and_recovers() {
    outage_and_recovery(Fault::Close);
}

#[test]
fn a_killed_and_restarted_server_is_reported_and_recovers() {
    let _ports = exclusive_ports();
    let Some(mut server) = Server::redis() else {
        return;
    };
    let subscriber = patient_backplane(&server.addr());
    let publisher = backplane(&server.addr());
    let (sink, _subscription) = subscribed(&subscriber, "restarts");
    publisher.publish("restarts", b"before").unwrap();
    sink.wait_count(1, "a message before the kill");

    let killed = Instant::now();
    server.kill();
    let took = reported_within_bound("disconnected()", killed, || sink.times_disconnected() == 1);
    println!("kill: disconnected() {took:?} after");
    // The publisher fails while the server is down, and does not hang.
    let down = backplane(&server.addr());
    let err = within("a publish to a killed server", move || {
        down.publish("restarts", b"lost")
    })
    .unwrap_err();
    assert!(err.to_string().contains("publishing"), "{err}");

    let restarted = Instant::now();
    server.restart();
    wait_for("connected() again", || sink.times_connected() == 2);
    println!(
        "restart: connected() {:?} after the server listened again",
        restarted.elapsed()
    );
    // The publisher's connection broke too: it is replaced by itself.
    publish_and_hear(&publisher, "restarts", &sink);
    assert_eq!(sink.times_disconnected(), 1);
}

#[test]
fn publishing_to_a_blackholed_server_fails_within_the_bound() {
    let _ports = shared_ports();
    let Some(server) = Server::redis() else {
        return;
    };
    let proxy = FaultProxy::start(&server.addr());
    // Short timeouts: one publish on a connection made before the blackhole.
    let short = backplane(&proxy.addr());
    short.publish("void", b"ok").unwrap();
    // Default timeouts (3 s per reply), connecting only once the link is blackholed.
    let default = RedisBackplane::from_url(&format!("redis://{}", proxy.addr())).unwrap();
    proxy.set(Fault::Blackhole);
    for (what, backplane) in [("0.5 s timeouts", short), ("default timeouts", default)] {
        let started = Instant::now();
        let err = within("a publish to a blackholed server", move || {
            backplane.publish("void", b"lost")
        })
        .unwrap_err();
        println!(
            "blackholed publish, {what}: failed after {:?}: {err}",
            started.elapsed()
        );
        assert!(err.to_string().contains("\"void\""), "{err}");
    }
}

#[test]
fn dropping_the_subscription_stops_deliveries_and_its_thread() {
    let _ports = shared_ports();
    let Some(Pair {
        sink,
        subscription,
        publisher,
        server,
    }) = pair("stops")
    else {
        return;
    };
    publisher.publish("stops", b"heard").unwrap();
    sink.wait_count(1, "a message before the drop");

    let started = Instant::now();
    within("dropping the subscription", move || drop(subscription));
    println!("dropping the subscription took {:?}", started.elapsed());
    // The thread held the sink: it has let it go once it ended.
    wait_for("the subscription's thread to end", || {
        Arc::strong_count(&sink) == 1
    });
    let (alive, count) = (sink.times_alive(), sink.count());
    for _ in 0..20 {
        publisher.publish("stops", b"unheard").unwrap();
    }
    // Nobody is subscribed any more: the server says so.
    let mut raw = support::raw_redis(&server.addr());
    let subscribers: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("stops")
        .query(&mut raw)
        .unwrap();
    assert_eq!(subscribers, [("stops".to_owned(), 0)]);
    assert_eq!((sink.times_alive(), sink.count()), (alive, count));
}

#[test]
fn the_backends_give_a_backplane_on_their_own_server() {
    let _ports = shared_ports();
    let Some(server) = Server::redis() else {
        return;
    };
    let from_region = |config: RegionConfig| -> Arc<dyn Backplane> {
        let region = dogpile::make_region().configure(config).unwrap();
        let backplane = region.backend().unwrap().backplane().unwrap();
        backplane.expect("a backplane from a single-server backend")
    };
    let url = format!("redis://{}", server.addr());
    let (sink, _subscription) = subscribed(&backplane(&server.addr()), "backends");
    let mut expected = Vec::new();
    for name in ["dogpile.cache.redis", "dogpile.cache.valkey"] {
        let backplane = from_region(RegionConfig::new(name).argument("url", url.clone()));
        assert_eq!(backplane.name(), "redis");
        backplane.publish("backends", name.as_bytes()).unwrap();
        expected.push(name.as_bytes().to_vec());
    }
    let Some(sentinel) = redis_sentinel(server.port, "backplane-sentinel") else {
        return;
    };
    let backplane = from_region(
        RegionConfig::new("dogpile.cache.redis_sentinel")
            .argument("sentinels", sentinel.addr())
            .argument("socket_timeout", 2),
    );
    backplane.publish("backends", b"sentinel").unwrap();
    expected.push(b"sentinel".to_vec());
    // And a subscription through the sentinels finds the master too.
    let (via_sentinel, _sub) = {
        let sink = Arc::new(RecordingSink::default());
        let sub = backplane.subscribe("backends", sink.clone()).unwrap();
        wait_for("connected() through the sentinels", || {
            sink.times_connected() == 1
        });
        (sink, sub)
    };
    backplane.publish("backends", b"to both").unwrap();
    expected.push(b"to both".to_vec());
    sink.wait_count(expected.len(), "every backend's message");
    assert_eq!(sink.payloads(), expected);
    via_sentinel.wait_count(1, "the message through the sentinels");
    assert_eq!(via_sentinel.payloads(), [b"to both".to_vec()]);
}

#[test]
fn a_cluster_backend_has_no_backplane() {
    let region = dogpile::make_region()
        .configure(
            RegionConfig::new("dogpile.cache.redis_cluster")
                .argument("startup_nodes", "127.0.0.1:7000"),
        )
        .unwrap();
    assert!(region.backend().unwrap().backplane().unwrap().is_none());
}

#[test]
fn errors_and_debug_never_show_the_password() {
    // Nothing listens on a free port: the publish fails at once.
    let url = format!("redis://user:hunter2@127.0.0.1:{}", support::free_port());
    let backplane = RedisBackplane::from_url(&url).unwrap();
    let err = within("a publish to nothing", move || {
        let err = backplane.publish("secret", b"x").unwrap_err();
        (err, format!("{backplane:?}"))
    });
    for shown in [err.0.to_string(), err.1] {
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    let bad = RedisBackplane::from_url("redis://user:hunter2@[::1").unwrap_err();
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
    let unknown = RedisBackplane::from_arguments(&Arguments::new().with("heartbeats", 1));
    assert!(unknown.unwrap_err().to_string().contains("heartbeats"));
}

#[test]
fn delivery_latency_on_loopback() {
    // Alone among the server tests, so that they do not load the machine while it measures.
    let _ports = exclusive_ports();
    let Some(Pair {
        sink,
        publisher,
        subscription: _subscription,
        server: _server,
    }) = pair("latency")
    else {
        return;
    };
    const N: usize = 2000;
    let mut sent_at = Vec::with_capacity(N);
    for i in 0..N {
        sent_at.push(Instant::now());
        publisher
            .publish("latency", &(i as u32).to_le_bytes())
            .unwrap();
    }
    sink.wait_count(N, "every timed message");
    let messages = sink.messages.lock().unwrap();
    let mut latencies: Vec<Duration> = messages
        .iter()
        .map(|(at, bytes)| {
            let i = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
            at.duration_since(sent_at[i])
        })
        .collect();
    assert_eq!(latencies.len(), N);
    latencies.sort();
    println!(
        "publish -> sink.message on loopback, {N} messages: p50 {:?}, p99 {:?}, max {:?}",
        latencies[N / 2],
        latencies[N * 99 / 100],
        latencies[N - 1]
    );
}

#[test]
fn one_channel_name_on_two_databases_is_two_channels() {
    let _ports = shared_ports();
    let Some(server) = Server::redis() else {
        return;
    };
    let on = |db: u32| {
        RedisBackplane::from_url(&format!("redis://{}/{db}", server.addr())).expect("a backplane")
    };
    // Pub/sub is the whole server's: before, regions of one name on db 0 and db 1 heard each
    // other's writes and invalidations.
    let (sink, _subscription) = subscribed(&on(1), "dogpile:users");
    on(0).publish("dogpile:users", b"db 0").unwrap();
    on(1).publish("dogpile:users", b"db 1").unwrap();
    // PUBLISH returns once the server has queued the message for every subscriber, so a
    // wrong delivery ("db 0", published first) would be the first one heard.
    sink.wait_count(1, "the message of its own database");
    assert_eq!(sink.payloads()[0], b"db 1".to_vec());
}
