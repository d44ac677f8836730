//! The distributed dogpile lock on memcached, in memcached 1.6's meta protocol.
//!
//! - take: `ms _lock<key> <len> T<lock_timeout> c ME` (add: only if absent), which answers with
//!   the CAS value of the lock it stored;
//! - keep: while held, a thread of this process (the [`Keeper`]) re-stores the token with
//!   `ms … C<cas>` every third of `lock_timeout`: it extends the expiry only while the CAS value
//!   is still ours, so it never extends another holder's lock;
//! - release: `md _lock<key> C<cas>` deletes only our own lock;
//! - a CAS value that moved (our own extension raced the release, or a retried command stored
//!   twice) is settled by reading the lock back (`mg … v c`): ours if it holds our token;
//! - so is an add answered "already held" after it was sent a second time (its first connection
//!   broke before the reply): the first send may have stored our own token;
//! - and a release's delete answered "not found" after it was sent a second time is a release
//!   done by its first send, not a lock lost to expiry (no warning).
//!
//! From the moment an add is sent, the lock may be ours: if its reply is lost (a timeout, a
//! broken connection, a cancelled future), the next `try_acquire` of the handle reads it back,
//! and a handle dropped in that state (or released) leaves the keeper a job: delete the lock
//! whenever it is found holding our token, until it would have expired by itself. The keeper
//! does every server call with `socket_timeout`, and skips a server for the rest of a round
//! once a call to it failed, so one frozen server delays a round by one timeout, no more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dogpile_core::{BoxFuture, CacheMutex, Error, Result};
use parking_lot::Mutex;

use super::conn::{block_on, Delivery, Failure, Flow, Io, Server};
use super::proto::{self, Item};
use super::Inner;
use crate::backoff::Backoff;

/// The longest pause of a waiter between two looks (the first is 0.5 ms).
const MAX_PAUSE: Duration = Duration::from_millis(2);
/// How often the keeper looks at its jobs at most.
const MAX_TICK: Duration = Duration::from_millis(250);
/// How long a lock written without expiry (`lock_timeout = 0`) is watched after a lost add.
const NO_EXPIRY_WATCH: Duration = Duration::from_secs(3600);

/// The lock's value: core's token, as the bytes memcached stores.
fn new_token() -> Arc<[u8]> {
    dogpile_core::lock::new_token().into_bytes().into()
}

/// One meta reply.
struct Meta {
    code: [u8; 2],
    cas: Option<u64>,
    data: Option<Vec<u8>>,
    /// The request went out twice (its first connection broke before the reply): the server
    /// may have carried out both.
    resent: bool,
}

async fn meta(io: Io, server: &Server, what: &str, req: &[u8]) -> Result<Meta> {
    let mut reply = None;
    let delivery = server
        .call(io, what, req, true, &mut |item| {
            if let Item::Meta { code, data, .. } = &item {
                reply = Some(Meta {
                    code: *code,
                    cas: item.meta_flag(b'c'),
                    data: data.map(<[u8]>::to_vec),
                    resent: false,
                });
                Ok(Flow::Done)
            } else {
                Err(Failure::unexpected(&item))
            }
        })
        .await?;
    let mut reply = reply.ok_or_else(|| server.error(what, "no reply"))?;
    reply.resent = delivery == Delivery::Resent;
    Ok(reply)
}

fn unexpected(server: &Server, what: &str, m: &Meta) -> Error {
    server.error(
        what,
        Failure::Server(format!("unexpected meta reply {}", proto::quote(&m.code))),
    )
}

/// The lock's value and CAS, if it exists.
async fn read(io: Io, server: &Server, key: &str) -> Result<Option<(Vec<u8>, u64)>> {
    let mut req = Vec::with_capacity(key.len() + 10);
    proto::meta_get(&mut req, key, true);
    let m = meta(io, server, "reading a lock", &req).await?;
    match (&m.code, m.data, m.cas) {
        (b"VA", Some(data), Some(cas)) => Ok(Some((data, cas))),
        (b"EN", _, _) => Ok(None),
        (code, _, _) => Err(unexpected(
            server,
            "reading a lock",
            &Meta {
                code: *code,
                cas: None,
                data: None,
                resent: false,
            },
        )),
    }
}

