//! The dogpile lock under a stampede: 32 callers on one key at once, a custom harness (criterion
//! measures one call at a time; this measures what a crowd does). Prints a table.
//!
//! Scenarios, each over `STAMPEDE_ROUNDS` rounds (20 by default), a new key per round:
//! - **cold**: no value at the key; the creator takes `CREATE_MS`. Counted: creator calls, and for
//!   every waiter how long after the value was stored it returned (the store time is taken by a
//!   proxy around the backend right after the backend's `set` returned).
//! - **expired**: an expired value at the key; the creator takes `CREATE_MS`. Counted: creator
//!   calls, stale values served, and how long a stale-served call took (its return minus its
//!   start).
//!
//! Backends: memory (32 threads in one process, the in-process lock), then with
//! `distributed_lock` on Redis, memcached and the file store: 32 threads in 2 OS processes (this
//! binary starts itself again as a child with `DOGPILE_STAMPEDE_CHILD=1`), 16 each. Both processes
//! follow one schedule of wall-clock start times, one per round, and every thread reports its
//! outcome and its start and return times (`SystemTime`, the same clock in both processes); the
//! creating process reports the store time. Creator calls are counted in each process and summed.
//! Servers are started on free loopback ports and stopped at the end; a missing binary is skipped
//! with a printed line.
//!
//! Then (benches/stampede/hot_key.rs, printed first) a hot key read by 8 threads across its
//! expiry, with and without `eager_refresh`: callers that waited for a creation, and the worst
//! call. `STAMPEDE_ONLY=hot_key` runs that table alone.
//!
//! Run: `cargo bench --bench stampede --features redis,memcached,file`.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "stampede/hot_key.rs"]
mod hot_key;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dogpile::clock::Clock;
use dogpile::{Backend, CacheRegion, CachedValue, ProxyBackend, RegionConfig};
use support::{Server, TempDir};

/// Callers on the key, in all processes together.
const THREADS: usize = 32;
/// How long the creator takes: long enough for every caller to arrive while it runs.
const CREATE_MS: u64 = 50;
/// Time between two rounds' start times.
const PERIOD_MS: u64 = 200;

fn rounds() -> usize {
    std::env::var("STAMPEDE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20)
}

/// Nanoseconds since the epoch: comparable across the processes of one host.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn sleep_until_ns(t: u64) {
    let now = now_ns();
    if t > now {
        std::thread::sleep(Duration::from_nanos(t - now));
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Cold,
    Expired,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Cold => "cold",
            Scenario::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Scenario {
        match s {
            "cold" => Scenario::Cold,
            _ => Scenario::Expired,
        }
    }
}

/// What one caller got.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    /// It ran the creator.
    Created,
    /// It got the new value without running the creator.
    Fresh,
    /// It got the stale value.
    Stale,
}

impl Outcome {
    fn code(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Fresh => "fresh",
            Outcome::Stale => "stale",
        }
    }

    fn parse(s: &str) -> Outcome {
        match s {
            "created" => Outcome::Created,
            "stale" => Outcome::Stale,
            _ => Outcome::Fresh,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Call {
    round: usize,
    outcome: Outcome,
    start: u64,
    end: u64,
}

/// Records when each key was stored: right after the backend's `set` returned.
#[derive(Clone, Default)]
struct StoreTimes(Arc<Mutex<HashMap<String, u64>>>);

impl ProxyBackend for StoreTimes {
    fn set(&self, proxied: &dyn Backend, key: &str, value: CachedValue) -> dogpile::Result<()> {
        let r = proxied.set(key, value);
        let t = now_ns();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), t);
        r
    }
}

impl StoreTimes {
    fn take(&self, key: &str) -> Option<u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key)
    }
}

fn key_of(scenario: Scenario, round: usize) -> String {
    format!("{}:{round}", scenario.name())
}

/// What one process saw over all rounds.
#[derive(Default)]
struct ProcessReport {
    calls: Vec<Call>,
    /// Creator calls per round.
    creations: Vec<usize>,
    /// Store time per round, where this process stored.
    stored: Vec<Option<u64>>,
}

