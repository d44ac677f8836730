//! The dogpile lock: when a value is missing or expired, one caller creates it.
//!
//! This module is the algorithm alone, independent of storage: a `Source` says what the cache
//! holds for one key, takes and waits on that key's lock, and creates the value.
//!
//! | value in cache | expired or soft-invalidated | lock | no runner | runner |
//! |---|---|---|---|---|
//! | present | no | any | return it | return it |
//! | present | yes | taken by us | create, store, return new | hand creator + lock to runner, return stale |
//! | present | yes | held elsewhere | return stale, do not wait | return stale, do not wait |
//! | absent or hard-invalidated | – | any | wait, look again, create if still absent | same |
//!
//! After taking the lock the source is read once more: another caller may have finished creating
//! between the first read and the lock. A caller that waited returns whatever value it then finds,
//! fresh or not: it waited for a creation, and the creation has happened.
//!
//! One algorithm serves one key and a batch (`get_or_create_multi`): a call's keys are tried in
//! one lock order, and a caller never blocks while it holds a lock (see `get_or_create`).
//!
//! The algorithm is written once, as async code; the blocking region methods drive it with a
//! blocking executor (their source never yields).

use std::fmt;
use std::future::Future;
use std::task::{Context, Poll, Waker};

use smallvec::SmallVec;

/// Runs the creation of a new value for a stale key away from the caller, who gets the stale
/// value at once: a background thread, a thread pool, a task queue.
///
/// The runner receives an [`AsyncCreation`] that owns the key's lock; running it creates the
/// value, stores it and releases the lock. A creation that is dropped without running releases
/// the lock too. The runner is never used for a key with no value: those callers wait.
///
/// The runner needs a creator it can move to another thread (`Send + 'static`), so it is used by
/// [`CacheRegion::get_or_create_in_background`](crate::CacheRegion::get_or_create_in_background)
/// and by functions with `#[cache_on_arguments(background = true)]`; `get_or_create`, whose
/// creator may borrow from the caller, creates on the caller's thread.
///
/// ```
/// use dogpile_core::AsyncCreation;
///
/// // dogpile's example runner: a new thread per creation.
/// let runner = |creation: AsyncCreation| {
///     std::thread::spawn(move || creation.run());
/// };
/// # let _ = runner;
/// ```
pub trait AsyncCreationRunner: Send + Sync + 'static {
    /// Starts `creation` somewhere; it must eventually be run or dropped.
    fn run(&self, creation: AsyncCreation);
}

impl<F: Fn(AsyncCreation) + Send + Sync + 'static> AsyncCreationRunner for F {
    fn run(&self, creation: AsyncCreation) {
        self(creation)
    }
}

/// One pending creation: the key, the creator and the held lock, bundled.
pub struct AsyncCreation {
    key: String,
    job: Box<dyn FnOnce() + Send>,
}

impl AsyncCreation {
    pub(crate) fn new(key: String, job: Box<dyn FnOnce() + Send>) -> Self {
        AsyncCreation { key, job }
    }

    /// The key (before mangling) whose value is being created.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Creates the value, stores it and releases the lock.
    pub fn run(self) {
        (self.job)()
    }
}

impl fmt::Debug for AsyncCreation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncCreation")
            .field("key", &self.key)
            .finish()
    }
}

/// Locks found gone, in this process (see [`lock_lost`]).
static LOCKS_LOST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Reports a lost lock: a backend's [`CacheMutex`](crate::CacheMutex) calls this when extending
/// or releasing a lock finds it gone (expired, or taken by another holder), so that another
/// caller may be creating the same value. Logged as a `warn` event and counted in
/// [`Stats::locks_lost`](crate::Stats::locks_lost), process-wide.
///
/// `backend` names the backend (and server), `key` the lock's key.
///
/// ```
/// dogpile_core::lock::lock_lost("dogpile.cache.redis 127.0.0.1:6379", "_lock:users:1");
/// assert!(dogpile_core::lock::locks_lost() >= 1);
/// ```
pub fn lock_lost(backend: &str, key: &str) {
    LOCKS_LOST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(
        backend,
        key,
        "a held dogpile lock was found gone: another caller may be creating the same value"
    );
}

