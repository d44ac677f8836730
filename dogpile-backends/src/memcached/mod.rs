//! `dogpile.cache.memcached` (also reached as `dogpile.cache.pylibmc`, `dogpile.cache.pymemcache`
//! and `dogpile.cache.bmemcached`): values stored as bytes on one or more memcached servers.
//!
//! Arguments:
//!
//! | name | type | default | meaning |
//! |---|---|---|---|
//! | `url` | string, list, or comma-separated string | required | servers, as `host`, `host:port` or `memcache://host:port` (port 11211 when left out) |
//! | `memcached_expire_time` | integer seconds | `0` (never) | server-side expiry of every value, at most 30 days |
//! | `distributed_lock` | bool | `false` | the dogpile lock is a memcached key, shared by every process using the servers (needs memcached 1.6 or later) |
//! | `lock_timeout` | seconds | `30` | expiry of that lock key, so a lock whose holder died frees itself (`0`: never, as dogpile's default); memcached counts whole seconds of its own clock, so a lock lives between `lock_timeout - 1` and `lock_timeout` seconds unless extended: use 2 or more |
//! | `socket_timeout` | seconds | `1.0` | bound on each wait for a server: connecting, each write, each read |
//! | `key_placement` | `"dogpile"` or `"pymemcache"` | `"dogpile"` | how keys are spread over several servers (see below) |
//!
//! **The client.** The backend speaks memcached's text protocol itself over buffered sockets:
//! one write and usually one read per request. `get_multi` sends one `get k1 k2 …` per server,
//! written to every server before any reply is read, so the servers work at the same time, and
//! hands each value to the region where it lies in the receive buffer (`visit_multi`: no copy
//! per value); `set_multi` and `delete_multi` send every command of a server in one write with `noreply`,
//! followed by a `version` whose answer says that all of them were done (memcached answers in
//! order, and still sends an error line for a failed command). Async callers use non-blocking
//! sockets and timers (`async-io`, which runs under any executor): no executor thread waits on
//! a socket or sleeps.
//!
//! **Several servers.** Each key lives on one server, chosen by rendezvous hashing: by default
//! over the server addresses as written in `url` (stable across processes, builds and
//! machines), or with `key_placement = "pymemcache"` exactly as pymemcache's `HashClient` does,
//! so Python and Rust services listing the same servers share their keys. Adding or removing a
//! server moves only that server's share of keys.
//!
//! **Keys.** memcached refuses keys longer than 250 bytes or holding spaces or control
//! characters. The backend's recommended mangler ([`memcached_key_mangler`]) keeps valid keys as
//! they are (but those holding `#`, so no key can pose as the mangled form of another) and turns
//! any other into `readable-prefix#sha1`; the backend applies the same rule to every key it
//! receives, so a region with its own mangler cannot cause a protocol error either (a key the
//! region mangled already is hashed once more there: still one stored key per key).
//!
//! **Failures.** An operation on a dead server fails at once (a refused connection) or after
//! `socket_timeout` (a silent one), with an error naming the server. A reply that cannot be
//! parsed (garbage, a truncated value, a connection closed mid-reply) is an error of that call,
//! and its connection is dropped, never reused. A pooled connection found closed (the server
//! restarted) is replaced and the request sent once more, so the backend recovers by itself.
//! Values too large for the server are an error of `set`; `set_multi`'s `noreply` stores skip
//! them silently, as memcached does.
//!
//! **The lock.** `distributed_lock` makes `get_mutex` an add of `_lock<key>` holding a token of
//! the handle, with `lock_timeout` as expiry, in memcached 1.6's meta protocol so that every
//! later step is "only if it is still ours", atomically, by the CAS value the add returned:
//! while the handle holds the lock, a thread of this process extends its expiry every third of
//! `lock_timeout` (compare-and-set), so a creation longer than `lock_timeout` keeps its lock;
//! release deletes it by CAS (compare-and-delete), so a holder whose lock expired and was taken
//! by another never deletes the other's. An add whose reply was lost (a timeout, a broken
//! connection, a cancelled future) may still have stored our token: the handle reads the lock
//! back before trying again, and once it is dropped that thread deletes the lock if it holds
//! our token. Waiters poll the lock key with a 0.5-2 ms backoff.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use dogpile_core::backend::CachedValueRef;
use dogpile_core::codec::{
    decode_envelope_ref_or_miss, encode_envelope_for, encode_envelope_into_for,
};
use dogpile_core::key::with_mangled;
use dogpile_core::{
    sha1_mangle_key, Arguments, Backend, BoxFuture, CacheMutex, CachedValue, Payload, PayloadKind,
    Result,
};

