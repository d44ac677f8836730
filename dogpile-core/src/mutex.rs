//! The dogpile lock's mutex: the [`CacheMutex`] trait, and the in-process per-key mutexes.

use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use event_listener::{Event, Listener};
use hashbrown::HashTable;
use smallvec::SmallVec;

use crate::backend::BoxFuture;
use crate::error::Result;

/// A lock on one key, held by the one caller that creates its value.
///
/// The region uses an in-process mutex per key unless the backend gives a distributed one
/// ([`Backend::get_mutex`](crate::Backend::get_mutex)). A lock taken by one thread may be released
/// by another: the async creation runner releases it when it has stored the new value.
pub trait CacheMutex: Send + Sync + 'static {
    /// Takes the lock if nobody holds it; `Ok(true)` when taken.
    fn try_acquire(&self) -> Result<bool>;

    /// Blocks until the lock may have been released, or until `deadline`, whichever comes first.
    ///
    /// It may return early (a distributed lock polls): the caller looks at the value again and,
    /// if there is still none, tries again or gives up once its own bound has passed. It must not
    /// block much past `deadline`: that is what keeps every wait of the region bounded.
    fn wait(&self, deadline: Instant) -> Result<()>;

    /// Releases the lock taken by `try_acquire`.
    ///
    /// Releasing a lock this handle does not hold must never free another holder's lock (it
    /// is an error, or does nothing): a release can come twice when an async release was dropped
    /// midway (see [`release_async`](CacheMutex::release_async)).
    fn release(&self) -> Result<()>;

    /// Whether somebody holds the lock.
    fn locked(&self) -> Result<bool>;

    /// [`try_acquire`](CacheMutex::try_acquire) for async callers.
    ///
    /// The default runs `try_acquire` on the `blocking` crate's thread pool, so an executor
    /// thread never blocks on it, whatever the runtime; a mutex with an async client overrides
    /// it. The methods take an `Arc` so that the default can hand the mutex to that pool.
    ///
    /// Dropped before it is done (a cancelled task, a timeout), the future may leave a
    /// `try_acquire` running that then takes the lock for nobody: the default releases a lock
    /// taken so (on the pool, not on the dropping thread). An override must do the same, or
    /// every later caller of the key waits for a lock nobody will release.
    fn try_acquire_async(self: Arc<Self>) -> BoxFuture<'static, Result<bool>> {
        Box::pin(async move {
            let taken = blocking::unblock(move || {
                let taken = self.try_acquire()?;
                Ok::<_, crate::Error>(Unclaimed(taken.then_some(self)))
            })
            .await?;
            Ok(taken.claim())
        })
    }

    /// [`wait`](CacheMutex::wait) for async callers: done by `deadline` at the latest. The
    /// default runs `wait` on the `blocking` crate's thread pool (see
    /// [`try_acquire_async`](CacheMutex::try_acquire_async)).
    fn wait_async(self: Arc<Self>, deadline: Instant) -> BoxFuture<'static, Result<()>> {
        Box::pin(blocking::unblock(move || self.wait(deadline)))
    }

    /// [`release`](CacheMutex::release) for async callers. If the future is dropped before it is
    /// done, the lock must still count as held, so that a later `release` releases it.
    ///
    /// The default runs `release` on the `blocking` crate's thread pool. Dropped midway, that
    /// release may already be running; the [`LockGuard`] then releases again, which the
    /// contract of `release` makes harmless.
    fn release_async(self: Arc<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(blocking::unblock(move || self.release()))
    }
}

/// A lock taken on the `blocking` pool for an async caller, released unless that caller
/// claims it: when the caller's future was dropped while `try_acquire` ran, the pool drops
/// this unclaimed, and nobody else would ever release the lock.
struct Unclaimed<M: CacheMutex + ?Sized>(Option<Arc<M>>);

impl<M: CacheMutex + ?Sized> Unclaimed<M> {
    /// Whether the lock was taken; it is the caller's to release from now on.
    fn claim(mut self) -> bool {
        self.0.take().is_some()
    }
}