/// How many locks were reported lost in this process (see [`lock_lost`]).
pub fn locks_lost() -> u64 {
    LOCKS_LOST.load(std::sync::atomic::Ordering::Relaxed)
}

/// The prefix of a distributed lock's key, as Python dogpile names the locks of its Redis and
/// memcached backends: the lock of `users:1` is `_lockusers:1`.
pub const DEFAULT_LOCK_PREFIX: &str = "_lock";

/// The key of the distributed lock of `key` under `prefix` (see [`DEFAULT_LOCK_PREFIX`]): the
/// same text a Python dogpile service locks, so the two share one lock per key.
///
/// ```
/// use dogpile_core::lock::{lock_key, DEFAULT_LOCK_PREFIX};
/// assert_eq!(lock_key(DEFAULT_LOCK_PREFIX, "users:1"), "_lockusers:1");
/// ```
pub fn lock_key(prefix: &str, key: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + key.len());
    k.push_str(prefix);
    k.push_str(key);
    k
}

/// A token unique to one distributed lock handle, in this process and across processes: the
/// process id, a per-process counter and the time. Not secret, only distinct between holders;
/// Redis and memcached store it as the lock's value and release only a lock holding it.
///
/// ```
/// let (a, b) = (dogpile_core::lock::new_token(), dogpile_core::lock::new_token());
/// assert_ne!(a, b);
/// ```
pub fn new_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Values or reads, one per key of a call: inline for the one key of the usual call, so a
/// one-key call allocates no list.
pub(crate) type PerKey<V> = SmallVec<[V; 1]>;

/// Drives a future on this thread. A blocking source never yields, so its run finishes at the
/// first poll, with a waker that does nothing (`pollster` makes a thread-shared signal and a
/// waker for every call); anything that does yield is finished by `pollster`.
#[inline]
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => pollster::block_on(fut),
    }
}

/// What the cache holds for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup<V> {
    /// A value that is neither expired nor invalidated.
    Fresh(V),
    /// A value that is expired or soft-invalidated: served while one caller makes a new one.
    Stale(V),
    /// No value, a hard-invalidated one, or one that does not decode.
    Absent,
}

impl<V> Lookup<V> {
    /// The value if it is fresh: what a plain read returns.
    pub(crate) fn fresh(self) -> Option<V> {
        match self {
            Lookup::Fresh(v) => Some(v),
            Lookup::Stale(_) | Lookup::Absent => None,
        }
    }
}

/// How a get-or-create call ended, for statistics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A fresh value was found (after the lock was taken: another caller had just made it).
    Fresh,
    /// A stale value was returned while another caller creates.
    Stale,
    /// This caller waited for another's creation and returns its value.
    Waited,
    /// This caller ran the creator.
    Created,
    /// The stale value was returned and the creation handed to the async runner.
    HandedOff,
}

/// One key of a get-or-create call, as the lock algorithm tracks it.
pub(crate) struct KeyState<V> {
    /// What the last read found; taken when acted on.
    seen: Lookup<V>,
    /// Whether this caller has waited on this key: it then takes whatever value it finds.
    waited: bool,
    /// Whether this caller holds the key's lock.
    held: bool,
    /// The key's value and how it was had, once known.
    done: Option<(V, Outcome)>,
}

impl<V> KeyState<V> {
    /// A key whose first read found `seen`.
    pub(crate) fn new(seen: Lookup<V>) -> Self {
        KeyState {
            seen,
            waited: false,
            held: false,
            done: None,
        }
    }

    /// The key's value and outcome; `None` only if the algorithm has not finished.
    pub(crate) fn into_done(self) -> Option<(V, Outcome)> {
        self.done
    }

    /// Whether the key has no value yet: after a failed creation, the keys it was to make.
    pub(crate) fn is_open(&self) -> bool {
        self.done.is_none()
    }

    fn finish(&mut self, value: V, outcome: Outcome) {
        self.held = false;
        self.done = Some((value, outcome));
    }

    /// A value found under the lock or after a wait: this caller's creation was not needed.
    fn found(&mut self, value: V) {
        let outcome = if self.waited {
            Outcome::Waited
        } else {
            Outcome::Fresh
        };
        self.finish(value, outcome);
    }
}

