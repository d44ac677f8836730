//! Two tiers over real Redis, in several OS processes (issue 16): a local tier in each process,
//! Redis as the shared backend, Redis pub/sub as the backplane.
//!
//! * 3 processes x 4 threads read one key while one of them writes (set, delete): once a write
//!   has returned and a process has received its message, that process never serves the old
//!   value; the delay from each write to each process seeing it is printed.
//! * hard and soft region invalidation in one process hold in a running process and in one
//!   started afterwards; tag invalidation drops the values of one tag everywhere, keeps others.
//! * the backplane cut by the fault proxy while another process writes: the cut process never
//!   serves the old value past `max_silence`, and recovers by itself.
//! * 3 processes x 4 threads on one cold key with the distributed lock: one creator.
//!
//! Without `redis-server` the tests print SKIPPED and pass, unless `DOGPILE_REQUIRE_SERVERS=1`.
#![cfg(feature = "redis")]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dogpile::backend::redis::RedisBackplane;
use dogpile::{make_region, CacheRegion, CreateOptions, LocalTier, RegionConfig};
use support::fault_proxy::{Fault, FaultProxy};
use support::{
    append_line, child_role, env_path, spawn_child, wait_child, wait_for, Server, TempDir,
};

/// The tier of every process here: copies served for at most 30 s, and for at most
/// `MAX_SILENCE` after the backplane was last heard from.
const MAX_SILENCE: Duration = Duration::from_millis(500);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn tier() -> LocalTier {
    LocalTier::new()
        .max_size(10_000)
        .expiration_time(Duration::from_secs(30))
        .max_silence(MAX_SILENCE)
}

/// The region every process of a test uses: Redis at `addr`, a local tier, the backend's own
/// backplane.
fn region(name: &'static str, addr: &str) -> CacheRegion {
    make_region()
        .name(name)
        .configure(
            RegionConfig::new("dogpile.cache.redis")
                .argument("url", format!("redis://{addr}/0"))
                .argument("distributed_lock", true)
                .expiration_time(600)
                .local_tier(tier())
                .backplane_from_backend(),
        )
        .unwrap()
}