impl<M: CacheMutex + ?Sized> Drop for Unclaimed<M> {
    fn drop(&mut self) {
        if let Some(mutex) = self.0.take() {
            release_on_pool(mutex);
        }
    }
}

/// Releases `mutex` on the `blocking` crate's thread pool, to its end whoever waits (the task is
/// detached): for a drop that may run on an executor's thread, where a distributed lock's
/// release (a round trip) must not block.
fn release_on_pool<M: CacheMutex + ?Sized>(mutex: Arc<M>) {
    blocking::unblock(move || released(mutex.release())).detach();
}

/// One key's mutex as a get-or-create call holds it: the in-process one by value (a handle on
/// the registry's entry, no allocation of its own), or a backend's distributed one.
pub(crate) enum KeyMutex {
    Local(LocalMutex),
    Backend(Arc<dyn CacheMutex>),
}

impl KeyMutex {
    /// [`CacheMutex::try_acquire`].
    pub(crate) fn try_acquire(&self) -> Result<bool> {
        match self {
            KeyMutex::Local(m) => m.try_acquire(),
            KeyMutex::Backend(m) => m.try_acquire(),
        }
    }

    /// [`CacheMutex::try_acquire_async`]: the in-process lock answers at once.
    pub(crate) async fn try_acquire_async(&self) -> Result<bool> {
        match self {
            KeyMutex::Local(m) => m.try_acquire(),
            KeyMutex::Backend(m) => m.clone().try_acquire_async().await,
        }
    }

    /// [`CacheMutex::wait`].
    pub(crate) fn wait(&self, deadline: Instant) -> Result<()> {
        match self {
            KeyMutex::Local(m) => m.wait(deadline),
            KeyMutex::Backend(m) => m.wait(deadline),
        }
    }

    /// [`CacheMutex::wait_async`].
    pub(crate) async fn wait_async(&self, deadline: Instant) -> Result<()> {
        match self {
            KeyMutex::Local(m) => m.wait_until(deadline).await,
            KeyMutex::Backend(m) => m.clone().wait_async(deadline).await,
        }
    }

    fn release(&self) -> Result<()> {
        match self {
            KeyMutex::Local(m) => m.release(),
            KeyMutex::Backend(m) => m.release(),
        }
    }
}

/// A held [`CacheMutex`], released when dropped (also when a creator panics), or by
/// [`release_async`](LockGuard::release_async).
///
/// A guard dropped on the blocking path releases on the dropping thread. One of an async
/// caller (the region's async calls, a guard whose `release_async` was started) that is dropped
/// unreleased, because its creation failed, panicked or was cancelled, hands a backend's
/// release to the `blocking` crate's thread pool instead: a distributed lock's release is a
/// round trip, which must not stall the executor's thread (a frozen server holds it until
/// its timeout). The in-process lock is released at once either way: that never blocks.
pub struct LockGuard {
    /// `None` once released.
    mutex: Option<KeyMutex>,
    /// Dropped unreleased, release a backend's lock on the `blocking` pool, not on this thread.
    off_thread: bool,
}

impl LockGuard {
    /// Wraps a mutex that the caller has just taken.
    pub fn new(mutex: Box<dyn CacheMutex>) -> Self {
        Self::shared(mutex.into())
    }

    /// Wraps a shared mutex that the caller has just taken.
    pub fn shared(mutex: Arc<dyn CacheMutex>) -> Self {
        Self::held(KeyMutex::Backend(mutex))
    }

    /// Wraps a key's mutex that the caller has just taken.
    pub(crate) fn held(mutex: KeyMutex) -> Self {
        LockGuard {
            mutex: Some(mutex),
            off_thread: false,
        }
    }

    /// Wraps a key's mutex that an async caller has just taken: dropped unreleased, it is
    /// released off the dropping thread.
    pub(crate) fn held_async(mutex: KeyMutex) -> Self {
        LockGuard {
            mutex: Some(mutex),
            off_thread: true,
        }
    }

