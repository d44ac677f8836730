//! The distributed dogpile lock: a token set on `PREFIX + key` with an expiry, released by a
//! compare-and-delete script, kept alive while its holder lives, polled by waiters with a short
//! backoff.
//!
//! A lock counts as possibly ours from the moment its acquire is sent: a reply that never comes
//! (a timeout, a broken connection, an async acquire cancelled mid-flight) may still have set it.
//! So the acquire is a script that also recognises our own token (a retry on a new connection
//! finds the lock its first attempt set, and takes it), and a handle dropped while its lock is
//! possibly ours hands `(key, token)` to the [`Keeper`], whose thread compare-and-deletes it as
//! soon as the server answers. Nothing ever deletes a lock holding another token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dogpile_core::{BoxFuture, CacheMutex, Error, Result};
use parking_lot::{Condvar, Mutex};

use super::conn::{in_tokio, Conns, Limits, SyncConn};
use crate::backoff::Backoff;

/// Takes the lock when it is free (`SET … PX`), and also when it already holds our token: a
/// retry whose first attempt reached the server but whose reply was lost takes its own lock
/// instead of waiting on it. 1 when taken, 0 when another token holds it.
const ACQUIRE_SCRIPT: &str = "local v = redis.call('get', KEYS[1]) \
     if v == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end \
     if v then return 0 end \
     redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";

/// Deletes the lock only when it still holds our token: a holder whose lock expired and was
/// taken by another caller must not delete the new holder's lock.
const RELEASE_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// Extends the lock's expiry only when it still holds our token.
const EXTEND_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

/// The keeper's first pause after a failed round (the server did not answer); it doubles up to
/// [`MAX_RETRY_PAUSE`] (or a third of `lock_timeout`, if shorter).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The keeper's longest pause between tries of a round the server did not answer: a waiter on a
/// possibly-ours lock of a dropped handle is freed at most about this long after the server
/// answers again.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The most possibly-ours locks waiting for their compare-and-delete; past it the oldest is
/// left to expire (a server gone for long, with many calls failing meanwhile).
const MAX_ORPHANS: usize = 10_000;

/// How the distributed lock is set up: `lock_prefix`, `lock_timeout`, `lock_sleep`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LockSettings {
    /// The lock key is this + the (mangled) cache key.
    pub(crate) prefix: String,
    /// The lock's expiry on the server.
    pub(crate) timeout: Duration,
    /// The longest pause of a waiter between looks.
    pub(crate) max_pause: Duration,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn script(body: &str, key: &str, token: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(body).arg(1).arg(key).arg(token);
    cmd
}

/// A lock on the server and the token that makes it ours.
#[derive(Clone, Debug, PartialEq)]
struct Owned {
    key: String,
    token: String,
}

/// A lock that may be ours and that nobody holds any more: compare-and-deleted by the keeper.
struct Orphan {
    lock: Owned,
    /// Before this, a "not ours" answer may only mean our late acquire has not reached the
    /// server yet, so the delete is tried again; after it, such a lock would have expired.
    until: Instant,
    next_try: Instant,
    pause: Duration,
}

/// What the keeper's thread works on.
#[derive(Default)]
struct Book {
    held: HashMap<u64, Owned>,
    orphans: Vec<Orphan>,
    /// Set when the backend is gone: the thread ends once its orphans are dealt with.
    closed: bool,
}

/// What the keeper shares with its thread.
struct Shared {
    /// The keeper's own connection, with a reply timeout of at most a third of `lock_timeout`:
    /// it never waits for a pooled connection, nor behind a caller's call.
    conn: Conns,
    book: Mutex<Book>,
    wake: Condvar,
    timeout: Duration,
}

/// The locks this process holds on one backend's server, and the thread that extends their
/// expiry every third of `lock_timeout` while they are held (all of them in one round trip) and
/// deletes the possibly-ours locks of dropped handles. A holder that dies stops being extended,
/// so its lock expires at most `lock_timeout` later; a live holder keeps its lock for as long as
/// its creation takes. The thread starts with the first lock taken and ends soon after the
/// backend is dropped.
pub(crate) struct Keeper {
    conns: Arc<Conns>,
    settings: LockSettings,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    /// Whether the thread runs (`None`: not started yet; `Some(false)`: it could not start).
    thread: Mutex<Option<bool>>,
}