/// Runs `threads` callers in this process, round after round at `starts[r]`, on `region`.
fn run_process(
    region: Arc<CacheRegion>,
    store: StoreTimes,
    scenario: Scenario,
    threads: usize,
    starts: &[u64],
) -> ProcessReport {
    let rounds = starts.len();
    let creations: Arc<Vec<AtomicUsize>> =
        Arc::new((0..rounds).map(|_| AtomicUsize::new(0)).collect());
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (region, creations, starts) = (region.clone(), creations.clone(), starts.to_vec());
            std::thread::spawn(move || {
                let mut calls = Vec::with_capacity(starts.len());
                for (round, &go) in starts.iter().enumerate() {
                    let key = key_of(scenario, round);
                    sleep_until_ns(go);
                    let mut created = false;
                    let start = now_ns();
                    let v: String = region
                        .get_or_create(&key, || {
                            created = true;
                            creations[round].fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(CREATE_MS));
                            "fresh".to_string()
                        })
                        .expect("get_or_create in a stampede");
                    let end = now_ns();
                    let outcome = match (created, v.as_str()) {
                        (true, _) => Outcome::Created,
                        (false, "stale") => Outcome::Stale,
                        (false, "fresh") => Outcome::Fresh,
                        (false, other) => panic!("unexpected value {other:?}"),
                    };
                    calls.push(Call {
                        round,
                        outcome,
                        start,
                        end,
                    });
                }
                calls
            })
        })
        .collect();
    let mut report = ProcessReport::default();
    for h in handles {
        report.calls.extend(h.join().expect("a stampede thread"));
    }
    report.creations = creations.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    report.stored = (0..rounds)
        .map(|r| store.take(&key_of(scenario, r)))
        .collect();
    report
}

/// The start times of the rounds, from `t0`.
fn schedule(t0: u64, rounds: usize) -> Vec<u64> {
    (0..rounds)
        .map(|r| t0 + r as u64 * PERIOD_MS * 1_000_000)
        .collect()
}

// ------------------------------------------------------------------------------------------------
// statistics

struct Row {
    backend: String,
    scenario: Scenario,
    layout: String,
    rounds: usize,
    /// Creator calls per round (all processes).
    creations: Vec<usize>,
    /// Stale values served, in all rounds.
    stale: usize,
    /// Callers that got the new value without creating, in all rounds.
    fresh: usize,
    /// Cold: waiters' return minus the store time; expired: stale-served call durations (ns).
    latencies: Vec<u64>,
    /// Rounds in which no store time was found (no creation, or an error).
    missing_store: usize,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn fmt_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

fn row_from(
    backend: &str,
    scenario: Scenario,
    layout: &str,
    reports: &[ProcessReport],
    rounds: usize,
) -> Row {
    let creations: Vec<usize> = (0..rounds)
        .map(|r| reports.iter().map(|p| p.creations[r]).sum())
        .collect();
    let stored: Vec<Option<u64>> = (0..rounds)
        .map(|r| reports.iter().find_map(|p| p.stored[r]))
        .collect();
    let mut latencies = Vec::new();
    let (mut stale, mut fresh) = (0, 0);
    for call in reports.iter().flat_map(|p| &p.calls) {
        match (scenario, call.outcome) {
            (_, Outcome::Created) => {}
            (Scenario::Cold, Outcome::Fresh) => {
                fresh += 1;
                if let Some(t) = stored[call.round] {
                    latencies.push(call.end.saturating_sub(t));
                }
            }
            (Scenario::Expired, Outcome::Fresh) => fresh += 1,
            (_, Outcome::Stale) => {
                stale += 1;
                latencies.push(call.end.saturating_sub(call.start));
            }
        }
    }
    latencies.sort_unstable();
    Row {
        backend: backend.to_owned(),
        scenario,
        layout: layout.to_owned(),
        rounds,
        missing_store: if scenario == Scenario::Cold {
            stored.iter().filter(|s| s.is_none()).count()
        } else {
            0
        },
        creations,
        stale,
        fresh,
        latencies,
    }
}

/// Where criterion writes: `$CRITERION_HOME`, else `<target>/criterion` (this binary lives in
/// `<target>/release/deps/`).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let exe = std::env::current_exe().expect("this binary's path");
    exe.ancestors()
        .nth(3)
        .expect("the target directory")
        .join("criterion")
}