    /// Releases the lock through the mutex's async path, so an async caller does not block its
    /// thread on the release (one round trip for a distributed lock). If this future is dropped
    /// before the release is done, the guard's `Drop` releases the lock again, on the
    /// `blocking` crate's thread pool (the contract of [`CacheMutex::release`] makes a second
    /// release harmless).
    ///
    /// ```
    /// use dogpile_core::{CacheMutex, LockGuard, Result};
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Instant;
    ///
    /// #[derive(Default)]
    /// struct Flag(AtomicBool);
    /// impl CacheMutex for Flag {
    ///     fn try_acquire(&self) -> Result<bool> { Ok(!self.0.swap(true, Ordering::AcqRel)) }
    ///     fn wait(&self, _: Instant) -> Result<()> { Ok(()) }
    ///     fn release(&self) -> Result<()> { self.0.store(false, Ordering::Release); Ok(()) }
    ///     fn locked(&self) -> Result<bool> { Ok(self.0.load(Ordering::Acquire)) }
    /// }
    ///
    /// let lock = Arc::new(Flag::default());
    /// assert!(lock.try_acquire().unwrap());
    /// let guard = LockGuard::shared(lock.clone());
    /// pollster::block_on(guard.release_async());
    /// assert!(!lock.locked().unwrap());
    /// ```
    pub async fn release_async(mut self) {
        // Dropped midway (a cancelled task), the guard must not block the executor either.
        self.off_thread = true;
        match &self.mutex {
            // Releasing an in-process lock never blocks.
            Some(KeyMutex::Local(m)) => released(m.release()),
            Some(KeyMutex::Backend(m)) => released(m.clone().release_async().await),
            None => {}
        }
        // Released: `Drop` has nothing left to do.
        self.mutex = None;
    }
}

/// Logs a failed release: the lock then expires by itself.
fn released(result: Result<()>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "releasing a dogpile lock failed; it expires by itself");
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        match self.mutex.take() {
            None => {}
            Some(KeyMutex::Backend(m)) if self.off_thread => release_on_pool(m),
            Some(mutex) => released(mutex.release()),
        }
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

/// One key's lock state, shared by every handle on the key.
///
/// Owned by its registry entry and freed when the entry is removed, which happens under the
/// shard's lock when the last handle goes: a handle may therefore read it without a reference
/// count on the entry (its count is a plain number under the shard's lock; the handle's one
/// atomic count is the registry's `Arc`).
struct KeyLock {
    /// The key, held in the entry itself up to [`INLINE_KEY`] bytes: the registry's one
    /// allocation per miss is the entry.
    key: SmallVec<[u8; INLINE_KEY]>,
    /// [`HELD`] and [`LISTENED`]. One word for both, so that a release and a waiter's
    /// registration are ordered by that word alone (see [`LocalMutex::listen_until_free`]).
    state: AtomicU8,
    /// Made only when a caller waits: an uncontended release looks at `state` and never
    /// touches it (`event_listener` allocates its list at the first `notify` or `listen`).
    released: Event,
}

/// `KeyLock::state`: somebody holds the lock.
const HELD: u8 = 1;
/// `KeyLock::state`: a waiter may be registered, so the release must notify. A waiter sets it
/// after registering its listener; one that then finds the lock already free leaves it set, and
/// the next release notifies nobody (harmless).
const LISTENED: u8 = 2;

impl KeyLock {
    /// Takes the lock if it is free; `true` when taken.
    fn take(&self) -> bool {
        self.state.fetch_or(HELD, Ordering::Acquire) & HELD == 0
    }

    /// Whether somebody holds the lock.
    fn held(&self) -> bool {
        self.state.load(Ordering::Acquire) & HELD != 0
    }
}

// The entry's and the handles' `Send`/`Sync` impls below rest on this.
const _: fn() = || {
    fn shared_between_threads<T: Send + Sync>() {}
    shared_between_threads::<KeyLock>();
};

/// How long a key the registry's entry holds without an allocation of its own: the keys of
/// decorated functions (`module::path:function|argument`) mostly fit.
const INLINE_KEY: usize = 64;

