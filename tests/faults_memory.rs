//! Bounded memory: the memory backend with `max_size = 10_000` fed 1,000,000 distinct keys holds
//! no more than the bound. The bulk goes to the backend directly (a million region calls are slow
//! in a debug build); the region is checked on top of the same backend.
//!
//! Alone in its file, so the resident-memory figures it prints are this test's own:
//! `cargo test --test faults_memory -- --nocapture`.

use std::sync::Arc;
use std::time::SystemTime;

use dogpile::backend::memory::MemoryBackend;
use dogpile::backend::{Metadata, Payload};
use dogpile::clock::Timestamp;
use dogpile::{make_region, Backend, CachedValue, RegionConfig};

const BOUND: usize = 10_000;
const KEYS: usize = 1_000_000;

/// Resident memory in KiB, from /proc/self/statm (`None` where there is no /proc).
fn resident_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc_sysconf_pagesize() };
    Some(pages * page / 1024)
}

unsafe fn libc_sysconf_pagesize() -> u64 {
    extern "C" {
        fn sysconf(name: i32) -> i64;
    }
    // _SC_PAGESIZE is 30 on Linux.
    let size = sysconf(30);
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

fn value(i: usize, created: Timestamp) -> CachedValue {
    // A 64-byte string per entry, so the bound shows in resident memory.
    CachedValue {
        payload: Payload::Object(Arc::new(format!("{i:064}"))),
        metadata: Metadata::new(created),
    }
}

#[test]
fn a_million_keys_into_a_bound_of_ten_thousand() {
    let before = resident_kib();
    let backend = Arc::new(MemoryBackend::new(Some(BOUND), false));
    let region = make_region()
        .configure(RegionConfig::with_backend(backend.clone()))
        .unwrap();
    let created = Timestamp::from_system_time(SystemTime::now());

    let mut key = String::new();
    let mut largest = 0;
    for i in 0..KEYS {
        key.clear();
        key.push_str("key:");
        key.push_str(&i.to_string());
        backend.set(&key, value(i, created)).unwrap();
        if i % 1000 == 999 {
            let len = backend.len();
            assert!(len <= BOUND, "{len} entries after {} keys", i + 1);
            largest = largest.max(len);
        }
    }
    let after_bulk = resident_kib();
    assert!(backend.len() <= BOUND, "{}", backend.len());
    // The bound is used, not just respected.
    assert!(largest >= BOUND / 2, "at most {largest} entries held");

    // Through the region: what it reads back is what was stored; at most BOUND keys are there.
    let present = (0..KEYS)
        .step_by(7)
        .filter(
            |i| match region.get::<String>(&format!("key:{i}")).unwrap() {
                Some(v) => {
                    assert_eq!(v, format!("{i:064}"));
                    true
                }
                None => false,
            },
        )
        .count();
    assert!(present <= BOUND, "{present}");

    // 20,000 more through the region: still bounded, and values read back are right.
    for i in 0..2 * BOUND {
        region.set(&format!("region:{i}"), i as u64).unwrap();
    }
    assert!(backend.len() <= BOUND, "{}", backend.len());
    let hits = (0..2 * BOUND)
        .filter(
            |i| match region.get::<u64>(&format!("region:{i}")).unwrap() {
                Some(v) => {
                    assert_eq!(v, *i as u64);
                    true
                }
                None => false,
            },
        )
        .count();
    assert!(hits > 0 && hits <= BOUND, "{hits}");
    assert_eq!(region.get_or_create("last", || 7u64).unwrap(), 7);
    assert_eq!(region.get::<u64>("last").unwrap(), Some(7));
    assert!(backend.len() <= BOUND);

    let after = resident_kib();
    eprintln!(
        "resident memory (KiB): before {before:?}, after 1,000,000 keys {after_bulk:?}, at the end {after:?}; entries held: {}",
        backend.len()
    );
}
