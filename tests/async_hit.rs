//! The async decorated hit answered at once (issue 19): a fresh value in the memory backend or
//! in the local tier comes back from the first poll, without allocating and without the region's
//! get-or-create future in the decorated call's own; every value the call has more to do for
//! (invalidated, expired, due for an early refresh, dropped by a tag) still goes the whole way.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

mod support;

use dogpile::clock::{Clock, ManualClock};
use dogpile::testing::MapBackend;
use dogpile::{cache_on_arguments, CacheRegion, CreateOptions, LocalTier, RegionConfig};
use support::alloc_count::{allocations_in, Counting};

// Allocations made by this thread.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Polls `fut` once: its value if that poll finished it.
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Polls `fut` to its end on this thread.
fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// Configures `region` on the memory backend, a 600 s expiration and a manual clock, with
/// `more` applied; returns the clock's hand.
fn memory(
    region: &CacheRegion,
    more: impl FnOnce(RegionConfig) -> RegionConfig,
) -> Arc<ManualClock> {
    let (clock, time) = Clock::manual(SystemTime::now());
    let config = RegionConfig::new("dogpile.cache.memory")
        .expiration_time(600)
        .clock(clock)
        .replace_existing_backend(true);
    region.configure(more(config)).expect("memory region");
    time
}

fn count(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

// ------------------------------------------------------------------------------------------------
// The hit answered at once.

static FRESH: CacheRegion = CacheRegion::named("fresh");
static FRESH_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cache_on_arguments(region = FRESH)]
async fn square(n: u64) -> u64 {
    FRESH_CALLS.fetch_add(1, Ordering::SeqCst);
    n * n
}

#[test]
fn a_fresh_hit_is_answered_by_the_first_poll_without_allocating() {
    memory(&FRESH, |c| c);
    assert_eq!(run(square(3)), 9);
    assert_eq!(count(&FRESH_CALLS), 1);
    let hits = FRESH.stats().hits;
    for _ in 0..3 {
        let (answer, allocations) = allocations_in(|| poll_once(square(3)));
        assert_eq!(answer, Some(9), "a hit is ready at the first poll");
        assert_eq!(allocations, 0, "a hit allocates nothing");
    }
    assert_eq!(count(&FRESH_CALLS), 1, "the body ran for the miss only");
    assert_eq!(FRESH.stats().hits, hits + 3, "each hit counted once");
}

#[test]
fn the_decorated_future_does_not_hold_the_get_or_create_future() {
    // The region's get-or-create future (the lock algorithm's state) is boxed, made only for a
    // call the hit check did not answer; inline it made every decorated call's future, hit or
    // not, over a kilobyte.
    let size = std::mem::size_of_val(&square(3));
    assert!(
        size <= 512,
        "the decorated async fn's future is {size} bytes"
    );
}

// ------------------------------------------------------------------------------------------------
// Values the fast check must leave to the call.

static AGED: CacheRegion = CacheRegion::named("aged");
static AGED_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Returns which run of the body made the value.
#[cache_on_arguments(region = AGED)]
async fn generation(n: u64) -> usize {
    let _ = n;
    AGED_CALLS.fetch_add(1, Ordering::SeqCst) + 1
}

#[test]
fn invalidated_and_expired_values_are_not_served_by_the_fast_check() {
    let time = memory(&AGED, |c| c);
    assert_eq!(run(generation(1)), 1);
    assert_eq!(poll_once(generation(1)), Some(1), "fresh: served at once");

    // Hard: absent; the caller creates.
    time.advance(Duration::from_secs(1));
    AGED.invalidate(true);
    time.advance(Duration::from_secs(1));
    assert_eq!(run(generation(1)), 2, "hard-invalidated");
    assert_eq!(poll_once(generation(1)), Some(2));

    // Soft: stale, and the lock is free, so this caller creates.
    time.advance(Duration::from_secs(1));
    AGED.invalidate(false);
    time.advance(Duration::from_secs(1));
    assert_eq!(run(generation(1)), 3, "soft-invalidated");
    assert_eq!(poll_once(generation(1)), Some(3));

    // Expired.
    time.advance(Duration::from_secs(601));
    assert_eq!(run(generation(1)), 4, "expired");
    assert_eq!(poll_once(generation(1)), Some(4));
    assert_eq!(count(&AGED_CALLS), 4);
}

static EAGER: CacheRegion = CacheRegion::named("eager");
static EAGER_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cache_on_arguments(region = EAGER)]
async fn eager_value(n: u64) -> usize {
    let _ = n;
    EAGER_CALLS.fetch_add(1, Ordering::SeqCst) + 1
}

#[test]
fn a_value_due_for_an_eager_refresh_is_refreshed() {
    let time = memory(&EAGER, |c| c.eager_refresh(0.5));
    assert_eq!(run(eager_value(1)), 1);
    time.advance(Duration::from_secs(200));
    assert_eq!(
        poll_once(eager_value(1)),
        Some(1),
        "not due yet: served at once"
    );
    assert_eq!(count(&EAGER_CALLS), 1);
    time.advance(Duration::from_secs(200)); // 400 s of 600: past half its life
    let got = run(eager_value(1));
    assert_eq!(count(&EAGER_CALLS), 2, "the refresh ran (got {got})");
    assert_eq!(EAGER.stats().eager_refreshes, 1);
    assert_eq!(poll_once(eager_value(1)), Some(2), "the refreshed value");
}

