//! Bytes per entry: 1,000,000 entries (a `u64` in, a 32-byte `String` out) filled into each peer,
//! and what that cost in memory, each peer in a process of its own (so memory one peer freed
//! cannot hide another's growth).
//!
//! Two measures per peer:
//! - resident bytes per entry: growth of the process's resident set (`/proc/self/statm`) over the
//!   fill, divided by the entries: what the machine pays, allocator overhead and spare table
//!   slots included;
//! - heap bytes per entry: what the process asked the allocator for and still holds (a counting
//!   global allocator), and the allocations per entry: the layout alone, without the
//!   allocator's rounding.
//!
//! Peers: the decorated fn (`#[cache_on_arguments]`, memory backend, filled by 1M calls),
//! `region.set` alone, `cached`'s `#[cached]`, `moka::sync::Cache::get_with`, and a plain
//! `HashMap<u64, String>`.
//!
//! ```text
//! cargo bench --bench fill                # every peer, 1M entries each
//! FILL_ENTRIES=100000 cargo bench --bench fill
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use dogpile::{CacheRegion, RegionConfig};

/// Counts live heap bytes and allocations.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call goes to `System` unchanged; the counters are atomics, which allocate
// nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn value(n: u64) -> String {
    format!("{n:032}")
}

#[cached::proc_macro::cached]
fn cached_value(n: u64) -> String {
    value(n)
}

static REGION: CacheRegion = CacheRegion::named("fill");

#[dogpile::cache_on_arguments(region = REGION)]
fn decorated(n: u64) -> String {
    value(n)
}

/// The process's resident set, in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's resident field");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// What one fill cost.
struct Cost {
    resident: u64,
    heap: i64,
    allocations: u64,
    secs: f64,
}

/// Runs `fill` (which keeps what it made alive until `measure` returns) and measures it.
fn measure(entries: u64, fill: impl FnOnce(u64) -> Box<dyn std::any::Any>) -> Cost {
    let (rss, heap, allocs) = (
        resident_bytes(),
        LIVE_BYTES.load(Ordering::Relaxed),
        ALLOCATIONS.load(Ordering::Relaxed),
    );
    let start = Instant::now();
    let kept = fill(entries);
    let secs = start.elapsed().as_secs_f64();
    let cost = Cost {
        resident: resident_bytes().saturating_sub(rss),
        heap: LIVE_BYTES.load(Ordering::Relaxed) - heap,
        allocations: ALLOCATIONS.load(Ordering::Relaxed) - allocs,
        secs,
    };
    black_box(&kept);
    std::mem::forget(kept); // the process ends next; freeing 1M entries would only take time
    cost
}

const PEERS: [&str; 5] = [
    "dogpile decorated #[cache_on_arguments]",
    "dogpile region set",
    "cached #[cached]",
    "moka get_with",
    "HashMap<u64, String>",
];

/// Fills one peer in this process and prints its line (read by the parent).
fn child(peer: &str, entries: u64) {
    let cost = match peer {
        "dogpile decorated #[cache_on_arguments]" => {
            REGION
                .configure(RegionConfig::new("dogpile.cache.memory").expiration_time(3600))
                .expect("memory region");
            measure(entries, |n| {
                for i in 0..n {
                    black_box(decorated(i));
                }
                Box::new(())
            })
        }
        "dogpile region set" => {
            REGION
                .configure(RegionConfig::new("dogpile.cache.memory").expiration_time(3600))
                .expect("memory region");
            measure(entries, |n| {
                let mut key = String::new();
                for i in 0..n {
                    key.clear();
                    key.push_str(concat!(module_path!(), ":decorated|"));
                    dogpile::KeyArg::write_key(&i, &mut key);
                    REGION.set(&key, value(i)).expect("memory");
                }
                Box::new(())
            })
        }
        "cached #[cached]" => measure(entries, |n| {
            for i in 0..n {
                black_box(cached_value(i));
            }
            Box::new(())
        }),
        "moka get_with" => measure(entries, |n| {
            let cache: moka::sync::Cache<u64, String> = moka::sync::Cache::new(2 * n);
            for i in 0..n {
                black_box(cache.get_with(i, || value(i)));
            }
            cache.run_pending_tasks();
            Box::new(cache)
        }),
        "HashMap<u64, String>" => measure(entries, |n| {
            let mut map: HashMap<u64, String> = HashMap::new();
            for i in 0..n {
                map.entry(i).or_insert_with(|| value(i));
            }
            Box::new(map)
        }),
        other => panic!("unknown peer {other:?}"),
    };
    println!(
        "FILL\t{peer}\t{}\t{}\t{}\t{}",
        cost.resident, cost.heap, cost.allocations, cost.secs
    );
}

fn main() {
    let entries: u64 = std::env::var("FILL_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if let Ok(peer) = std::env::var("FILL_PEER") {
        return child(&peer, entries);
    }
    // `cargo bench` passes `--bench`; a filter (any other argument) picks peers by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let exe = std::env::current_exe().expect("this bench's path");
    println!("## Bytes per entry, {entries} entries (`benches/fill.rs`)");
    println!();
    println!("| peer | resident bytes per entry | heap bytes per entry | allocations per entry | fill time per entry |");
    println!("|---|---|---|---|---|");
    let n = entries as f64;
    for peer in PEERS {
        if !filter.is_empty() && !filter.iter().any(|f| peer.contains(f.as_str())) {
            continue;
        }
        let out = Command::new(&exe)
            .env("FILL_PEER", peer)
            .env("FILL_ENTRIES", entries.to_string())
            .output()
            .expect("running a fill");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find(|l| l.starts_with("FILL\t")) else {
            eprintln!(
                "{peer}: no figures\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        };
        let f: Vec<&str> = line.split('\t').collect();
        let num = |i: usize| f[i].parse::<f64>().unwrap_or(f64::NAN);
        println!(
            "| {peer} | {:.0} B | {:.0} B | {:.2} | {:.0} ns |",
            num(2) / n,
            num(3) / n,
            num(4) / n,
            num(5) * 1e9 / n
        );
    }
}
