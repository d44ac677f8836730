//! Byte backends beside the memory backend and beside their raw clients: Redis, memcached and
//! the embedded file store. One thread; criterion; servers started by the bench on free loopback
//! ports and stopped at the end (a missing binary skips that server with a printed line).
//!
//! Groups (every value a 32-byte `String`; keys cycle through 1,000 prepared ones):
//! - `server/hit`: `region.get` on each backend; a decorated fn (`#[cache_on_arguments]`) on
//!   each; the raw clients on the same keys: `redis::Connection` `GET` (the kind of connection
//!   the backend pools) and `memcache::Client::get` (the crate the backend used before);
//! - `server/read miss`: `region.get` of a key that is not there;
//! - `server/create miss`: `region.get_or_create` of a key deleted in the untimed setup (the
//!   creator runs and the value is stored);
//! - `server/get_multi 100`: `region.get_multi` of 100 keys beside 100 `region.get` calls, and
//!   the raw clients' `MGET` / `gets` and 100 single raw gets; for memcached also its backend's
//!   `get_multi` called directly (the client without the region);
//! - `server/set_multi 100`: `region.set_multi` of 100 keys;
//! - `server/delete_multi 100`: `region.delete_multi` of 100 keys of their own (set before the
//!   group; after the first pass over them the deletes find nothing, for the floor as for the
//!   region).
//!
//! memcached also has a raw-socket floor in `server/hit`, `server/get_multi 100`,
//! `server/set_multi 100` and `server/delete_multi 100`: a `TcpStream` with a `BufReader`,
//! sending `get k`, `get k1 … k100`, 100 `set … noreply` and a `version` in one write (and the
//! meta protocol's 100 quiet `ms … q` and an `mn`), with the same bytes the region stores (its
//! envelopes), or 100 `delete … noreply` and a `version`: what a client can do at best on this
//! machine.
//!
//! Before the groups run, the Redis server's command statistics show how many commands one
//! `get_multi` of 100 keys sends.
//!
//! Run: `cargo bench --bench servers --features redis,memcached,file`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkGroup, Criterion};
use dogpile::{CacheRegion, RegionConfig};
use support::{Server, TempDir};

const KEYS: usize = 1000;
const MULTI: usize = 100;

fn value(n: u64) -> String {
    format!("{n:032}")
}

static MEMORY: CacheRegion = CacheRegion::named("memory");
static FILE: CacheRegion = CacheRegion::named("file");
static REDIS: CacheRegion = CacheRegion::named("redis");
static MEMCACHED: CacheRegion = CacheRegion::named("memcached");
static REDIS_TLS: CacheRegion = CacheRegion::named("redis-tls");

#[dogpile::cache_on_arguments(region = MEMORY)]
fn memory_fn(n: u64) -> String {
    value(n)
}

#[dogpile::cache_on_arguments(region = FILE)]
fn file_fn(n: u64) -> String {
    value(n)
}

#[dogpile::cache_on_arguments(region = REDIS)]
fn redis_fn(n: u64) -> String {
    value(n)
}

#[dogpile::cache_on_arguments(region = MEMCACHED)]
fn memcached_fn(n: u64) -> String {
    value(n)
}

#[dogpile::cache_on_arguments(region = REDIS_TLS)]
fn redis_tls_fn(n: u64) -> String {
    value(n)
}

type Group<'a, M = criterion::measurement::WallTime> = BenchmarkGroup<'a, M>;

/// The calling thread's CPU time (user and kernel, `CLOCK_THREAD_CPUTIME_ID`) as a criterion
/// measurement: what one call costs the client, with the wait for the server left out. On a
/// shared machine a loopback round trip swings from 30 to 80 µs between runs, and the wall-clock
/// ratios with it; the client's own CPU per call does not.
struct ThreadCpu;

fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write into; the clock id is a constant of the platform.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl criterion::measurement::Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds of CPU, scaled as criterion scales times.
struct CpuFormatter;

impl criterion::measurement::ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = match typical {
            t if t < 1e3 => (1.0, "ns cpu"),
            t if t < 1e6 => (1e3, "µs cpu"),
            t if t < 1e9 => (1e6, "ms cpu"),
            _ => (1e9, "s cpu"),
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        _throughput: &criterion::Throughput,
        _values: &mut [f64],
    ) -> &'static str {
        "(no throughput)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// One region under test, with what the groups need of it.