/// The registry of in-process per-key mutexes.
///
/// An entry exists while somebody holds or waits on its key, and goes with the last handle, so
/// the registry does not grow with the number of keys ever created.
///
/// The map is split into [`SHARDS`] hash tables, each behind its own lock, chosen by the key's
/// hash. Every miss makes an entry and removes it again, and that round trip is what a shard
/// costs least at: one hash of the key, an uncontended lock taken twice (to make the entry, to
/// remove it), and one allocation (the entry, which holds its key); a lock-free map spent a node
/// allocation, the key's own, a hash per operation and an epoch reclamation of every removed
/// entry. A shard is held only to find, count, insert or remove an entry, never across a wait; the
/// probe of a crowd on a stale value ([`is_locked`](LocalLocks::is_locked)) takes it shared, so
/// the crowd's callers never queue behind one another.
///
/// Why one key never has two live entries, and why a handle's entry is never freed under it: an
/// entry's handle count is read and written only under its shard's lock, a new entry for a key
/// is inserted only where there is none, and the entry is removed (and freed) in the same
/// critical section in which its count reaches zero. So every live handle on a key shares one
/// `KeyLock`, which outlives them all.
pub(crate) struct LocalLocks {
    hasher: foldhash::fast::RandomState,
    shards: Box<[Shard]>,
}

/// How many shards a registry has: enough that callers on different keys rarely meet on one.
const SHARDS: usize = 32;

/// One shard of the registry: its entries, found by the hash the entry keeps. On a cache line of
/// its own, so that two shards' locks do not share one.
#[repr(align(128))]
#[derive(Default)]
struct Shard(parking_lot::RwLock<HashTable<Entry>>);

/// A registry entry: its key's lock state (owned), and how many handles are out on it.
struct Entry {
    /// The key's hash, so that growing the table or finding the entry again reads no `KeyLock`.
    hash: u64,
    /// Owned by the entry: made by `Box::new`, freed by the drop of the last handle, after it
    /// has removed the entry.
    lock: NonNull<KeyLock>,
    /// Handles out on `lock`; at least one while the entry is in the table.
    handles: usize,
}

// SAFETY: `lock` points to a `KeyLock` owned by the entry (`Send + Sync`: atomics, bytes and an
// `Event`); the entry is reached only under its shard's lock.
unsafe impl Send for Entry {}
unsafe impl Sync for Entry {}

impl Entry {
    fn key(&self) -> &[u8] {
        // SAFETY: the `KeyLock` lives as long as the entry (see `Entry::lock`).
        unsafe { self.lock.as_ref() }.key.as_slice()
    }
}

