//! The dogpile lock under the `loom` model checker: every interleaving (within a preemption
//! bound) of 2 or 3 threads calling [`get_or_create`] on one key.
//!
//! Checked: one creator per key; callers that waited see the created value; a failing creator
//! hands over to a waiter; no lost wake-up (loom fails a run where every thread is blocked).
//!
//! The per-key mutex is the in-process one of `mutex.rs` (`LocalMutex`: an atomic flag and an
//! `event_listener::Event`), re-stated here over loom's atomics and the loom-aware build of
//! `event-listener`, with the same orderings and the same listen-then-look-again wait; the
//! registry around it (a `papaya` map) is modelled separately, at the end: its entry for one key. The
//! algorithm itself is the real one, driven by a poll-once executor (the source never yields).
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p dogpile-core --release --lib loom
//! ```
//!
//! `LOOM_MAX_PREEMPTIONS` bounds the search (default here: 8 for two threads, 3 for three).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use event_listener::{Event, Listener};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use super::{get_or_create, Lookup, Source};

/// One key's lock: `LocalMutex`'s state and algorithm.
#[derive(Default)]
struct KeyLock {
    held: AtomicBool,
    released: Event,
}

impl KeyLock {
    fn try_acquire(&self) -> bool {
        self.held
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn listen_until_free(&self) -> Option<event_listener::EventListener> {
        if !self.held.load(Ordering::Acquire) {
            return None;
        }
        let listener = self.released.listen();
        if !self.held.load(Ordering::Acquire) {
            return None;
        }
        Some(listener)
    }

    fn wait(&self) {
        while let Some(l) = self.listen_until_free() {
            l.wait();
        }
    }

    fn release(&self) {
        self.held.store(false, Ordering::Release);
        self.released.notify(usize::MAX);
    }
}

/// The cache for one key: the value and whether it is fresh, the lock, and counters.
#[derive(Default)]
struct Shared {
    slot: Mutex<Option<(u32, bool)>>,
    lock: KeyLock,
    creations: AtomicUsize,
    failures: AtomicUsize,
}

/// One caller's view, as the region's source is: it remembers whether it holds the lock and
/// releases it when dropped (a failing or panicking creator).
struct Caller {
    shared: Arc<Shared>,
    held: bool,
    /// `Err` makes the creator fail.
    creator: Option<Result<u32, &'static str>>,
}

impl Caller {
    fn new(shared: &Arc<Shared>, creator: Result<u32, &'static str>) -> Self {
        Caller {
            shared: shared.clone(),
            held: false,
            creator: Some(creator),
        }
    }

    fn read(&self) -> Lookup<u32> {
        match *self.shared.slot.lock().unwrap() {
            Some((v, true)) => Lookup::Fresh(v),
            Some((v, false)) => Lookup::Stale(v),
            None => Lookup::Absent,
        }
    }

    /// The region's call: a first lookup, then the algorithm.
    fn get_or_create(&mut self) -> Result<u32, &'static str> {
        let first = self.read();
        poll_once(get_or_create(self, first)).map(|(value, _)| value)
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        if self.held {
            self.held = false;
            self.shared.lock.release();
        }
    }
}

impl Source for Caller {
    type Value = u32;
    type Error = &'static str;

    async fn lookup(&mut self) -> Result<Lookup<u32>, &'static str> {
        Ok(self.read())
    }

    async fn try_lock(&mut self) -> Result<bool, &'static str> {
        assert!(!self.held, "the algorithm takes the lock once");
        self.held = self.shared.lock.try_acquire();
        Ok(self.held)
    }

    async fn wait(&mut self) -> Result<(), &'static str> {
        self.shared.lock.wait();
        Ok(())
    }

    async fn unlock(&mut self) {
        assert!(self.held, "unlock without the lock");
        self.held = false;
        self.shared.lock.release();
    }

    async fn create(&mut self) -> Result<u32, &'static str> {
        assert!(self.held, "create without the lock");
        let made = self.creator.take().expect("one creation per call");
        let v = match made {
            Ok(v) => v,
            Err(e) => {
                self.shared.failures.fetch_add(1, Ordering::SeqCst);
                // The lock is released by Drop, as the region's guard does.
                return Err(e);
            }
        };
        self.shared.creations.fetch_add(1, Ordering::SeqCst);
        *self.shared.slot.lock().unwrap() = Some((v, true));
        self.unlock().await;
        Ok(v)
    }

    fn hand_off(&mut self) -> bool {
        false
    }
}

