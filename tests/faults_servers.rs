//! Faults of the cache servers, seen through decorated functions and the distributed lock:
//!
//! * a Redis, then a memcached server killed (SIGKILL) while four threads call
//!   `#[cache_on_arguments]` functions: every call returns the body's value (the body runs
//!   exactly once per call), no panic, the region counts backend errors and its methods return
//!   errors naming the server; after a restart on the same port caching resumes with no
//!   reconfiguration (hits counted again, no more backend errors, a value set is read back);
//! * the same with the server frozen (SIGSTOP, then SIGCONT): connections are accepted and
//!   nothing answers, so only `socket_timeout` ends a call; every call still returns, and after
//!   the thaw no late reply of a timed-out request answers a later one (every value is checked);
//! * a process holding a Redis distributed lock killed (SIGKILL) mid-creation: while it lived
//!   another process waited and did not create, for longer than `lock_timeout` (the live
//!   holder's lock is extended); after the kill the lock expires and the other process creates
//!   the value once (creations counted with `INCR` on the server).
//!
//! No assertion is about durations: waits have generous bounds and fail only when stuck.
//! Without the server binaries the tests print SKIPPED and pass, unless
//! `DOGPILE_REQUIRE_SERVERS=1`.
#![cfg(all(feature = "redis", feature = "memcached"))]

mod support;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dogpile::{CacheRegion, RegionConfig};
use support::{
    child_role, exclusive_ports, raw_redis as raw, redis_cmd as cmd, shared_ports, spawn_child,
    Server,
};

// ------------------------------------------------------------------------------------------------
// servers

fn redis_server() -> Option<Server> {
    Server::redis()
}

fn memcached_server() -> Option<Server> {
    Server::memcached()
}

