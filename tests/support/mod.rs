//! Helpers shared by the integration tests: servers on free loopback ports, and child processes.
//!
//! A test that needs a server calls [`Server::start`]. When the server binary is missing it gets
//! `None` and a printed reason (and should return early), except when `DOGPILE_REQUIRE_SERVERS=1`
//! (set by `.ci/run`), where a missing binary fails the test.
#![allow(dead_code)]

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

/// The arguments of a `redis-server` on `port` that binds loopback only and saves nothing.
pub fn redis_args(port: u16) -> Vec<String> {
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