static TAGGED: CacheRegion = CacheRegion::named("tagged");
static TAGGED_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cache_on_arguments(region = TAGGED, tags = ["item:{n}"])]
async fn tagged(n: u64) -> usize {
    let _ = n;
    TAGGED_CALLS.fetch_add(1, Ordering::SeqCst) + 1
}

#[test]
fn a_value_a_tag_invalidated_is_not_served() {
    let time = memory(&TAGGED, |c| c);
    assert_eq!(run(tagged(1)), 1);
    assert_eq!(run(tagged(1)), 1);
    assert_eq!(count(&TAGGED_CALLS), 1);
    time.advance(Duration::from_secs(1));
    TAGGED.invalidate_tag("item:1", true).unwrap();
    time.advance(Duration::from_secs(1));
    assert_eq!(run(tagged(1)), 2, "the tag dropped it");
    assert_eq!(run(tagged(1)), 2);
    time.advance(Duration::from_secs(1));
    TAGGED.invalidate_tag("item:1", false).unwrap();
    time.advance(Duration::from_secs(1));
    assert_eq!(run(tagged(1)), 3, "soft: stale, and this caller creates");
    assert_eq!(count(&TAGGED_CALLS), 3);
}

// ------------------------------------------------------------------------------------------------
// The local tier, and backends that may block.

static TIERED: CacheRegion = CacheRegion::named("tiered");
static TIERED_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cache_on_arguments(region = TIERED)]
async fn tiered(n: u64) -> u64 {
    TIERED_CALLS.fetch_add(1, Ordering::SeqCst);
    n + 1
}

#[test]
fn a_local_tier_hit_over_a_blocking_backend_is_answered_at_once() {
    let shared = Arc::new(MapBackend::default());
    TIERED
        .configure(
            RegionConfig::with_backend(shared.clone())
                .expiration_time(600)
                .local_tier(LocalTier::with_store(MapBackend::default()))
                .replace_existing_backend(true),
        )
        .unwrap();
    assert_eq!(run(tiered(1)), 2); // created
    assert_eq!(run(tiered(1)), 2); // read from the shared backend, copied into the tier
    let reads = shared.reads.load(Ordering::SeqCst);
    let local_hits = TIERED.stats().local_hits;
    let (answer, allocations) = allocations_in(|| poll_once(tiered(1)));
    assert_eq!(answer, Some(2));
    assert_eq!(allocations, 0);
    assert_eq!(shared.reads.load(Ordering::SeqCst), reads, "no shared read");
    assert_eq!(TIERED.stats().local_hits, local_hits + 1, "counted once");
    assert_eq!(count(&TIERED_CALLS), 1);
}

#[test]
fn the_fast_check_leaves_blocking_backends_and_xfetch_to_the_call() {
    let options = CreateOptions::new();
    let blocking = CacheRegion::named("blocking");
    blocking
        .configure(RegionConfig::with_backend(MapBackend::default()).expiration_time(600))
        .unwrap();
    blocking.set("k", 1u8).unwrap();
    assert_eq!(blocking.hit_now("k", &options), None, "its read may block");

    let memory_region = CacheRegion::named("plain");
    memory(&memory_region, |c| c);
    memory_region.set("k", 1u8).unwrap();
    assert_eq!(memory_region.hit_now("k", &options), Some(1));
    assert_eq!(memory_region.hit_now::<u8>("other", &options), None);

    // XFetch draws at every read: the call alone draws.
    let xfetch = CacheRegion::named("xfetch");
    memory(&xfetch, |c| c.early_expiration_beta(1.0));
    xfetch.set("k", 1u8).unwrap();
    assert_eq!(xfetch.hit_now("k", &options), None);
    let per_call = CreateOptions::<u8>::new().early_expiration_beta(1.0);
    assert_eq!(memory_region.hit_now("k", &per_call), None);
}

// ------------------------------------------------------------------------------------------------
// The region's own async get-or-create: the same fast check, before its future's slow part.

#[test]
fn a_region_async_hit_is_answered_at_once_and_its_future_stays_small() {
    let region = CacheRegion::named("region-async");
    let time = memory(&region, |c| c);
    let made = AtomicUsize::new(0);
    let create = || async {
        made.fetch_add(1, Ordering::SeqCst);
        7u64
    };
    assert_eq!(run(region.get_or_create_async("k", create)).unwrap(), 7);
    let hits = region.stats().hits;
    for _ in 0..3 {
        let (answer, allocations) =
            allocations_in(|| poll_once(region.get_or_create_async("k", create)));
        assert_eq!(
            answer.map(Result::unwrap),
            Some(7),
            "a hit is ready at the first poll"
        );
        assert_eq!(allocations, 0, "a hit allocates nothing");
    }
    assert_eq!(region.stats().hits, hits + 3, "each hit counted once");
    // The lock algorithm's state is boxed: inline, it made every call's future over 2 KB
    // (2,232 bytes for this one). It still holds its default options by value.
    let size = std::mem::size_of_val(&region.get_or_create_async("k", create));
    assert!(
        size <= 512,
        "the region's async get-or-create future is {size} bytes"
    );

    // What the check leaves to the call still goes the whole way: expired, then created again.
    time.advance(Duration::from_secs(601));
    assert_eq!(run(region.get_or_create_async("k", create)).unwrap(), 7);
    assert_eq!(count(&made), 2, "the expired value was created again");
    let options = CreateOptions::new();
    let failed =
        run(region.try_get_or_create_async("gone", &options, || async { Err::<u64, _>("down") }));
    assert!(
        failed.is_err(),
        "a creator's error still reaches its caller"
    );
}