/// Polls a future that never yields to completion.
fn poll_once<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the source never yields"),
    }
}

/// Checks `f` under every interleaving with at most `preemptions` preemptions (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise): 8 covers the two-thread models in seconds, 3 keeps the
/// three-thread ones to seconds as well.
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    builder.check(f);
}

/// Runs `creators.len()` callers at once on a key that starts as `initial`; returns their results
/// and the shared state.
fn run(
    initial: Option<(u32, bool)>,
    creators: &[Result<u32, &'static str>],
) -> (Vec<Result<u32, &'static str>>, Arc<Shared>) {
    let shared = Arc::new(Shared::default());
    *shared.slot.lock().unwrap() = initial;
    let mut handles = Vec::new();
    for c in &creators[1..] {
        let (shared, c) = (shared.clone(), *c);
        handles.push(thread::spawn(move || {
            Caller::new(&shared, c).get_or_create()
        }));
    }
    let mut results = vec![Caller::new(&shared, creators[0]).get_or_create()];
    results.extend(handles.into_iter().map(|h| h.join().unwrap()));
    assert!(
        !shared.lock.held.load(Ordering::SeqCst),
        "the lock is free at the end"
    );
    (results, shared)
}

#[test]
fn loom_two_callers_on_a_cold_key_create_once_and_share_the_value() {
    model(8, || {
        let (results, shared) = run(None, &[Ok(1), Ok(2)]);
        assert_eq!(shared.creations.load(Ordering::SeqCst), 1);
        let stored = shared.slot.lock().unwrap().unwrap();
        assert_eq!(results, vec![Ok(stored.0); 2]);
    });
}

#[test]
fn loom_three_callers_on_a_cold_key_create_once_and_share_the_value() {
    model(3, || {
        let (results, shared) = run(None, &[Ok(1), Ok(2), Ok(3)]);
        assert_eq!(shared.creations.load(Ordering::SeqCst), 1);
        let stored = shared.slot.lock().unwrap().unwrap();
        assert_eq!(results, vec![Ok(stored.0); 3]);
    });
}

#[test]
fn loom_two_callers_on_a_stale_key_create_once() {
    model(8, || {
        let (results, shared) = run(Some((7, false)), &[Ok(1), Ok(2)]);
        assert_eq!(shared.creations.load(Ordering::SeqCst), 1);
        let (stored, fresh) = shared.slot.lock().unwrap().unwrap();
        assert!(fresh && (stored == 1 || stored == 2));
        // Each caller gets the new value or, if it could not take the lock, the stale one.
        for r in &results {
            assert!(*r == Ok(stored) || *r == Ok(7), "{results:?}");
        }
        assert!(results.contains(&Ok(stored)), "the creator gets its value");
    });
}

#[test]
fn loom_a_failing_creator_hands_over_to_a_waiter() {
    model(8, || {
        let (results, shared) = run(None, &[Err("boom"), Ok(2)]);
        // The failure reaches its own caller only, and the other caller always ends with a
        // value: it created it after the failure, or before (then the first caller found it).
        assert_eq!(shared.creations.load(Ordering::SeqCst), 1);
        assert_eq!(results[1], Ok(2));
        match results[0] {
            Err("boom") => assert_eq!(shared.failures.load(Ordering::SeqCst), 1),
            Ok(v) => {
                assert_eq!(v, 2);
                assert_eq!(shared.failures.load(Ordering::SeqCst), 0);
            }
            Err(other) => panic!("{other}"),
        }
    });
}

#[test]
fn loom_a_failing_creator_among_three() {
    model(3, || {
        let (results, shared) = run(None, &[Ok(1), Err("boom"), Ok(3)]);
        assert_eq!(shared.creations.load(Ordering::SeqCst), 1);
        let stored = shared.slot.lock().unwrap().unwrap().0;
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, stored),
                Err(e) => assert!(i == 1 && *e == "boom", "{results:?}"),
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The registry's entry for one key (`LocalLocks` in mutex.rs): handles come and go, the entry
// dies with its last handle and is made again. Re-stated over one key, with the map's get,
// insert-if-absent and remove-if-same as the atomic steps papaya gives them (here under a loom
// mutex), and the handle count with the same orderings and the same `DEAD` mark.

/// `LocalMutex`'s shared state for one key.
struct Entry {
    handles: AtomicUsize,
    held: AtomicBool,
}

const DEAD: usize = usize::MAX;

/// The registry's map, for one key.
#[derive(Default)]
struct Registry {
    slot: Mutex<Option<Arc<Entry>>>,
}

impl Registry {
    fn remove_if_same(&self, entry: &Arc<Entry>) {
        let mut slot = self.slot.lock().unwrap();
        if slot.as_ref().is_some_and(|e| Arc::ptr_eq(e, entry)) {
            *slot = None;
        }
    }

    /// `LocalLocks::mutex`.
    fn handle(&self) -> Arc<Entry> {
        loop {
            let found = self.slot.lock().unwrap().clone();
            let entry = match found {
                Some(e) => e,
                None => {
                    let fresh = Arc::new(Entry {
                        handles: AtomicUsize::new(1),
                        held: AtomicBool::new(false),
                    });
                    let mut slot = self.slot.lock().unwrap();
                    match &*slot {
                        Some(theirs) => theirs.clone(),
                        None => {
                            *slot = Some(fresh.clone());
                            return fresh;
                        }
                    }
                }
            };
            let mut n = entry.handles.load(Ordering::Acquire);
            loop {
                if n == DEAD {
                    break;
                }
                match entry.handles.compare_exchange_weak(
                    n,
                    n + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return entry,
                    Err(now) => n = now,
                }
            }
            self.remove_if_same(&entry);
        }
    }

    /// `LocalMutex::drop`.
    fn drop_handle(&self, entry: Arc<Entry>) {
        if entry.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if entry
            .handles
            .compare_exchange(0, DEAD, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.remove_if_same(&entry);
        }
    }
}

/// Each thread takes a handle, tries the lock, and lets the handle go; no two ever hold the lock
/// (two live entries for the key would allow it), and the entry is gone at the end.
fn registry_model(threads: usize) {
    let registry = Arc::new(Registry::default());
    let holders = Arc::new(AtomicUsize::new(0));
    let caller = |registry: Arc<Registry>, holders: Arc<AtomicUsize>| {
        let entry = registry.handle();
        if entry
            .held
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
            holders.fetch_sub(1, Ordering::SeqCst);
            entry.held.store(false, Ordering::Release);
        }
        registry.drop_handle(entry);
    };
    let others: Vec<_> = (1..threads)
        .map(|_| {
            let (registry, holders) = (registry.clone(), holders.clone());
            thread::spawn(move || caller(registry, holders))
        })
        .collect();
    caller(registry.clone(), holders);
    for t in others {
        t.join().unwrap();
    }
    assert!(
        registry.slot.lock().unwrap().is_none(),
        "the entry outlived its handles"
    );
}

#[test]
fn loom_registry_entries_die_with_their_last_handle_and_never_double() {
    model(8, || registry_model(2));
}

#[test]
fn loom_registry_with_three_callers() {
    model(3, || registry_model(3));
}
