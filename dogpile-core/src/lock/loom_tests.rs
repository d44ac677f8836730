//! The dogpile lock under the `loom` model checker: every interleaving (within a preemption
//! bound) of 2 or 3 threads calling [`get_or_create`] on one key, and of 2 threads calling it on
//! a batch of two keys (beside another batch, or beside a creator that asks for another key).
//!
//! Checked: one creator per key; callers that waited see the created value; a failing creator
//! hands over to a waiter; no lost wake-up and no deadlock (loom fails a run where every thread is
//! blocked); a caller never waits while it holds a lock.
//!
//! The per-key mutex is the in-process one of `mutex.rs` (`LocalMutex`: a state word with a held
//! and a listened bit, and an `event_listener::Event`), re-stated here over loom's atomics and the
//! loom-aware build of `event-listener`, with the same orderings and the same wait: register a
//! listener, mark the word, wait only if the mark found the lock held. The registry around it (a
//! sharded map) is modelled separately, at the end: its entry for one key, made held by a caller
//! that asks for the lock, with handles that wait on it.
//! The algorithm itself is the real one, driven by a poll-once executor (the source never
//! yields).
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
use loom::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use super::{get_or_create, KeyState, Lookup, PerKey, Source};

/// One key's lock: `LocalMutex`'s state and algorithm. One word holds `HELD` and `LISTENED`;
/// a release notifies only when a waiter has marked `LISTENED`, so the model checks that no
/// waiter misses the release it registered for.
#[derive(Default)]
struct KeyLock {
    state: AtomicU8,
    released: Event,
}

const HELD: u8 = 1;
const LISTENED: u8 = 2;

impl KeyLock {
    fn try_acquire(&self) -> bool {
        self.state.fetch_or(HELD, Ordering::Acquire) & HELD == 0
    }

    fn held(&self) -> bool {
        self.state.load(Ordering::SeqCst) & HELD != 0
    }

    fn listen_until_free(&self) -> Option<event_listener::EventListener> {
        if self.state.load(Ordering::Acquire) & HELD == 0 {
            return None;
        }
        let listener = self.released.listen();
        if self.state.fetch_or(LISTENED, Ordering::AcqRel) & HELD == 0 {
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
        if self.state.swap(0, Ordering::AcqRel) & LISTENED != 0 {
            self.released.notify(usize::MAX);
        }
    }
}

/// The cache for one key: the value and whether it is fresh, and the lock.
#[derive(Default)]
struct Key {
    slot: Mutex<Option<(u32, bool)>>,
    lock: KeyLock,
}

/// The cache: two keys (most models use the first alone), and counters.
#[derive(Default)]
struct Shared {
    keys: [Key; 2],
    creations: AtomicUsize,
    failures: AtomicUsize,
}

impl Shared {
    fn read(&self, key: usize) -> Lookup<u32> {
        match *self.keys[key].slot.lock().unwrap() {
            Some((v, true)) => Lookup::Fresh(v),
            Some((v, false)) => Lookup::Stale(v),
            None => Lookup::Absent,
        }
    }
}

/// What a caller's creator does.
#[derive(Clone, Copy)]
enum Make {
    /// Returns this value for every key it creates.
    Value(u32),
    /// Fails.
    Fail(&'static str),
    /// Asks for key 0 first (a nested get-or-create, made with this value), then returns it
    /// plus 10: the creator that holds its own key's lock while it waits for another.
    Nested(u32),
}

/// One caller's view, as the region's source is: the keys of its call (global key numbers, in
/// lock order), which of them it holds, and its creator. It releases what it holds when dropped
/// (a failing or panicking creator).
struct Caller {
    shared: Arc<Shared>,
    keys: Vec<usize>,
    held: Vec<bool>,
    make: Option<Make>,
}

impl Caller {
    fn new(shared: &Arc<Shared>, keys: &[usize], make: Make) -> Self {
        Caller {
            shared: shared.clone(),
            keys: keys.to_vec(),
            held: vec![false; keys.len()],
            make: Some(make),
        }
    }

    /// The region's call: first reads, then the algorithm; the values in key order.
    fn get_or_create(&mut self) -> Result<Vec<u32>, &'static str> {
        let mut states: Vec<_> = self
            .keys
            .iter()
            .map(|&k| KeyState::new(self.shared.read(k)))
            .collect();
        poll_once(get_or_create(self, &mut states))?;
        Ok(states
            .into_iter()
            .map(|s| s.into_done().expect("every key has its value").0)
            .collect())
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        for (i, held) in self.held.iter_mut().enumerate() {
            if std::mem::take(held) {
                self.shared.keys[self.keys[i]].lock.release();
            }
        }
    }
}

impl Source for Caller {
    type Value = u32;
    type Error = &'static str;

    async fn lookup(&mut self, keys: &[usize]) -> Result<PerKey<Lookup<u32>>, &'static str> {
        Ok(keys
            .iter()
            .map(|&i| self.shared.read(self.keys[i]))
            .collect())
    }

