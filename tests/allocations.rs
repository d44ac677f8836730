//! Allocations on the read path, counted by a global allocator on the reading thread: a hit
//! that copies what it need not (a key the mangler keeps, a read buffer per decoded value)
//! shows up here before it shows up in a benchmark's noise.
#![cfg(feature = "memcached")]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use dogpile::RegionConfig;

/// Counts the allocations made by the current thread (a thread-local counter, so tests and the
/// harness on other threads do not disturb the count).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: the allocator also runs while a thread's locals are being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed through to `System` unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

/// The least of a few runs: the first call of a path may fill a lazily made cache.
fn fewest<T>(mut f: impl FnMut() -> T) -> (T, u64) {
    let mut best = allocations(&mut f);
    for _ in 0..4 {
        let next = allocations(&mut f);
        if next.1 < best.1 {
            best = next;
        }
    }
    best
}

#[test]
fn a_hit_on_a_byte_backend_allocates_the_value_only() {
    // `memory_pickle` keeps serialized values: a hit decodes the MessagePack payload where it
    // lies in the map into the `String`, its one allocation. Decoding over a `Cursor` added a
    // read buffer per value (2 allocations).
    let region = dogpile::make_region()
        .configure(RegionConfig::new("dogpile.cache.memory_pickle"))
        .unwrap();
    region
        .set("k", "a value of some length".to_owned())
        .unwrap();
    let (value, n) = fewest(|| region.get::<String>("k").unwrap());
    eprintln!("a hit on memory_pickle: {n} allocations");
    assert_eq!(value.as_deref(), Some("a value of some length"));
    assert!(n <= 1, "a hit allocated {n} times");
}

#[test]
fn a_batch_read_on_memcached_allocates_no_key_it_keeps_and_no_buffer_per_value() {
    let Some(server) = support::Server::memcached() else {
        return;
    };
    let region = dogpile::make_region()
        .configure(
            RegionConfig::new("dogpile.cache.memcached")
                .expiration_time(60)
                .argument("url", server.addr()),
        )
        .unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("alloc:{i:04}")).collect();
    let items: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v{k}"))).collect();
    region.set_multi(items).unwrap();

    let (values, n) = fewest(|| region.get_multi::<String, _>(&keys).unwrap());
    eprintln!("a memcached get_multi of 100 keys: {n} allocations");
    assert!(values.iter().all(Option::is_some), "{values:?}");
    // One `String` per value and a few for the batch (the lists of keys and results). A copy of
    // every kept key, or a read buffer per decoded value, would add 100 each: the old code made
    // 307.
    assert!(n < 100 + 50, "a batch read of 100 allocated {n} times");
}
