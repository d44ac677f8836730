//! `dogpile.cache.memcached` (also reached as `dogpile.cache.pylibmc`, `dogpile.cache.pymemcache`
//! and `dogpile.cache.bmemcached`): values stored as bytes on one or more memcached servers.
//!
//! Arguments:
//!
//! | name | type | default | meaning |
//! |---|---|---|---|
//! | `url` | string, list, or comma-separated string | required | servers, as `host`, `host:port` or `memcache://host:port` (port 11211 when left out) |
//! | `memcached_expire_time` | integer seconds | `0` (never) | server-side expiry of every value, at most 30 days |
//! | `distributed_lock` | bool | `false` | the dogpile lock is a memcached key, shared by every process using the servers |
//! | `lock_timeout` | seconds | `30` | expiry of that lock key, so a lock whose holder died frees itself (`0`: never, as dogpile's default) |
//! | `socket_timeout` | seconds | `1.0` | connect, read and write timeout of each server connection |
//!
//! **Several servers.** Each key lives on one server, chosen by rendezvous hashing over the
//! server addresses as written in `url`: stable across processes, builds and machines, and
//! adding or removing a server moves only that server's share of keys. `get_multi` sends one
//! pipelined request per server.
//!
//! **Keys.** memcached refuses keys longer than 250 bytes or holding spaces or control
//! characters. The backend's recommended mangler ([`memcached_key_mangler`]) keeps valid keys as
//! they are (but those holding `#`, so no key can pose as the mangled form of another) and turns
//! any other into `readable-prefix#sha1`; the backend applies the same rule to every key it
//! receives, so a region with its own mangler cannot cause a protocol error either (a key the
//! region mangled already is hashed once more there: still one stored key per key).
//!
//! **Dead servers.** Operations on a dead server fail quickly with an error naming the server
//! (a refused connection is noticed by a connect probe before the pool waits). A connection that
//! breaks (the server restarted) drops that server's pool and the operation is tried once more
//! on a new connection, so the backend recovers by itself when the server comes back.
//!
//! **The lock.** `distributed_lock` makes `get_mutex` an `add` of `_lock<key>` holding a token of
//! this holder, with `lock_timeout` as expiry. Release reads the key and deletes it only if it
//! still holds our token. memcached has no compare-and-delete, so between that read and the
//! delete the lock could expire and be taken by another holder whose lock we would then delete;
//! this needs the creator to outlive `lock_timeout` to the second, and costs at worst one extra
//! creation. Waiters poll the lock key with a 1-5 ms backoff.

use std::borrow::Cow;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memcache::{CommandError, ConnectionManager, MemcacheError, Url};
use parking_lot::{Mutex, RwLock};

use dogpile_core::codec::{decode_envelope_or_miss, encode_envelope_for};
use dogpile_core::{
    sha1_mangle_key, Arguments, Backend, CacheMutex, CachedValue, Error, PayloadKind, Result,
};

const NAME: &str = "dogpile.cache.memcached";
/// memcached's longest key.
pub const MAX_KEY_LEN: usize = 250;
const DEFAULT_PORT: u16 = 11211;
const DEFAULT_LOCK_TIMEOUT: u32 = 30;
const DEFAULT_SOCKET_TIMEOUT: Duration = Duration::from_secs(1);
/// memcached reads an expiry over 30 days as an absolute Unix time.
const MAX_RELATIVE_EXPIRY: u64 = 60 * 60 * 24 * 30;
const POOL_SIZE: u32 = 16;

fn valid_key_byte(b: u8) -> bool {
    b > 0x20 && b < 0x7f
}

/// Whether memcached accepts `key` as it is: 1 to 250 bytes of printable ASCII, no spaces.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(valid_key_byte)
}

/// The marker between the readable prefix and the digest of a mangled key.
const MARKER: u8 = b'#';

fn safe_key(key: &str) -> Cow<'_, str> {
    // A key holding the marker is hashed too, valid or not: kept keys never hold it and mangled
    // ones always do, so no key can be written to equal (and so read or overwrite) the mangled
    // form of another.
    if is_valid_key(key) && !key.as_bytes().contains(&MARKER) {
        return Cow::Borrowed(key);
    }
    let digest = sha1_mangle_key(key);
    // The prefix is made of valid bytes only, all ASCII, so any cut is a char boundary.
    let room = MAX_KEY_LEN - 1 - digest.len();
    let prefix = key
        .bytes()
        .take_while(|b| valid_key_byte(*b) && *b != MARKER)
        .count()
        .min(room);
    Cow::Owned(format!("{}#{digest}", &key[..prefix]))
}