struct Subject {
    name: &'static str,
    region: &'static CacheRegion,
    decorated: fn(u64) -> String,
}

fn hit_keys() -> Vec<String> {
    (0..KEYS).map(|n| format!("hit:{n}")).collect()
}

/// Stores the hit keys and warms the decorated fn's entries.
fn fill(s: &Subject, keys: &[String]) {
    s.region
        .set_multi(keys.iter().enumerate().map(|(n, k)| (k, value(n as u64))))
        .unwrap_or_else(|e| panic!("filling {}: {e}", s.name));
    for n in 0..KEYS as u64 {
        (s.decorated)(n);
    }
}

fn bench_hit<M: criterion::measurement::Measurement>(
    g: &mut Group<'_, M>,
    s: &Subject,
    keys: &[String],
) {
    g.bench_function(format!("{} region get", s.name), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(s.region.get::<String>(&keys[i]).expect("get"))
        })
    });
    g.bench_function(format!("{} decorated fn", s.name), |b| {
        let mut n = 0;
        b.iter(|| {
            n = (n + 1) % KEYS as u64;
            black_box((s.decorated)(n))
        })
    });
}

fn bench_read_miss(g: &mut Group<'_>, s: &Subject) {
    let keys: Vec<String> = (0..KEYS).map(|n| format!("absent:{n}")).collect();
    g.bench_function(format!("{} region get", s.name), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(s.region.get::<String>(&keys[i]).expect("get"))
        })
    });
}

fn bench_create_miss(g: &mut Group<'_>, s: &Subject) {
    let keys: Vec<String> = (0..KEYS).map(|n| format!("create:{n}")).collect();
    g.bench_function(format!("{} region get_or_create", s.name), |b| {
        let mut i = 0;
        b.iter_batched(
            || {
                i = (i + 1) % KEYS;
                s.region.delete(&keys[i]).expect("delete");
                i
            },
            |i| {
                black_box(
                    s.region
                        .get_or_create(&keys[i], || value(i as u64))
                        .expect("get_or_create"),
                )
            },
            BatchSize::NumIterations(100),
        )
    });
}

fn bench_multi<M: criterion::measurement::Measurement>(
    g: &mut Group<'_, M>,
    s: &Subject,
    keys: &[String],
) {
    g.bench_function(format!("{} region get_multi", s.name), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + MULTI) % KEYS;
            let v: Vec<Option<String>> =
                s.region.get_multi(&keys[i..i + MULTI]).expect("get_multi");
            debug_assert!(v.iter().all(Option::is_some));
            black_box(v)
        })
    });
    g.bench_function(format!("{} 100 x region get", s.name), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + MULTI) % KEYS;
            for k in &keys[i..i + MULTI] {
                black_box(s.region.get::<String>(k).expect("get"));
            }
        })
    });
}

// ------------------------------------------------------------------------------------------------
// raw clients

fn raw_redis(addr: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}"))
        .and_then(|c| c.get_connection())
        .expect("a raw Redis connection")
}

/// `INFO commandstats` call counts by command name.
fn redis_calls(con: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(con)
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Counts the commands one `get_multi` of 100 keys sends, on the server's own statistics.
fn redis_multi_commands(addr: &str, keys: &[String]) {
    let mut con = raw_redis(addr);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .expect("CONFIG RESETSTAT");
    let v: Vec<Option<String>> = REDIS.get_multi(&keys[..MULTI]).expect("get_multi");
    assert!(v.iter().all(Option::is_some));
    let (mget, get) = (redis_calls(&mut con, "mget"), redis_calls(&mut con, "get"));
    println!("Redis: one region get_multi of {MULTI} keys sent {mget} MGET and {get} GET commands (server INFO commandstats)");
    // For the summary (benches/summary.rs).
    let dir = criterion_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("redis-get-multi.txt"), format!("{mget} {get}\n"));
    }
}