/// What became of a compare-and-… on our lock.
#[derive(Debug, PartialEq, Eq)]
enum Ours {
    /// Done while the lock was ours.
    Done,
    /// The lock is gone or belongs to another holder. `resent`: a request of ours went out
    /// twice (its first connection broke before the reply), so our own first send may be what
    /// removed it: a delete that landed, then answered "not found" the second time.
    Lost { resent: bool },
}

/// Sends `op(cas)` (an `ms … C<cas>` or `md … C<cas>`) for our lock; when the CAS value has
/// moved, reads the lock back and tries again with the new one if it still holds our token.
async fn while_ours(
    io: Io,
    server: &Server,
    what: &str,
    key: &str,
    token: &[u8],
    cas: &AtomicU64,
    op: impl Fn(&mut Vec<u8>, u64),
) -> Result<Ours> {
    let mut resent = false;
    for _ in 0..3 {
        let mut req = Vec::with_capacity(key.len() + token.len() + 40);
        op(&mut req, cas.load(Ordering::Acquire));
        let m = meta(io, server, what, &req).await?;
        resent |= m.resent;
        match &m.code {
            b"HD" => {
                if let Some(new) = m.cas {
                    cas.store(new, Ordering::Release);
                }
                return Ok(Ours::Done);
            }
            // This reply's own resend only: a lock found gone by a later single send (after a
            // read showed it ours) is lost, whatever happened to an earlier round.
            b"NF" => return Ok(Ours::Lost { resent: m.resent }),
            b"EX" => match read(io, server, key).await? {
                Some((value, fresh)) if value == token => cas.store(fresh, Ordering::Release),
                _ => return Ok(Ours::Lost { resent }),
            },
            _ => return Err(unexpected(server, what, &m)),
        }
    }
    Err(server.error(what, "the lock's CAS value keeps changing under its holder"))
}

/// A keeper's job on one lock.
#[derive(Clone, Copy)]
enum Job {
    /// Held: extend the expiry every period.
    Extend { last: Instant },
    /// Maybe ours but not held (a lost add, a handle dropped while holding): delete it when
    /// it holds our token, until `until`, when it would have expired by itself.
    Clean { until: Instant },
}

#[derive(Clone)]
struct Entry {
    key: String,
    token: Arc<[u8]>,
    cas: Arc<AtomicU64>,
    job: Job,
}

/// The locks of one backend that need work while nobody calls: extension of held locks, and
/// the deletion of locks whose add or release was lost. Its thread starts with the first job
/// and ends once the backend and every lock handle are dropped and no job is left.
pub(crate) struct Keeper {
    inner: Arc<Inner>,
    period: Duration,
    jobs: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    started: AtomicBool,
}

impl Keeper {
    pub(crate) fn new(inner: Arc<Inner>) -> Arc<Self> {
        let period = Duration::from_secs(u64::from(inner.lock_timeout)) / 3;
        Arc::new(Keeper {
            inner,
            period,
            jobs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            started: AtomicBool::new(false),
        })
    }

    fn set_job(self: &Arc<Self>, id: u64, lock: &MemcachedMutex, job: Job) {
        self.jobs.lock().insert(
            id,
            Entry {
                key: lock.key.clone(),
                token: lock.token.clone(),
                cas: lock.cas.clone(),
                job,
            },
        );
        if !self.started.swap(true, Ordering::AcqRel) {
            let keeper = Arc::downgrade(self);
            let tick = if self.period.is_zero() {
                MAX_TICK
            } else {
                (self.period / 2).min(MAX_TICK)
            };
            let spawned = std::thread::Builder::new()
                .name("dogpile-memcached-locks".to_owned())
                .spawn(move || keep(keeper, tick));
            if let Err(e) = spawned {
                self.started.store(false, Ordering::Release);
                tracing::warn!(error = %e, "cannot start the thread that keeps memcached locks; held locks expire after lock_timeout");
            }
        }
    }

    fn remove(&self, id: u64) {
        self.jobs.lock().remove(&id);
    }