/// The keys of one get-or-create call (one key, or a batch), as the lock algorithm sees them:
/// keys are indices into the call's list, which is in lock order with no duplicates.
pub(crate) trait Source {
    type Value;
    type Error;

    /// Reads the values of `keys`, in that order.
    async fn lookup(&mut self, keys: &[usize]) -> Result<PerKey<Lookup<Self::Value>>, Self::Error>;

    /// Takes `key`'s lock if it is free; `true` when taken. The source keeps it until it has
    /// created (or handed creation off), until `unlock`, or until it is dropped. `stale`: the
    /// caller has a stale value to return if the lock is held (it will not wait).
    async fn try_lock(&mut self, key: usize, stale: bool) -> Result<bool, Self::Error>;

    /// Waits until `key`'s lock may have been released. Called with no lock held. An error
    /// past the call's bound on waiting.
    async fn wait(&mut self, key: usize) -> Result<(), Self::Error>;

    /// Releases `key`'s lock without creating.
    async fn unlock(&mut self, key: usize);

    /// Runs the creator for `keys` (whose locks are held), stores the values and releases the
    /// locks; the values come back in the order of `keys`.
    async fn create(&mut self, keys: &[usize]) -> Result<PerKey<Self::Value>, Self::Error>;

    /// Hands the creator of `key` and its held lock to the async creation runner; `false` when
    /// there is none (then the caller creates).
    fn hand_off(&mut self, key: usize) -> bool;
}

/// The dogpile lock's get-or-create over every key of one call, starting from the first reads
/// the caller already made (in `keys`); on success every key has its value.
///
/// One algorithm for one key and for a batch. It never blocks while holding a lock: it tries
/// every key in lock order, and on the first held key with no value to serve it releases every
/// lock it holds, waits on that key alone, reads the open keys again and starts over. So a
/// caller holding a lock while it waits is only ever a creator asking for another key (a nested
/// get-or-create), and no batch can close a cycle with it.
pub(crate) async fn get_or_create<S: Source>(
    source: &mut S,
    keys: &mut [KeyState<S::Value>],
) -> Result<(), S::Error> {
    loop {
        // Take what can be had without waiting; stop at the first key that needs a wait.
        let mut blocked = None;
        for (i, k) in keys.iter_mut().enumerate() {
            if !k.is_open() || k.held {
                continue;
            }
            match std::mem::replace(&mut k.seen, Lookup::Absent) {
                Lookup::Fresh(v) => k.found(v),
                // It waited for a creation, and the creation has happened.
                Lookup::Stale(v) if k.waited => k.finish(v, Outcome::Waited),
                Lookup::Stale(v) => {
                    if source.try_lock(i, true).await? {
                        k.held = true;
                    } else {
                        k.finish(v, Outcome::Stale);
                    }
                }
                Lookup::Absent => {
                    if source.try_lock(i, false).await? {
                        k.held = true;
                    } else {
                        blocked = Some(i);
                        break;
                    }
                }
            }
        }

        if let Some(b) = blocked {
            for (i, k) in keys.iter_mut().enumerate() {
                if k.held {
                    k.held = false;
                    source.unlock(i).await;
                }
            }
            source.wait(b).await?;
            keys[b].waited = true;
            let open: PerKey<usize> = (0..keys.len()).filter(|&i| keys[i].is_open()).collect();
            for (i, seen) in open.iter().zip(source.lookup(&open).await?) {
                keys[*i].seen = seen;
            }
            continue;
        }

        // Every open key is held: read them once more, as another caller may have created some
        // between the first read and the lock.
        let mut held = PerKey::<usize>::new();
        for (i, k) in keys.iter().enumerate() {
            if k.held {
                held.push(i);
            }
        }
        if held.is_empty() {
            return Ok(());
        }
        let mut to_create = PerKey::<usize>::new();
        for (&i, found) in held.iter().zip(source.lookup(&held).await?) {
            match found {
                Lookup::Fresh(v) => {
                    source.unlock(i).await;
                    keys[i].found(v);
                }
                Lookup::Stale(v) if source.hand_off(i) => keys[i].finish(v, Outcome::HandedOff),
                Lookup::Stale(_) | Lookup::Absent => to_create.push(i),
            }
        }
        if !to_create.is_empty() {
            let values = source.create(&to_create).await?;
            for (&i, v) in to_create.iter().zip(values) {
                keys[i].finish(v, Outcome::Created);
            }
        }
        return Ok(());
    }
}