/// Where criterion writes: `$CRITERION_HOME`, else `<target>/criterion` (this binary lives in
/// `<target>/release/deps/`).
fn criterion_dir() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let exe = std::env::current_exe().expect("this binary's path");
    exe.ancestors()
        .nth(3)
        .expect("the target directory")
        .join("criterion")
}

fn bench_redis_raw_hit(hit: &mut Group<'_>, addr: &str, keys: &[String]) {
    bench_raw_get(
        hit,
        "redis raw GET (redis::Connection)",
        raw_redis(addr),
        keys,
    );
}

/// `GET` of each key in turn on the `redis` crate's own connection.
fn bench_raw_get(hit: &mut Group<'_>, name: &str, mut con: redis::Connection, keys: &[String]) {
    hit.bench_function(name, |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            let v: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&keys[i])
                .query(&mut con)
                .expect("GET");
            black_box(v)
        })
    });
}

/// The floor of a hit over TLS: the `redis` crate's own connection over TLS, with the same CA.
fn bench_redis_tls_raw_hit(hit: &mut Group<'_>, port: u16, ca: &str, keys: &[String]) {
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(std::fs::read(ca).expect("the test CA")),
    };
    let client = redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}"), certs)
        .expect("a raw TLS client");
    let con = client.get_connection().expect("a raw TLS connection");
    bench_raw_get(hit, "redis-tls raw GET (redis::Connection)", con, keys);
}

fn bench_redis_raw_multi(multi: &mut Group<'_>, addr: &str, keys: &[String]) {
    let mut con = raw_redis(addr);
    multi.bench_function("redis raw MGET", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + MULTI) % KEYS;
            let v: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(&keys[i..i + MULTI])
                .query(&mut con)
                .expect("MGET");
            black_box(v)
        })
    });
    multi.bench_function("redis 100 x raw GET", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + MULTI) % KEYS;
            for k in &keys[i..i + MULTI] {
                let v: Option<Vec<u8>> = redis::cmd("GET").arg(k).query(&mut con).expect("GET");
                black_box(v);
            }
        })
    });
}

fn raw_memcached(addr: &str) -> memcache::Client {
    memcache::Client::connect(format!("memcache://{addr}?timeout=2"))
        .expect("a raw memcache client")
}

fn bench_memcached_raw_hit(hit: &mut Group<'_>, addr: &str, keys: &[String]) {
    let client = raw_memcached(addr);
    hit.bench_function("memcached raw get (memcache::Client)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(client.get::<Vec<u8>>(&keys[i]).expect("get"))
        })
    });
}

fn bench_memcached_raw_multi(multi: &mut Group<'_>, addr: &str, keys: &[String]) {
    let client = raw_memcached(addr);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    multi.bench_function("memcached raw gets", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + MULTI) % KEYS;
            black_box(client.gets::<Vec<u8>>(&refs[i..i + MULTI]).expect("gets"))
        })
    });
    multi.bench_function("memcached 100 x raw get", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + MULTI) % KEYS;
            for k in &refs[i..i + MULTI] {
                black_box(client.get::<Vec<u8>>(k).expect("get"));
            }
        })
    });
}

/// The memcached floor: a buffered socket speaking the text protocol, nothing else.
struct RawSocket {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
    line: String,
    value: Vec<u8>,
}

impl RawSocket {
    fn connect(addr: &str) -> RawSocket {
        let s = std::net::TcpStream::connect(addr).expect("a raw memcached socket");
        s.set_nodelay(true).expect("TCP_NODELAY");
        RawSocket {
            reader: std::io::BufReader::new(s.try_clone().expect("a second handle")),
            writer: s,
            line: String::new(),
            value: Vec::new(),
        }
    }

    /// Sends `req` and reads `VALUE` items up to `END`: how many there were.
    fn get(&mut self, req: &[u8]) -> usize {
        use std::io::{BufRead, Read, Write};
        self.writer.write_all(req).expect("write");
        let mut hits = 0;
        loop {
            self.line.clear();
            self.reader.read_line(&mut self.line).expect("read");
            if self.line == "END\r\n" {
                return hits;
            }
            let len: usize = self
                .line
                .trim_end()
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a VALUE line");
            self.value.resize(len + 2, 0);
            self.reader.read_exact(&mut self.value).expect("read");
            hits += 1;
        }
    }