/// Prints the table and the bars, and leaves them in `<criterion>/stampede.md` for the summary.
fn report(rows: &[Row], solo: &[(String, Vec<u64>)]) {
    let text = table(rows, solo);
    print!("{text}");
    let dir = criterion_dir();
    if fs::create_dir_all(&dir).is_ok() {
        let _ = fs::write(dir.join("stampede.md"), &text);
    }
}

fn table(rows: &[Row], solo: &[(String, Vec<u64>)]) -> String {
    let mut out = String::new();
    macro_rules! println {
        () => { out.push('\n') };
        ($($t:tt)*) => {{ let _ = writeln!(out, $($t)*); }};
    }
    println!();
    println!("## Stampede: {THREADS} callers on one key, creator takes {CREATE_MS} ms");
    println!();
    println!("| backend | key | callers | rounds | creator calls (total; max in a round) | stale served | new value without creating | measured | median | p90 | max |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let total: usize = r.creations.iter().sum();
        let max = r.creations.iter().copied().max().unwrap_or(0);
        let measured = match r.scenario {
            Scenario::Cold => "waiter return − store",
            Scenario::Expired => "stale-served call",
        };
        println!(
            "| {} | {} | {} | {} | {total}; {max} | {} | {} | {measured} | {} | {} | {} |",
            r.backend,
            r.scenario.name(),
            r.layout,
            r.rounds,
            r.stale,
            r.fresh,
            fmt_ns(percentile(&r.latencies, 0.5)),
            fmt_ns(percentile(&r.latencies, 0.9)),
            fmt_ns(r.latencies.last().copied().unwrap_or(0)),
        );
    }
    println!();
    println!("Stale value served to one caller at a time, without a crowd (the lock held by a running creator; calls in a row from one thread, each timed):");
    println!();
    println!("| backend | calls | median | p90 | max |");
    println!("|---|---|---|---|---|");
    for (backend, t) in solo {
        println!(
            "| {backend} | {} | {} | {} | {} |",
            t.len(),
            fmt_ns(percentile(t, 0.5)),
            fmt_ns(percentile(t, 0.9)),
            fmt_ns(t.last().copied().unwrap_or(0))
        );
    }
    println!();
    println!("Python dogpile.cache on the same machine, for scale (DESIGN section 6, not run here): memory hit ~7.3 µs, Redis hit ~55-105 µs, stale served in ~12 µs, Redis cold-key waiters 0.3-0.7 s.");
    println!();
    let memory_solo_median = solo
        .iter()
        .find(|(b, _)| b == "memory")
        .map_or(u64::MAX, |(_, t)| percentile(t, 0.5));
    println!("## Bars (DESIGN section 6)");
    println!();
    for r in rows {
        let once = r.creations.iter().all(|&c| c == 1);
        let max = r.latencies.last().copied().unwrap_or(0);
        let median = percentile(&r.latencies, 0.5);
        let distributed = r.backend != "memory";
        let verdict = |ok: bool| if ok { "HOLDS" } else { "FAILS" };
        match (r.scenario, distributed) {
            (Scenario::Cold, false) => println!(
                "- memory, cold: creator once per round: {} ({:?}); waiters within 1 ms of the store: {} (max {}, median {})",
                verdict(once), r.creations, verdict(max <= 1_000_000 && r.missing_store == 0), fmt_ns(max), fmt_ns(median)
            ),
            (Scenario::Expired, false) => println!(
                "- memory, expired: creator once per round: {}; the {} others get the stale value: {} ({} of {}); stale median under 1 µs: {} in the 32-thread crowd ({}), {} for one caller at a time ({})",
                verdict(once),
                THREADS - 1,
                verdict(r.stale == r.rounds * (THREADS - 1)),
                r.stale,
                r.rounds * (THREADS - 1),
                verdict(median < 1_000),
                fmt_ns(median),
                verdict(memory_solo_median < 1_000),
                fmt_ns(memory_solo_median),
            ),
            (Scenario::Cold, true) => println!(
                "- {}, cold, 2 processes: never two creators: {} ({:?}); waiters within 5 ms of the store: {} (max {}, median {})",
                r.backend,
                verdict(once),
                r.creations,
                verdict(max <= 5_000_000 && r.missing_store == 0),
                fmt_ns(max),
                fmt_ns(median)
            ),
            (Scenario::Expired, true) => println!(
                "- {}, expired, 2 processes: never two creators: {} ({:?}); stale served to the others: {} of {} (stale call median {}, max {})",
                r.backend,
                verdict(once),
                r.creations,
                r.stale,
                r.rounds * (THREADS - 1),
                fmt_ns(median),
                fmt_ns(max)
            ),
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// memory

fn memory_rows(rounds: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for scenario in [Scenario::Cold, Scenario::Expired] {
        let store = StoreTimes::default();
        let (clock, hand) = Clock::manual(SystemTime::now());
        let mut config = RegionConfig::new("dogpile.cache.memory")
            .expiration_time(3600)
            .clock(clock);
        if scenario == Scenario::Cold {
            // Only the cold key needs the store time; the stale path is read without a proxy.
            config = config.wrap(store.clone());
        }
        let region = Arc::new(
            dogpile::make_region()
                .name("stampede")
                .configure(config)
                .expect("memory region"),
        );
        if scenario == Scenario::Expired {
            for r in 0..rounds {
                region
                    .set(&key_of(scenario, r), "stale".to_string())
                    .expect("memory set");
            }
            hand.advance(Duration::from_secs(7200));
        }
        let starts = schedule(now_ns() + 100_000_000, rounds);
        let report = run_process(region.clone(), store, scenario, THREADS, &starts);
        let stats = region.stats();
        eprintln!("memory {}: region statistics\n{stats}", scenario.name());
        rows.push(row_from(
            "memory",
            scenario,
            "32 threads, 1 process",
            &[report],
            rounds,
        ));
    }
    rows
}

/// The stale path without a crowd: one thread runs the creator (and holds the lock) while this
/// thread asks for the expired `key` `calls` times, timing each call. The key must hold an
/// expired value.
fn solo_stale(region: Arc<CacheRegion>, key: &str, calls: usize) -> Vec<u64> {
    let running = Arc::new(std::sync::Barrier::new(2));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let creator = {
        let (region, running, done, key) = (
            region.clone(),
            running.clone(),
            done.clone(),
            key.to_owned(),
        );
        std::thread::spawn(move || {
            region
                .get_or_create(&key, || {
                    running.wait();
                    while !done.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    "fresh".to_string()
                })
                .expect("the creator's call")
        })
    };
    running.wait();
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = std::time::Instant::now();
        let v: String = region
            .get_or_create(key, || unreachable!("the lock is held"))
            .expect("a stale read");
        let took = start.elapsed();
        assert_eq!(v, "stale");
        times.push(took.as_nanos() as u64);
    }
    done.store(true, Ordering::SeqCst);
    assert_eq!(creator.join().expect("the creator thread"), "fresh");
    times.sort_unstable();
    times
}

/// [`solo_stale`] on the memory backend.
fn memory_solo(calls: usize) -> Vec<u64> {
    let (clock, hand) = Clock::manual(SystemTime::now());
    let region = Arc::new(
        dogpile::make_region()
            .name("stampede-solo")
            .configure(
                RegionConfig::new("dogpile.cache.memory")
                    .expiration_time(3600)
                    .clock(clock),
            )
            .expect("memory region"),
    );
    region.set("solo", "stale".to_string()).expect("memory set");
    hand.advance(Duration::from_secs(7200));
    solo_stale(region, "solo", calls)
}

// ------------------------------------------------------------------------------------------------
// distributed: Redis, memcached, file store

/// How to configure one backend, by name and address (a URL, an address or a path).
fn distributed_config(backend: &str, addr: &str) -> RegionConfig {
    match backend {
        "redis" => RegionConfig::new("dogpile.cache.redis")
            .argument("url", format!("redis://{addr}"))
            .argument("socket_timeout", 10)
            .argument("distributed_lock", true),
        "memcached" => RegionConfig::new("dogpile.cache.memcached")
            .argument("url", addr.to_owned())
            .argument("socket_timeout", 5.0)
            .argument("distributed_lock", true)
            .argument("lock_timeout", 30),
        "file" => RegionConfig::new("dogpile.cache.dbm").argument("filename", addr.to_owned()),
        other => panic!("unknown backend {other}"),
    }
    .expiration_time(3600)
}

fn distributed_region(backend: &str, addr: &str, store: &StoreTimes) -> Arc<CacheRegion> {
    let region = dogpile::make_region()
        .name("stampede")
        .configure(distributed_config(backend, addr).wrap(store.clone()))
        .unwrap_or_else(|e| panic!("configuring {backend}: {e}"));
    // Connect (and open the store) before the first round.
    let _ = region.get::<String>("warm-up").expect("a first read");
    Arc::new(region)
}

/// The child process: its half of the callers, on the schedule it was given; prints its report.
fn child_main() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let backend = var("STAMPEDE_BACKEND");
    let addr = var("STAMPEDE_ADDR");
    let scenario = Scenario::parse(&var("STAMPEDE_SCENARIO"));
    let t0: u64 = var("STAMPEDE_T0").parse().expect("STAMPEDE_T0");
    let rounds: usize = var("STAMPEDE_ROUNDS").parse().expect("STAMPEDE_ROUNDS");
    let store = StoreTimes::default();
    let region = distributed_region(&backend, &addr, &store);
    let report = run_process(region, store, scenario, THREADS / 2, &schedule(t0, rounds));
    for c in &report.calls {
        println!(
            "call {} {} {} {}",
            c.round,
            c.outcome.code(),
            c.start,
            c.end
        );
    }
    for (r, n) in report.creations.iter().enumerate() {
        println!("creations {r} {n}");
    }
    for (r, t) in report.stored.iter().enumerate() {
        if let Some(t) = t {
            println!("stored {r} {t}");
        }
    }
}

fn parse_child_report(out: &str, rounds: usize) -> ProcessReport {
    let mut report = ProcessReport {
        calls: Vec::new(),
        creations: vec![0; rounds],
        stored: vec![None; rounds],
    };
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["call", r, o, s, e] => report.calls.push(Call {
                round: r.parse().expect("round"),
                outcome: Outcome::parse(o),
                start: s.parse().expect("start"),
                end: e.parse().expect("end"),
            }),
            ["creations", r, n] => {
                report.creations[r.parse::<usize>().expect("round")] = n.parse().expect("count")
            }
            ["stored", r, t] => {
                report.stored[r.parse::<usize>().expect("round")] = Some(t.parse().expect("time"))
            }
            _ => {}
        }
    }
    report
}