/// The key mangler this backend recommends: a key memcached accepts is kept as it is, unless it
/// holds `#`; any other (too long, spaces, control characters, non-ASCII, empty, a `#`) becomes
/// its longest valid leading part without `#` (cut to fit) followed by `#` and the SHA-1 of the
/// whole key, in at most 250 bytes. So a kept key never equals the mangled form of another.
///
/// ```
/// use dogpile_backends::memcached::memcached_key_mangler;
/// assert_eq!(memcached_key_mangler("user:42"), "user:42");
/// let k = memcached_key_mangler("user:42 with spaces");
/// assert!(k.starts_with("user:42#") && k.len() == 8 + 40);
/// assert!(memcached_key_mangler(&"x".repeat(10_000)).len() <= 250);
/// // A key that holds the marker is hashed, so it cannot pose as the mangled form of another.
/// assert_ne!(memcached_key_mangler(&k), k);
/// ```
pub fn memcached_key_mangler(key: &str) -> String {
    safe_key(key).into_owned()
}

/// 64-bit FNV-1a: a stable hash (the standard library's may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64's finalizer: spreads the bits of a combined hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A pool of connections to one server, and the client over it.
struct Pool {
    pool: r2d2::Pool<ConnectionManager>,
    client: memcache::Client,
}

struct Server {
    /// `host:port`, as errors name the server.
    addr: String,
    /// What errors and logs call this server: `dogpile.cache.memcached host:port`.
    label: String,
    url: Url,
    seed: u64,
    timeout: Duration,
    pool: RwLock<Arc<Pool>>,
}

/// Whether an error means the connection is no longer usable (as opposed to a command answer).
fn breaks_connection(e: &MemcacheError) -> bool {
    !matches!(
        e,
        MemcacheError::CommandError(_) | MemcacheError::PoolError(_) | MemcacheError::BadURL(_)
    )
}

impl Server {
    fn new(addr: String, url: Url, timeout: Duration) -> Result<Server> {
        let label = format!("{NAME} {addr}");
        let pool = Self::new_pool(&url, timeout)
            .map_err(|e| Error::backend(label.clone(), "cannot make a client", e))?;
        Ok(Server {
            seed: fnv1a(addr.as_bytes()),
            label,
            addr,
            url,
            timeout,
            pool: RwLock::new(Arc::new(pool)),
        })
    }

    fn new_pool(url: &Url, timeout: Duration) -> std::result::Result<Pool, MemcacheError> {
        // No connection is made here: a server down at configuration time is an error of the
        // first operation, not of `configure`. Connections are not tested on checkout (that
        // would double the round trips); a broken one drops the whole pool instead.
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(timeout)
            .build_unchecked(ConnectionManager::new(url.clone()));
        let client = memcache::Client::with_pool(pool.clone())?;
        Ok(Pool { pool, client })
    }

    /// With no connection in the pool, r2d2 would retry a refused connection until its timeout;
    /// one direct connect tells a dead server at once.
    fn probe(&self, pool: &Pool) -> std::result::Result<(), std::io::Error> {
        if pool.pool.state().connections > 0 {
            return Ok(());
        }
        let addrs: Vec<SocketAddr> = self.url.socket_addrs(|| Some(DEFAULT_PORT))?;
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
        }))
    }

    fn error(&self, what: &str, e: impl Into<dogpile_core::BoxError>) -> Error {
        let e = e.into();
        Error::backend(self.label.clone(), format!("{what} failed: {e}"), e)
    }

    /// Runs `op` on this server's client; a broken connection drops the pool and `op` runs once
    /// more on a fresh connection.
    fn run<T>(
        &self,
        what: &str,
        op: impl Fn(&memcache::Client) -> std::result::Result<T, MemcacheError>,
    ) -> Result<T> {
        let mut retried = false;
        loop {
            let pool = self.pool.read().clone();
            if let Err(e) = self.probe(&pool) {
                return Err(self.error(what, e));
            }
            match op(&pool.client) {
                Ok(v) => return Ok(v),
                Err(e) if breaks_connection(&e) => {
                    {
                        let mut slot = self.pool.write();
                        if Arc::ptr_eq(&slot, &pool) {
                            let fresh = Self::new_pool(&self.url, self.timeout)
                                .map_err(|e| self.error(what, e))?;
                            *slot = Arc::new(fresh);
                        }
                    }
                    if retried {
                        return Err(self.error(what, e));
                    }
                    tracing::debug!(server = %self.addr, error = %e, "memcached connection broke; reconnecting");
                    retried = true;
                }
                Err(e) => return Err(self.error(what, e)),
            }
        }
    }
}

