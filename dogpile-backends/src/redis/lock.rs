//! The distributed dogpile lock: `SET lockkey token NX PX lock_timeout`, released by a
//! compare-and-delete script, kept alive while its holder lives, polled by waiters with a short
//! backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dogpile_core::{BoxFuture, CacheMutex, Result};
use parking_lot::Mutex;

use super::conn::{in_tokio, Conns};

/// Deletes the lock only when it still holds our token: a holder whose lock expired and was
/// taken by another caller must not delete the new holder's lock.
const RELEASE_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// Extends the lock's expiry only when it still holds our token.
const EXTEND_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

/// The first pause of a waiter; it doubles up to `lock_sleep`.
const FIRST_PAUSE: Duration = Duration::from_micros(500);

/// The lock key of a cache key, as Python dogpile's Redis backend names it, so Python and Rust
/// processes sharing a server also share their locks.
pub(crate) fn lock_key(key: &str) -> String {
    format!("_lock{key}")
}

/// A token unique to one lock handle: process id, a counter and the time. Not secret, only
/// distinct between holders.
fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The locks this process holds on one backend's server, and the thread that extends their
/// expiry every third of `lock_timeout` while they are held. A holder that dies stops being
/// extended, so its lock expires at most `lock_timeout` later; a live holder keeps its lock for
/// as long as its creation takes. The thread starts with the first lock taken and ends soon
/// after the backend is dropped.
pub(crate) struct Keeper {
    conns: Arc<Conns>,
    timeout: Duration,
    max_pause: Duration,
    held: Mutex<HashMap<u64, (String, String)>>,
    next_id: AtomicU64,
    started: AtomicBool,
}

impl Keeper {
    pub(crate) fn new(conns: Arc<Conns>, timeout: Duration, max_pause: Duration) -> Arc<Self> {
        Arc::new(Keeper {
            conns,
            timeout,
            max_pause: max_pause.max(FIRST_PAUSE),
            held: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            started: AtomicBool::new(false),
        })
    }

    fn hold(self: &Arc<Self>, id: u64, key: &str, token: &str) {
        self.held
            .lock()
            .insert(id, (key.to_owned(), token.to_owned()));
        if !self.started.swap(true, Ordering::AcqRel) {
            let keeper = Arc::downgrade(self);
            let period = self.timeout / 3;
            let spawned = std::thread::Builder::new()
                .name("dogpile-redis-locks".to_owned())
                .spawn(move || extend_while_held(keeper, period));
            if let Err(e) = spawned {
                self.started.store(false, Ordering::Release);
                tracing::warn!(error = %e, "cannot start the thread that extends held Redis locks; they expire after lock_timeout");
            }
        }
    }

    fn unhold(&self, id: u64) {
        self.held.lock().remove(&id);
    }
}

fn extend_while_held(keeper: Weak<Keeper>, period: Duration) {
    loop {
        std::thread::sleep(period);
        let Some(keeper) = keeper.upgrade() else {
            return;
        };
        let held: Vec<(String, String)> = keeper.held.lock().values().cloned().collect();
        let ms = millis(keeper.timeout);
        for (key, token) in held {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(EXTEND_SCRIPT).arg(1).arg(&key).arg(&token).arg(ms);
            if let Err(e) = keeper.conns.query::<i64>("extending a lock", &cmd) {
                tracing::warn!(error = %e, lock = %key, "extending a held dogpile lock failed");
            }
        }
    }
}

/// One key's distributed lock, as returned by the Redis backends' `get_mutex`.
///
/// The lock lives on the server under `_lock` + the (mangled) key, with a token unique to this
/// handle as its value and `lock_timeout` as its expiry. While the handle holds it, a thread of
/// this process extends the expiry, so a slow creation keeps its lock; if the holding process
/// dies, the lock expires by itself at most `lock_timeout` later.
pub struct RedisMutex {
    keeper: Arc<Keeper>,
    conns: Arc<Conns>,
    id: u64,
    key: String,
    token: String,
    held: AtomicBool,
    timeout_ms: u64,
    max_pause: Duration,
}