    /// How long a lock of ours that nobody holds may still exist.
    fn clean_until(&self, since: Instant) -> Instant {
        let ttl = match self.inner.lock_timeout {
            0 => NO_EXPIRY_WATCH,
            s => Duration::from_secs(u64::from(s)),
        };
        since + ttl + self.inner.socket_timeout
    }

    /// One round over the jobs that are due.
    fn round(&self) {
        let now = Instant::now();
        let due: Vec<(u64, Entry)> = self
            .jobs
            .lock()
            .iter()
            .filter(|(_, e)| match e.job {
                Job::Extend { last } => now.duration_since(last) >= self.period,
                Job::Clean { .. } => true,
            })
            .map(|(id, e)| (*id, e.clone()))
            .collect();
        let mut failed_servers: Vec<usize> = Vec::new();
        for (id, e) in due {
            let s = self.inner.ring.index(&e.key);
            if failed_servers.contains(&s) {
                continue;
            }
            let server = &self.inner.servers[s];
            match e.job {
                Job::Extend { .. } => {
                    let ttl = self.inner.lock_timeout;
                    let done = block_on(while_ours(
                        Io::Blocking,
                        server,
                        "extending a lock",
                        &e.key,
                        &e.token,
                        &e.cas,
                        |req, cas| proto::meta_set(req, &e.key, &e.token, ttl, Some(cas)),
                    ));
                    let mut jobs = self.jobs.lock();
                    match done {
                        Ok(Ours::Done) => {
                            if let Some(Entry {
                                job: Job::Extend { last },
                                ..
                            }) = jobs.get_mut(&id)
                            {
                                *last = now;
                            }
                        }
                        Ok(Ours::Lost { .. }) => {
                            if matches!(
                                jobs.get(&id),
                                Some(Entry {
                                    job: Job::Extend { .. },
                                    ..
                                })
                            ) {
                                jobs.remove(&id);
                            }
                            tracing::warn!(lock = %e.key, "a held dogpile lock was lost (it expired, and may have been taken by another holder)");
                        }
                        Err(err) => {
                            failed_servers.push(s);
                            tracing::warn!(error = %err, lock = %e.key, "extending a held dogpile lock failed; trying again");
                        }
                    }
                }
                Job::Clean { until } => {
                    match block_on(delete_if_ours(Io::Blocking, server, &e.key, &e.token)) {
                        Ok(true) => {
                            tracing::debug!(lock = %e.key, "deleted a dogpile lock of ours that nobody held");
                        }
                        Ok(false) => {}
                        Err(err) => {
                            failed_servers.push(s);
                            tracing::debug!(error = %err, lock = %e.key, "deleting a lost dogpile lock failed; trying again");
                        }
                    }
                    if now >= until {
                        self.remove(id);
                    }
                }
            }
        }
    }
}

/// The keeper's thread. It holds the keeper only weakly while there is nothing to do, so it
/// ends soon after the backend and its lock handles are dropped; while jobs are left (a lost
/// lock to delete) it keeps the keeper alive until they are done.
fn keep(keeper: Weak<Keeper>, tick: Duration) {
    let mut busy: Option<Arc<Keeper>> = None;
    loop {
        std::thread::sleep(tick);
        let Some(keeper) = busy.take().or_else(|| keeper.upgrade()) else {
            return;
        };
        keeper.round();
        if !keeper.jobs.lock().is_empty() {
            busy = Some(keeper);
        }
    }
}

/// Deletes the lock if it holds `token`: `Ok(true)` when deleted (also when a delete sent twice
/// found it gone the second time: the first send deleted it).
async fn delete_if_ours(io: Io, server: &Server, key: &str, token: &[u8]) -> Result<bool> {
    let Some((value, cas)) = read(io, server, key).await? else {
        return Ok(false);
    };
    if value != token {
        return Ok(false);
    }
    let cas = AtomicU64::new(cas);
    Ok(
        match while_ours(
            io,
            server,
            "deleting a lock",
            key,
            token,
            &cas,
            |req, cas| proto::meta_delete(req, key, cas),
        )
        .await?
        {
            Ours::Done | Ours::Lost { resent: true } => true,
            Ours::Lost { resent: false } => false,
        },
    )
}