mod conn;
mod lock;
mod proto;
mod ring;

use conn::{block_on, Failure, Flow, Io, Server};
use proto::Item;
pub use ring::Placement;

const NAME: &str = "dogpile.cache.memcached";
/// memcached's longest key.
pub const MAX_KEY_LEN: usize = 250;
const DEFAULT_PORT: u16 = 11211;
const DEFAULT_LOCK_TIMEOUT: u32 = 30;
const DEFAULT_SOCKET_TIMEOUT: Duration = Duration::from_secs(1);
/// memcached reads an expiry over 30 days as an absolute Unix time.
const MAX_RELATIVE_EXPIRY: u64 = 60 * 60 * 24 * 30;

const fn valid_key_byte(b: u8) -> bool {
    b > 0x20 && b < 0x7f
}

/// Whether memcached accepts `key` as it is: 1 to 250 bytes of printable ASCII, no spaces.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(valid_key_byte)
}

/// The marker between the readable prefix and the digest of a mangled key.
const MARKER: u8 = b'#';

/// Whether every byte of `bytes` may stay in a kept key, eight bytes at a time.
///
/// This runs for every key of every call (twice for a key the region mangled with this same
/// rule), so it tests a word per step instead of a byte: a byte is kept when it is below 0x80,
/// not below 0x21, not 0x7F and not the marker. Each test is the classic "has a byte less than
/// n" bit trick (`(w - n·0x01…) & !w & 0x80…`, exact as a yes or no for n ≤ 0x80), on the word
/// itself or on the word xor the byte sought (a zero byte where it was).
/// `the_word_test_agrees_with_the_byte_rule` holds it to the rule tested a byte at a time.
#[inline]
fn all_kept(bytes: &[u8]) -> bool {
    const fn splat(b: u8) -> u64 {
        u64::from_ne_bytes([b; 8])
    }
    const HIGH: u64 = splat(0x80);
    #[inline]
    fn has_less(w: u64, n: u8) -> bool {
        w.wrapping_sub(splat(n)) & !w & HIGH != 0
    }
    #[inline]
    fn word_kept(w: u64) -> bool {
        w & HIGH == 0
            && !has_less(w, 0x21)
            && !has_less(w ^ splat(0x7f), 1)
            && !has_less(w ^ splat(MARKER), 1)
    }
    let n = bytes.len();
    if n >= 8 {
        let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().expect("eight bytes"));
        // The last eight bytes as one more word, overlapping the last whole one: a byte tested
        // twice is still one answer.
        return bytes.chunks_exact(8).all(|w| word_kept(word(w)))
            && word_kept(word(&bytes[n - 8..]));
    }
    // Fewer than eight: two overlapping halves in one word (no copy of a length known only at
    // run time, which would be a call to `memcpy`), the rest of it a kept byte.
    let w = if n >= 4 {
        let lo = u32::from_ne_bytes(bytes[..4].try_into().expect("four bytes"));
        let hi = u32::from_ne_bytes(bytes[n - 4..].try_into().expect("four bytes"));
        u64::from(lo) | u64::from(hi) << 32
    } else if n >= 2 {
        let lo = u16::from_ne_bytes(bytes[..2].try_into().expect("two bytes"));
        let hi = u16::from_ne_bytes(bytes[n - 2..].try_into().expect("two bytes"));
        splat(b'a') & !0xffff_ffff | u64::from(lo) | u64::from(hi) << 16
    } else {
        splat(b'a') & !0xff | bytes.first().map_or(u64::from(b'a'), |b| u64::from(*b))
    };
    word_kept(w)
}