impl LocalLocks {
    pub(crate) fn new() -> Self {
        LocalLocks {
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    /// The shard of a key of hash `hash`. The table inside finds its slot by the low bits and
    /// tells entries apart by the top seven, so the shard is chosen by bits in between.
    fn shard(&self, hash: u64) -> &parking_lot::RwLock<HashTable<Entry>> {
        &self.shards[(hash >> 32) as usize % SHARDS].0
    }

    /// A handle on `key`'s mutex, creating its entry if needed.
    pub(crate) fn mutex(self: &Arc<Self>, key: &str) -> LocalMutex {
        self.handle(key, false).0
    }

    /// A handle on `key`'s mutex, and whether this call took the lock: `mutex` and
    /// `try_acquire` in one, so that the entry of an uncontended miss is made held and the lock
    /// costs no atomic step of its own.
    pub(crate) fn lock(self: &Arc<Self>, key: &str) -> (LocalMutex, bool) {
        self.handle(key, true)
    }

    fn handle(self: &Arc<Self>, key: &str, take: bool) -> (LocalMutex, bool) {
        let hash = self.hasher.hash_one(key);
        let (lock, fresh) = {
            let mut table = self.shard(hash).write();
            match table.find_mut(hash, |e| e.key() == key.as_bytes()) {
                Some(entry) => {
                    entry.handles += 1;
                    (entry.lock, false)
                }
                None => {
                    let lock = NonNull::from(Box::leak(Box::new(KeyLock {
                        key: SmallVec::from_slice(key.as_bytes()),
                        state: AtomicU8::new(if take { HELD } else { 0 }),
                        released: Event::new(),
                    })));
                    let entry = Entry {
                        hash,
                        lock,
                        handles: 1,
                    };
                    table.insert_unique(hash, entry, |e| e.hash);
                    (lock, true)
                }
            }
        };
        let handle = LocalMutex {
            registry: self.clone(),
            hash,
            lock,
            holds: AtomicBool::new(false),
        };
        let taken = match (take, fresh) {
            (false, _) => false,
            // Made held, under the shard's lock: nobody else has seen it yet.
            (true, true) => true,
            (true, false) => handle.key_lock().take(),
        };
        handle.holds.store(taken, Ordering::Relaxed);
        (handle, taken)
    }

    /// Whether `key` is locked, without creating an entry.
    pub(crate) fn is_locked(&self, key: &str) -> bool {
        let hash = self.hasher.hash_one(key);
        self.shard(hash)
            .read()
            .find(hash, |e| e.key() == key.as_bytes())
            // SAFETY: the entry, and so its `KeyLock`, is alive under the shard's lock.
            .is_some_and(|e| unsafe { e.lock.as_ref() }.held())
    }

    /// How many keys have an entry: for tests of the registry's bound.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }
}

/// A handle on one key's in-process mutex.
pub(crate) struct LocalMutex {
    registry: Arc<LocalLocks>,
    /// The key's hash, to find the entry again when the handle goes.
    hash: u64,
    /// The entry's lock state: alive while this handle is (it counts in the entry's handles).
    lock: NonNull<KeyLock>,
    /// Whether this handle took the lock and has not released it: a release by a handle that
    /// does not hold the lock must leave another holder's lock alone (the contract of
    /// [`CacheMutex::release`]).
    ///
    /// Relaxed loads and stores (plain moves, no locked instruction on the miss), which is
    /// enough because a handle has one user at a time: it lives only in a call's
    /// `KeyMutex::Local` and then its `LockGuard`, moves between threads only through a spawn,
    /// an executor or the creation runner (which order the move), and is released
    /// synchronously, also by `release_async`. Nothing enforces that beyond this crate's own
    /// use (the type is `Sync` for the call's futures); two threads releasing one handle at once
    /// could both see `true`.
    holds: AtomicBool,
}

// SAFETY: a handle reads its `KeyLock` (`Sync`) through `lock`, which stays valid until the
// handle's drop (see `LocalLocks`); everything else is an `Arc` and a number.
unsafe impl Send for LocalMutex {}
unsafe impl Sync for LocalMutex {}

impl LocalMutex {
    fn key_lock(&self) -> &KeyLock {
        // SAFETY: the entry counts this handle, so it and its `KeyLock` are alive until the
        // handle's drop removes them.
        unsafe { self.lock.as_ref() }
    }

    /// A listener for the next release, or `None` when the lock is free.
    ///
    /// No release can be missed: the waiter marks [`LISTENED`] after registering its listener,
    /// and the release clears the state with one swap. Both are read-modify-writes of one word,
    /// so one comes first: either the swap sees the mark (and notifies, which finds the
    /// listener registered before the mark), or the mark sees the lock released and the waiter
    /// does not wait.
    fn listen_until_free(&self) -> Option<event_listener::EventListener> {
        let lock = self.key_lock();
        if !lock.held() {
            return None;
        }
        let listener = lock.released.listen();
        if lock.state.fetch_or(LISTENED, Ordering::AcqRel) & HELD == 0 {
            return None;
        }
        Some(listener)
    }
}

impl CacheMutex for LocalMutex {
    fn try_acquire(&self) -> Result<bool> {
        let taken = self.key_lock().take();
        if taken {
            self.holds.store(true, Ordering::Relaxed);
        }
        Ok(taken)
    }

    fn wait(&self, deadline: Instant) -> Result<()> {
        while let Some(l) = self.listen_until_free() {
            if l.wait_deadline(deadline).is_none() {
                break;
            }
        }
        Ok(())
    }

    fn release(&self) -> Result<()> {
        // Another handle's lock, or this handle's released already (one release after
        // another): nothing to do.
        if !self.holds.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.holds.store(false, Ordering::Relaxed);
        let lock = self.key_lock();
        // Wake every waiter: they look at the value, which is there now, and need no lock. With
        // nobody waiting, the release is this one swap.
        if lock.state.swap(0, Ordering::AcqRel) & LISTENED != 0 {
            lock.released.notify(usize::MAX);
        }
        Ok(())
    }

    fn locked(&self) -> Result<bool> {
        Ok(self.key_lock().held())
    }

    // Taking and releasing an in-process lock never blocks: no pool needed.
    fn try_acquire_async(self: Arc<Self>) -> BoxFuture<'static, Result<bool>> {
        Box::pin(std::future::ready(self.try_acquire()))
    }

    fn release_async(self: Arc<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(std::future::ready(self.release()))
    }

    fn wait_async(self: Arc<Self>, deadline: Instant) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { self.wait_until(deadline).await })
    }
}

