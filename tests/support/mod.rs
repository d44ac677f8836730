//! Helpers shared by the integration tests: servers on free loopback ports, and child processes.
//!
//! A test that needs a server calls [`Server::start`]. When the server binary is missing it gets
//! `None` and a printed reason (and should return early), except when `DOGPILE_REQUIRE_SERVERS=1`
//! (set by `.ci/run`), where a missing binary fails the test.
#![allow(dead_code)]

pub mod alloc_count;
pub mod fault_proxy;
pub mod log_recorder;
pub mod recording_sink;
pub mod soak;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `.ci/run` asked for every server test to run.
pub fn servers_required() -> bool {
    std::env::var("DOGPILE_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// Finds `binary` on PATH or in /usr/sbin, /usr/bin, /usr/local/bin.
pub fn find_binary(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// The arguments of a `redis-server` on `port` that binds loopback only and saves nothing. What
/// it must still write (a replication snapshot) goes to the temporary directory, under a name of
/// its own port, never into the working directory.
pub fn redis_args(port: u16) -> Vec<String> {
    let dbfilename = format!("dogpile-test-redis-{port}.rdb");
    let dir = std::env::temp_dir().display().to_string();
    let port = port.to_string();
    [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir,
        "--dbfilename",
        &dbfilename,
    ]
    .map(String::from)
    .to_vec()
}

/// The arguments of a `memcached` on `port`: loopback, TCP only, 64 MB, allowed to run as root.
pub fn memcached_args(port: u16) -> Vec<String> {
    let port = port.to_string();
    [
        "-l",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "0",
        "-u",
        "root",
        "-m",
        "64",
    ]
    .map(String::from)
    .to_vec()
}

/// Restarting a server frees its port for a moment, and a server started just then could be
/// given that port: so in a test binary the tests that kill and restart a server take
/// [`exclusive_ports`] and run alone, and the others (which keep their servers' ports) take
/// [`shared_ports`].
static PORTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A share of this binary's ports, for a test whose servers keep theirs.
pub fn shared_ports() -> std::sync::RwLockReadGuard<'static, ()> {
    PORTS.read().unwrap_or_else(|e| e.into_inner())
}

/// This binary's ports alone, for a test that restarts a server (or must run alone).
pub fn exclusive_ports() -> std::sync::RwLockWriteGuard<'static, ()> {
    PORTS.write().unwrap_or_else(|e| e.into_inner())
}

/// A server process on a loopback port, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub binary: PathBuf,
    args: Vec<String>,
    _dir: Option<TempDir>,
}

impl Server {
    /// Starts `binary` with the arguments `args(port)` on a free port and waits until it accepts
    /// connections. `None` (with a printed reason) when the binary is missing and servers are not
    /// required.
    pub fn start(binary: &str, args: impl Fn(u16) -> Vec<String>) -> Option<Server> {
        // One start at a time in this process: a free port is free only until its server binds
        // it, and two tests starting servers at once could be given the same one.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = find_binary(binary) else {
            if servers_required() {
                panic!("{binary} is not installed, and DOGPILE_REQUIRE_SERVERS=1 requires it");
            }
            eprintln!("SKIPPED: {binary} is not installed (install it, or set DOGPILE_REQUIRE_SERVERS=1 to make this a failure)");
            return None;
        };
        let port = free_port();
        let args = args(port);
        let child = spawn(&path, &args);
        let server = Server {
            child,
            port,
            binary: path,
            args,
            _dir: None,
        };
        server.wait_ready();
        Some(server)
    }

    /// A `redis-server` that saves nothing, on a free loopback port.
    pub fn redis() -> Option<Server> {
        Server::start("redis-server", redis_args)
    }

    /// A `memcached` on a free loopback port (TCP only, 64 MB).
    pub fn memcached() -> Option<Server> {
        Server::start("memcached", memcached_args)
    }

    /// Keeps a temporary directory alive as long as the server (for its data files).
    pub fn with_dir(mut self, dir: TempDir) -> Self {
        self._dir = Some(dir);
        self
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, after [`kill`](Server::kill).
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.binary, &self.args);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        // A readiness wait, not a timing assertion: a server that never listens fails the test.
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not listen on port {} within 20 s",
                self.binary.display(),
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn spawn(path: &PathBuf, args: &[String]) -> Child {
    Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()))
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "dogpile-test-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let dir = PathBuf::from(dir.to_string_lossy().replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '/' && c != '-',
            "_",
        ));
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The role a test binary was re-started in by [`spawn_child`], if any.
pub fn child_role() -> Option<String> {
    std::env::var("DOGPILE_TEST_CHILD_ROLE").ok()
}