struct Inner {
    name: String,
    servers: Vec<Server>,
    expire_time: u32,
    lock_timeout: u32,
}

impl Inner {
    fn server_index(&self, key: &str) -> usize {
        if self.servers.len() == 1 {
            return 0;
        }
        let h = fnv1a(key.as_bytes());
        let mut best = 0;
        let mut best_score = 0;
        for (i, s) in self.servers.iter().enumerate() {
            let score = mix(h ^ s.seed);
            if i == 0 || score > best_score {
                best = i;
                best_score = score;
            }
        }
        best
    }

    fn server(&self, key: &str) -> &Server {
        &self.servers[self.server_index(key)]
    }

    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.server(key).run("get", |c| c.get::<Vec<u8>>(key))
    }

    fn delete_raw(&self, key: &str) -> Result<()> {
        self.server(key)
            .run("delete", |c| c.delete(key))
            .map(|_| ())
    }
}

/// The memcached backend.
pub struct MemcachedBackend {
    inner: Arc<Inner>,
    distributed_lock: bool,
}

impl std::fmt::Debug for MemcachedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedBackend")
            .field("name", &self.inner.name)
            .field("distributed_lock", &self.distributed_lock)
            .finish()
    }
}

/// Reads one `url` entry: `host`, `host:port`, `[v6]:port` or `memcache://host:port`.
fn parse_server(args: &Arguments, entry: &str, timeout: Duration) -> Result<(String, Url)> {
    let entry = entry.trim();
    let rest = match entry.split_once("://") {
        Some(("memcache", rest)) => rest,
        Some((scheme, _)) => {
            return Err(args.error(
                "url",
                format!("{entry:?}: unsupported scheme {scheme:?}; expected host:port or memcache://host:port"),
            ))
        }
        None => entry,
    };
    let rest = rest.trim_end_matches('/');
    let bad = |why: String| {
        args.error(
            "url",
            format!("{entry:?} is not a server address ({why}); expected host:port or memcache://host:port"),
        )
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("expected only a host and a port".into()));
    }
    let probe = Url::parse(&format!("memcache://{rest}")).map_err(|e| bad(e.to_string()))?;
    let host = probe
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host".into()))?
        .to_owned();
    let port = probe.port().unwrap_or(DEFAULT_PORT);
    let addr = format!("{host}:{port}");
    let url = Url::parse(&format!(
        "memcache://{addr}?timeout={}",
        timeout.as_secs_f64()
    ))
    .map_err(|e| bad(e.to_string()))?;
    Ok((addr, url))
}

impl MemcachedBackend {
    /// Makes one from configuration arguments (see the module documentation).
    pub fn from_arguments(args: &Arguments) -> Result<Self> {
        args.expect_only(
            NAME,
            &[
                "url",
                "memcached_expire_time",
                "distributed_lock",
                "lock_timeout",
                "socket_timeout",
            ],
        )?;
        let urls = args
            .string_list("url")?
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                args.error(
                    "url",
                    "missing: give one server address, a list, or a comma-separated string",
                )
            })?;
        let socket_timeout = args
            .seconds("socket_timeout")?
            .unwrap_or(DEFAULT_SOCKET_TIMEOUT);
        if socket_timeout.is_zero() {
            return Err(args.error("socket_timeout", "expected more than 0 seconds"));
        }
        let expire_time = match args.u64("memcached_expire_time")? {
            None => 0,
            Some(s) if s <= MAX_RELATIVE_EXPIRY => s as u32,
            Some(s) => {
                return Err(args.error(
                    "memcached_expire_time",
                    format!("{s} seconds is more than 30 days, which memcached would read as an absolute time"),
                ))
            }
        };
        let distributed_lock = args.bool("distributed_lock")?.unwrap_or(false);
        let lock_timeout = match args.seconds("lock_timeout")? {
            None => DEFAULT_LOCK_TIMEOUT,
            Some(d) if d.is_zero() => 0,
            // memcached counts whole seconds: round up, so a short timeout is not "never".
            Some(d) => {
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                if secs > MAX_RELATIVE_EXPIRY {
                    return Err(args.error(
                        "lock_timeout",
                        format!("{secs} seconds is more than 30 days, which memcached would read as an absolute time"),
                    ));
                }
                secs as u32
            }
        };
        let mut servers = Vec::with_capacity(urls.len());
        for u in &urls {
            let (addr, url) = parse_server(args, u, socket_timeout)?;
            if servers.iter().any(|s: &Server| s.addr == addr) {
                return Err(args.error("url", format!("{addr} is listed twice")));
            }
            servers.push(Server::new(addr, url, socket_timeout)?);
        }
        let name = format!(
            "{NAME} {}",
            servers
                .iter()
                .map(|s| s.addr.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(MemcachedBackend {
            inner: Arc::new(Inner {
                name,
                servers,
                expire_time,
                lock_timeout,
            }),
            distributed_lock,
        })
    }

    /// The servers' addresses (`host:port`), in configuration order.
    pub fn servers(&self) -> Vec<String> {
        self.inner.servers.iter().map(|s| s.addr.clone()).collect()
    }

    /// The address of the server that holds `key` (after the backend's key rule).
    pub fn server_for(&self, key: &str) -> &str {
        &self.inner.server(&safe_key(key)).addr
    }

    fn encode(&self, key: &str, value: &CachedValue) -> Result<Vec<u8>> {
        encode_envelope_for(value, &self.inner.name, key)
    }
}