    /// Sends a pipeline ended by `version` (or the meta protocol's `mn`) and reads its one
    /// answer, which starts with `end`.
    fn pipeline(&mut self, req: &[u8], end: &str) {
        use std::io::{BufRead, Write};
        self.writer.write_all(req).expect("write");
        self.line.clear();
        self.reader.read_line(&mut self.line).expect("read");
        assert!(self.line.starts_with(end), "{:?}", self.line);
    }
}

fn bench_memcached_floor_hit<M: criterion::measurement::Measurement>(
    hit: &mut Group<'_, M>,
    addr: &str,
    keys: &[String],
) {
    let mut raw = RawSocket::connect(addr);
    let reqs: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| format!("get {k}\r\n").into_bytes())
        .collect();
    hit.bench_function("memcached raw-socket get (floor)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(raw.get(&reqs[i]))
        })
    });
}

fn bench_memcached_floor_multi<M: criterion::measurement::Measurement>(
    multi: &mut Group<'_, M>,
    addr: &str,
    keys: &[String],
) {
    let mut raw = RawSocket::connect(addr);
    let reqs: Vec<Vec<u8>> = (0..KEYS / MULTI)
        .map(|c| format!("get {}\r\n", keys[c * MULTI..(c + 1) * MULTI].join(" ")).into_bytes())
        .collect();
    multi.bench_function("memcached raw-socket get_multi (floor)", |b| {
        let mut c = 0;
        b.iter(|| {
            c = (c + 1) % reqs.len();
            let hits = raw.get(&reqs[c]);
            debug_assert_eq!(hits, MULTI);
            black_box(hits)
        })
    });
}

/// The backend under the region called directly: what the client costs without the region's
/// decoding of 100 values.
fn bench_backend_multi(g: &mut Group<'_>, s: &Subject, keys: &[String]) {
    let backend = s.region.backend().expect("a configured region");
    g.bench_function(format!("{} backend get_multi", s.name), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + MULTI) % KEYS;
            let refs: Vec<&str> = keys[i..i + MULTI].iter().map(String::as_str).collect();
            let v = backend.get_multi(&refs).expect("get_multi");
            debug_assert!(v.iter().all(Option::is_some));
            black_box(v)
        })
    });
}

fn bench_set_multi<M: criterion::measurement::Measurement>(
    g: &mut Group<'_, M>,
    s: &Subject,
    keys: &[String],
) {
    // The values are made before the clock runs: formatting 100 padded numbers was a sixth of a
    // sample, time the floor (which sends bytes made beforehand) does not spend.
    let values: Vec<String> = (0..KEYS as u64).map(value).collect();
    g.bench_function(format!("{} region set_multi", s.name), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + MULTI) % KEYS;
            s.region
                .set_multi(keys[i..i + MULTI].iter().zip(values[i..].iter().cloned()))
                .expect("set_multi")
        })
    });
}

/// 100 `set … noreply` and a `version`, in one write, of the bytes the region stored at
/// those keys; and the same in memcached's meta protocol, 100 quiet `ms … q` and an `mn`.
fn bench_memcached_floor_set_multi<M: criterion::measurement::Measurement>(
    g: &mut Group<'_, M>,
    addr: &str,
    keys: &[String],
) {
    let mut raw = RawSocket::connect(addr);
    let stored: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| {
            raw.get(format!("get {k}\r\n").as_bytes());
            raw.value[..raw.value.len() - 2].to_vec()
        })
        .collect();
    let pipelines = |command: &dyn Fn(&str, usize) -> String, end: &[u8]| -> Vec<Vec<u8>> {
        (0..KEYS / MULTI)
            .map(|c| {
                let mut req = Vec::new();
                for (k, v) in keys.iter().zip(&stored).skip(c * MULTI).take(MULTI) {
                    req.extend_from_slice(command(k, v.len()).as_bytes());
                    req.extend_from_slice(v);
                    req.extend_from_slice(b"\r\n");
                }
                req.extend_from_slice(end);
                req
            })
            .collect()
    };
    let text = pipelines(
        &|k, len| format!("set {k} 0 0 {len} noreply\r\n"),
        b"version\r\n",
    );
    let meta = pipelines(&|k, len| format!("ms {k} {len} T0 q\r\n"), b"mn\r\n");
    for (name, reqs, end) in [
        ("memcached raw-socket set_multi (floor)", &text, "VERSION"),
        (
            "memcached raw-socket meta ms q set_multi (floor)",
            &meta,
            "MN",
        ),
    ] {
        g.bench_function(name, |b| {
            let mut c = 0;
            b.iter(|| {
                c = (c + 1) % reqs.len();
                raw.pipeline(&reqs[c], end)
            })
        });
    }
}