/// Runs this test binary again as a child process that runs only `test_name`, with
/// `DOGPILE_TEST_CHILD_ROLE=role` and the extra variables. The test checks [`child_role`] first
/// thing and, in a child, does the child's part and returns.
pub fn spawn_child(test_name: &str, role: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env("DOGPILE_TEST_CHILD_ROLE", role)
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawning a child test process")
}

/// Every region operation on a region with a 60 s expiration and the manual clock `manual`: the
/// round trip that each backend's tests run. Uses keys `rt:*` only.
pub fn check_region_operations(
    region: &dogpile::CacheRegion,
    manual: &dogpile::clock::ManualClock,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};

    // set / get / delete; deleting a missing key is fine.
    assert_eq!(region.get::<String>("rt:a").unwrap(), None);
    region.set("rt:a", "alpha".to_string()).unwrap();
    assert_eq!(
        region.get::<String>("rt:a").unwrap().as_deref(),
        Some("alpha")
    );
    region.delete("rt:a").unwrap();
    assert_eq!(region.get::<String>("rt:a").unwrap(), None);
    region.delete("rt:never-there").unwrap();

    // A cached None, 0 and empty string are hits.
    region.set("rt:none", None::<u32>).unwrap();
    region.set("rt:zero", 0u64).unwrap();
    region.set("rt:empty", String::new()).unwrap();
    assert_eq!(region.get::<Option<u32>>("rt:none").unwrap(), Some(None));
    assert_eq!(region.get::<u64>("rt:zero").unwrap(), Some(0));
    assert_eq!(
        region.get::<String>("rt:empty").unwrap().as_deref(),
        Some("")
    );

    // The multi versions, empty batches included.
    region
        .set_multi([("rt:m1", 1u32), ("rt:m2", 2), ("rt:m3", 3)])
        .unwrap();
    assert_eq!(
        region
            .get_multi::<u32, _>(&["rt:m1", "rt:nope", "rt:m3", "rt:m2"])
            .unwrap(),
        vec![Some(1), None, Some(3), Some(2)]
    );
    region.delete_multi(&["rt:m1", "rt:m3"]).unwrap();
    assert_eq!(
        region
            .get_multi::<u32, _>(&["rt:m1", "rt:m2", "rt:m3"])
            .unwrap(),
        vec![None, Some(2), None]
    );
    assert!(region.get_multi::<u32, &str>(&[]).unwrap().is_empty());
    region.set_multi(Vec::<(&str, u32)>::new()).unwrap();
    region.delete_multi::<&str>(&[]).unwrap();

    // get_or_create: created once, then a hit; expired after 60 s, then created again.
    let calls = AtomicUsize::new(0);
    let make = || format!("v{}", calls.fetch_add(1, Ordering::SeqCst) + 1);
    assert_eq!(region.get_or_create("rt:g", make).unwrap(), "v1");
    assert_eq!(region.get_or_create("rt:g", make).unwrap(), "v1");
    assert!(!region.key_is_locked("rt:g").unwrap());
    assert_eq!(
        region
            .get_value_metadata::<String>("rt:g")
            .unwrap()
            .map(|e| e.value)
            .as_deref(),
        Some("v1")
    );
    manual.advance(std::time::Duration::from_secs(61));
    assert_eq!(region.get::<String>("rt:g").unwrap(), None);
    assert_eq!(
        region
            .get_with_expiration::<String>("rt:g", -1)
            .unwrap()
            .as_deref(),
        Some("v1")
    );
    assert_eq!(region.get_or_create("rt:g", make).unwrap(), "v2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // get_or_create_multi: the creator sees only the missing keys, once.
    region.set("rt:c2", 20u32).unwrap();
    let mut seen = Vec::new();
    let values = region
        .get_or_create_multi(&["rt:c1", "rt:c2", "rt:c3"], |ks| {
            seen.push(ks.iter().map(|k| k.to_string()).collect::<Vec<_>>());
            ks.iter()
                .map(|k| if *k == "rt:c1" { 10 } else { 30 })
                .collect()
        })
        .unwrap();
    assert_eq!(values, vec![10u32, 20, 30]);
    assert_eq!(seen, vec![vec!["rt:c1".to_string(), "rt:c3".to_string()]]);
    assert_eq!(region.get::<u32>("rt:c3").unwrap(), Some(30));

    // Hard invalidation: values created before it count as absent.
    manual.advance(std::time::Duration::from_millis(10));
    region.invalidate(true);
    assert_eq!(region.get::<u32>("rt:c1").unwrap(), None);
    assert_eq!(region.get_or_create("rt:c1", || 11u32).unwrap(), 11);
}