fn safe_key(key: &str) -> Cow<'_, str> {
    // A key holding the marker is hashed too, valid or not: kept keys never hold it and mangled
    // ones always do, so no key can be written to equal (and so read or overwrite) the mangled
    // form of another.
    let kept = !key.is_empty() && key.len() <= MAX_KEY_LEN && all_kept(key.as_bytes());
    if kept {
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

/// The servers, how keys are placed on them, and the settings every operation needs.
pub(crate) struct Inner {
    name: String,
    servers: Vec<Server>,
    ring: ring::Ring,
    expire_time: u32,
    lock_timeout: u32,
    socket_timeout: Duration,
}

/// The keys of one read: after the key rule, as sent, and as the caller gave them (for logs).
#[derive(Clone, Copy)]
struct Keys<'k> {
    safe: &'k [&'k str],
    caller: &'k [&'k str],
}

/// Calls `f` with `keys` after the key rule, beside the caller's.
fn with_safe_keys<R>(keys: &[&str], f: impl FnOnce(Keys<'_>) -> R) -> R {
    with_mangled(keys, |k| safe_key(k), |safe| f(Keys { safe, caller: keys }))
}

/// Hands out the values of a `get` reply: memcached answers the hits in the order asked, so
/// each `VALUE` is matched to the next key of that name (a value for a key not asked for is a
/// protocol error), and its envelope is decoded where it lies in the receive buffer and visited
/// there, with no copy.
struct Values<'k, 'v, V: ?Sized> {
    name: &'k str,
    /// Every key of the call.
    keys: Keys<'k>,
    /// The positions in `keys` of the keys sent to this server, in the order sent; `None`: all.
    mine: Option<&'k [usize]>,
    next: usize,
    visit: &'v mut V,
}

impl<'k, 'v, V: FnMut(usize, CachedValueRef<'_>) + ?Sized> Values<'k, 'v, V> {
    fn new(name: &'k str, keys: Keys<'k>, mine: Option<&'k [usize]>, visit: &'v mut V) -> Self {
        Values {
            name,
            keys,
            mine,
            next: 0,
            visit,
        }
    }

    fn sent(&self) -> usize {
        self.mine.map_or(self.keys.safe.len(), <[usize]>::len)
    }

    /// The position in `keys` of the `n`th key sent.
    fn position(&self, n: usize) -> usize {
        self.mine.map_or(n, |mine| mine[n])
    }

    fn item(&mut self, item: Item<'_>) -> std::result::Result<Flow, Failure> {
        match item {
            Item::Value { key, data } => {
                let n = (self.next..self.sent())
                    .find(|n| self.keys.safe[self.position(*n)].as_bytes() == key)
                    .ok_or_else(|| {
                        Failure::Protocol(proto::ProtocolError(format!(
                            "a value for {}, which was not asked for (or not in this order)",
                            proto::quote(key)
                        )))
                    })?;
                self.next = n + 1;
                let at = self.position(n);
                if let Some(v) = decode_envelope_ref_or_miss(data, self.name, self.keys.caller[at])
                {
                    (self.visit)(at, v);
                }
                Ok(Flow::More)
            }
            Item::End => Ok(Flow::Done),
            other => Err(Failure::unexpected(&other)),
        }
    }
}

/// Waits for the one `version` that ends a pipeline of `noreply` commands, counting the error
/// lines of failed commands before it.
#[derive(Default)]
struct Pipeline {
    failed: usize,
    first: Option<String>,
}

impl Pipeline {
    fn item(&mut self, item: Item<'_>) -> std::result::Result<Flow, Failure> {
        match item {
            Item::Version => Ok(Flow::Done),
            Item::Error(line) => {
                self.failed += 1;
                self.first.get_or_insert_with(|| proto::quote(line));
                Ok(Flow::More)
            }
            other => Err(Failure::unexpected(&other)),
        }
    }

    fn result(self, server: &Server, what: &str) -> Result<()> {
        match self.first {
            None => Ok(()),
            Some(first) => Err(server.error(
                what,
                Failure::Server(format!(
                    "{} of the commands failed; the server answered {first}",
                    self.failed
                )),
            )),
        }
    }
}

impl Inner {
    fn server(&self, key: &str) -> &Server {
        &self.servers[self.ring.index(key)]
    }

    /// Reads `keys`, calling `visit` with the position
    /// and the value of each one found, borrowed from the receive buffer.
    async fn get_many<V: FnMut(usize, CachedValueRef<'_>) + ?Sized>(
        &self,
        io: Io,
        keys: Keys<'_>,
        visit: &mut V,
    ) -> Result<()> {
        let what = if keys.safe.len() == 1 {
            "get"
        } else {
            "get_multi"
        };
        // `get`, then each key and its space, then `\r\n`: allocated once.
        let longest = keys.safe.iter().map(|k| k.len()).max().unwrap_or(0);
        let request = |sent: &mut dyn ExactSizeIterator<Item = &str>| {
            let mut req = Vec::with_capacity(sent.len() * (longest + 1) + 6);
            proto::get(&mut req, sent);
            req
        };
        if self.servers.len() == 1 || keys.safe.len() == 1 {
            let server = self.server(keys.safe[0]);
            let req = request(&mut keys.safe.iter().copied());
            let mut values = Values::new(&self.name, keys, None, visit);
            return server
                .call(io, what, &req, true, &mut |item| values.item(item))
                .await
                .map(drop);
        }
        // Per server: the positions of its keys, and its request.
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.servers.len()];
        for (i, k) in keys.safe.iter().enumerate() {
            groups[self.ring.index(k)].push(i);
        }
        let reqs: Vec<(usize, Vec<u8>)> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(s, g)| (s, request(&mut g.iter().map(|i| keys.safe[*i]))))
            .collect();
        // Every request is written before any reply is read: the servers answer in parallel.
        let mut sent = Vec::with_capacity(reqs.len());
        for (s, req) in &reqs {
            sent.push((*s, self.servers[*s].send(io, what, req, true).await?));
        }
        for (s, pending) in sent {
            let mut values = Values::new(&self.name, keys, Some(&groups[s]), &mut *visit);
            pending.receive(&mut |item| values.item(item)).await?;
        }
        Ok(())
    }

    /// [`get_many`](Self::get_many) collecting owned values, in the order of `keys`.
    async fn get_owned(&self, io: Io, keys: Keys<'_>) -> Result<Vec<Option<CachedValue>>> {
        let mut found = vec![None; keys.safe.len()];
        self.get_many(io, keys, &mut |i, v: CachedValueRef<'_>| {
            found[i] = Some(v.into_owned())
        })
        .await?;
        Ok(found)
    }

    async fn set_one(&self, io: Io, key: &str, bytes: &[u8]) -> Result<()> {
        let mut req = Vec::with_capacity(key.len() + bytes.len() + 32);
        proto::set(&mut req, key, self.expire_time, bytes, false);
        self.server(key)
            .call(io, "set", &req, true, &mut |item| match item {
                Item::Status(b"STORED") => Ok(Flow::Done),
                other => Err(Failure::unexpected(&other)),
            })
            .await
            .map(drop)
    }

    async fn delete_one(&self, io: Io, key: &str) -> Result<()> {
        let mut req = Vec::with_capacity(key.len() + 9);
        proto::delete(&mut req, key, false);
        self.server(key)
            .call(io, "delete", &req, true, &mut |item| match item {
                Item::Status(b"DELETED" | b"NOT_FOUND") => Ok(Flow::Done),
                other => Err(Failure::unexpected(&other)),
            })
            .await
            .map(drop)
    }

    /// Runs one pipeline per server (`write` appends one key's `noreply` command, or fails the
    /// call before anything is sent): all written first, then each server's `version` awaited.
    /// `size` is about how many bytes the commands take, so each request is allocated once.
    async fn pipelined<'k>(
        &self,
        io: Io,
        what: &str,
        size: usize,
        keys: impl Iterator<Item = &'k str>,
        mut write: impl FnMut(&mut Vec<u8>, usize, &str) -> Result<()>,
    ) -> Result<()> {
        let each = size / self.servers.len() + 16;
        let mut reqs: Vec<Vec<u8>> = (0..self.servers.len())
            .map(|_| Vec::with_capacity(each))
            .collect();
        for (i, k) in keys.enumerate() {
            write(&mut reqs[self.ring.index(k)], i, k)?;
        }
        for req in reqs.iter_mut().filter(|r| !r.is_empty()) {
            proto::version(req);
        }
        let mut sent = Vec::with_capacity(reqs.len());
        for (s, req) in reqs.iter().enumerate() {
            if !req.is_empty() {
                sent.push((s, self.servers[s].send(io, what, req, true).await?));
            }
        }
        for (s, pending) in sent {
            let mut pipeline = Pipeline::default();
            pending.receive(&mut |item| pipeline.item(item)).await?;
            pipeline.result(&self.servers[s], what)?;
        }
        Ok(())
    }
}