/// [`solo_stale`] on a distributed backend.
fn distributed_solo(backend: &str, addr: &str, calls: usize) -> Vec<u64> {
    let store = StoreTimes::default();
    let region = distributed_region(backend, addr, &store);
    store_stale(backend, addr, &["solo".to_owned()]);
    solo_stale(region, "solo", calls)
}

/// Stores "stale" at `keys` with a region whose clock is two hours behind: expired for everyone.
fn store_stale(backend: &str, addr: &str, keys: &[String]) {
    let (clock, _hand) = Clock::manual(SystemTime::now() - Duration::from_secs(7200));
    let old = dogpile::make_region()
        .configure(distributed_config(backend, addr).clock(clock))
        .expect("the old region");
    for k in keys {
        old.set(k, "stale".to_string())
            .expect("storing a stale value");
    }
}

/// One scenario on one backend: this process and a child, 16 threads each.
fn distributed_row(backend: &str, addr: &str, scenario: Scenario, rounds: usize) -> Row {
    let store = StoreTimes::default();
    let region = distributed_region(backend, addr, &store);
    if scenario == Scenario::Expired {
        let keys: Vec<String> = (0..rounds).map(|r| key_of(scenario, r)).collect();
        store_stale(backend, addr, &keys);
    }
    // Room for the child to start, configure and connect before the first round.
    let t0 = now_ns() + 1_500_000_000;
    let exe = std::env::current_exe().expect("this binary's path");
    let mut child = Command::new(exe)
        .env("DOGPILE_STAMPEDE_CHILD", "1")
        .env("STAMPEDE_BACKEND", backend)
        .env("STAMPEDE_ADDR", addr)
        .env("STAMPEDE_SCENARIO", scenario.name())
        .env("STAMPEDE_T0", t0.to_string())
        .env("STAMPEDE_ROUNDS", rounds.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the child process");
    let stdout = child.stdout.take().expect("the child's stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        for line in BufReader::new(stdout).lines() {
            out.push_str(&line.expect("reading the child's report"));
            out.push('\n');
        }
        out
    });
    let mine = run_process(region, store, scenario, THREADS / 2, &schedule(t0, rounds));
    let status = child.wait().expect("waiting for the child");
    let out = reader.join().expect("the reader thread");
    assert!(status.success(), "the child process failed: {status}");
    let theirs = parse_child_report(&out, rounds);
    row_from(
        backend,
        scenario,
        "2 processes x 16 threads",
        &[mine, theirs],
        rounds,
    )
}