impl LocalMutex {
    /// [`CacheMutex::wait_async`] on a borrowed handle.
    async fn wait_until(&self, deadline: Instant) -> Result<()> {
        // One timer for the whole wait, made only if the lock is held at all.
        let mut timer = None;
        while let Some(listener) = self.listen_until_free() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let timer = timer.get_or_insert_with(|| futures_timer::Delay::new(left));
            if !released_before(listener, timer).await {
                break;
            }
        }
        Ok(())
    }
}

/// Waits for `listener` or `timer`, whichever fires first: `true` for the listener. The timer is
/// runtime-agnostic (`futures-timer` keeps one helper thread for every timer in the process), so
/// an async wait honours its deadline on any executor without blocking a thread of it.
async fn released_before(
    mut listener: event_listener::EventListener,
    timer: &mut futures_timer::Delay,
) -> bool {
    std::future::poll_fn(|cx| {
        if Pin::new(&mut listener).poll(cx).is_ready() {
            return Poll::Ready(true);
        }
        if Pin::new(&mut *timer).poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await
}

impl Drop for LocalMutex {
    fn drop(&mut self) {
        let mut table = self.registry.shard(self.hash).write();
        let Ok(mut entry) = table.find_entry(self.hash, |e| e.lock == self.lock) else {
            // Unreachable: an entry leaves its table only with its last handle.
            debug_assert!(false, "a live handle's registry entry was gone");
            return;
        };
        if entry.get().handles > 1 {
            entry.get_mut().handles -= 1;
            return;
        }
        let (gone, _) = entry.remove();
        drop(table);
        // SAFETY: made by `Box::leak` in `LocalLocks::handle`; this was its last handle, and the
        // entry that owned it is out of the table, so nothing else can reach it.
        drop(unsafe { Box::from_raw(gone.lock.as_ptr()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn one_holder_at_a_time_and_release_from_another_thread() {
        let locks = Arc::new(LocalLocks::new());
        let a = locks.mutex("k");
        let b = locks.mutex("k");
        assert!(a.try_acquire().unwrap());
        assert!(!b.try_acquire().unwrap());
        assert!(locks.is_locked("k"));
        std::thread::spawn(move || a.release().unwrap())
            .join()
            .unwrap();
        assert!(b.try_acquire().unwrap());
        b.release().unwrap();
    }

    #[test]
    fn a_release_by_a_handle_that_does_not_hold_the_lock_leaves_it_held() {
        let locks = Arc::new(LocalLocks::new());
        let (holder, taken) = locks.lock("k");
        assert!(taken);
        let other = locks.mutex("k");
        assert!(!other.try_acquire().unwrap());
        other.release().unwrap();
        assert!(
            locks.is_locked("k"),
            "another handle's release freed the lock"
        );
        assert!(!other.try_acquire().unwrap(), "two holders");
        // Released twice by the handle that took it, one release after the other: the second
        // must not free a lock somebody took in between.
        holder.release().unwrap();
        assert!(other.try_acquire().unwrap());
        holder.release().unwrap();
        assert!(
            locks.is_locked("k"),
            "a second release freed the next holder's lock"
        );
        other.release().unwrap();
        assert!(!locks.is_locked("k"));
    }

    #[test]
    fn lock_takes_a_new_entry_held_and_an_existing_one_only_when_free() {
        let locks = Arc::new(LocalLocks::new());
        let (first, taken) = locks.lock("k");
        assert!(taken, "a new entry is made held");
        assert!(locks.is_locked("k") && first.locked().unwrap());
        let (second, taken) = locks.lock("k");
        assert!(!taken, "the lock was taken twice");
        let waiter = locks.mutex("k");
        let woke = std::thread::spawn(move || {
            // A generous deadline: a waiter that missed the release would sleep until it.
            let started = Instant::now();
            waiter.wait(started + Duration::from_secs(60)).unwrap();
            (waiter.locked().unwrap(), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(20));
        first.release().unwrap();
        let (locked, waited) = woke.join().unwrap();
        assert!(!locked, "the waiter woke to a held lock");
        assert!(
            waited < Duration::from_secs(30),
            "the waiter missed the release"
        );
        let (third, taken) = locks.lock("k");
        assert!(taken, "a released lock was not taken");
        assert!(!second.try_acquire().unwrap());
        third.release().unwrap();
        drop((first, second, third));
        assert_eq!(locks.len(), 0, "the entry outlived its handles");
    }

    #[test]
    fn waiters_racing_a_release_never_sleep_through_it() {
        // Round after round, a holder releases while three waiters are registering: a waiter
        // whose mark and the release's swap crossed the wrong way would sleep to its deadline.
        let locks = Arc::new(LocalLocks::new());
        for round in 0..500 {
            let (holder, taken) = locks.lock("k");
            assert!(taken);
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let (m, barrier) = (locks.mutex("k"), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let started = Instant::now();
                        m.wait(started + Duration::from_secs(60)).unwrap();
                        started.elapsed()
                    })
                })
                .collect();
            barrier.wait();
            holder.release().unwrap();
            for w in waiters {
                let waited = w.join().unwrap();
                assert!(
                    waited < Duration::from_secs(30),
                    "round {round}: a waiter missed the release"
                );
            }
            drop(holder);
            assert_eq!(
                locks.len(),
                0,
                "round {round}: the entry outlived its handles"
            );
        }
    }

    #[test]
    fn keys_share_a_lock_only_with_themselves_whatever_their_length_or_shard() {
        let locks = Arc::new(LocalLocks::new());
        // Keys below, at and past the inline size, two that differ only past it, and enough
        // of them that many share a shard (32 shards).
        let long = "x".repeat(INLINE_KEY + 40);
        let mut keys = vec![
            String::new(),
            "k".to_owned(),
            "y".repeat(INLINE_KEY),
            format!("{long}a"),
            format!("{long}b"),
        ];
        keys.extend((0..200).map(|n| format!("module::path:f|{n}")));
        let held: Vec<LocalMutex> = keys.iter().map(|k| locks.mutex(k)).collect();
        for (m, k) in held.iter().zip(&keys) {
            assert!(
                m.try_acquire().unwrap(),
                "{k:?} was taken by another key's lock"
            );
        }
        assert_eq!(locks.len(), keys.len());
        for k in &keys {
            assert!(locks.is_locked(k));
            assert!(
                !locks.mutex(k).try_acquire().unwrap(),
                "a second handle on {k:?} found its lock free"
            );
        }
        assert!(!locks.is_locked(&format!("{long}c")));
        for m in &held {
            m.release().unwrap();
        }
        drop(held);
        assert_eq!(locks.len(), 0, "entries outlived their handles");
    }

    #[test]
    fn waiters_wake_on_release() {
        let locks = Arc::new(LocalLocks::new());
        let holder = locks.mutex("k");
        assert!(holder.try_acquire().unwrap());
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let m = locks.mutex("k");
                std::thread::spawn(move || {
                    m.wait(far()).unwrap();
                    m.locked().unwrap()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        holder.release().unwrap();
        for w in waiters {
            assert!(!w.join().unwrap());
        }
    }

    #[test]
    fn entries_vanish_when_the_last_handles_drop_at_once() {
        // Many handles on one key dropped at the same moment, round after round, more threads
        // than cores: a drop must never miss that it is the last, which would leave the entry
        // behind for good. (An earlier registry did: it counted handles under a shard lock but
        // let go of its own after unlocking, so two last drops could each see the other's.)
        const THREADS: usize = 16;
        let locks = Arc::new(LocalLocks::new());
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (locks, barrier) = (locks.clone(), barrier.clone());
                std::thread::spawn(move || {
                    for round in 0..2_000 {
                        let handle = locks.mutex("k");
                        barrier.wait();
                        drop(handle);
                        barrier.wait();
                        if t == 0 {
                            assert_eq!(
                                locks.len(),
                                0,
                                "round {round}: an entry outlived its handles"
                            );
                        }
                        barrier.wait();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn one_holder_at_a_time_while_entries_come_and_go() {
        // Handles are taken and dropped all the time, so the key's entry dies and is made again
        // over and over; two live entries for one key would let two callers hold the lock.
        let locks = Arc::new(LocalLocks::new());
        let holders = Arc::new(AtomicUsize::new(0));
        let acquired = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (locks, holders, acquired) = (locks.clone(), holders.clone(), acquired.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let m = locks.mutex("k");
                        if m.try_acquire().unwrap() {
                            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                            acquired.fetch_add(1, Ordering::Relaxed);
                            std::hint::spin_loop();
                            holders.fetch_sub(1, Ordering::SeqCst);
                            m.release().unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(acquired.load(Ordering::Relaxed) > 0);
        assert_eq!(locks.len(), 0);
        assert!(!locks.is_locked("k"));
    }

    #[test]
    fn an_async_release_dropped_midway_releases_on_the_blocking_pool() {
        use std::future::Future;
        use std::task::{Context, Waker};

        /// A lock whose async release never finishes; counts blocking releases, and notes
        /// whether one ran on the test's own thread.
        struct Stuck(Arc<AtomicUsize>, std::thread::ThreadId, Arc<AtomicBool>);
        impl CacheMutex for Stuck {
            fn try_acquire(&self) -> Result<bool> {
                Ok(true)
            }
            fn wait(&self, _deadline: Instant) -> Result<()> {
                Ok(())
            }
            fn release(&self) -> Result<()> {
                if std::thread::current().id() == self.1 {
                    self.2.store(true, Ordering::SeqCst);
                }
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            fn locked(&self) -> Result<bool> {
                Ok(true)
            }
            fn release_async(self: Arc<Self>) -> BoxFuture<'static, Result<()>> {
                Box::pin(std::future::pending())
            }
        }

        let releases = Arc::new(AtomicUsize::new(0));
        let on_this_thread = Arc::new(AtomicBool::new(false));
        let guard = LockGuard::new(Box::new(Stuck(
            releases.clone(),
            std::thread::current().id(),
            on_this_thread.clone(),
        )));
        let mut release = Box::pin(guard.release_async());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(release.as_mut().poll(&mut cx).is_pending());
        assert_eq!(releases.load(Ordering::SeqCst), 0);
        // The caller gives up (a timeout, a dropped request): the lock is still released, once,
        // on the blocking pool (a release may be a round trip: not on an executor's thread).
        drop(release);
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        while releases.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the dropped release never ran");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(releases.load(Ordering::SeqCst), 1);
        assert!(
            !on_this_thread.load(Ordering::SeqCst),
            "released on the dropping thread"
        );

        // A release that finishes releases.
        let local = Arc::new(LocalLocks::new());
        let m = local.mutex("k");
        assert!(m.try_acquire().unwrap());
        let guard = LockGuard::new(Box::new(m));
        let mut release = Box::pin(guard.release_async());
        assert!(release.as_mut().poll(&mut cx).is_ready());
        drop(release);
        assert!(!local.is_locked("k"));
    }

    #[test]
    fn entries_vanish_when_unused() {
        let locks = Arc::new(LocalLocks::new());
        for i in 0..1000 {
            let m = locks.mutex(&format!("key{i}"));
            assert!(m.try_acquire().unwrap());
            m.release().unwrap();
        }
        assert_eq!(locks.len(), 0);
        let held = locks.mutex("held");
        let waiting = locks.mutex("held");
        assert!(held.try_acquire().unwrap());
        assert_eq!(locks.len(), 1);
        drop(waiting);
        assert_eq!(locks.len(), 1);
        held.release().unwrap();
        drop(held);
        assert_eq!(locks.len(), 0);
        assert!(!locks.is_locked("held"));
    }
}