/// What a handle knows of its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not ours.
    Free,
    /// An add was sent and its answer is not known: maybe ours.
    Sent,
    /// Ours.
    Held,
}

struct Status {
    state: State,
    /// When an add of this handle first ended without an answer: it may land later.
    stray_since: Option<Instant>,
}

/// One key's distributed lock, as the memcached backend's `get_mutex` returns it.
pub(crate) struct MemcachedMutex {
    keeper: Arc<Keeper>,
    id: u64,
    key: String,
    token: Arc<[u8]>,
    cas: Arc<AtomicU64>,
    status: Mutex<Status>,
}

impl MemcachedMutex {
    pub(crate) fn new(keeper: &Arc<Keeper>, key: String) -> Self {
        MemcachedMutex {
            keeper: keeper.clone(),
            id: keeper.next_id.fetch_add(1, Ordering::Relaxed),
            key,
            token: new_token(),
            cas: Arc::new(AtomicU64::new(0)),
            status: Mutex::new(Status {
                state: State::Free,
                stray_since: None,
            }),
        }
    }

    fn server(&self) -> &Server {
        self.keeper.inner.server(&self.key)
    }

    fn set_state(&self, state: State) {
        self.status.lock().state = state;
    }

    fn taken(&self, cas: u64) {
        self.cas.store(cas, Ordering::Release);
        self.set_state(State::Held);
        if self.keeper.inner.lock_timeout > 0 {
            self.keeper.set_job(
                self.id,
                self,
                Job::Extend {
                    last: Instant::now(),
                },
            );
        } else {
            self.keeper.remove(self.id);
        }
    }

    /// Leaves the keeper the deletion of our lock, if it may exist without a holder.
    fn leave_to_keeper(&self) {
        let since = {
            let s = self.status.lock();
            match (s.state, s.stray_since) {
                (State::Free, None) => None,
                (State::Free, Some(t)) => Some(t),
                (_, t) => Some(t.unwrap_or_else(Instant::now)),
            }
        };
        match since {
            Some(t) => {
                let until = self.keeper.clean_until(t);
                self.keeper.set_job(self.id, self, Job::Clean { until });
            }
            None => self.keeper.remove(self.id),
        }
    }

    async fn acquire(&self, io: Io) -> Result<bool> {
        let (state, stray) = {
            let s = self.status.lock();
            (s.state, s.stray_since.is_some())
        };
        if state == State::Held {
            return Ok(true);
        }
        let server = self.server();
        if state == State::Sent {
            // An earlier add of ours ended without an answer: it may have stored our token.
            if let Some((value, cas)) = read(io, server, &self.key).await? {
                if *value == *self.token {
                    self.taken(cas);
                    return Ok(true);
                }
            }
        }
        self.set_state(State::Sent);
        let mut req = Vec::with_capacity(self.key.len() + self.token.len() + 32);
        proto::meta_set(
            &mut req,
            &self.key,
            &self.token,
            self.keeper.inner.lock_timeout,
            None,
        );
        let reply = match meta(io, server, "taking a lock", &req).await {
            Ok(m) => m,
            Err(e) => {
                self.status
                    .lock()
                    .stray_since
                    .get_or_insert_with(Instant::now);
                return Err(e);
            }
        };
        match (&reply.code, reply.cas) {
            (b"HD", Some(cas)) => {
                self.taken(cas);
                Ok(true)
            }
            (b"NS", _) => {
                if stray || reply.resent {
                    // Held: maybe by our own earlier add, landed since we looked, or by this
                    // very add, sent again after its first connection broke once the server
                    // had stored it (without this look, nobody would hold our lock and every
                    // waiter would wait for it to expire).
                    if let Some((value, cas)) = read(io, server, &self.key).await? {
                        if *value == *self.token {
                            self.taken(cas);
                            return Ok(true);
                        }
                    }
                }
                self.set_state(State::Free);
                Ok(false)
            }
            _ => Err(unexpected(server, "taking a lock", &reply)),
        }
    }