fn main() {
    if std::env::var_os("DOGPILE_STAMPEDE_CHILD").is_some() {
        child_main();
        return;
    }
    // `cargo bench` passes `--bench`; a filter is not supported: everything runs, unless
    // STAMPEDE_ONLY=hot_key asks for the hot-key table alone.
    let hot = hot_key::hot_key_table(CREATE_MS);
    print!("{hot}");
    if std::env::var("STAMPEDE_ONLY").as_deref() == Ok("hot_key") {
        return;
    }
    let rounds = rounds();
    let mut rows = memory_rows(rounds);
    let mut solo = vec![("memory".to_owned(), memory_solo(10_000))];

    match Server::redis() {
        Some(server) => {
            for scenario in [Scenario::Cold, Scenario::Expired] {
                rows.push(distributed_row("redis", &server.addr(), scenario, rounds));
            }
            solo.push((
                "redis".into(),
                distributed_solo("redis", &server.addr(), 1000),
            ));
        }
        None => println!("SKIPPED: Redis stampede (redis-server is not installed)"),
    }
    match Server::memcached() {
        Some(server) => {
            for scenario in [Scenario::Cold, Scenario::Expired] {
                rows.push(distributed_row(
                    "memcached",
                    &server.addr(),
                    scenario,
                    rounds,
                ));
            }
            let addr = server.addr();
            solo.push((
                "memcached".into(),
                distributed_solo("memcached", &addr, 1000),
            ));
        }
        None => println!("SKIPPED: memcached stampede (memcached is not installed)"),
    }
    let dir = TempDir::new("stampede");
    for scenario in [Scenario::Cold, Scenario::Expired] {
        let path: PathBuf = dir.path().join(format!("{}.db", scenario.name()));
        rows.push(distributed_row(
            "file",
            &path.to_string_lossy(),
            scenario,
            rounds,
        ));
    }
    let solo_path = dir.path().join("solo.db");
    solo.push((
        "file".into(),
        distributed_solo("file", &solo_path.to_string_lossy(), 1000),
    ));
    report(&rows, &solo);
}
