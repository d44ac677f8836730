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
use support::{wait_for, within};

use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// A backend whose lock only has blocking methods: the async defaults of `CacheMutex` are all an
// async caller gets.

#[derive(Default)]
struct CondvarLocks {
    held: Mutex<HashSet<String>>,
    released: Condvar,
    /// The thread of each `release` call, in order.
    release_threads: Mutex<Vec<std::thread::ThreadId>>,
    /// `try_acquire` takes 300 ms (a slow round trip) before it takes the lock.
    slow_acquire: std::sync::atomic::AtomicBool,
    /// `try_acquire` calls started.
    acquiring: AtomicUsize,
    /// `try_acquire` calls finished.
    acquires: AtomicUsize,
}

struct CondvarMutex {
    key: String,
    locks: Arc<CondvarLocks>,
}

impl CacheMutex for CondvarMutex {
    fn try_acquire(&self) -> Result<bool> {
        self.locks.acquiring.fetch_add(1, Ordering::SeqCst);
        if self.locks.slow_acquire.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(300));
        }
        let taken = self.locks.held.lock().unwrap().insert(self.key.clone());
        self.locks.acquires.fetch_add(1, Ordering::SeqCst);
        Ok(taken)
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

    /// A distributed lock's release is a round trip, which a frozen server makes last until
    /// its timeout: on an executor thread it would stop every task of that thread.
    fn release(&self) -> Result<()> {
        self.locks
            .release_threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
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
    /// The thread of each read and write, in order (a backend that does I/O).
    io_threads: Mutex<Vec<std::thread::ThreadId>>,
}

impl BlockingLockBackend {
    fn record_io(&self) {
        self.io_threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
    }
}

impl Backend for BlockingLockBackend {
    fn name(&self) -> &str {
        "blocking-lock backend"
    }
    fn payload_kind(&self) -> PayloadKind {
        self.map.payload_kind()
    }
    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        self.record_io();
        self.map.get(key)
    }
    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        self.record_io();
        self.map.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.record_io();
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
    let values = within("32 tasks on a cold key", {
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
    blocking_lock_with_backend().1
}

/// A region on a [`BlockingLockBackend`], and the backend, to look at its locks and threads.
fn blocking_lock_with_backend() -> (Arc<BlockingLockBackend>, CacheRegion) {
    let backend = Arc::new(BlockingLockBackend::default());
    let region = make_region()
        .configure(RegionConfig::with_backend(backend.clone()))
        .unwrap();
    (backend, region)
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

/// A creation that fails, and a call dropped while its creator is pending (a timeout, a
/// cancelled task), leave their lock through the guard's drop instead of the call's async
/// release: with a lock whose release blocks (a round trip), that release runs off the
/// executor's thread, and it still runs.
#[test]
fn a_failed_or_dropped_async_creation_releases_its_lock_off_the_executor_thread() {
    let (backend, region) = blocking_lock_with_backend();
    let runtime = current_thread();
    let executor = std::thread::current().id();
    let failed = runtime.block_on(region.try_get_or_create_async(
        "failing",
        &dogpile::CreateOptions::new(),
        || async { Err::<u8, _>("no database") },
    ));
    assert!(failed.is_err());
    let locks = &backend.locks;
    runtime.block_on(async {
        let call = region.get_or_create_async("dropped", std::future::pending::<u8>);
        // Dropped once it holds its lock (its creator never finishes).
        poll_until(call, || locks.held.lock().unwrap().contains("dropped")).await;
    });
    wait_for("both locks released", || {
        locks.held.lock().unwrap().is_empty()
    });
    let threads = locks.release_threads.lock().unwrap().clone();
    assert_eq!(threads.len(), 2, "one release per lock: {threads:?}");
    assert!(
        threads.iter().all(|t| *t != executor),
        "a lock was released on the executor's thread: {threads:?} (executor {executor:?})"
    );
}

/// A call dropped while the default async `try_acquire` runs on the pool (a timeout shorter
/// than the lock's round trip) must not leave the lock that `try_acquire` then takes for
/// nobody: every later caller of the key would wait for it to its bound, for good.
#[test]
fn a_call_dropped_while_its_lock_is_being_taken_leaves_no_lock() {
    let (backend, region) = blocking_lock_with_backend();
    backend.locks.slow_acquire.store(true, Ordering::SeqCst);
    let locks = &backend.locks;
    current_thread().block_on(async {
        let call = region.get_or_create_async("k", || async { 1u8 });
        // Dropped once its try_acquire runs on the pool (for 300 ms), as a timeout would.
        poll_until(call, || locks.acquiring.load(Ordering::SeqCst) == 1).await;
    });
    wait_for("the dropped call's try_acquire to finish", || {
        locks.acquires.load(Ordering::SeqCst) == 1
    });
    wait_for("the lock taken for the dropped call released", || {
        !locks.held.lock().unwrap().contains("k")
    });
    backend.locks.slow_acquire.store(false, Ordering::SeqCst);
    let v = within("a call after the dropped one", move || {
        current_thread().block_on(region.get_or_create_async("k", || async { 2u8 }))
    });
    assert_eq!(v.unwrap(), 2);
}

/// A proxy that passes everything through.
struct PassThrough;
impl dogpile::ProxyBackend for PassThrough {}

/// Async calls through a proxy over a backend that does I/O reach the backend off the
/// executor's thread: a proxy has blocking methods only, and on the executor's thread a round
/// trip (to its timeout, with a frozen server) would stop every task of that thread.
#[test]
fn async_calls_through_a_proxy_do_their_io_off_the_executor_thread() {
    let backend = Arc::new(BlockingLockBackend::default());
    let region = make_region()
        .configure(RegionConfig::with_backend(backend.clone()).wrap(PassThrough))
        .unwrap();
    let executor = std::thread::current().id();
    current_thread().block_on(async {
        assert_eq!(
            region
                .get_or_create_async("k", || async { 5u8 })
                .await
                .unwrap(),
            5
        );
        assert_eq!(region.get_async::<u8>("k").await.unwrap(), Some(5));
        region.delete_async("k").await.unwrap();
    });
    let threads = backend.io_threads.lock().unwrap().clone();
    assert!(
        threads.len() >= 4,
        "reads, the store and the delete: {threads:?}"
    );
    assert!(
        threads.iter().all(|t| *t != executor),
        "the proxied backend was called on the executor's thread: {threads:?}"
    );
}

/// Polls `call` until `cond` holds, then drops it unfinished (as a timeout or a cancelled task
/// would). Panics if the call finishes first.
async fn poll_until<F: std::future::Future>(call: F, cond: impl Fn() -> bool) {
    let mut call = std::pin::pin!(call);
    while !cond() {
        let polled = tokio::time::timeout(Duration::from_millis(1), &mut call).await;
        assert!(polled.is_err(), "the call finished before it was dropped");
    }
}