#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutex::{CacheMutex, LocalLocks, LocalMutex};
    use parking_lot::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// A shared value slot: (value, fresh?).
    #[derive(Default)]
    struct Store {
        slot: Mutex<Option<(u32, bool)>>,
        creations: AtomicUsize,
        handed_off: AtomicUsize,
    }

    struct Fake {
        store: Arc<Store>,
        mutex: LocalMutex,
        held: bool,
        runner: bool,
        creator: Option<Box<dyn FnOnce() -> Result<u32, String> + Send>>,
    }

    impl Fake {
        fn new(store: &Arc<Store>, locks: &Arc<LocalLocks>, value: u32) -> Self {
            Fake {
                store: store.clone(),
                mutex: locks.mutex("k"),
                held: false,
                runner: false,
                creator: Some(Box::new(move || Ok(value))),
            }
        }
        fn read(&self) -> Lookup<u32> {
            match *self.store.slot.lock() {
                Some((v, true)) => Lookup::Fresh(v),
                Some((v, false)) => Lookup::Stale(v),
                None => Lookup::Absent,
            }
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            if self.held {
                self.mutex.release().unwrap();
            }
        }
    }

    impl Source for Fake {
        type Value = u32;
        type Error = String;
        async fn lookup(&mut self, keys: &[usize]) -> Result<PerKey<Lookup<u32>>, String> {
            Ok(keys.iter().map(|_| self.read()).collect())
        }
        async fn try_lock(&mut self, _: usize, _: bool) -> Result<bool, String> {
            self.held = self.mutex.try_acquire().unwrap();
            Ok(self.held)
        }
        async fn wait(&mut self, _: usize) -> Result<(), String> {
            self.mutex
                .wait(std::time::Instant::now() + Duration::from_secs(3600))
                .unwrap();
            Ok(())
        }
        async fn unlock(&mut self, _: usize) {
            self.held = false;
            self.mutex.release().unwrap();
        }
        async fn create(&mut self, keys: &[usize]) -> Result<PerKey<u32>, String> {
            assert_eq!(keys, [0]);
            self.store.creations.fetch_add(1, Ordering::SeqCst);
            let v = (self.creator.take().unwrap())()?;
            *self.store.slot.lock() = Some((v, true));
            self.unlock(0).await;
            Ok(smallvec::smallvec![v])
        }
        fn hand_off(&mut self, _: usize) -> bool {
            if self.runner {
                self.store.handed_off.fetch_add(1, Ordering::SeqCst);
            }
            self.runner
        }
    }

    fn run(f: &mut Fake) -> Result<u32, String> {
        run_outcome(f).map(|(v, _)| v)
    }

    fn run_outcome(f: &mut Fake) -> Result<(u32, Outcome), String> {
        let mut keys = [KeyState::new(f.read())];
        block_on(get_or_create(f, &mut keys))?;
        let [key] = keys;
        Ok(key.into_done().expect("the key has its value"))
    }

    #[test]
    fn block_on_finishes_a_future_that_yields() {
        // The blocking path's driver polls once with a waker that does nothing; a future that
        // yields all the same is finished by `pollster`, not dropped or spun on.
        let mut polls = 0;
        let fut = std::future::poll_fn(|cx| {
            polls += 1;
            if polls > 1 {
                return Poll::Ready(7);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        assert_eq!(block_on(fut), 7);
        assert_eq!(polls, 2);
    }

    #[test]
    fn fresh_value_is_returned_without_creating() {
        let store = Arc::new(Store::default());
        *store.slot.lock() = Some((1, true));
        let locks = Arc::new(LocalLocks::new());
        assert_eq!(
            run_outcome(&mut Fake::new(&store, &locks, 2)),
            Ok((1, Outcome::Fresh))
        );
        assert_eq!(store.creations.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn stale_value_with_the_lock_is_recreated() {
        let store = Arc::new(Store::default());
        *store.slot.lock() = Some((1, false));
        let locks = Arc::new(LocalLocks::new());
        assert_eq!(
            run_outcome(&mut Fake::new(&store, &locks, 2)),
            Ok((2, Outcome::Created))
        );
        assert_eq!(store.creations.load(Ordering::SeqCst), 1);
        assert!(!locks.is_locked("k"));
    }

    #[test]
    fn stale_value_with_a_runner_is_handed_off_and_stale_returned() {
        let store = Arc::new(Store::default());
        *store.slot.lock() = Some((1, false));
        let locks = Arc::new(LocalLocks::new());
        let mut f = Fake::new(&store, &locks, 2);
        f.runner = true;
        assert_eq!(run_outcome(&mut f), Ok((1, Outcome::HandedOff)));
        assert_eq!(store.handed_off.load(Ordering::SeqCst), 1);
        assert_eq!(store.creations.load(Ordering::SeqCst), 0);
        // The runner owns the lock now (here: the fake still holds it until dropped).
        assert!(locks.is_locked("k"));
        drop(f);
        assert!(!locks.is_locked("k"));
    }

    #[test]
    fn stale_value_with_the_lock_held_elsewhere_is_returned_at_once() {
        let store = Arc::new(Store::default());
        *store.slot.lock() = Some((1, false));
        let locks = Arc::new(LocalLocks::new());
        let other = locks.mutex("k");
        assert!(other.try_acquire().unwrap());
        assert_eq!(
            run_outcome(&mut Fake::new(&store, &locks, 2)),
            Ok((1, Outcome::Stale))
        );
        assert_eq!(store.creations.load(Ordering::SeqCst), 0);
        other.release().unwrap();
    }

    #[test]
    fn absent_value_waits_for_the_creator_then_returns_its_value() {
        let store = Arc::new(Store::default());
        let locks = Arc::new(LocalLocks::new());
        let other = locks.mutex("k");
        assert!(other.try_acquire().unwrap());
        let waiter = {
            let (store, locks) = (store.clone(), locks.clone());
            std::thread::spawn(move || run_outcome(&mut Fake::new(&store, &locks, 99)))
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !waiter.is_finished(),
            "a waiter must block while the lock is held"
        );
        *store.slot.lock() = Some((7, true));
        other.release().unwrap();
        assert_eq!(waiter.join().unwrap(), Ok((7, Outcome::Waited)));
        assert_eq!(store.creations.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn absent_value_is_created_once_by_many_callers() {
        let store = Arc::new(Store::default());
        let locks = Arc::new(LocalLocks::new());
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (store, locks) = (store.clone(), locks.clone());
                std::thread::spawn(move || {
                    let mut f = Fake::new(&store, &locks, 100 + i);
                    f.creator = Some(Box::new(move || {
                        std::thread::sleep(Duration::from_millis(20));
                        Ok(100 + i)
                    }));
                    run(&mut f)
                })
            })
            .collect();
        let values: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(store.creations.load(Ordering::SeqCst), 1);
        assert!(values.windows(2).all(|w| w[0] == w[1]), "{values:?}");
    }

    #[test]
    fn a_failing_creator_releases_the_lock_and_a_waiter_creates() {
        let store = Arc::new(Store::default());
        let locks = Arc::new(LocalLocks::new());
        let mut failing = Fake::new(&store, &locks, 0);
        failing.creator = Some(Box::new(|| Err("boom".to_string())));
        assert_eq!(run(&mut failing), Err("boom".to_string()));
        drop(failing);
        assert!(!locks.is_locked("k"));
        assert_eq!(run(&mut Fake::new(&store, &locks, 5)), Ok(5));
    }

    #[test]
    fn a_panicking_creator_releases_the_lock() {
        let store = Arc::new(Store::default());
        let locks = Arc::new(LocalLocks::new());
        let r = {
            let (store, locks) = (store.clone(), locks.clone());
            std::thread::spawn(move || {
                let mut f = Fake::new(&store, &locks, 0);
                f.creator = Some(Box::new(|| panic!("creator panicked")));
                run(&mut f)
            })
            .join()
        };
        assert!(r.is_err(), "the panic reaches its own caller");
        assert!(!locks.is_locked("k"));
        assert_eq!(run(&mut Fake::new(&store, &locks, 6)), Ok(6));
    }
}