/// Makes a `dogpile.cache.memcached` backend from its arguments.
pub fn make(args: &Arguments) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(MemcachedBackend::from_arguments(args)?))
}

impl Backend for MemcachedBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn payload_kind(&self) -> PayloadKind {
        PayloadKind::Bytes
    }

    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        let k = safe_key(key);
        Ok(self
            .inner
            .get_raw(&k)?
            .and_then(|b| decode_envelope_or_miss(&b, &self.inner.name, key)))
    }

    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        let bytes = self.encode(key, &value)?;
        let k = safe_key(key);
        let exp = self.inner.expire_time;
        self.inner
            .server(&k)
            .run("set", |c| c.set(&k, bytes.as_slice(), exp))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete_raw(&safe_key(key))
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue>>> {
        let safe: Vec<Cow<'_, str>> = keys.iter().map(|k| safe_key(k)).collect();
        let mut by_server: Vec<Vec<&str>> = vec![Vec::new(); self.inner.servers.len()];
        for k in &safe {
            let i = self.inner.server_index(k);
            if !by_server[i].contains(&k.as_ref()) {
                by_server[i].push(k);
            }
        }
        let mut found = std::collections::HashMap::with_capacity(keys.len());
        for (server, ks) in self.inner.servers.iter().zip(&by_server) {
            if ks.is_empty() {
                continue;
            }
            found.extend(server.run("get_multi", |c| c.gets::<Vec<u8>>(ks))?);
        }
        Ok(keys
            .iter()
            .zip(&safe)
            .map(|(key, k)| {
                found
                    .get(k.as_ref())
                    .and_then(|b| decode_envelope_or_miss(b, &self.inner.name, key))
            })
            .collect())
    }

    // set_multi and delete_multi keep the trait's loops: the memcache crate has no batch write.

    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        if !self.distributed_lock {
            return None;
        }
        Some(Box::new(MemcachedLock {
            inner: self.inner.clone(),
            lock_key: safe_key(&format!("_lock{key}")).into_owned(),
            token: Mutex::new(None),
        }))
    }

    fn key_mangler(&self) -> Option<fn(&str) -> String> {
        Some(memcached_key_mangler)
    }
}

static TOKEN_COUNTER: AtomicU64 = AtomicU64::new(0);

fn new_token() -> Vec<u8> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}:{nanos}:{}",
        std::process::id(),
        TOKEN_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
    .into_bytes()
}

/// The distributed dogpile lock: a memcached key added with an expiry.
struct MemcachedLock {
    inner: Arc<Inner>,
    lock_key: String,
    token: Mutex<Option<Vec<u8>>>,
}

impl CacheMutex for MemcachedLock {
    fn try_acquire(&self) -> Result<bool> {
        let token = new_token();
        let key = &self.lock_key;
        let timeout = self.inner.lock_timeout;
        let taken = self.inner.server(key).run("lock add", |c| {
            match c.add(key, token.as_slice(), timeout) {
                Ok(()) => Ok(true),
                Err(MemcacheError::CommandError(
                    CommandError::KeyExists | CommandError::KeyNotFound,
                )) => Ok(false),
                Err(e) => Err(e),
            }
        })?;
        if taken {
            *self.token.lock() = Some(token);
        }
        Ok(taken)
    }