    async fn try_lock(&mut self, key: usize, _stale: bool) -> Result<bool, &'static str> {
        assert!(!self.held[key], "the algorithm takes a lock once");
        self.held[key] = self.shared.keys[self.keys[key]].lock.try_acquire();
        Ok(self.held[key])
    }

    async fn wait(&mut self, key: usize) -> Result<(), &'static str> {
        assert!(
            !self.held.iter().any(|&h| h),
            "a caller never waits while it holds a lock"
        );
        self.shared.keys[self.keys[key]].lock.wait();
        Ok(())
    }

    async fn unlock(&mut self, key: usize) {
        assert!(self.held[key], "unlock without the lock");
        self.held[key] = false;
        self.shared.keys[self.keys[key]].lock.release();
    }

    async fn create(&mut self, keys: &[usize]) -> Result<PerKey<u32>, &'static str> {
        assert!(
            keys.iter().all(|&i| self.held[i]),
            "create without the lock"
        );
        let v = match self.make.take().expect("one creation per call") {
            Make::Value(v) => v,
            Make::Fail(e) => {
                self.shared.failures.fetch_add(1, Ordering::SeqCst);
                // The locks are released by Drop, as the region's guards do.
                return Err(e);
            }
            Make::Nested(v) => {
                let inner = Caller::new(&self.shared, &[0], Make::Value(v)).get_or_create()?;
                inner[0] + 10
            }
        };
        for &i in keys {
            self.shared.creations.fetch_add(1, Ordering::SeqCst);
            *self.shared.keys[self.keys[i]].slot.lock().unwrap() = Some((v, true));
            self.unlock(i).await;
        }
        Ok(smallvec::smallvec![v; keys.len()])
    }

    fn hand_off(&mut self, _: usize) -> bool {
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

/// Runs one caller per `(keys, creator)` at once, key 0 starting as `initial`; returns their
/// results and the shared state, and checks that every lock is free at the end.
fn run_calls(
    initial: Option<(u32, bool)>,
    calls: &[(&'static [usize], Make)],
) -> (Vec<Result<Vec<u32>, &'static str>>, Arc<Shared>) {
    let shared = Arc::new(Shared::default());
    *shared.keys[0].slot.lock().unwrap() = initial;
    let mut handles = Vec::new();
    for &(keys, make) in &calls[1..] {
        let shared = shared.clone();
        handles.push(thread::spawn(move || {
            Caller::new(&shared, keys, make).get_or_create()
        }));
    }
    let (keys, make) = calls[0];
    let mut results = vec![Caller::new(&shared, keys, make).get_or_create()];
    results.extend(handles.into_iter().map(|h| h.join().unwrap()));
    for key in &shared.keys {
        assert!(!key.lock.held(), "every lock is free at the end");
    }
    (results, shared)
}

/// [`run_calls`] with one caller per creator, all on key 0; the results as single values.
fn run(
    initial: Option<(u32, bool)>,
    creators: &[Result<u32, &'static str>],
) -> (Vec<Result<u32, &'static str>>, Arc<Shared>) {
    let calls: Vec<_> = creators
        .iter()
        .map(|c| {
            let make = match *c {
                Ok(v) => Make::Value(v),
                Err(e) => Make::Fail(e),
            };
            (&[0usize][..], make)
        })
        .collect();
    let (results, shared) = run_calls(initial, &calls);
    let results = results.into_iter().map(|r| r.map(|v| v[0])).collect();
    (results, shared)
}

fn stored(shared: &Shared, key: usize) -> (u32, bool) {
    shared.keys[key]
        .slot
        .lock()
        .unwrap()
        .expect("a value is stored")
}

#[test]
fn loom_two_callers_on_a_cold_key_create_once_and_share_the_value() {
    model(8, || {
        let (results, shared) = run(None, &[Ok(1), Ok(2)]);
        assert_eq!(shared.creations.load(Ordering::SeqCst), 1);
        let stored = stored(&shared, 0);
        assert_eq!(results, vec![Ok(stored.0); 2]);
    });
}

#[test]
fn loom_three_callers_on_a_cold_key_create_once_and_share_the_value() {
    model(3, || {
        let (results, shared) = run(None, &[Ok(1), Ok(2), Ok(3)]);
        assert_eq!(shared.creations.load(Ordering::SeqCst), 1);
        let stored = stored(&shared, 0);
        assert_eq!(results, vec![Ok(stored.0); 3]);
    });
}

#[test]
fn loom_two_callers_on_a_stale_key_create_once() {
    model(8, || {
        let (results, shared) = run(Some((7, false)), &[Ok(1), Ok(2)]);
        assert_eq!(shared.creations.load(Ordering::SeqCst), 1);
        let (stored, fresh) = stored(&shared, 0);
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
        let stored = stored(&shared, 0).0;
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, stored),
                Err(e) => assert!(i == 1 && *e == "boom", "{results:?}"),
            }
        }
    });
}

#[test]
fn loom_two_overlapping_batches_create_each_key_once() {
    model(4, || {
        let (results, shared) = run_calls(
            None,
            &[(&[0, 1], Make::Value(1)), (&[0, 1], Make::Value(2))],
        );
        assert_eq!(shared.creations.load(Ordering::SeqCst), 2, "each key once");
        let expected = vec![stored(&shared, 0).0, stored(&shared, 1).0];
        assert_eq!(results, vec![Ok(expected.clone()), Ok(expected)]);
    });
}

#[test]
fn loom_a_batch_beside_a_nested_creator_never_deadlocks() {
    // One caller creates key 1 and, inside its creator, asks for key 0; the other asks for both
    // in one batch, which locks key 0 first. Waiting while holding key 0 would deadlock (loom
    // fails a run where every thread is blocked); the algorithm lets go first.
    model(4, || {
        let (results, shared) =
            run_calls(None, &[(&[1], Make::Nested(5)), (&[0, 1], Make::Value(7))]);
        let (k0, k1) = (stored(&shared, 0).0, stored(&shared, 1).0);
        assert_eq!(shared.creations.load(Ordering::SeqCst), 2, "each key once");
        assert_eq!(results[0], Ok(vec![k1]));
        assert_eq!(results[1], Ok(vec![k0, k1]));
    });
}

// ---------------------------------------------------------------------------------------------
// The registry's entry for one key (`LocalLocks` in mutex.rs): handles come and go, the entry
// dies with its last handle and is made again. Re-stated over one key, with a shard's table as a
// loom mutex around an optional entry: the handle count is read and written only under it, and
// the entry is removed in the same critical section in which its count reaches zero. A new
// entry is made held when its maker asks for the lock (`LocalLocks::lock`); a handle taken
// without the lock (`LocalLocks::mutex`) waits on it as a caller with no value does.

/// The registry's map, for one key: the entry and its handle count.
#[derive(Default)]
struct Registry {
    slot: Mutex<Option<(Arc<KeyLock>, usize)>>,
}

impl Registry {
    /// `LocalLocks::lock` when `take`, else `LocalLocks::mutex`: a handle, and whether the lock
    /// was taken with it.
    fn handle(&self, take: bool) -> (Arc<KeyLock>, bool) {
        let mut slot = self.slot.lock().unwrap();
        match &mut *slot {
            Some((entry, handles)) => {
                *handles += 1;
                let entry = entry.clone();
                drop(slot);
                let taken = take && entry.try_acquire();
                (entry, taken)
            }
            None => {
                let fresh = Arc::new(KeyLock {
                    state: AtomicU8::new(if take { HELD } else { 0 }),
                    released: Event::new(),
                });
                *slot = Some((fresh.clone(), 1));
                (fresh, take)
            }
        }
    }

    /// `LocalMutex::drop`.
    fn drop_handle(&self, entry: Arc<KeyLock>) {
        let mut slot = self.slot.lock().unwrap();
        let (theirs, handles) = slot.as_mut().expect("a live handle's entry is in the map");
        assert!(Arc::ptr_eq(theirs, &entry), "two live entries for one key");
        *handles -= 1;
        if *handles == 0 {
            *slot = None;
        }
    }
}

/// How a caller of the registry model uses its handle.
#[derive(Clone, Copy)]
enum Use {
    /// Takes the lock with the handle (a miss's first try) and releases it if it got it.
    Lock,
    /// Takes a handle without the lock, waits until the lock is free, then tries it.
    Wait,
}

/// Each thread takes a handle, uses it, and lets it go; no two ever hold the lock (two live
/// entries for the key would allow it), no waiter sleeps through a release (loom fails a run in
/// which every thread is blocked), and the entry is gone at the end.
fn registry_model(uses: &[Use]) {
    let registry = Arc::new(Registry::default());
    let holders = Arc::new(AtomicUsize::new(0));
    let caller = |registry: Arc<Registry>, holders: Arc<AtomicUsize>, how: Use| {
        let (entry, taken) = match how {
            Use::Lock => registry.handle(true),
            Use::Wait => {
                let (entry, _) = registry.handle(false);
                entry.wait();
                let taken = entry.try_acquire();
                (entry, taken)
            }
        };
        if taken {
            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
            holders.fetch_sub(1, Ordering::SeqCst);
            entry.release();
        }
        registry.drop_handle(entry);
    };
    let others: Vec<_> = uses[1..]
        .iter()
        .map(|&how| {
            let (registry, holders) = (registry.clone(), holders.clone());
            thread::spawn(move || caller(registry, holders, how))
        })
        .collect();
    caller(registry.clone(), holders, uses[0]);
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
    model(8, || registry_model(&[Use::Lock, Use::Lock]));
}

#[test]
fn loom_registry_a_waiter_wakes_when_the_lock_made_held_is_released() {
    model(8, || registry_model(&[Use::Lock, Use::Wait]));
}

#[test]
fn loom_registry_with_three_callers() {
    model(3, || registry_model(&[Use::Lock, Use::Lock, Use::Wait]));
}