impl RedisMutex {
    pub(crate) fn new(keeper: &Arc<Keeper>, key: &str) -> Self {
        RedisMutex {
            keeper: keeper.clone(),
            conns: keeper.conns.clone(),
            id: keeper.next_id.fetch_add(1, Ordering::Relaxed),
            key: lock_key(key),
            token: new_token(),
            held: AtomicBool::new(false),
            timeout_ms: millis(keeper.timeout),
            max_pause: keeper.max_pause,
        }
    }

    fn taken(&self) {
        self.held.store(true, Ordering::Release);
        self.keeper.hold(self.id, &self.key, &self.token);
    }

    /// The key of the lock on the server.
    pub fn lock_key(&self) -> &str {
        &self.key
    }

    fn acquire_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(self.timeout_ms);
        cmd
    }

    fn release_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE_SCRIPT)
            .arg(1)
            .arg(&self.key)
            .arg(&self.token);
        cmd
    }

    fn exists_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(&self.key);
        cmd
    }

    fn next_pause(&self, pause: Duration) -> Duration {
        (pause * 2).min(self.max_pause)
    }
}

impl CacheMutex for RedisMutex {
    fn try_acquire(&self) -> Result<bool> {
        let reply: Option<String> = self.conns.query("taking a lock", &self.acquire_cmd())?;
        let taken = reply.is_some();
        if taken {
            self.taken();
        }
        Ok(taken)
    }

    /// Polls the lock, pausing 0.5 ms, 1 ms, 2 ms… up to `lock_sleep` between looks, and returns
    /// once it is free. The region then reads the value, which the holder stored before releasing.
    fn wait(&self, deadline: Instant) -> Result<()> {
        let mut pause = FIRST_PAUSE;
        while self.locked()? {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = self.next_pause(pause);
        }
        Ok(())
    }

    fn release(&self) -> Result<()> {
        if self.held.swap(false, Ordering::AcqRel) {
            self.keeper.unhold(self.id);
            let _: i64 = self.conns.query("releasing a lock", &self.release_cmd())?;
        }
        Ok(())
    }

    fn locked(&self) -> Result<bool> {
        self.conns.query("looking at a lock", &self.exists_cmd())
    }

    fn try_acquire_async(self: Arc<Self>) -> BoxFuture<'static, Result<bool>> {
        Box::pin(async move {
            if !in_tokio() {
                return self.try_acquire();
            }
            let reply: Option<String> = self
                .conns
                .query_async("taking a lock", &self.acquire_cmd())
                .await?;
            let taken = reply.is_some();
            if taken {
                self.taken();
            }
            Ok(taken)
        })
    }

    fn release_async(self: Arc<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if !in_tokio() {
                return self.release();
            }
            if !self.held.load(Ordering::Acquire) {
                return Ok(());
            }
            // Held until the server has answered: if this future is dropped on the way, the
            // guard's blocking release (or this handle's drop) still deletes the lock.
            let deleted: Result<i64> = self
                .conns
                .query_async("releasing a lock", &self.release_cmd())
                .await;
            if self.held.swap(false, Ordering::AcqRel) {
                self.keeper.unhold(self.id);
            }
            deleted.map(drop)
        })
    }

    fn wait_async(self: Arc<Self>, deadline: Instant) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if !in_tokio() {
                return self.wait(deadline);
            }
            let mut pause = FIRST_PAUSE;
            let cmd = self.exists_cmd();
            while self
                .conns
                .query_async::<bool>("looking at a lock", &cmd)
                .await?
            {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = self.next_pause(pause);
            }
            Ok(())
        })
    }
}

impl Drop for RedisMutex {
    /// A handle dropped while holding the lock releases it, rather than leaving it to expire.
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(error = %e, lock = %self.key, "releasing a dogpile lock failed; it expires by itself");
        }
    }
}

impl std::fmt::Debug for RedisMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisMutex")
            .field("key", &self.key)
            .field("held", &self.held.load(Ordering::Relaxed))
            .finish()
    }
}