/// The memcached backend.
pub struct MemcachedBackend {
    inner: Arc<Inner>,
    keeper: Option<Arc<lock::Keeper>>,
}

impl std::fmt::Debug for MemcachedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedBackend")
            .field("name", &self.inner.name)
            .field("distributed_lock", &self.keeper.is_some())
            .finish()
    }
}

/// One `url` entry: the address as errors name it, the host (without brackets) and the port.
struct ServerAddr {
    addr: String,
    host: String,
    port: u16,
}

/// Reads one `url` entry: `host`, `host:port`, `[v6]:port` or `memcache://host:port`.
fn parse_server(args: &Arguments, entry: &str) -> Result<ServerAddr> {
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
    let bad = |why: &str| {
        args.error(
            "url",
            format!("{entry:?} is not a server address ({why}); expected host:port or memcache://host:port"),
        )
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("expected only a host and a port"));
    }
    let (host, port, v6) = if let Some(inside) = rest.strip_prefix('[') {
        let (host, after) = inside
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address without its closing bracket"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address in the brackets"));
        }
        match after {
            "" => (host, None, true),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected :port after the brackets"))?,
                ),
                true,
            ),
        }
    } else {
        match rest.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err(bad("an IPv6 address goes in brackets: [::1]:11211"))
            }
            Some((h, p)) => (h, Some(p), false),
            None => (rest, None, false),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if !v6
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(bad("not a host name"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("invalid port number"))?,
    };
    let host = host.to_ascii_lowercase();
    let addr = if v6 {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(ServerAddr { addr, host, port })
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
                "key_placement",
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
        let placement = match args.string("key_placement")?.as_deref() {
            None | Some("dogpile") => Placement::Dogpile,
            Some("pymemcache") => Placement::Pymemcache,
            Some(other) => {
                return Err(args.error(
                    "key_placement",
                    format!("expected \"dogpile\" or \"pymemcache\", got {other:?}"),
                ))
            }
        };
        let mut addrs: Vec<ServerAddr> = Vec::with_capacity(urls.len());
        for u in &urls {
            let a = parse_server(args, u)?;
            if addrs.iter().any(|s| s.addr == a.addr) {
                return Err(args.error("url", format!("{} is listed twice", a.addr)));
            }
            addrs.push(a);
        }
        let ring = ring::Ring::new(
            placement,
            &addrs
                .iter()
                .map(|a| (a.addr.clone(), a.host.clone(), a.port))
                .collect::<Vec<_>>(),
        );
        let name = format!(
            "{NAME} {}",
            addrs
                .iter()
                .map(|s| s.addr.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let servers = addrs
            .into_iter()
            .map(|a| Server::new(a.addr.clone(), format!("{NAME} {}", a.addr), socket_timeout))
            .collect();
        let inner = Arc::new(Inner {
            name,
            servers,
            ring,
            expire_time,
            lock_timeout,
            socket_timeout,
        });
        Ok(MemcachedBackend {
            keeper: distributed_lock.then(|| lock::Keeper::new(inner.clone())),
            inner,
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

    async fn get_io(&self, io: Io, key: &str) -> Result<Option<CachedValue>> {
        let k = safe_key(key);
        Ok(self
            .inner
            .get_owned(
                io,
                Keys {
                    safe: &[&k],
                    caller: &[key],
                },
            )
            .await?
            .pop()
            .flatten())
    }

    async fn set_io(&self, io: Io, key: &str, value: &CachedValue) -> Result<()> {
        let bytes = self.encode(key, value)?;
        self.inner.set_one(io, &safe_key(key), &bytes).await
    }
}

impl Backend for MemcachedBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn payload_kind(&self) -> PayloadKind {
        PayloadKind::Bytes
    }

    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        block_on(self.get_io(Io::Blocking, key))
    }

    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        block_on(self.set_io(Io::Blocking, key, &value))
    }

    fn delete(&self, key: &str) -> Result<()> {
        block_on(self.inner.delete_one(Io::Blocking, &safe_key(key)))
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        with_safe_keys(keys, |keys| {
            block_on(self.inner.get_owned(Io::Blocking, keys))
        })
    }

    fn visit_multi(
        &self,
        keys: &[&str],
        f: &mut dyn FnMut(usize, CachedValueRef<'_>),
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        with_safe_keys(keys, |keys| {
            block_on(self.inner.get_many(Io::Blocking, keys, f))
        })
    }

    fn set_multi(&self, items: Vec<(String, CachedValue)>) -> Result<()> {
        let safe: Vec<Cow<'_, str>> = items.iter().map(|(k, _)| safe_key(k)).collect();
        // Each command's line, the envelope's header and the payload: the request's size.
        let size = items
            .iter()
            .zip(&safe)
            .map(|((_, v), k)| match &v.payload {
                Payload::Bytes(b) => k.len() + b.len() + 64,
                Payload::Object(_) => 0,
            })
            .sum();
        let exp = self.inner.expire_time;
        // Every envelope is encoded into this one buffer, then copied into its command.
        let mut envelope = Vec::new();
        block_on(self.inner.pipelined(
            Io::Blocking,
            "set_multi",
            size,
            safe.iter().map(|k| k.as_ref()),
            |req, i, k| {
                let (key, value) = &items[i];
                envelope.clear();
                encode_envelope_into_for(&mut envelope, value, &self.inner.name, key)?;
                proto::set(req, k, exp, &envelope, true);
                Ok(())
            },
        ))
    }

    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        let safe: Vec<Cow<'_, str>> = keys.iter().map(|k| safe_key(k)).collect();
        let size = safe.iter().map(|k| k.len() + 18).sum();
        block_on(self.inner.pipelined(
            Io::Blocking,
            "delete_multi",
            size,
            safe.iter().map(|k| k.as_ref()),
            |req, _, k| {
                proto::delete(req, k, true);
                Ok(())
            },
        ))
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        let keeper = self.keeper.as_ref()?;
        Some(Box::new(lock::MemcachedMutex::new(
            keeper,
            safe_key(&dogpile_core::lock::lock_key(
                dogpile_core::lock::DEFAULT_LOCK_PREFIX,
                key,
            ))
            .into_owned(),
        )))
    }

    fn key_mangler(&self) -> Option<dogpile_core::KeyMangler> {
        Some(dogpile_core::KeyMangler::Keeping(safe_key))
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<CachedValue>>> {
        Box::pin(self.get_io(Io::Async, key))
    }

    fn set_async<'a>(&'a self, key: &'a str, value: CachedValue) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.set_io(Io::Async, key, &value).await })
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.inner.delete_one(Io::Async, &safe_key(key)).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept-key rule, a byte at a time: what `all_kept` must answer.
    fn kept_by_rule(bytes: &[u8]) -> bool {
        bytes.iter().all(|b| valid_key_byte(*b) && *b != MARKER)
    }

    #[test]
    fn the_word_test_agrees_with_the_byte_rule() {
        // Every byte value at every position of keys up to three words long.
        for len in 1..=24 {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut key = vec![b'a'; len];
                    key[pos] = b;
                    assert_eq!(all_kept(&key), kept_by_rule(&key), "{key:?}");
                }
            }
        }
        // Random keys of bytes near the rule's edges, several odd bytes to a key.
        const EDGES: [u8; 14] = [
            0x00, 0x01, 0x20, 0x21, 0x22, 0x23, 0x24, 0x7e, 0x7f, 0x80, 0x81, 0xa1, 0xfe, 0xff,
        ];
        // splitmix64: a counter through the placement ring's mix, so a failure repeats.
        let mut state = 0u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            ring::mix(state)
        };
        let mut rejected = 0;
        for _ in 0..200_000 {
            let len = (next() % 40) as usize;
            let key: Vec<u8> = (0..len)
                .map(|_| match next() % 16 {
                    0 => EDGES[(next() % EDGES.len() as u64) as usize],
                    _ => 0x21 + (next() % 0x5e) as u8,
                })
                .collect();
            let kept = kept_by_rule(&key);
            rejected += usize::from(!kept);
            assert_eq!(all_kept(&key), kept, "{key:?}");
        }
        assert!(rejected > 10_000, "the generator reaches the rule's edges");
    }

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
            counts[b.inner.ring.index(&format!("key{i}"))] += 1;
        }
        assert!(counts.iter().all(|c| *c > 700), "{counts:?}");
        // A fixed answer: placement must not change between builds.
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
