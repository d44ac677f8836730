//! Two tiers (issue 16): a hit on the local tier beside the memory backend and beside Redis alone,
//! and the coherence delay from a write in one process to the new value in another.
//!
//! - `tiers/hit`: `region.get` of a 32-byte `String`, 1,000 keys cycled: on the memory backend
//!   (the bar: the local tier within 1.3x of it), on a local tier in front of Redis with the
//!   backplane on, and on Redis alone;
//! - the coherence delay (printed, not criterion): a child process reads one key in a loop on a
//!   region with a local tier; this process sets a new value every few milliseconds and the child
//!   records when it first reads each; the delay is from the writer's `set` returning to the
//!   reader's first read of the value (both on one machine's clock), p50, p99 and max over
//!   `COHERENCE_WRITES` writes (bar: p99 under 2 ms on loopback). The reader pauses 20 µs between
//!   reads (`DOGPILE_TIERS_SPIN=1`: it spins, and starves the backplane thread on 2 cores).
//!
//! A server started by the bench on a free loopback port; without `redis-server` the bench prints
//! SKIPPED. Run: `cargo bench --bench tiers --features redis`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::Criterion;
use dogpile::{make_region, CacheRegion, LocalTier, RegionConfig};
use support::Server;

const KEYS: u64 = 1000;
const COHERENCE_WRITES: u64 = 2000;

/// The reader's pause between reads: a reader that spins takes a whole core of two, and the
/// backplane's own thread in the same process then waits for the scheduler (whole time slices,
/// milliseconds). Both are measured: `DOGPILE_TIERS_SPIN=1` spins.
const READER_PAUSE: Option<Duration> = Some(Duration::from_micros(20));

fn value(n: u64) -> String {
    format!("{n:032}")
}

fn key(n: u64) -> String {
    format!("bench:tiers:{n}")
}

fn tiered(addr: &str, name: &'static str) -> CacheRegion {
    make_region()
        .name(name)
        .configure(
            RegionConfig::new("dogpile.cache.redis")
                .argument("url", format!("redis://{addr}/0"))
                .expiration_time(3600)
                .local_tier(LocalTier::new().expiration_time(Duration::from_secs(600)))
                .backplane_from_backend(),
        )
        .expect("a tiered region")
}

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_micros() as u64
}

/// The reader process: prints `value first_seen_micros` for each value it sees, until the last.
fn coherence_child(addr: &str) {
    let region = tiered(addr, "coherence");
    let mut out = std::io::stdout().lock();
    // Configured (its subscription under way): tell the writer, which waits for it on the server.
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let spin = std::env::var("DOGPILE_TIERS_SPIN").as_deref() == Ok("1");
    let mut last = 0u64;
    while last < COHERENCE_WRITES {
        if let Ok(Some(v)) = region.get::<u64>("coherence") {
            if v > last {
                last = v;
                writeln!(out, "{v} {}", micros()).unwrap();
            }
        }
        if let (Some(pause), false) = (READER_PAUSE, spin) {
            std::thread::sleep(pause);
        }
    }
}

fn coherence(addr: &str) {
    let exe = std::env::current_exe().expect("the bench binary");
    let mut child = Command::new(exe)
        .env("DOGPILE_TIERS_CHILD", addr)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("the reader process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let writer = tiered(addr, "coherence");
    // Both subscriptions in place (the server counts them), then a first value for the reader.
    let mut con = support::raw_redis(addr);
    support::wait_for("both subscriptions", || {
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("dogpile:coherence")
            .query(&mut con)
            .expect("PUBSUB NUMSUB");
        counts.first().is_some_and(|(_, n)| *n >= 2)
    });
    writer.set("coherence", 0u64).unwrap();
    let mut written = Vec::with_capacity(COHERENCE_WRITES as usize);
    for v in 1..=COHERENCE_WRITES {
        writer.set("coherence", v).unwrap();
        written.push(micros());
        std::thread::sleep(Duration::from_millis(3));
    }
    let mut seen = vec![u64::MAX; COHERENCE_WRITES as usize + 1];
    for line in lines {
        let line = line.unwrap();
        let (v, at) = line.split_once(' ').unwrap();
        seen[v.parse::<usize>().unwrap()] = at.parse().unwrap();
    }
    child.wait().unwrap();
    // A value replaced before the reader looked counts as seen when a later one was.
    for v in (1..COHERENCE_WRITES as usize).rev() {
        seen[v] = seen[v].min(seen[v + 1]);
    }
    let mut delays: Vec<u64> = (1..=COHERENCE_WRITES as usize)
        .map(|v| seen[v].saturating_sub(written[v - 1]))
        .collect();
    delays.sort_unstable();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    println!(
        "coherence delay, write in one process to the new value in another ({COHERENCE_WRITES} writes, 3 ms apart; reader {}): p50 {} µs, p99 {} µs, max {} µs",
        if std::env::var("DOGPILE_TIERS_SPIN").as_deref() == Ok("1") {
            "spinning"
        } else {
            "reading every 20 µs"
        },
        at(0.5),
        at(0.99),
        delays[delays.len() - 1]
    );
}

fn hits(c: &mut Criterion, addr: &str) {
    let memory: CacheRegion = make_region()
        .configure(RegionConfig::new("dogpile.cache.memory").expiration_time(3600))
        .unwrap();
    let local = tiered(addr, "bench-hit");
    let redis: CacheRegion = make_region()
        .configure(
            RegionConfig::new("dogpile.cache.redis")
                .argument("url", format!("redis://{addr}/0"))
                .expiration_time(3600),
        )
        .unwrap();
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    for (i, k) in keys.iter().enumerate() {
        memory.set(k, value(i as u64)).unwrap();
        local.set(k, value(i as u64)).unwrap();
    }
    let mut group = c.benchmark_group("tiers/hit");
    for (name, region) in [
        ("memory backend", &memory),
        ("local tier over redis", &local),
        ("redis alone", &redis),
    ] {
        group.bench_function(name, |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(region.get::<String>(&keys[i]).unwrap())
            })
        });
    }
    group.finish();
    let stats = local.stats();
    println!(
        "local tier: {} of {} hits answered locally ({} read from Redis)",
        stats.local_hits,
        stats.hits,
        stats.hits - stats.local_hits.min(stats.hits)
    );
    assert!(
        stats.local_hits > stats.hits / 2,
        "the local tier answered: {stats:?}"
    );
}

fn main() {
    if let Ok(addr) = std::env::var("DOGPILE_TIERS_CHILD") {
        coherence_child(&addr);
        return;
    }
    let Some(server) = Server::redis() else {
        println!("SKIPPED: the tier benches (redis-server is not installed)");
        return;
    };
    let started = Instant::now();
    // `DOGPILE_TIERS_ONLY=hit` runs the hit group alone.
    if std::env::var("DOGPILE_TIERS_ONLY").as_deref() != Ok("hit") {
        coherence(&server.addr());
    }
    let mut c = Criterion::default().configure_from_args();
    hits(&mut c, &server.addr());
    c.final_summary();
    eprintln!("tiers bench: {:?}", started.elapsed());
}