    fn wait(&self, deadline: Instant) -> Result<()> {
        // Returns once the lock key is gone, or after a short while (the caller looks at the
        // value and calls again): 0.5 ms, then 1, 2, 2... ms between looks, so a waiter returns
        // within about 2 ms of the release (one look is a round trip, ~0.1-0.2 ms here).
        let mut pause = Duration::from_micros(500);
        for _ in 0..100 {
            let now = Instant::now();
            if !self.locked()? || now >= deadline {
                return Ok(());
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(2));
        }
        Ok(())
    }

    fn release(&self) -> Result<()> {
        let Some(token) = self.token.lock().take() else {
            return Ok(());
        };
        // Delete only our own lock: after `lock_timeout` it may belong to someone else.
        if self.inner.get_raw(&self.lock_key)?.as_deref() == Some(token.as_slice()) {
            self.inner.delete_raw(&self.lock_key)?;
        }
        Ok(())
    }

    fn locked(&self) -> Result<bool> {
        Ok(self.inner.get_raw(&self.lock_key)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_keys_are_kept_and_others_hashed_within_250_bytes() {
        assert_eq!(safe_key("plain:key-1"), "plain:key-1");
        for bad in [
            "with space",
            "new\nline",
            "tab\there",
            "",
            "caf\u{e9}",
            "\u{65e5}\u{672c}",
            "del\u{7f}",
        ] {
            let k = safe_key(bad);
            assert!(is_valid_key(&k), "{bad:?} -> {k:?}");
        }
        let long = "k".repeat(10_000);
        let k = safe_key(&long);
        assert!(is_valid_key(&k));
        assert!(k.starts_with(&"k".repeat(209)));
        assert_eq!(
            safe_key("with space"),
            format!("with#{}", sha1_mangle_key("with space"))
        );
        assert_ne!(safe_key("a b"), safe_key("a c"));
        let exactly = "x".repeat(250);
        assert_eq!(safe_key(&exactly), exactly);
        assert_ne!(safe_key(&"x".repeat(251)), "x".repeat(251));
    }

    #[test]
    fn placement_is_stable_and_spreads() {
        let args = Arguments::new().with("url", "127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3");
        let b = MemcachedBackend::from_arguments(&args).unwrap();
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[b.inner.server_index(&format!("key{i}"))] += 1;
        }
        assert!(counts.iter().all(|c| *c > 700), "{counts:?}");
        // A fixed answer: placement must not change between builds.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let pinned: Vec<&str> = ["user:1", "user:2", "user:3", "user:4", "user:5"]
            .iter()
            .map(|k| b.server_for(k))
            .collect();
        // Pinned: every process and every build must put a key on the same server.
        assert_eq!(
            pinned,
            [
                "127.0.0.1:2",
                "127.0.0.1:3",
                "127.0.0.1:2",
                "127.0.0.1:3",
                "127.0.0.1:2"
            ]
        );
        // Removing a server moves only that server's keys.
        let two = MemcachedBackend::from_arguments(
            &Arguments::new().with("url", vec!["127.0.0.1:1", "127.0.0.1:2"]),
        )
        .unwrap();
        for i in 0..1000 {
            let k = format!("key{i}");
            let a = b.server_for(&k).to_owned();
            if a != "127.0.0.1:3" {
                assert_eq!(two.server_for(&k), a);
            }
        }
    }

    #[test]
    fn arguments_are_checked() {
        let err = |a: Arguments| {
            MemcachedBackend::from_arguments(&a)
                .unwrap_err()
                .to_string()
        };
        assert!(err(Arguments::new()).starts_with("arguments.url: missing"));
        assert!(err(Arguments::new().with("url", "x:1").with("urls", "y"))
            .starts_with("arguments.urls: unknown argument"));
        assert!(err(Arguments::new().with("url", "redis://x:1")).contains("unsupported scheme"));
        assert!(err(Arguments::new().with("url", "x:notaport")).starts_with("arguments.url:"));
        assert!(err(Arguments::new()
            .with("url", "x:1")
            .with("distributed_lock", "yes"))
        .starts_with("arguments.distributed_lock:"));
        assert!(err(Arguments::new()
            .with("url", "x:1")
            .with("memcached_expire_time", 99_999_999))
        .contains("30 days"));
        let ok = MemcachedBackend::from_arguments(
            &Arguments::new().with("url", "memcache://127.0.0.1:5, 127.0.0.1, [::1]:7"),
        )
        .unwrap();
        assert_eq!(ok.servers(), ["127.0.0.1:5", "127.0.0.1:11211", "[::1]:7"]);
    }
}