/// Waits until `n` subscriptions are on `channel` (the server counts them): every region of
/// the test is then subscribed, and a write's message reaches all of them.
fn wait_subscribers(addr: &str, channel: &str, n: u64) {
    let mut con = support::raw_redis(addr);
    wait_for(&format!("{n} subscribers on {channel}"), || {
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut con)
            .unwrap();
        counts.first().is_some_and(|(_, got)| *got >= n)
    });
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The writer's schedule, known to every process: step `i` sets `k` to `i`, and every 7th step
/// deletes it first. Returns, for each message (in order), the value a read may no longer be
/// below once that message was received: the last value set so far.
fn schedule(steps: u64) -> Vec<(Op, u64)> {
    let mut out = Vec::new();
    let mut last_set = 0;
    for i in 1..=steps {
        if i % 7 == 0 {
            out.push((Op::Delete, last_set));
        }
        last_set = i;
        out.push((Op::Set(i), last_set));
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Set(u64),
    Delete,
}

const STEPS: u64 = 300;

/// A process of [`three_processes_never_serve_a_value_older_than_the_last_message`]: 4 reader
/// threads, and in process 0 the writer too.
fn coherence_child(index: usize) {
    let addr = env("DOGPILE_TEST_REDIS");
    let dir = env_path("DOGPILE_TEST_DIR");
    let region = Arc::new(region("coherence", &addr));
    // Everyone starts together, subscribed, so the writer's messages reach every process.
    wait_subscribers(&addr, "dogpile:coherence", 3);
    let plan = schedule(STEPS);
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let (region, plan, dir) = (region.clone(), plan.clone(), dir.clone());
            std::thread::spawn(move || {
                let mut first_seen = vec![0u64; STEPS as usize + 1];
                let mut reads = 0u64;
                loop {
                    // Messages received before this read started: none of them is undone.
                    let received = region.stats().backplane_received as usize;
                    let floor = match received {
                        0 => 0,
                        n => plan[n.min(plan.len()) - 1].1,
                    };
                    let got = region.get::<u64>("k").unwrap();
                    reads += 1;
                    if let Some(v) = got {
                        assert!(
                            v >= floor,
                            "process {index} thread {t}: read {v} after receiving {received} messages (the value was already {floor})"
                        );
                        if first_seen[v as usize] == 0 {
                            first_seen[v as usize] = now_micros();
                        }
                        if v == STEPS {
                            break;
                        }
                    }
                }
                let seen: Vec<String> = first_seen
                    .iter()
                    .enumerate()
                    .filter(|(_, &t)| t != 0)
                    .map(|(v, t)| format!("{v} {t}"))
                    .collect();
                append_line(&dir.join(format!("seen-{index}-{t}")), &seen.join("\n"));
                reads
            })
        })
        .collect();
    if index == 0 {
        for (op, _) in &plan {
            match op {
                Op::Set(v) => region.set("k", *v).unwrap(),
                Op::Delete => region.delete("k").unwrap(),
            }
            if let Op::Set(v) = op {
                append_line(&dir.join("written"), &format!("{v} {}", now_micros()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let stats = region.stats();
    println!(
        "process {index}: {reads} reads, {} local hits, {} messages received",
        stats.local_hits, stats.backplane_received
    );
}

#[test]
fn three_processes_never_serve_a_value_older_than_the_last_message() {
    if let Some(role) = child_role() {
        if let Some(i) = role.strip_prefix("coherence-") {
            coherence_child(i.parse().unwrap());
        }
        return;
    }
    let Some(server) = Server::redis() else {
        return;
    };
    let dir = TempDir::new("tiers-coherence");
    let envs = [
        ("DOGPILE_TEST_REDIS", server.addr()),
        ("DOGPILE_TEST_DIR", dir.path().display().to_string()),
    ];
    let test = "three_processes_never_serve_a_value_older_than_the_last_message";
    let mut children: Vec<_> = (0..3)
        .map(|i| spawn_child(test, &format!("coherence-{i}"), &envs))
        .collect();
    for (i, c) in children.iter_mut().enumerate() {
        assert!(
            wait_child(c, "a coherence process").success(),
            "process {i} failed"
        );
    }
    // The delay from each write's return to each process's first read of it (or of a later
    // value: a process may skip a value that was replaced before it looked).
    let written = read_pairs(&dir.path().join("written"));
    let mut delays = Vec::new();
    for p in 1..3 {
        let mut first = vec![u64::MAX; STEPS as usize + 1];
        for t in 0..4 {
            for (v, at) in read_pairs(&dir.path().join(format!("seen-{p}-{t}"))) {
                first[v as usize] = first[v as usize].min(at);
            }
        }
        // Seen at or after: the earliest first sight of this value or a later one.
        for v in (1..STEPS as usize).rev() {
            first[v] = first[v].min(first[v + 1]);
        }
        for &(v, w) in &written {
            delays.push(first[v as usize].saturating_sub(w));
        }
    }
    delays.sort_unstable();
    let pct = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    println!(
        "coherence delay over {} (write, process) pairs: p50 {} µs, p99 {} µs, max {} µs",
        delays.len(),
        pct(0.5),
        pct(0.99),
        delays[delays.len() - 1]
    );
}

fn read_pairs(path: &Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// The later process of the invalidation test: reads what the first left behind.
fn invalidation_child(role: &str) {
    let addr = env("DOGPILE_TEST_REDIS");
    let dir = env_path("DOGPILE_TEST_DIR");
    let region = region("inv", &addr);
    match role {
        "running" => {
            // This process and the writer.
            wait_subscribers(&addr, "dogpile:inv", 2);
            // Copies in the local tier, made before the invalidations.
            for k in ["a", "b"] {
                assert_eq!(region.get::<String>(k).unwrap().as_deref(), Some("old"));
                assert_eq!(region.get::<String>(k).unwrap().as_deref(), Some("old"));
            }
            let t1 = tag_options("t1");
            let t2 = tag_options("t2");
            assert_eq!(
                region
                    .get_or_create_with("x1", &t1, || "made here".to_string())
                    .unwrap(),
                "old"
            );
            assert_eq!(
                region
                    .get_or_create_with("x2", &t2, || "made here".to_string())
                    .unwrap(),
                "old"
            );
            append_line(&dir.join("running-ready"), "1");
            // Each step: the writer's file says how many messages it has sent since; once they
            // are received here, what they said holds here.
            let received = |step: &str| {
                let path = dir.join(step);
                // The file is created before its line is written: wait for the whole line.
                wait_for(step, || {
                    std::fs::read_to_string(&path).is_ok_and(|s| s.ends_with('\n'))
                });
                let sent: u64 = std::fs::read_to_string(&path)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                wait_for(&format!("{sent} messages"), || {
                    region.stats().backplane_received >= sent
                });
            };
            received("hard-done");
            assert_eq!(
                region.get::<String>("a").unwrap(),
                None,
                "hard: absent here too"
            );
            received("soft-done");
            assert_eq!(
                region.get::<String>("b").unwrap(),
                None,
                "soft: expired here too"
            );
            received("tag-done");
            assert_eq!(
                region
                    .get_or_create_with("x1", &t1, || "new".to_string())
                    .unwrap(),
                "new",
                "tag t1 invalidated: created again"
            );
            assert_eq!(
                region
                    .get_or_create_with("x2", &t2, || "new".to_string())
                    .unwrap(),
                "old",
                "tag t2 kept"
            );
        }
        "later" => {
            assert_eq!(
                region.get::<String>("a").unwrap(),
                None,
                "hard, seen by a later process"
            );
            assert_eq!(
                region.get::<String>("b").unwrap(),
                None,
                "soft, seen by a later process"
            );
            assert_eq!(
                region
                    .get_or_create_with("b", &CreateOptions::new(), || "new".to_string())
                    .unwrap(),
                "new"
            );
            let t1 = tag_options("t1");
            assert_eq!(
                region
                    .get_or_create_with("x3", &t1, || "new".to_string())
                    .unwrap(),
                "new",
                "tag t1 invalidated before this process started"
            );
        }
        other => panic!("unknown role {other}"),
    }
}

fn tag_options(tag: &str) -> CreateOptions<String> {
    CreateOptions::new().tags([tag.to_string()])
}

#[test]
fn region_and_tag_invalidation_hold_in_running_and_later_processes() {
    if let Some(role) = child_role() {
        invalidation_child(&role);
        return;
    }
    let Some(server) = Server::redis() else {
        return;
    };
    let dir = TempDir::new("tiers-invalidation");
    let envs = [
        ("DOGPILE_TEST_REDIS", server.addr()),
        ("DOGPILE_TEST_DIR", dir.path().display().to_string()),
    ];
    let region = region("inv", &server.addr());
    for k in ["a", "b"] {
        region.set(k, "old".to_string()).unwrap();
    }
    let created = |key: &str, tag: &str| {
        region
            .get_or_create_with(key, &tag_options(tag), || "old".to_string())
            .unwrap()
    };
    created("x1", "t1");
    created("x2", "t2");
    created("x3", "t1");
    let test = "region_and_tag_invalidation_hold_in_running_and_later_processes";
    let mut running = spawn_child(test, "running", &envs);
    wait_for("the running process's copies", || {
        dir.path().join("running-ready").exists()
    });
    let base = region.stats().backplane_sent;
    let sent = || (region.stats().backplane_sent - base).to_string();
    // Created strictly before each invalidation, whatever the clock's resolution.
    std::thread::sleep(Duration::from_millis(5));
    region.invalidate(true);
    append_line(&dir.path().join("hard-done"), &sent());
    region.set("b", "old".to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    region.invalidate(false);
    append_line(&dir.path().join("soft-done"), &sent());
    // The tags' values again, after the region invalidations, so only the tag can drop them.
    for (k, t) in [("x1", "t1"), ("x2", "t2"), ("x3", "t1")] {
        region
            .get_or_create_with(k, &tag_options(t), || "old".to_string())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(5));
    region.invalidate_tag("t1", true).unwrap();
    append_line(&dir.path().join("tag-done"), &sent());
    assert!(wait_child(&mut running, "the running process").success());
    let mut later = spawn_child(test, "later", &envs);
    assert!(wait_child(&mut later, "the later process").success());
}

#[test]
fn a_cut_backplane_never_serves_the_old_value_past_max_silence() {
    let Some(server) = Server::redis() else {
        return;
    };
    let proxy = FaultProxy::start(&server.addr());
    let writer = region("cut", &server.addr());
    // The cut process: its data goes to Redis directly, its backplane through the proxy.
    let cut: CacheRegion = make_region()
        .name("cut")
        .configure(
            RegionConfig::new("dogpile.cache.redis")
                .argument("url", format!("redis://{}/0", server.addr()))
                .expiration_time(600)
                .local_tier(tier())
                .backplane(
                    RedisBackplane::from_url(&format!("redis://{}/0", proxy.addr()))
                        .unwrap()
                        .with_heartbeat(Duration::from_millis(100)),
                ),
        )
        .unwrap();
    wait_subscribers(&server.addr(), "dogpile:cut", 2);
    writer.set("k", 1u64).unwrap();
    wait_for("the first value", || {
        cut.get::<u64>("k").unwrap() == Some(1)
    });
    wait_for("a local copy", || {
        let before = cut.stats().local_hits;
        cut.get::<u64>("k").unwrap();
        cut.stats().local_hits > before
    });

    proxy.set(Fault::Blackhole);
    writer.set("k", 2u64).unwrap(); // its message does not reach `cut`
    let written = Instant::now();
    // Stale reads are allowed only until the silence has lasted max_silence: the last word from
    // the backplane came before the cut, so before the write. The slack is the coarse clock's
    // tick (a few milliseconds), and the time between a read's start and its clock reading.
    let bound = MAX_SILENCE + Duration::from_millis(25);
    let mut last_old = None;
    while written.elapsed() < bound + Duration::from_secs(1) {
        let start = written.elapsed();
        if cut.get::<u64>("k").unwrap() == Some(1) {
            last_old = Some(start);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if let Some(at) = last_old {
        assert!(
            at < bound,
            "the old value was served {at:?} after the write (bound {bound:?})"
        );
    }
    println!("old value last served {last_old:?} after the write (bound {bound:?})");

    // Healed: the cut process reconnects by itself, and copies come back.
    proxy.set(Fault::Pass);
    wait_for_every_reconnect(&cut);
    writer.set("k", 3u64).unwrap();
    wait_for("the new value after the heal", || {
        cut.get::<u64>("k").unwrap() == Some(3)
    });
    wait_for("local copies again", || {
        let before = cut.stats().local_hits;
        assert_eq!(cut.get::<u64>("k").unwrap(), Some(3));
        cut.stats().local_hits > before
    });
}

fn wait_for_every_reconnect(region: &CacheRegion) {
    wait_for("the backplane to reconnect", || {
        region.stats().backplane_reconnects >= 1
    });
}

fn stampede_child() {
    let addr = env("DOGPILE_TEST_REDIS");
    let dir = env_path("DOGPILE_TEST_DIR");
    let region = Arc::new(region("stampede", &addr));
    // The three processes start together.
    wait_subscribers(&addr, "dogpile:stampede", 3);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (region, dir) = (region.clone(), dir.clone());
            std::thread::spawn(move || {
                let v: String = region
                    .get_or_create("cold", || {
                        append_line(&dir.join("creations"), &std::process::id().to_string());
                        std::thread::sleep(Duration::from_millis(300));
                        "made".to_string()
                    })
                    .unwrap();
                assert_eq!(v, "made");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_stampede_across_processes_with_local_tiers_has_one_creator() {
    if child_role().is_some() {
        stampede_child();
        return;
    }
    let Some(server) = Server::redis() else {
        return;
    };
    let dir = TempDir::new("tiers-stampede");
    let envs = [
        ("DOGPILE_TEST_REDIS", server.addr()),
        ("DOGPILE_TEST_DIR", dir.path().display().to_string()),
    ];
    let test = "a_stampede_across_processes_with_local_tiers_has_one_creator";
    let mut children: Vec<_> = (0..3)
        .map(|_| spawn_child(test, "stampede", &envs))
        .collect();
    for c in &mut children {
        assert!(wait_child(c, "a stampede process").success());
    }
    let creations = std::fs::read_to_string(dir.path().join("creations")).unwrap();
    assert_eq!(creations.lines().count(), 1, "creators: {creations}");
}

#[test]
fn a_max_silence_under_two_heartbeats_is_refused() {
    // No server needed: the check comes before anything connects.
    let err = make_region()
        .name("silence")
        .configure(
            RegionConfig::new("dogpile.cache.redis")
                .argument("url", "redis://127.0.0.1:1/0")
                .local_tier(tier().max_silence(Duration::from_millis(300)))
                .backplane(RedisBackplane::from_url("redis://127.0.0.1:1/0").unwrap()),
        )
        .unwrap_err();
    assert!(
        err.to_string().starts_with("local_tier.max_silence"),
        "{err}"
    );
    assert!(err.to_string().contains("heartbeat (250ms)"), "{err}");
    // Without a tier too: the tag times follow the default max_silence (1 s).
    let err = make_region()
        .name("silence")
        .configure(
            RegionConfig::new("dogpile.cache.redis")
                .argument("url", "redis://127.0.0.1:1/0")
                .backplane(
                    RedisBackplane::from_url("redis://127.0.0.1:1/0")
                        .unwrap()
                        .with_heartbeat(Duration::from_millis(600)),
                ),
        )
        .unwrap_err();
    assert!(err.to_string().contains("heartbeat (600ms)"), "{err}");
}