/// A proptest runner for the fuzz-style tests: `quick` cases with a fixed seed in a normal run
/// (CI sees the same cases every time), `long` cases with a random seed when `DOGPILE_FUZZ=1`;
/// the variable `cases_var` sets the count and `DOGPILE_FUZZ_SEED=N` replays a run.
pub fn fuzz_runner(cases_var: &str, quick: u32, long: u32) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config, RngSeed, TestRunner};
    let env_number = |name: &str| std::env::var(name).ok().and_then(|n| n.parse().ok());
    let fuzz = std::env::var("DOGPILE_FUZZ").is_ok_and(|v| v == "1");
    let seed = match env_number("DOGPILE_FUZZ_SEED") {
        Some(n) => RngSeed::Fixed(n),
        None if fuzz => RngSeed::Random,
        None => RngSeed::Fixed(0x00D0_6C11_E5EE_D5ED),
    };
    let cases = env_number(cases_var).map_or(if fuzz { long } else { quick }, |n| n as u32);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: seed,
        ..Config::default()
    })
}

/// Polls `cond` every millisecond until it holds: a readiness wait with a generous bound (two
/// minutes), so a stuck test fails instead of hanging CI. Never a timing check.
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_for_every(what, Duration::from_millis(1), cond);
}

/// [`wait_for`], looking every `interval`: for a `cond` that costs a connection or a command.
pub fn wait_for_every(what: &str, interval: Duration, cond: impl FnMut() -> bool) {
    wait_for_within(what, interval, Duration::from_secs(120), cond);
}

/// [`wait_for_every`] with a bound of its own: for a wait that runs inside [`within`] and must
/// fail with its own message before `within` calls it a hang.
pub fn wait_for_within(
    what: &str,
    interval: Duration,
    bound: Duration,
    mut cond: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what} (bound {bound:?})"
        );
        std::thread::sleep(interval);
    }
}

/// Waits for a child process to exit, within [`wait_for`]'s bound.
pub fn wait_child(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let mut status = None;
    wait_for(what, || {
        status = child.try_wait().expect("waiting for a child");
        status.is_some()
    });
    status.unwrap_or_else(|| unreachable!("wait_for returned with the child running"))
}

/// A path passed to a child process in the environment variable `name`.
pub fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set")))
}

/// Appends one line to a file shared by processes (a creation log).
pub fn append_line(path: &std::path::Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("opening a shared log file");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("appending to a shared log file");
}

/// A plain Redis connection to a test server, to look at it beside the backend.
pub fn raw_redis(addr: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}"))
        .and_then(|c| c.get_connection())
        .expect("connecting to the test server")
}

/// Runs one raw Redis command, given as its words.
pub fn redis_cmd<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con).expect("a raw command")
}

/// The configuration of a `dogpile.cache.dbm` region at `path` with a 60 s expiration and the
/// default lock file (`PATH.dogpile.lock`).
pub fn file_store_config(path: &std::path::Path) -> dogpile::RegionConfig {
    dogpile::RegionConfig::new("dogpile.cache.dbm")
        .expiration_time(60)
        .argument("filename", path.to_string_lossy().into_owned())
}

