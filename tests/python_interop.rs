//! One cache shared with Python dogpile services (issue 15), against the real Python library:
//! `dogpile.cache==1.5.0` and `redis` in the virtual environment `.ci/run` makes
//! (`DOGPILE_PYTHON`, else `.venv/bin/python`, else `python3`), driving
//! `tests/fixtures/py_dogpile.py` as child processes against the test's own `redis-server`.
//!
//! * Python writes with pickle and with JSON, Rust reads the same values; Rust writes, Python
//!   reads them.
//! * A value expires for the other side at its expiration time.
//! * A mixed stampede on one cold key (16 Python threads, 16 Rust threads, both with the
//!   distributed lock): one creator in all; on an expired key one creator, the others get the
//!   stale value on both sides.
//! * A decorated Python function and a decorated Rust function share one entry.
//!
//! Without Python and the library, the tests print SKIPPED and pass, unless
//! `DOGPILE_REQUIRE_SERVERS=1`.
#![cfg(feature = "redis")]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dogpile::clock::Clock;
use dogpile::codec::WireFormat;
use dogpile::serializer::{Json, Pickle};
use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};
use serde_json::json;
use support::{raw_redis as raw, redis_cmd as cmd, servers_required, within, Server};

/// A Python with dogpile.cache 1.5.0 and redis, or `None` (with a printed reason).
fn python() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("DOGPILE_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
            PathBuf::from("python3"),
        ])
        .collect();
    for python in &candidates {
        let ok = Command::new(python)
            .args([
                "-c",
                "import dogpile, redis; assert dogpile.__version__ == '1.5.0', dogpile.__version__",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(python.clone());
        }
    }
    let why = format!(
        "no Python with dogpile.cache 1.5.0 and redis (tried {candidates:?}; .ci/run makes .venv)"
    );
    if servers_required() {
        panic!("{why}, and DOGPILE_REQUIRE_SERVERS=1 requires it");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// The Python side's command: `py_dogpile.py COMMAND PORT ARGS…`.
fn py_command(python: &Path, server: &Server, command: &str, args: &[&str]) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/py_dogpile.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg(command)
        .arg(server.port.to_string())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs a command of the Python side and returns its JSON line (`None` for NO_VALUE).
fn py(python: &Path, server: &Server, args: &[&str]) -> Option<serde_json::Value> {
    let mut command = py_command(python, server, args[0], &args[1..]);
    let out = within("a Python dogpile process", move || {
        command.output().expect("running Python")
    });
    assert!(
        out.status.success(),
        "the Python side failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let line = line.trim();
    (line != "NO_VALUE").then(|| serde_json::from_str(line).expect("a JSON line"))
}

/// A Rust region on `server` that writes as Python dogpile does, with `serializer`.
fn rust_region(server: &Server, json: bool, expiration: u64, clock: Option<Clock>) -> CacheRegion {
    let mut config = RegionConfig::new("dogpile.cache.redis")
        .expiration_time(expiration)
        .argument("url", format!("redis://{}", server.addr()))
        .argument("distributed_lock", true)
        .wire_format(WireFormat::Python);
    config = if json {
        config.serializer(Json)
    } else {
        config.serializer(Pickle)
    };
    if let Some(clock) = clock {
        config = config.clock(clock);
    }
    dogpile::make_region().configure(config).unwrap()
}

#[test]
fn python_writes_rust_reads() {
    let (Some(python), Some(server)) = (python(), Server::redis()) else {
        return;
    };
    assert_eq!(py(&python, &server, &["write"]), Some(json!("ok")));
    for (serializer, json) in [("pickle", false), ("json", true)] {
        let region = rust_region(&server, json, 600, None);
        let key = |name: &str| format!("py:{serializer}:{name}");
        assert_eq!(region.get::<i64>(&key("int")).unwrap(), Some(42));
        assert_eq!(region.get::<f64>(&key("float")).unwrap(), Some(1.5));
        assert_eq!(
            region.get::<String>(&key("str")).unwrap().as_deref(),
            Some("héllo")
        );
        assert_eq!(region.get::<bool>(&key("bool")).unwrap(), Some(true));
        assert_eq!(region.get::<Option<i64>>(&key("none")).unwrap(), Some(None));
        assert_eq!(
            region.get::<serde_json::Value>(&key("list")).unwrap(),
            Some(json!([1, "a", null]))
        );
        assert_eq!(
            region.get::<serde_json::Value>(&key("dict")).unwrap(),
            Some(json!({"a": 1, "b": [1, 2]}))
        );
    }
}

#[test]
fn rust_writes_python_reads() {
    let (Some(python), Some(server)) = (python(), Server::redis()) else {
        return;
    };
    for (serializer, json) in [("pickle", false), ("json", true)] {
        let region = rust_region(&server, json, 600, None);
        let key = |name: &str| format!("rs:{serializer}:{name}");
        region.set(&key("int"), 42i64).unwrap();
        region.set(&key("float"), 1.5f64).unwrap();
        region.set(&key("str"), "héllo".to_string()).unwrap();
        region.set(&key("bool"), true).unwrap();
        region.set(&key("none"), None::<i64>).unwrap();
        region.set(&key("list"), vec![1u8, 2, 3]).unwrap();
        region
            .set(
                &key("map"),
                std::collections::BTreeMap::from([("a".to_string(), 1u8), ("b".to_string(), 2)]),
            )
            .unwrap();
        let read = |name: &str| py(&python, &server, &["read", &key(name), serializer]);
        assert_eq!(read("int"), Some(json!(42)));
        assert_eq!(read("float"), Some(json!(1.5)));
        assert_eq!(read("str"), Some(json!("héllo")));
        assert_eq!(read("bool"), Some(json!(true)));
        assert_eq!(read("none"), Some(json!(null)));
        assert_eq!(read("list"), Some(json!([1, 2, 3])));
        assert_eq!(read("map"), Some(json!({"a": 1, "b": 2})));
    }
}

#[test]
fn a_value_expires_for_the_other_side_at_its_expiration_time() {
    let (Some(python), Some(server)) = (python(), Server::redis()) else {
        return;
    };
    // Rust writes a value created 90 s ago: Python, with a 60 s expiration, reads no value;
    // with 600 s, the value.
    let (clock, _hand) = Clock::manual(SystemTime::now() - Duration::from_secs(90));
    rust_region(&server, false, 600, Some(clock))
        .set("rs:old", 1i64)
        .unwrap();
    assert_eq!(
        py(&python, &server, &["read", "rs:old", "pickle", "60"]),
        None
    );
    assert_eq!(
        py(&python, &server, &["read", "rs:old", "pickle", "600"]),
        Some(json!(1))
    );
    // Python writes now: Rust reads it fresh, and expired on a clock 90 s ahead.
    py(&python, &server, &["write"]);
    assert_eq!(
        rust_region(&server, false, 60, None)
            .get::<i64>("py:pickle:int")
            .unwrap(),
        Some(42)
    );
    let (ahead, _hand) = Clock::manual(SystemTime::now() + Duration::from_secs(90));
    let later = rust_region(&server, false, 60, Some(ahead));
    assert_eq!(later.get::<i64>("py:pickle:int").unwrap(), None);
    assert_eq!(
        later.get_ignore_expiration::<i64>("py:pickle:int").unwrap(),
        Some(42)
    );
}

/// 16 Python threads and 16 Rust threads on `key`, both released at once: the values each side
/// got, and the creations counted on the server.
fn mixed_stampede(python: &Path, server: &Server, key: &str) -> (Vec<String>, Vec<String>, i64) {
    let region = Arc::new(rust_region(server, false, 60, None));
    let mut py_command = py_command(python, server, "stampede", &[key, "16"]);
    let py_side = std::thread::spawn(move || py_command.output().expect("running Python"));
    let addr = server.addr();
    support::wait_for("the Python threads starting", || {
        cmd::<Option<i64>>(&mut raw(&addr), &["GET", "py_ready"]).is_some()
    });
    let rust_side: Vec<_> = (0..16)
        .map(|_| {
            let (region, addr, key) = (region.clone(), addr.clone(), key.to_owned());
            std::thread::spawn(move || {
                let mut con = raw(&addr);
                while cmd::<Option<i64>>(&mut con, &["GET", "go"]).is_none() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                region
                    .get_or_create(&key, || {
                        let _: i64 = cmd(&mut raw(&addr), &["INCR", "creations"]);
                        // As the Python side: every caller arrives while it runs.
                        std::thread::sleep(Duration::from_millis(1000));
                        "fresh".to_string()
                    })
                    .unwrap()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let _: () = cmd(&mut raw(&addr), &["SET", "go", "1"]);
    let rust: Vec<String> = rust_side
        .into_iter()
        .map(|t| within("a Rust caller", move || t.join().unwrap()))
        .collect();
    let out = within("the Python side", move || py_side.join().unwrap());
    assert!(
        out.status.success(),
        "the Python side failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python: Vec<String> = serde_json::from_slice(&out.stdout).expect("Python's values");
    let creations: i64 = cmd(&mut raw(&addr), &["GET", "creations"]);
    (rust, python, creations)
}

#[test]
fn a_mixed_stampede_on_a_cold_key_has_one_creator() {
    let (Some(python), Some(server)) = (python(), Server::redis()) else {
        return;
    };
    let (rust, py_values, creations) = mixed_stampede(&python, &server, "cold");
    assert_eq!(creations, 1, "creations across Python and Rust");
    assert!(rust.iter().all(|v| v == "fresh"), "{rust:?}");
    assert!(py_values.iter().all(|v| v == "fresh"), "{py_values:?}");
    assert_eq!((rust.len(), py_values.len()), (16, 16));
    let locks: Vec<String> = cmd(&mut raw(&server.addr()), &["KEYS", "_lock*"]);
    assert!(locks.is_empty(), "{locks:?}");
}

#[test]
fn a_mixed_stampede_on_an_expired_key_serves_the_stale_value_on_both_sides() {
    let (Some(python), Some(server)) = (python(), Server::redis()) else {
        return;
    };
    // Created two minutes ago: expired for both sides' 60 s expiration.
    let (clock, _hand) = Clock::manual(SystemTime::now() - Duration::from_secs(120));
    rust_region(&server, false, 600, Some(clock))
        .set("expired", "stale".to_string())
        .unwrap();
    let (rust, py_values, creations) = mixed_stampede(&python, &server, "expired");
    assert_eq!(creations, 1, "creations across Python and Rust");
    let all: Vec<&String> = rust.iter().chain(&py_values).collect();
    assert_eq!(
        all.iter().filter(|v| v.as_str() == "fresh").count(),
        1,
        "{all:?}"
    );
    assert_eq!(
        all.iter().filter(|v| v.as_str() == "stale").count(),
        31,
        "{all:?}"
    );
}

/// The Rust twin of the Python side's `@region.cache_on_arguments(namespace="ns") def
/// load_user(user_id, lang)` in the script `__main__`: the `key` template spells Python's key.
mod twin {
    use super::*;

    pub static REGION: CacheRegion = CacheRegion::new();
    pub static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION, key = "__main__:load_user|ns|{user_id} {lang}")]
    pub fn load_user(user_id: u32, lang: &str) -> serde_json::Value {
        CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        json!({"id": user_id, "lang": lang, "by": "rust"})
    }
}

#[test]
fn a_decorated_python_function_and_a_decorated_rust_function_share_one_entry() {
    let (Some(python), Some(server)) = (python(), Server::redis()) else {
        return;
    };
    twin::REGION
        .configure(
            RegionConfig::new("dogpile.cache.redis")
                .expiration_time(600)
                .argument("url", format!("redis://{}", server.addr()))
                .serializer(Pickle)
                .wire_format(WireFormat::Python),
        )
        .unwrap();
    // Python creates user 7's entry; Rust's function finds it and does not run.
    let made = py(&python, &server, &["decorated", "7", "en"]).unwrap();
    assert_eq!(made, json!({"id": 7, "lang": "en", "by": "python"}));
    assert_eq!(twin::load_user(7, "en"), made);
    assert_eq!(twin::CALLS.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Rust creates user 8's; Python's function finds it and does not run.
    let made = twin::load_user(8, "fr");
    assert_eq!(made["by"], "rust");
    assert_eq!(py(&python, &server, &["decorated", "8", "fr"]), Some(made));
    let py_calls: i64 = cmd(&mut raw(&server.addr()), &["GET", "py_calls"]);
    assert_eq!(py_calls, 1, "Python ran only for user 7");
}