    async fn release_io(&self, io: Io) -> Result<()> {
        let state = self.status.lock().state;
        if state != State::Held {
            self.leave_to_keeper();
            return Err(Error::backend_msg(
                self.server().label.clone(),
                format!(
                    "releasing the lock {:?}: no acquire held for it (this handle {})",
                    self.key,
                    if state == State::Sent {
                        "sent an add whose answer was lost"
                    } else {
                        "does not hold it"
                    }
                ),
            ));
        }
        // No more extensions: one racing the delete would only find the lock gone. The state
        // stays Held until the server has answered, so a cancelled release still counts as
        // held, and the handle's drop hands the lock to the keeper.
        self.keeper.remove(self.id);
        let key = &self.key;
        let done = while_ours(
            io,
            self.server(),
            "releasing a lock",
            key,
            &self.token,
            &self.cas,
            |req, cas| proto::meta_delete(req, key, cas),
        )
        .await;
        match done {
            Ok(ours) => {
                match ours {
                    Ours::Done => {}
                    // The delete went out twice: its first send most likely deleted our lock
                    // and the second found nothing. Not a lost lock.
                    Ours::Lost { resent: true } => {
                        tracing::debug!(lock = %key, "a released dogpile lock was gone when its delete was sent again: the first send deleted it");
                    }
                    Ours::Lost { resent: false } => {
                        tracing::warn!(lock = %key, "a released dogpile lock was already lost (it expired, and may have been taken by another holder): left as it is");
                    }
                }
                self.set_state(State::Free);
                // An add of ours that was lost may still land: the keeper watches for it.
                self.leave_to_keeper();
                Ok(())
            }
            Err(e) => {
                self.set_state(State::Free);
                let mut s = self.status.lock();
                s.stray_since.get_or_insert_with(Instant::now);
                drop(s);
                self.leave_to_keeper();
                Err(e)
            }
        }
    }

    async fn locked_io(&self, io: Io) -> Result<bool> {
        let mut req = Vec::with_capacity(self.key.len() + 5);
        proto::meta_get(&mut req, &self.key, false);
        let server = self.server();
        let m = meta(io, server, "looking at a lock", &req).await?;
        match &m.code {
            b"HD" => Ok(true),
            b"EN" => Ok(false),
            _ => Err(unexpected(server, "looking at a lock", &m)),
        }
    }

    /// Returns once the lock key is gone, at `deadline`, or after a hundred looks (the caller
    /// looks at the value and calls again): 0.5 ms, then 1, 2, 2… ms between looks, so a waiter
    /// returns within about 2 ms of the release.
    async fn wait_io(&self, io: Io, deadline: Instant) -> Result<()> {
        let mut backoff = Backoff::up_to(MAX_PAUSE);
        for _ in 0..100 {
            if !self.locked_io(io).await? {
                return Ok(());
            }
            let Some(pause) = backoff.next_pause(deadline) else {
                return Ok(());
            };
            io.sleep(pause).await;
        }
        Ok(())
    }
}

impl CacheMutex for MemcachedMutex {
    fn try_acquire(&self) -> Result<bool> {
        block_on(self.acquire(Io::Blocking))
    }

    fn wait(&self, deadline: Instant) -> Result<()> {
        block_on(self.wait_io(Io::Blocking, deadline))
    }

    fn release(&self) -> Result<()> {
        block_on(self.release_io(Io::Blocking))
    }

    fn locked(&self) -> Result<bool> {
        block_on(self.locked_io(Io::Blocking))
    }

    fn try_acquire_async(self: Arc<Self>) -> BoxFuture<'static, Result<bool>> {
        Box::pin(async move { self.acquire(Io::Async).await })
    }

    fn wait_async(self: Arc<Self>, deadline: Instant) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { self.wait_io(Io::Async, deadline).await })
    }

    fn release_async(self: Arc<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { self.release_io(Io::Async).await })
    }
}

impl Drop for MemcachedMutex {
    /// A handle dropped while it holds the lock, or while an add of it may still land, leaves
    /// the deletion to the keeper's thread: a drop does no I/O (it may run on an executor).
    fn drop(&mut self) {
        self.leave_to_keeper();
    }
}

impl std::fmt::Debug for MemcachedMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedMutex")
            .field("key", &self.key)
            .field("state", &self.status.lock().state)
            .finish()
    }
}