impl Keeper {
    pub(crate) fn new(conns: Arc<Conns>, settings: LockSettings) -> Arc<Self> {
        let limits = conns.limits();
        let short = limits.reply_timeout.min(settings.timeout / 3);
        let conn = conns.sibling(Limits {
            pool_size: 1,
            connect_timeout: limits.connect_timeout.min(settings.timeout / 3),
            reply_timeout: short,
            pool_timeout: short,
        });
        Arc::new(Keeper {
            shared: Arc::new(Shared {
                conn,
                book: Mutex::new(Book::default()),
                wake: Condvar::new(),
                timeout: settings.timeout,
            }),
            conns,
            settings: LockSettings {
                max_pause: settings.max_pause,
                ..settings
            },
            next_id: AtomicU64::new(0),
            thread: Mutex::new(None),
        })
    }

    /// Starts the thread if it is not running; whether it runs.
    fn ensure_thread(&self) -> bool {
        let mut thread = self.thread.lock();
        if let Some(running) = *thread {
            return running;
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("dogpile-redis-locks".to_owned())
            .spawn(move || keep(&shared));
        if let Err(e) = &spawned {
            tracing::warn!(backend = %self.conns.desc(), error = %e, "cannot start the thread that extends held Redis locks; they expire after lock_timeout");
        }
        *thread = Some(spawned.is_ok());
        spawned.is_ok()
    }

    fn hold(&self, id: u64, lock: Owned) {
        self.ensure_thread();
        let mut book = self.shared.book.lock();
        let was_idle = book.held.is_empty() && book.orphans.is_empty();
        book.held.insert(id, lock);
        drop(book);
        if was_idle {
            self.shared.wake.notify_all();
        }
    }

    fn unhold(&self, id: u64) {
        self.shared.book.lock().held.remove(&id);
    }

    /// Hands a possibly-ours lock to the thread, which deletes it (compare-and-delete) as soon as
    /// the server answers. Without the thread, one attempt is made here.
    fn orphan(&self, lock: Owned) {
        if !self.ensure_thread() {
            let cmd = script(RELEASE_SCRIPT, &lock.key, &lock.token);
            if let Err(e) = self.shared.conn.query::<i64>("releasing a lock", &cmd) {
                tracing::warn!(backend = %self.conns.desc(), lock = %lock.key, error = %e, "releasing a dogpile lock failed; it expires after lock_timeout");
            }
            return;
        }
        let now = Instant::now();
        let mut book = self.shared.book.lock();
        if book.orphans.len() >= MAX_ORPHANS {
            let oldest = book.orphans.remove(0);
            tracing::warn!(backend = %self.conns.desc(), lock = %oldest.lock.key, "too many dogpile locks waiting to be released; this one expires after lock_timeout");
        }
        book.orphans.push(Orphan {
            lock,
            until: now + self.settings.timeout,
            next_try: now,
            pause: RETRY_PAUSE,
        });
        drop(book);
        self.shared.wake.notify_all();
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.shared.book.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// The keeper's thread: extends the held locks every third of `lock_timeout` (sooner after a
/// round the server did not answer) and deletes orphans, each kind in one round trip, on its own
/// connection.
fn keep(shared: &Shared) {
    let period = shared.timeout / 3;
    let max_pause = period.min(MAX_RETRY_PAUSE).max(RETRY_PAUSE);
    let mut next_round = Instant::now() + period;
    let mut failed_pause = RETRY_PAUSE;
    loop {
        let (extend, orphans) = {
            let mut book = shared.book.lock();
            loop {
                let now = Instant::now();
                if book.closed && book.orphans.is_empty() {
                    return;
                }
                if book.held.is_empty() && book.orphans.is_empty() {
                    shared.wake.wait(&mut book);
                    // A lock taken now was set just now: its first extension is due a period on.
                    next_round = next_round.max(Instant::now() + period);
                    continue;
                }
                let extend_due = !book.held.is_empty() && now >= next_round;
                let orphan_due = book.orphans.iter().any(|o| o.next_try <= now);
                if extend_due || orphan_due {
                    let extend: Vec<(u64, Owned)> = if extend_due {
                        book.held.iter().map(|(id, l)| (*id, l.clone())).collect()
                    } else {
                        Vec::new()
                    };
                    let orphans: Vec<Owned> = book
                        .orphans
                        .iter()
                        .filter(|o| o.next_try <= now)
                        .map(|o| o.lock.clone())
                        .collect();
                    break (extend, orphans);
                }
                let mut wake_at = book
                    .orphans
                    .iter()
                    .map(|o| o.next_try)
                    .min()
                    .unwrap_or(now + period);
                if !book.held.is_empty() {
                    wake_at = wake_at.min(next_round);
                }
                shared.wake.wait_until(&mut book, wake_at);
            }
        };
        if !extend.is_empty() {
            match extend_all(shared, &extend) {
                Ok(()) => {
                    next_round = Instant::now() + period;
                    failed_pause = RETRY_PAUSE;
                }
                Err(e) => {
                    tracing::warn!(backend = %shared.conn.desc(), error = %e, locks = extend.len(), "extending held dogpile locks failed; trying again");
                    next_round = Instant::now() + failed_pause;
                    failed_pause = (failed_pause * 2).min(max_pause);
                }
            }
        }
        if !orphans.is_empty() {
            delete_orphans(shared, orphans);
        }
    }
}

/// Runs one script per lock in one round trip (a cluster pipeline is split per node by the
/// client); the replies in order.
fn run_scripts(conn: &Conns, what: &str, cmds: &[redis::Cmd]) -> Result<Vec<i64>> {
    conn.run(what, |c| match c {
        SyncConn::Single(c) => {
            let mut pipe = redis::pipe();
            for cmd in cmds {
                pipe.add_command(cmd.clone());
            }
            pipe.query::<Vec<i64>>(c)
        }
        SyncConn::Cluster(c) => {
            let mut pipe = redis::cluster::cluster_pipe();
            for cmd in cmds {
                pipe.add_command(cmd.clone());
            }
            pipe.query::<Vec<i64>>(c)
        }
    })
}

/// Extends every held lock; a lock that no longer holds our token was lost (it expired, and
/// maybe another caller took it): reported to the core (a `warn` event, counted in
/// `Stats::locks_lost`), and no longer extended.
fn extend_all(shared: &Shared, held: &[(u64, Owned)]) -> Result<()> {
    let ms = millis(shared.timeout);
    let cmds: Vec<redis::Cmd> = held
        .iter()
        .map(|(_, l)| {
            let mut cmd = script(EXTEND_SCRIPT, &l.key, &l.token);
            cmd.arg(ms);
            cmd
        })
        .collect();
    let replies = run_scripts(&shared.conn, "extending held locks", &cmds)?;
    let mut book = shared.book.lock();
    for ((id, lock), extended) in held.iter().zip(replies) {
        if extended == 0 && book.held.remove(id).is_some() {
            // It expired (the server was unreachable for a lock_timeout) or was deleted.
            dogpile_core::lock::lock_lost(shared.conn.desc(), &lock.key);
        }
    }
    Ok(())
}

/// Compare-and-deletes orphans; those the server deleted, or answered for after they would have
/// expired, are done; the others are tried again later. An orphan the server has not answered
/// for during two `lock_timeout`s is given up (said at `warn`): a server gone that long.
fn delete_orphans(shared: &Shared, orphans: Vec<Owned>) {
    let cmds: Vec<redis::Cmd> = orphans
        .iter()
        .map(|l| script(RELEASE_SCRIPT, &l.key, &l.token))
        .collect();
    let replies = run_scripts(&shared.conn, "releasing locks", &cmds);
    let now = Instant::now();
    let max_pause = (shared.timeout / 3).min(MAX_RETRY_PAUSE).max(RETRY_PAUSE);
    let mut book = shared.book.lock();
    book.orphans.retain_mut(|o| {
        let Some(i) = orphans.iter().position(|l| *l == o.lock) else {
            return true;
        };
        let done = match &replies {
            Ok(r) if r.get(i) == Some(&1) => true,
            Ok(_) => now >= o.until,
            Err(_) if now >= o.until + shared.timeout => {
                tracing::warn!(backend = %shared.conn.desc(), lock = %o.lock.key, "the server did not answer the release of a dogpile lock for two lock_timeouts; giving up (it expires by itself)");
                true
            }
            Err(_) => false,
        };
        if !done {
            o.next_try = now + o.pause;
            o.pause = (o.pause * 2).min(max_pause);
        }
        !done
    });
    if let Err(e) = replies {
        tracing::debug!(backend = %shared.conn.desc(), error = %e, "releasing dogpile locks failed; trying again");
    }
}

/// Nothing sent yet, or the last acquire was answered "held elsewhere" (and none before it went
/// unanswered).
const FREE: u8 = 0;
/// An acquire was sent and not answered: the lock may be ours.
const SENT: u8 = 1;
/// The lock is ours.
const HELD: u8 = 2;

/// One key's distributed lock, as returned by the Redis backends' `get_mutex`.
///
/// The lock lives on the server under `lock_prefix` (default `_lock`) + the (mangled) key, with
/// a token unique to this handle as its value and `lock_timeout` as its expiry. While the handle
/// holds it, a thread of this process extends the expiry, so a slow creation keeps its lock; if
/// the holding process dies, the lock expires by itself at most `lock_timeout` later. From the
/// moment an acquire is sent the lock counts as possibly ours: a handle dropped then (an acquire
/// that timed out, an async acquire cancelled) has its lock deleted in the background, by token.
///
/// ```no_run
/// use dogpile_backends::redis::RedisBackend;
/// use dogpile_core::{Arguments, Backend};
///
/// let backend = RedisBackend::from_arguments(
///     &Arguments::new()
///         .with("url", "redis://127.0.0.1:6379")
///         .with("distributed_lock", true),
/// )?;
/// let lock = backend.get_mutex("key").expect("distributed_lock gives a mutex");
/// if lock.try_acquire()? {
///     // … create the value …
///     lock.release()?;
/// }
/// // Releasing a lock that this handle does not hold is an error.
/// assert!(lock.release().is_err());
/// # Ok::<(), dogpile_core::Error>(())
/// ```
pub struct RedisMutex {
    keeper: Arc<Keeper>,
    id: u64,
    /// The cache key, for errors.
    cache_key: String,
    lock: Owned,
    state: AtomicU8,
}

impl RedisMutex {
    pub(crate) fn new(keeper: &Arc<Keeper>, key: &str) -> Self {
        RedisMutex {
            keeper: keeper.clone(),
            id: keeper.next_id.fetch_add(1, Ordering::Relaxed),
            cache_key: key.to_owned(),
            lock: Owned {
                key: dogpile_core::lock::lock_key(&keeper.settings.prefix, key),
                token: dogpile_core::lock::new_token(),
            },
            state: AtomicU8::new(FREE),
        }
    }

    /// The key of the lock on the server: `lock_prefix` + the key.
    pub fn lock_key(&self) -> &str {
        &self.lock.key
    }

    fn conns(&self) -> &Conns {
        &self.keeper.conns
    }

    fn acquire_cmd(&self) -> redis::Cmd {
        let mut cmd = script(ACQUIRE_SCRIPT, &self.lock.key, &self.lock.token);
        cmd.arg(millis(self.keeper.settings.timeout));
        cmd
    }

    fn release_cmd(&self) -> redis::Cmd {
        script(RELEASE_SCRIPT, &self.lock.key, &self.lock.token)
    }

    fn exists_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(&self.lock.key);
        cmd
    }

    fn backoff(&self) -> Backoff {
        Backoff::up_to(self.keeper.settings.max_pause)
    }

    /// Marks an acquire as sent: the state it had before, or `None` when the lock is already
    /// held by this handle (a second acquire is refused, as by a non-reentrant lock).
    fn sending(&self) -> Option<u8> {
        let was = self.state.load(Ordering::Acquire);
        if was == HELD {
            return None;
        }
        self.state.store(SENT, Ordering::Release);
        Some(was)
    }

    /// What an acquire's reply means. No reply leaves the lock possibly ours.
    fn answered(&self, was: u8, reply: Result<i64>) -> Result<bool> {
        match reply? {
            1 => {
                self.state.store(HELD, Ordering::Release);
                self.keeper.hold(self.id, self.lock.clone());
                Ok(true)
            }
            _ => {
                // Held elsewhere. An earlier acquire that went unanswered may still reach the
                // server, so it keeps the lock possibly ours.
                self.state.store(was, Ordering::Release);
                Ok(false)
            }
        }
    }

    fn not_held(&self) -> Error {
        Error::backend_msg(
            self.conns().desc(),
            format!(
                "releasing a lock: no acquire held for key {:?} (lock {}): release() without a successful try_acquire(), or twice",
                self.cache_key, self.lock.key
            ),
        )
    }

    /// After a release's reply (or its failure): a release that failed leaves the lock to the
    /// keeper, which deletes it once the server answers.
    fn released(&self, reply: Result<i64>) {
        if let Err(e) = reply {
            tracing::warn!(error = %e, lock = %self.lock.key, "releasing a dogpile lock failed; it is released in the background once the server answers");
            self.keeper.orphan(self.lock.clone());
        }
    }
}

impl CacheMutex for RedisMutex {
    fn try_acquire(&self) -> Result<bool> {
        let Some(was) = self.sending() else {
            return Ok(false);
        };
        let reply = self.conns().query("taking a lock", &self.acquire_cmd());
        self.answered(was, reply)
    }

    /// Polls the lock, pausing 0.5 ms, 1 ms, 2 ms… up to `lock_sleep` between looks, and returns
    /// once it is free. The region then reads the value, which the holder stored before releasing.
    fn wait(&self, deadline: Instant) -> Result<()> {
        let mut backoff = self.backoff();
        while self.locked()? {
            let Some(pause) = backoff.next_pause(deadline) else {
                break;
            };
            std::thread::sleep(pause);
        }
        Ok(())
    }

    /// Deletes the lock if it still holds this handle's token. An error if this handle holds no
    /// lock (never acquired, refused, or released already). A lock only possibly ours (its
    /// acquire went unanswered) is deleted too. A release the server does not answer is retried
    /// in the background.
    fn release(&self) -> Result<()> {
        match self.state.swap(FREE, Ordering::AcqRel) {
            FREE => Err(self.not_held()),
            was => {
                if was == HELD {
                    self.keeper.unhold(self.id);
                }
                self.released(self.conns().query("releasing a lock", &self.release_cmd()));
                Ok(())
            }
        }
    }

    fn locked(&self) -> Result<bool> {
        self.conns().query("looking at a lock", &self.exists_cmd())
    }

    fn try_acquire_async(self: Arc<Self>) -> BoxFuture<'static, Result<bool>> {
        Box::pin(async move {
            if !in_tokio() {
                // Another executor: the blocking call runs on the `blocking` pool, never on an
                // executor thread (as the trait's default does).
                return blocking::unblock(move || self.try_acquire()).await;
            }
            let Some(was) = self.sending() else {
                return Ok(false);
            };
            // Dropped before the reply: the state stays SENT, and the handle's drop hands the
            // lock to the keeper.
            let reply = self
                .conns()
                .query_async("taking a lock", &self.acquire_cmd())
                .await;
            self.answered(was, reply)
        })
    }

    fn release_async(self: Arc<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if !in_tokio() {
                // Another executor: the blocking call runs on the `blocking` pool, never on an
                // executor thread (as the trait's default does).
                return blocking::unblock(move || self.release()).await;
            }
            if self.state.load(Ordering::Acquire) == FREE {
                return Err(self.not_held());
            }
            // The state stays as it is until the server has answered: if this future is dropped
            // on the way, the guard's blocking release (or this handle's drop) still deletes it.
            let reply = self
                .conns()
                .query_async("releasing a lock", &self.release_cmd())
                .await;
            if self.state.swap(FREE, Ordering::AcqRel) == HELD {
                self.keeper.unhold(self.id);
            }
            self.released(reply);
            Ok(())
        })
    }

    fn wait_async(self: Arc<Self>, deadline: Instant) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if !in_tokio() {
                // Another executor: the blocking call runs on the `blocking` pool, never on an
                // executor thread (as the trait's default does).
                return blocking::unblock(move || self.wait(deadline)).await;
            }
            let mut backoff = self.backoff();
            let cmd = self.exists_cmd();
            while self
                .conns()
                .query_async::<bool>("looking at a lock", &cmd)
                .await?
            {
                let Some(pause) = backoff.next_pause(deadline) else {
                    break;
                };
                tokio::time::sleep(pause).await;
            }
            Ok(())
        })
    }
}

impl Drop for RedisMutex {
    /// A handle dropped while its lock is held or possibly ours hands it to the keeper, which
    /// deletes it (by token) without blocking the dropping thread or task.
    fn drop(&mut self) {
        match *self.state.get_mut() {
            FREE => {}
            was => {
                if was == HELD {
                    self.keeper.unhold(self.id);
                }
                self.keeper.orphan(self.lock.clone());
            }
        }
    }
}

impl std::fmt::Debug for RedisMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state.load(Ordering::Relaxed) {
            FREE => "free",
            SENT => "possibly held (acquire unanswered)",
            _ => "held",
        };
        f.debug_struct("RedisMutex")
            .field("key", &self.lock.key)
            .field("state", &state)
            .finish()
    }
}