/// How many times the server has run `command` (from `INFO commandstats`).
fn command_calls(con: &mut redis::Connection, command: &str) -> u64 {
    let info: String = cmd(con, &["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}

/// A readiness wait with a generous bound: it fails only when `cond` never becomes true, which
/// on any machine means something is stuck, not slow.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ------------------------------------------------------------------------------------------------
// decorated functions, one region per backend

const KEYS: u64 = 16;

thread_local! {
    /// How many times a decorated function's body ran on this thread. The body runs on the
    /// calling thread, as the creator or as the fallback.
    static BODY_RUNS: Cell<u64> = const { Cell::new(0) };
}

fn body_ran() {
    BODY_RUNS.with(|c| c.set(c.get() + 1));
}

fn body_runs() -> u64 {
    BODY_RUNS.with(Cell::get)
}

fn expected_square(x: u64) -> u64 {
    x * x + 1
}

/// One in four arguments is an error: an `Err` reaches the caller and is never cached.
fn expected_label(x: u64) -> Result<String, String> {
    if x % 4 == 3 {
        Err(format!("no label for {x}"))
    } else {
        Ok(format!("label {x}"))
    }
}

/// A region and two decorated functions on it, in a module of their own.
macro_rules! decorated {
    ($module:ident) => {
        mod $module {
            use dogpile::{cache_on_arguments, CacheRegion};

            pub static REGION: CacheRegion = CacheRegion::new();

            #[cache_on_arguments(region = REGION)]
            pub fn square(x: u64) -> u64 {
                super::body_ran();
                super::expected_square(x)
            }

            #[cache_on_arguments(region = REGION, namespace = "labels")]
            pub fn label(x: u64) -> Result<String, String> {
                super::body_ran();
                super::expected_label(x)
            }

            pub static FUNCTIONS: super::Cached = super::Cached {
                region: &REGION,
                square,
                square_get,
                square_set,
                label,
            };
        }
    };
}

decorated!(redis_killed);
decorated!(memcached_killed);
decorated!(redis_frozen);
decorated!(memcached_frozen);

/// One backend's region and decorated functions, for the shared scenario.
struct Cached {
    region: &'static CacheRegion,
    square: fn(u64) -> u64,
    square_get: fn(u64) -> Option<u64>,
    square_set: fn(u64, u64),
    label: fn(u64) -> Result<String, String>,
}

// ------------------------------------------------------------------------------------------------
// the dead-server scenario

const UP: usize = 0;
const DOWN: usize = 1;
const UP_AGAIN: usize = 2;
/// While the server recovers: it may be down or up.
const RESTARTING: usize = 3;
const WORKERS: usize = 4;

/// What the workers share with the test: the phase, and each worker's calls per phase.
struct Progress {
    phase: AtomicUsize,
    stop: AtomicBool,
    calls: [[AtomicU64; 4]; WORKERS],
}

impl Progress {
    fn new() -> Self {
        Progress {
            phase: AtomicUsize::new(UP),
            stop: AtomicBool::new(false),
            calls: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    /// The fewest calls any worker has finished that it began in `phase`.
    fn fewest(&self, phase: usize) -> u64 {
        self.calls
            .iter()
            .map(|c| c[phase].load(Ordering::SeqCst))
            .min()
            .unwrap_or(0)
    }
}

/// One worker: calls both functions over the keys until told to stop, checking every value.
/// While the server is down, every call must run the body exactly once (there is nothing to
/// hit, and the fallback must not run the body a second time after the creator did).
fn worker(id: usize, f: &Cached, progress: &Progress) {
    let mut x = id as u64;
    while !progress.stop.load(Ordering::SeqCst) {
        let phase = progress.phase.load(Ordering::SeqCst);
        let before = body_runs();
        assert_eq!(
            (f.square)(x),
            expected_square(x),
            "square({x}) in phase {phase}"
        );
        assert_eq!(
            (f.label)(x),
            expected_label(x),
            "label({x}) in phase {phase}"
        );
        let ran = body_runs() - before;
        if phase == DOWN {
            assert_eq!(
                ran, 2,
                "bodies run by one call of each function, server down"
            );
        } else {
            assert!(ran <= 2, "bodies run by one call of each function: {ran}");
        }
        progress.calls[id][phase].fetch_add(1, Ordering::SeqCst);
        x = (x + 1) % KEYS;
    }
}

/// Waits until every worker has finished `n` more calls begun in `phase`; a worker that
/// panicked fails the test at once with its message.
fn wait_for_calls(workers: &mut Vec<JoinHandle<()>>, progress: &Progress, phase: usize, n: u64) {
    let start = progress.fewest(phase);
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress.fewest(phase) < start + n {
        if workers.iter().any(JoinHandle::is_finished) {
            progress.stop.store(true, Ordering::SeqCst);
            for w in workers.drain(..) {
                if let Err(panic) = w.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            panic!("a worker stopped early");
        }
        assert!(
            Instant::now() < deadline,
            "the workers made no progress in phase {phase}: a call hung ({} calls at least each)",
            progress.fewest(phase)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What happens to the server.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// SIGKILL, then a restart on the same port (empty: no persistence). Connections are
    /// refused meanwhile.
    Kill,
    /// SIGSTOP, then SIGCONT: the kernel still accepts connections and requests, and nothing
    /// answers, as with a host gone from the network. Only the socket timeouts end a call.
    Freeze,
}

/// The state letter of a process, from `/proc/PID/stat` (`T`: stopped).
fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc");
    let after_name = &stat[stat.rfind(')').expect("a /proc stat line") + 1..];
    after_name
        .trim_start()
        .chars()
        .next()
        .expect("a state letter")
}

fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a process id");
    // SAFETY: kill(2) with a process id and a signal number has no memory effects here.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

impl Fault {
    fn start(self, server: &mut Server) {
        match self {
            Fault::Kill => server.kill(),
            Fault::Freeze => {
                let pid = server.child.id();
                signal(pid, libc::SIGSTOP);
                wait_until("the server to stop", || process_state(pid) == 'T');
            }
        }
    }

    fn heal(self, server: &mut Server) {
        match self {
            Fault::Kill => server.restart(),
            Fault::Freeze => {
                let pid = server.child.id();
                signal(pid, libc::SIGCONT);
                wait_until("the server to run again", || process_state(pid) != 'T');
            }
        }
    }

    /// Calls each worker makes at each step with the server down: every call on a frozen
    /// server waits for a socket timeout, so fewer.
    fn calls_down(self) -> u64 {
        match self {
            Fault::Kill => 2 * KEYS,
            Fault::Freeze => 2,
        }
    }
}

/// The scenario for one backend, whose region `f.region` is configured on `server`: four
/// threads call the decorated functions while the server is up, then down (`fault`), then up
/// again.
fn fault_under_load(server: &mut Server, f: &'static Cached, fault: Fault) {
    let addr = server.addr();
    let progress: &'static Progress = Box::leak(Box::new(Progress::new()));
    let mut workers: Vec<JoinHandle<()>> = (0..WORKERS)
        .map(|id| std::thread::spawn(move || worker(id, f, progress)))
        .collect();

    // Up: values are cached and read back.
    wait_for_calls(&mut workers, progress, UP, 3 * KEYS);
    let up = f.region.stats();
    assert!(up.hits > 0, "no hits with the server up: {up:?}");
    assert_eq!(
        up.backend_errors, 0,
        "backend errors with the server up: {up:?}"
    );
    assert_eq!(f.region.get::<u64>("never set").unwrap(), None);

    // Down, under the workers.
    fault.start(server);
    progress.phase.store(DOWN, Ordering::SeqCst);
    wait_for_calls(&mut workers, progress, DOWN, fault.calls_down());
    let down = f.region.stats();
    assert!(
        down.backend_errors > up.backend_errors,
        "no backend errors counted with the server down: {down:?}"
    );
    // Region methods return errors that name the server.
    let key = "some key";
    let errors = [
        f.region.get::<u64>(key).unwrap_err(),
        f.region.set(key, 1u64).unwrap_err(),
        f.region.delete(key).unwrap_err(),
        f.region.get_or_create(key, || 1u64).unwrap_err(),
        f.region
            .get_multi::<u64, _>(&["a", "b"])
            .expect_err("get_multi with the server down"),
    ];
    for e in &errors {
        assert!(e.is_backend(), "not a backend error: {e:?}");
        let text = e.to_string();
        assert!(
            text.contains(&addr),
            "the error does not name {addr}: {text}"
        );
    }
    // The companions do not call the body, and find nothing.
    assert_eq!((f.square_get)(1), None);
    // More calls, all of them errors for the cache: the errors keep being counted, and nothing
    // is a hit.
    wait_for_calls(&mut workers, progress, DOWN, fault.calls_down());
    let still_down = f.region.stats();
    assert!(
        still_down.backend_errors > down.backend_errors,
        "backend errors stopped being counted: {still_down:?}"
    );
    assert_eq!(
        still_down.hits, down.hits,
        "hits counted with the server down"
    );

    // Up again, on the same port: caching resumes, nothing reconfigured.
    // First every call begun with the server down ends (a call on a frozen server lasts up
    // to a socket timeout, and must not straddle the recovery).
    progress.phase.store(RESTARTING, Ordering::SeqCst);
    wait_for_calls(&mut workers, progress, RESTARTING, 1);
    fault.heal(server);
    progress.phase.store(UP_AGAIN, Ordering::SeqCst);
    wait_for_calls(&mut workers, progress, UP_AGAIN, 3 * KEYS);
    let recovered = f.region.stats();
    assert!(
        recovered.hits > still_down.hits,
        "no hits after the restart: {recovered:?}"
    );
    // Once recovered, no more backend errors, and hits keep coming.
    wait_for_calls(&mut workers, progress, UP_AGAIN, 2 * KEYS);
    let later = f.region.stats();
    assert_eq!(
        later.backend_errors, recovered.backend_errors,
        "backend errors after recovery: {later:?}"
    );
    assert!(later.hits > recovered.hits, "{later:?}");
    // A value set after the restart is read back, by the region and by a decorated function.
    f.region.set("after restart", 42u64).unwrap();
    assert_eq!(f.region.get::<u64>("after restart").unwrap(), Some(42));
    (f.square_set)(7, 1000);
    assert_eq!((f.square_get)(1000), Some(7));
    let before = body_runs();
    assert_eq!((f.square)(1000), 7, "the stored value, not the body's");
    assert_eq!(body_runs(), before);
    assert_eq!((f.square_get)(1), Some(expected_square(1)));

    progress.stop.store(true, Ordering::SeqCst);
    for w in workers {
        if let Err(panic) = w.join() {
            std::panic::resume_unwind(panic);
        }
    }
    eprintln!("{fault:?} {addr} up: {up:?}\ndown: {still_down:?}\nrecovered: {later:?}");
}

fn redis_config(server: &Server, socket_timeout: f64, lock_timeout: u64) -> RegionConfig {
    RegionConfig::new("dogpile.cache.redis")
        .expiration_time(600)
        .argument("url", format!("redis://{}", server.addr()))
        .argument("socket_timeout", socket_timeout)
        .argument("socket_connect_timeout", socket_timeout)
        .argument("distributed_lock", true)
        .argument("lock_timeout", lock_timeout)
}

fn memcached_config(server: &Server, socket_timeout: f64, lock_timeout: u64) -> RegionConfig {
    RegionConfig::new("dogpile.cache.memcached")
        .expiration_time(600)
        .argument("url", server.addr())
        .argument("socket_timeout", socket_timeout)
        .argument("distributed_lock", true)
        .argument("lock_timeout", lock_timeout)
}

#[test]
fn decorated_functions_survive_a_killed_redis() {
    if child_role().is_some() {
        return;
    }
    let _ports = exclusive_ports();
    let Some(mut server) = redis_server() else {
        return;
    };
    redis_killed::REGION
        .configure(redis_config(&server, 2.0, 5))
        .unwrap();
    fault_under_load(&mut server, &redis_killed::FUNCTIONS, Fault::Kill);
}

#[test]
fn decorated_functions_survive_a_killed_memcached() {
    if child_role().is_some() {
        return;
    }
    let _ports = exclusive_ports();
    let Some(mut server) = memcached_server() else {
        return;
    };
    memcached_killed::REGION
        .configure(memcached_config(&server, 2.0, 5))
        .unwrap();
    fault_under_load(&mut server, &memcached_killed::FUNCTIONS, Fault::Kill);
}

#[test]
fn decorated_functions_survive_a_frozen_redis() {
    if child_role().is_some() {
        return;
    }
    let _ports = shared_ports();
    let Some(mut server) = redis_server() else {
        return;
    };
    redis_frozen::REGION
        .configure(redis_config(&server, 1.0, 2))
        .unwrap();
    fault_under_load(&mut server, &redis_frozen::FUNCTIONS, Fault::Freeze);
}

#[test]
fn decorated_functions_survive_a_frozen_memcached() {
    if child_role().is_some() {
        return;
    }
    let _ports = shared_ports();
    let Some(mut server) = memcached_server() else {
        return;
    };
    memcached_frozen::REGION
        .configure(memcached_config(&server, 1.0, 2))
        .unwrap();
    fault_under_load(&mut server, &memcached_frozen::FUNCTIONS, Fault::Freeze);
}

// ------------------------------------------------------------------------------------------------
// a crashed holder of the Redis lock

/// Long enough that the live holder's keeper, extending the lock every third of it, keeps it on
/// a loaded machine; short enough for the test.
const LOCK_TIMEOUT_SECS: u64 = 3;

fn locking_region(addr: &str) -> CacheRegion {
    dogpile::make_region()
        .configure(
            RegionConfig::new("dogpile.cache.redis")
                .expiration_time(600)
                .argument("url", format!("redis://{addr}"))
                .argument("socket_timeout", 10)
                .argument("distributed_lock", true)
                .argument("lock_timeout", LOCK_TIMEOUT_SECS),
        )
        .unwrap()
}

/// The child processes: the holder creates forever (until killed); the waiter asks for the same
/// cold key and records what it got. Both count their creations with `INCR creations`.
fn crashed_holder_child(role: &str) {
    let addr = std::env::var("DOGPILE_TEST_REDIS").unwrap();
    let region = locking_region(&addr);
    let mut con = raw(&addr);
    match role {
        "holder" => {
            let _ = region.get_or_create("cold", || {
                let _: i64 = cmd(&mut raw(&addr), &["INCR", "creations"]);
                let _: () = cmd(&mut raw(&addr), &["SET", "holding", "1"]);
                // Killed while here.
                std::thread::sleep(Duration::from_secs(3600));
                "from the dead".to_string()
            });
            unreachable!("the holder was to be killed");
        }
        "waiter" => {
            let _: () = cmd(&mut con, &["SET", "waiter started", "1"]);
            let got = region
                .get_or_create("cold", || {
                    let _: i64 = cmd(&mut raw(&addr), &["INCR", "creations"]);
                    "from the waiter".to_string()
                })
                .unwrap();
            let stats = region.stats();
            let _: () = cmd(&mut con, &["SET", "waiter got", &got]);
            let _: () = cmd(
                &mut con,
                &["SET", "waiter creations", &stats.creations.to_string()],
            );
        }
        other => panic!("unknown role {other}"),
    }
}

/// A process takes the Redis lock and is SIGKILLed mid-creation. While it lived, a second
/// process asking for the same cold key waited (it polled the lock) and did not create, for
/// longer than `lock_timeout` (the holder's lock was being extended); after the kill, the lock
/// expired and the second process created the value, once.
#[test]
fn a_crashed_redis_lock_holder_blocks_creation_while_alive_then_expires() {
    const TEST: &str = "a_crashed_redis_lock_holder_blocks_creation_while_alive_then_expires";
    if let Some(role) = child_role() {
        return crashed_holder_child(&role);
    }
    let _ports = shared_ports();
    let Some(server) = redis_server() else { return };
    let addr = server.addr();
    let env = [("DOGPILE_TEST_REDIS", addr.clone())];
    let mut con = raw(&addr);
    let get = |con: &mut redis::Connection, key: &str| cmd::<Option<String>>(con, &["GET", key]);

    let mut holder = spawn_child(TEST, "holder", &env);
    wait_until("the holder to take the lock", || {
        get(&mut con, "holding").is_some()
    });
    let mut waiter = spawn_child(TEST, "waiter", &env);
    wait_until("the waiter to start", || {
        get(&mut con, "waiter started").is_some()
    });

    // The waiter polls the lock (EXISTS), while the holder's process extends it (EVAL): wait for
    // four extensions, more than `lock_timeout` in all, so an unextended lock would have expired
    // (one more EVAL: the waiter's acquire, a script too).
    let polls = command_calls(&mut con, "exists");
    let extensions = command_calls(&mut con, "eval");
    wait_until(
        "the waiter to poll the lock and the holder to extend it",
        || {
            command_calls(&mut con, "exists") > polls + 10
                && command_calls(&mut con, "eval") >= extensions + 5
        },
    );
    assert_eq!(
        waiter.try_wait().unwrap(),
        None,
        "the waiter returned while the holder lived"
    );
    assert_eq!(get(&mut con, "creations").as_deref(), Some("1"));
    assert_eq!(get(&mut con, "waiter got"), None);
    assert_eq!(get(&mut con, "cold"), None, "a value was stored");
    let pttl: i64 = cmd(&mut con, &["PTTL", "_lockcold"]);
    assert!(
        pttl > 0 && pttl <= LOCK_TIMEOUT_SECS as i64 * 1000,
        "the live holder's lock: PTTL {pttl}"
    );

    holder.kill().unwrap(); // SIGKILL: no release.
    holder.wait().unwrap();

    // The lock expires by itself; the waiter then creates, once.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = waiter.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = waiter.kill();
            panic!("the waiter never went on after the holder died");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "the waiter process failed: {status}");
    assert_eq!(get(&mut con, "creations").as_deref(), Some("2"));
    assert_eq!(get(&mut con, "waiter creations").as_deref(), Some("1"));
    assert_eq!(
        get(&mut con, "waiter got").as_deref(),
        Some("from the waiter")
    );
    let region = locking_region(&addr);
    assert_eq!(
        region.get::<String>("cold").unwrap().as_deref(),
        Some("from the waiter")
    );
    assert!(!region.key_is_locked("cold").unwrap());
}