/// A region on the file store at `path` (see [`file_store_config`]).
pub fn file_store_region(path: &std::path::Path) -> dogpile::CacheRegion {
    dogpile::make_region()
        .configure(file_store_config(path))
        .expect("configuring the file store")
}

/// Runs `f` on a helper thread and returns its result; fails the test when it has not finished
/// within a generous bound (60 s). How a test tells a hang, never by a tight wall-clock bound.
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    const HANG: Duration = Duration::from_secs(60);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("{what}: still not done after {HANG:?}: hung"))
}

/// Sends one raw memcached command and returns the first line of its answer, as another
/// client would see it.
pub fn memcached_line(addr: &str, cmd: &[u8]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = TcpStream::connect(addr).expect("connecting to memcached");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(cmd).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    line
}

/// A memory region with `expiration` on a manual clock, and the clock's handle.
pub fn manual_memory_region(
    expiration: impl Into<dogpile::Expiration>,
) -> (
    dogpile::CacheRegion,
    std::sync::Arc<dogpile::clock::ManualClock>,
) {
    let (clock, handle) = dogpile::clock::Clock::manual(std::time::SystemTime::now());
    let region = dogpile::make_region()
        .configure(
            dogpile::RegionConfig::new("dogpile.cache.memory")
                .expiration_time(expiration)
                .clock(clock),
        )
        .unwrap();
    (region, handle)
}

/// A region on the memcached server at `addr` with its distributed lock.
#[cfg(feature = "memcached")]
pub fn memcached_locking_region(addr: &str, lock_timeout: u64) -> dogpile::CacheRegion {
    dogpile::make_region()
        .configure(
            dogpile::RegionConfig::new("dogpile.cache.memcached")
                .expiration_time(60)
                .argument("url", addr)
                .argument("distributed_lock", true)
                .argument("lock_timeout", lock_timeout)
                .argument("socket_timeout", 2.0),
        )
        .expect("configuring memcached")
}

/// `threads` threads on one cold key of `region`: the values they got and how many times the
/// creator ran. The creator sleeps for `creation` before it returns `value`, so the others
/// arrive while it runs. Each join is under [`within`]: a hang fails the test.
pub fn threads_on_one_cold_key<T: dogpile::CacheValue>(
    region: &std::sync::Arc<dogpile::CacheRegion>,
    threads: usize,
    creation: Duration,
    value: T,
) -> (Vec<T>, usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let creations = std::sync::Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (region, creations, value) = (region.clone(), creations.clone(), value.clone());
            std::thread::spawn(move || {
                region
                    .get_or_create("cold", || {
                        creations.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(creation);
                        value
                    })
                    .unwrap()
            })
        })
        .collect();
    let values = handles
        .into_iter()
        .map(|h| within("a caller on a cold key", move || h.join().unwrap()))
        .collect();
    (values, creations.load(Ordering::SeqCst))
}

/// A set and a get through the region's async path, on a current-thread runtime: the value
/// comes back.
pub fn async_round_trip(region: &dogpile::CacheRegion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        region.set_async("async", 5u8).await.unwrap();
        assert_eq!(region.get_async::<u8>("async").await.unwrap(), Some(5));
    });
}

