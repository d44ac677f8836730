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
//! The algorithm is written once, as async code; the blocking region methods drive it with a
//! blocking executor (their source never yields).

use std::fmt;

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

/// One key's value, lock and creator, as the lock algorithm sees them.
pub(crate) trait Source {
    type Value;
    type Error;

    /// Reads the value.
    async fn lookup(&mut self) -> Result<Lookup<Self::Value>, Self::Error>;

    /// Takes the key's lock if it is free; `true` when taken. The source keeps it until it has
    /// created (or handed creation off), or until it is dropped.
    async fn try_lock(&mut self) -> Result<bool, Self::Error>;

    /// Waits until the lock may have been released.
    async fn wait(&mut self) -> Result<(), Self::Error>;

    /// Releases the lock without creating (a fresh value appeared meanwhile).
    async fn unlock(&mut self);

    /// Runs the creator, stores its value and releases the lock. Called with the lock held.
    async fn create(&mut self) -> Result<Self::Value, Self::Error>;

    /// Hands the creator and the held lock to the async creation runner; `false` when there is
    /// none (then the caller creates).
    fn hand_off(&mut self) -> bool;
}

/// The dogpile lock's get-or-create, starting from a first `lookup` the caller already made.
pub(crate) async fn get_or_create<S: Source>(
    source: &mut S,
    first: Lookup<S::Value>,
) -> Result<(S::Value, Outcome), S::Error> {
    let mut seen = first;
    let mut waited = false;
    loop {
        match seen {
            Lookup::Fresh(v) if waited => return Ok((v, Outcome::Waited)),
            Lookup::Fresh(v) => return Ok((v, Outcome::Fresh)),
            Lookup::Stale(v) if waited => return Ok((v, Outcome::Waited)),
            Lookup::Stale(stale) => {
                if !source.try_lock().await? {
                    return Ok((stale, Outcome::Stale));
                }
                return match source.lookup().await? {
                    Lookup::Fresh(v) => {
                        source.unlock().await;
                        Ok((v, Outcome::Fresh))
                    }
                    Lookup::Stale(v) if source.hand_off() => Ok((v, Outcome::HandedOff)),
                    Lookup::Stale(_) | Lookup::Absent => {
                        Ok((source.create().await?, Outcome::Created))
                    }
                };
            }
            Lookup::Absent => {
                if source.try_lock().await? {
                    return match source.lookup().await? {
                        Lookup::Fresh(v) => {
                            source.unlock().await;
                            Ok((
                                v,
                                if waited {
                                    Outcome::Waited
                                } else {
                                    Outcome::Fresh
                                },
                            ))
                        }
                        Lookup::Stale(_) | Lookup::Absent => {
                            Ok((source.create().await?, Outcome::Created))
                        }
                    };
                }
                source.wait().await?;
                waited = true;
                seen = source.lookup().await?;
            }
        }
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
        async fn lookup(&mut self) -> Result<Lookup<u32>, String> {
            Ok(self.read())
        }
        async fn try_lock(&mut self) -> Result<bool, String> {
            self.held = self.mutex.try_acquire().unwrap();
            Ok(self.held)
        }
        async fn wait(&mut self) -> Result<(), String> {
            self.mutex
                .wait(std::time::Instant::now() + Duration::from_secs(3600))
                .unwrap();
            Ok(())
        }
        async fn unlock(&mut self) {
            self.held = false;
            self.mutex.release().unwrap();
        }
        async fn create(&mut self) -> Result<u32, String> {
            self.store.creations.fetch_add(1, Ordering::SeqCst);
            let v = (self.creator.take().unwrap())()?;
            *self.store.slot.lock() = Some((v, true));
            self.unlock().await;
            Ok(v)
        }
        fn hand_off(&mut self) -> bool {
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
        let first = f.read();
        pollster::block_on(get_or_create(f, first))
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
