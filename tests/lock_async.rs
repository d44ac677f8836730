//! Issue 11, case 2 in the core: no async path blocks an executor thread. 32 tasks on one cold
//! key, on a current-thread runtime and on a 2-worker one, on the memory backend and on a backend
//! whose lock has only blocking methods (so the `CacheMutex` async defaults are all it has).
//!
//! A hang is detected by a generous deadline on a helper thread, never by a tight wall-clock bound.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use dogpile::backend::PayloadKind;
use dogpile::testing::MapBackend;
use dogpile::{make_region, Backend, CacheMutex, CacheRegion, CachedValue, RegionConfig, Result};

mod support;
use support::within_hang_deadline;

use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// A backend whose lock only has blocking methods: the async defaults of `CacheMutex` are all an
// async caller gets.

#[derive(Default)]
struct CondvarLocks {
    held: Mutex<HashSet<String>>,
    released: Condvar,
}

struct CondvarMutex {
    key: String,
    locks: Arc<CondvarLocks>,
}

impl CacheMutex for CondvarMutex {
    fn try_acquire(&self) -> Result<bool> {
        Ok(self.locks.held.lock().unwrap().insert(self.key.clone()))
    }

    /// Blocks the calling thread until the lock is free or the deadline has passed: on an
    /// executor thread this would stop every task of that thread.
    fn wait(&self, deadline: Instant) -> Result<()> {
        let mut held = self.locks.held.lock().unwrap();
        while held.contains(&self.key) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            held = self.locks.released.wait_timeout(held, left).unwrap().0;
        }
        Ok(())
    }

    fn release(&self) -> Result<()> {
        self.locks.held.lock().unwrap().remove(&self.key);
        self.locks.released.notify_all();
        Ok(())
    }

    fn locked(&self) -> Result<bool> {
        Ok(self.locks.held.lock().unwrap().contains(&self.key))
    }
}

#[derive(Default)]
struct BlockingLockBackend {
    map: MapBackend,
    locks: Arc<CondvarLocks>,
}

impl Backend for BlockingLockBackend {
    fn name(&self) -> &str {
        "blocking-lock backend"
    }
    fn payload_kind(&self) -> PayloadKind {
        self.map.payload_kind()
    }
    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        self.map.get(key)
    }
    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        self.map.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.map.delete(key)
    }
    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        Some(Box::new(CondvarMutex {
            key: key.to_owned(),
            locks: self.locks.clone(),
        }))
    }
}

/// 32 tasks on one cold key with a slow async creator, on `runtime`: all get the one value, and
/// the creator runs once.
fn thirty_two_tasks_on_a_cold_key(region: CacheRegion, runtime: tokio::runtime::Runtime) {
    let region = Arc::new(region);
    let creations = Arc::new(AtomicUsize::new(0));
    let values = within_hang_deadline("32 tasks on a cold key", {
        let (region, creations) = (region.clone(), creations.clone());
        move || {
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..32)
                    .map(|i| {
                        let (region, creations) = (region.clone(), creations.clone());
                        tokio::spawn(async move {
                            region
                                .get_or_create_async("cold", || async move {
                                    creations.fetch_add(1, Ordering::SeqCst);
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                    i
                                })
                                .await
                        })
                    })
                    .collect();
                let mut values = Vec::new();
                for t in tasks {
                    values.push(t.await.unwrap().unwrap());
                }
                values
            })
        }
    });
    assert_eq!(creations.load(Ordering::SeqCst), 1, "one creator");
    assert!(values.windows(2).all(|w| w[0] == w[1]), "{values:?}");
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn memory() -> CacheRegion {
    make_region().configure("dogpile.cache.memory").unwrap()
}

fn blocking_lock() -> CacheRegion {
    make_region()
        .configure(RegionConfig::with_backend(BlockingLockBackend::default()))
        .unwrap()
}

#[test]
fn thirty_two_tasks_on_one_cold_key_memory_current_thread() {
    thirty_two_tasks_on_a_cold_key(memory(), current_thread());
}

#[test]
fn thirty_two_tasks_on_one_cold_key_memory_two_workers() {
    thirty_two_tasks_on_a_cold_key(memory(), two_workers());
}

#[test]
fn a_lock_with_only_blocking_methods_does_not_starve_a_current_thread_runtime() {
    thirty_two_tasks_on_a_cold_key(blocking_lock(), current_thread());
}

#[test]
fn a_lock_with_only_blocking_methods_does_not_starve_two_workers() {
    thirty_two_tasks_on_a_cold_key(blocking_lock(), two_workers());
}