/// 32 tasks on one cold key of `region`, spawned on `runtime`: the values they got and how many
/// times the creator ran. The creator awaits a timer for `creation` before it returns `value`,
/// so it can only finish if the waiters let the executor's threads go. Run under [`within`]:
/// a hang fails the test instead of blocking it.
pub fn thirty_two_tasks_on_one_cold_key<T: dogpile::CacheValue>(
    runtime: tokio::runtime::Runtime,
    region: std::sync::Arc<dogpile::CacheRegion>,
    creation: Duration,
    value: T,
) -> (Vec<T>, usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    within("32 tasks on one cold key", move || {
        let creations = std::sync::Arc::new(AtomicUsize::new(0));
        let values = runtime.block_on(async {
            let tasks: Vec<_> = (0..32)
                .map(|_| {
                    let (region, creations, value) =
                        (region.clone(), creations.clone(), value.clone());
                    tokio::spawn(async move {
                        region
                            .get_or_create_async("cold", || async {
                                creations.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(creation).await;
                                value
                            })
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut values = Vec::new();
            for t in tasks {
                values.push(t.await.unwrap());
            }
            values
        });
        (values, creations.load(Ordering::SeqCst))
    })
}

/// Certificates made for a TLS test with the `openssl` command, in a temporary directory: a CA,
/// a server certificate it signed for `localhost` and `127.0.0.1`, one it signed for another
/// name only, and a second CA that signed nothing the servers use.
pub struct TlsFiles {
    pub dir: TempDir,
}

impl TlsFiles {
    /// `None` (with a printed reason) when `openssl` is missing and servers are not required.
    pub fn make(tag: &str) -> Option<TlsFiles> {
        let Some(openssl) = find_binary("openssl") else {
            if servers_required() {
                panic!("openssl is not installed, and DOGPILE_REQUIRE_SERVERS=1 requires it (the TLS tests make their certificates with it)");
            }
            eprintln!(
                "SKIPPED: openssl is not installed (the TLS tests make their certificates with it)"
            );
            return None;
        };
        let dir = TempDir::new(tag);
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .output()
                .expect("running openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=dogpile test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        for (name, san) in [
            ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            ("misnamed", "subjectAltName=DNS:elsewhere.example"),
        ] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=dogpile test server",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            std::fs::write(dir.path().join(format!("{name}.ext")), san).unwrap();
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        Some(TlsFiles { dir })
    }

    /// The path of one of the files (`ca.pem`, `other-ca.pem`, `server.pem`, `server.key`…).
    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// A `redis-server` that speaks only TLS on a free loopback port, with the certificate
    /// `cert` (`server` or `misnamed`); it asks no client certificate.
    pub fn redis_server(&self, cert: &str) -> Option<Server> {
        let (cert, key, ca) = (
            self.path(&format!("{cert}.pem")),
            self.path(&format!("{cert}.key")),
            self.path("ca.pem"),
        );
        Server::start("redis-server", move |port| {
            let mut args = redis_args(port);
            // The plain port is off: only TLS is spoken.
            args[1] = "0".to_owned();
            args.extend(
                [
                    "--tls-port",
                    &port.to_string(),
                    "--tls-cert-file",
                    &cert,
                    "--tls-key-file",
                    &key,
                    "--tls-ca-cert-file",
                    &ca,
                    "--tls-auth-clients",
                    "no",
                ]
                .map(String::from),
            );
            args
        })
    }
}

/// A `redis-sentinel` (`redis-server --sentinel`) on a free loopback port, watching the master
/// at `127.0.0.1:master_port` as `mymaster` (quorum 2, down after 1 s). Its config file, which
/// a sentinel rewrites, lives in its own temporary directory.
pub fn redis_sentinel(master_port: u16, tag: &str) -> Option<Server> {
    let dir = TempDir::new(tag);
    let conf = dir.path().join("sentinel.conf");
    let server = Server::start("redis-server", |port| {
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n\
                 sentinel parallel-syncs mymaster 1\n"
            ),
        )
        .expect("writing a sentinel config");
        vec![conf.display().to_string(), "--sentinel".to_owned()]
    })?;
    Some(server.with_dir(dir))
}

/// A creator that counts its calls in `calls` and returns `value` once the test sends on the
/// returned channel (or drops it): a creation the test holds open as long as it likes.
pub fn gated<T: Send + 'static>(
    value: T,
    calls: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (
    std::sync::mpsc::Sender<()>,
    impl FnOnce() -> T + Send + 'static,
) {
    let (open, gate) = std::sync::mpsc::channel::<()>();
    let calls = calls.clone();
    (open, move || {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = gate.recv();
        value
    })
}

/// Waits (within [`within`]'s bound) until `region` holds `value` at `key`: a creation that
/// finishes on another thread has stored it.
pub fn wait_stored<T: dogpile::CacheValue + PartialEq>(
    region: &std::sync::Arc<dogpile::CacheRegion>,
    key: &str,
    value: T,
) {
    let (region, key) = (region.clone(), key.to_owned());
    within("the value stored", move || {
        wait_for("the value stored", || {
            region.get::<T>(&key).unwrap().as_ref() == Some(&value)
        })
    });
}