/// The keys of the delete group: their own, so the other groups' keys stay.
fn delete_keys() -> Vec<String> {
    (0..KEYS).map(|n| format!("del:{n}")).collect()
}

fn bench_delete_multi(g: &mut Group<'_>, s: &Subject, keys: &[String]) {
    s.region
        .set_multi(keys.iter().enumerate().map(|(n, k)| (k, value(n as u64))))
        .expect("set the keys to delete");
    g.bench_function(format!("{} region delete_multi", s.name), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + MULTI) % KEYS;
            s.region
                .delete_multi(&keys[i..i + MULTI])
                .expect("delete_multi")
        })
    });
}

/// 100 `delete … noreply` and a `version`, in one write.
fn bench_memcached_floor_delete_multi(g: &mut Group<'_>, addr: &str, keys: &[String]) {
    let mut raw = RawSocket::connect(addr);
    let reqs: Vec<Vec<u8>> = keys
        .chunks(MULTI)
        .map(|chunk| {
            let mut req: Vec<u8> = chunk
                .iter()
                .flat_map(|k| format!("delete {k} noreply\r\n").into_bytes())
                .collect();
            req.extend_from_slice(b"version\r\n");
            req
        })
        .collect();
    g.bench_function("memcached raw-socket delete_multi (floor)", |b| {
        let mut c = 0;
        b.iter(|| {
            c = (c + 1) % reqs.len();
            raw.pipeline(&reqs[c], "VERSION")
        })
    });
}

