//! The dogpile lock's mutex: the [`CacheMutex`] trait, and the in-process per-key mutexes.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use event_listener::{Event, Listener};
use parking_lot::Mutex;

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

    /// Blocks until the lock may have been released. It may return early (a distributed lock
    /// polls): the caller looks at the value again and, if there is still none, tries again.
    fn wait(&self) -> Result<()>;

    /// Releases the lock taken by `try_acquire`.
    fn release(&self) -> Result<()>;

    /// Whether somebody holds the lock.
    fn locked(&self) -> Result<bool>;

    /// [`try_acquire`](CacheMutex::try_acquire) for async callers; the default blocks.
    fn try_acquire_async(&self) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move { self.try_acquire() })
    }

    /// [`wait`](CacheMutex::wait) for async callers; the default blocks the calling thread.
    fn wait_async(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.wait() })
    }
}

/// A held [`CacheMutex`], released when dropped (also when a creator panics).
pub struct LockGuard {
    mutex: Box<dyn CacheMutex>,
}

impl LockGuard {
    /// Wraps a mutex that the caller has just taken.
    pub fn new(mutex: Box<dyn CacheMutex>) -> Self {
        LockGuard { mutex }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Err(e) = self.mutex.release() {
            tracing::warn!(error = %e, "releasing a dogpile lock failed; it expires by itself");
        }
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

/// One key's lock state.
#[derive(Default)]
struct KeyLock {
    held: AtomicBool,
    released: Event,
}

const SHARDS: usize = 16;

type Shard = Mutex<HashMap<Box<str>, Arc<KeyLock>>>;

/// The registry of in-process per-key mutexes.
///
/// An entry exists while somebody holds or waits on its key, and vanishes with the last handle,
/// so the registry does not grow with the number of keys ever created.
pub(crate) struct LocalLocks {
    shards: [Shard; SHARDS],
}

impl LocalLocks {
    pub(crate) fn new() -> Self {
        LocalLocks {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    fn shard(&self, key: &str) -> usize {
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() as usize) % SHARDS
    }

    /// A handle on `key`'s mutex, creating its entry if needed.
    pub(crate) fn mutex(self: &Arc<Self>, key: &str) -> LocalMutex {
        let shard = self.shard(key);
        let lock = self.shards[shard]
            .lock()
            .entry(Box::from(key))
            .or_default()
            .clone();
        LocalMutex {
            registry: self.clone(),
            shard,
            key: Box::from(key),
            lock: Some(lock),
        }
    }

    /// Whether `key` is locked, without creating an entry.
    pub(crate) fn is_locked(&self, key: &str) -> bool {
        self.shards[self.shard(key)]
            .lock()
            .get(key)
            .is_some_and(|l| l.held.load(Ordering::Acquire))
    }

    /// How many keys have an entry: for tests of the registry's bound.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// A handle on one key's in-process mutex.
pub(crate) struct LocalMutex {
    registry: Arc<LocalLocks>,
    shard: usize,
    key: Box<str>,
    /// `None` only inside `drop`, which lets go of it under the shard's lock.
    lock: Option<Arc<KeyLock>>,
}

impl LocalMutex {
    fn lock(&self) -> &KeyLock {
        self.lock.as_deref().expect("a live handle has its lock")
    }

    fn listen_until_free(&self) -> Option<event_listener::EventListener> {
        let lock = self.lock();
        if !lock.held.load(Ordering::Acquire) {
            return None;
        }
        let listener = lock.released.listen();
        // Look again after registering, or a release in between would be missed.
        if !lock.held.load(Ordering::Acquire) {
            return None;
        }
        Some(listener)
    }
}

impl CacheMutex for LocalMutex {
    fn try_acquire(&self) -> Result<bool> {
        Ok(self
            .lock()
            .held
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok())
    }

    fn wait(&self) -> Result<()> {
        while let Some(l) = self.listen_until_free() {
            l.wait();
        }
        Ok(())
    }

    fn release(&self) -> Result<()> {
        let lock = self.lock();
        lock.held.store(false, Ordering::Release);
        // Wake every waiter: they look at the value, which is there now, and need no lock.
        lock.released.notify(usize::MAX);
        Ok(())
    }

    fn locked(&self) -> Result<bool> {
        Ok(self.lock().held.load(Ordering::Acquire))
    }

    fn wait_async(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            while let Some(l) = self.listen_until_free() {
                l.await;
            }
            Ok(())
        })
    }
}

impl Drop for LocalMutex {
    fn drop(&mut self) {
        let mut map = self.registry.shards[self.shard].lock();
        let Some(lock) = self.lock.take() else {
            return;
        };
        // Handles take and let go of their reference only under this shard's lock, so the count
        // is exact here: the map's reference and ours mean nobody else holds or waits on the
        // key. Ours goes before the shard unlocks, or the next handle's drop could still count
        // it and leave the entry behind.
        if Arc::strong_count(&lock) == 2 {
            map.remove(&self.key);
        }
        drop(lock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn waiters_wake_on_release() {
        let locks = Arc::new(LocalLocks::new());
        let holder = locks.mutex("k");
        assert!(holder.try_acquire().unwrap());
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let m = locks.mutex("k");
                std::thread::spawn(move || {
                    m.wait().unwrap();
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
        // than cores: a drop must never miss that it is the last (which left the entry behind
        // for good). Before the fix, a drop counted the handles under the shard's lock but let
        // go of its own after unlocking, so two last drops could each see the other's.
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