// ------------------------------------------------------------------------------------------------

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();

    let keys = hit_keys();
    let dir = TempDir::new("bench-servers");
    let redis = Server::redis();
    if redis.is_none() {
        println!("SKIPPED: the Redis benches (redis-server is not installed)");
    }
    let memcached = Server::memcached();
    if memcached.is_none() {
        println!("SKIPPED: the memcached benches (memcached is not installed)");
    }
    // A Redis that speaks only TLS, with certificates made by openssl (as the TLS tests do).
    let tls = support::TlsFiles::make("bench-tls");
    let redis_tls = tls.as_ref().and_then(|t| t.redis_server("server"));
    if redis_tls.is_none() {
        println!("SKIPPED: the Redis TLS benches (redis-server or openssl is not installed)");
    }

    let mut subjects = Vec::new();
    MEMORY
        .configure(RegionConfig::new("dogpile.cache.memory").expiration_time(3600))
        .expect("memory region");
    subjects.push(Subject {
        name: "memory",
        region: &MEMORY,
        decorated: memory_fn,
    });
    FILE.configure(
        RegionConfig::new("dogpile.cache.dbm")
            .expiration_time(3600)
            .argument(
                "filename",
                dir.path().join("bench.db").to_string_lossy().into_owned(),
            ),
    )
    .expect("file store region");
    subjects.push(Subject {
        name: "file",
        region: &FILE,
        decorated: file_fn,
    });
    if let Some(server) = &redis {
        REDIS
            .configure(
                RegionConfig::new("dogpile.cache.redis")
                    .expiration_time(3600)
                    .argument("url", format!("redis://{}", server.addr()))
                    .argument("socket_timeout", 10),
            )
            .expect("redis region");
        subjects.push(Subject {
            name: "redis",
            region: &REDIS,
            decorated: redis_fn,
        });
    }
    if let (Some(server), Some(tls)) = (&redis_tls, &tls) {
        REDIS_TLS
            .configure(
                RegionConfig::new("dogpile.cache.redis")
                    .expiration_time(3600)
                    .argument("url", format!("rediss://127.0.0.1:{}", server.port))
                    .argument("connection_kwargs.ssl_ca_certs", tls.path("ca.pem"))
                    .argument("socket_timeout", 10),
            )
            .expect("redis TLS region");
        subjects.push(Subject {
            name: "redis-tls",
            region: &REDIS_TLS,
            decorated: redis_tls_fn,
        });
    }
    if let Some(server) = &memcached {
        MEMCACHED
            .configure(
                RegionConfig::new("dogpile.cache.memcached")
                    .expiration_time(3600)
                    .argument("url", server.addr())
                    .argument("socket_timeout", 5.0),
            )
            .expect("memcached region");
        subjects.push(Subject {
            name: "memcached",
            region: &MEMCACHED,
            decorated: memcached_fn,
        });
    }
    for s in &subjects {
        fill(s, &keys);
    }
    if let Some(server) = &redis {
        redis_multi_commands(&server.addr(), &keys);
    }

    {
        let mut g = c.benchmark_group("server/hit");
        for s in &subjects {
            bench_hit(&mut g, s, &keys);
        }
        if let Some(server) = &redis {
            bench_redis_raw_hit(&mut g, &server.addr(), &keys);
        }
        if let (Some(server), Some(tls)) = (&redis_tls, &tls) {
            bench_redis_tls_raw_hit(&mut g, server.port, &tls.path("ca.pem"), &keys);
        }
        if let Some(server) = &memcached {
            bench_memcached_raw_hit(&mut g, &server.addr(), &keys);
            bench_memcached_floor_hit(&mut g, &server.addr(), &keys);
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("server/get_multi 100");
        for s in &subjects {
            bench_multi(&mut g, s, &keys);
        }
        if let Some(server) = &redis {
            bench_redis_raw_multi(&mut g, &server.addr(), &keys);
        }
        if let Some(server) = &memcached {
            bench_memcached_raw_multi(&mut g, &server.addr(), &keys);
            bench_memcached_floor_multi(&mut g, &server.addr(), &keys);
        }
        for s in subjects.iter().filter(|s| s.name == "memcached") {
            bench_backend_multi(&mut g, s, &keys);
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("server/set_multi 100");
        for s in &subjects {
            bench_set_multi(&mut g, s, &keys);
        }
        if let Some(server) = &memcached {
            bench_memcached_floor_set_multi(&mut g, &server.addr(), &keys);
        }
        g.finish();
    }
    // The same memcached calls again, measured as the client's CPU per call (see `ThreadCpu`).
    if let (Some(server), Some(s)) = (&memcached, subjects.iter().find(|s| s.name == "memcached")) {
        let mut cpu = Criterion::default()
            .with_measurement(ThreadCpu)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(30)
            .configure_from_args();
        let mut g = cpu.benchmark_group("client cpu/hit");
        bench_hit(&mut g, s, &keys);
        bench_memcached_floor_hit(&mut g, &server.addr(), &keys);
        g.finish();
        let mut g = cpu.benchmark_group("client cpu/get_multi 100");
        bench_multi(&mut g, s, &keys);
        bench_memcached_floor_multi(&mut g, &server.addr(), &keys);
        g.finish();
        let mut g = cpu.benchmark_group("client cpu/set_multi 100");
        bench_set_multi(&mut g, s, &keys);
        bench_memcached_floor_set_multi(&mut g, &server.addr(), &keys);
        g.finish();
    }
    {
        let mut g = c.benchmark_group("server/delete_multi 100");
        let keys = delete_keys();
        for s in &subjects {
            bench_delete_multi(&mut g, s, &keys);
        }
        if let Some(server) = &memcached {
            bench_memcached_floor_delete_multi(&mut g, &server.addr(), &keys);
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("server/read miss");
        for s in &subjects {
            bench_read_miss(&mut g, s);
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("server/create miss");
        for s in &subjects {
            bench_create_miss(&mut g, s);
        }
        g.finish();
    }
    c.final_summary();
    // The servers stop here, when they are dropped (and the store's folder is removed).
    drop((redis, memcached, redis_tls, tls, dir));
}
