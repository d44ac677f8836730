//! Region statistics: hits, misses, creations, stale values served, waits, backend errors.
//!
//! Counting must cost nothing measurable on the hit path, so no counter is shared between
//! threads: every thread has its own block of counters, one row per region, written with plain
//! loads and stores (no atomic read-modify-write, no cache line that another thread writes).
//! A snapshot sums the rows of every thread. When a thread exits, its counts are folded into a
//! shared total and its block is dropped, so the registry does not grow with threads that come
//! and go.
//!
//! Rows are handed out to regions on first use and returned once a region and every handle on
//! its counters (work that outlives a call: a tier, the backplane) are dropped, so a row is never
//! shared by two regions; past `ROWS` (64) live regions, the extra regions count in a shared row
//! with atomic adds (correct, a little slower).

use std::cell::OnceCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

/// What a region counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Counter {
    Hits,
    Misses,
    StaleFound,
    StaleServed,
    Creations,
    CreationNanos,
    CreatorErrors,
    Waits,
    WaitNanos,
    AsyncRefreshes,
    BackendErrors,
    LockTimeouts,
    LocalHits,
    BackplaneSent,
    BackplaneReceived,
    BackplaneDropped,
    BackplaneReconnects,
    FailSafeServed,
    SoftTimeouts,
    HardTimeouts,
    EagerRefreshes,
    /// Keep last: [`COUNTERS`] counts to it.
    EarlyExpirations,
}

/// How many counters there are: the last one's index, plus one (so a new counter added last
/// cannot be forgotten here).
const COUNTERS: usize = Counter::EarlyExpirations as usize + 1;

/// How many regions can have a per-thread row at once.
pub(crate) const ROWS: usize = 64;

type Row = [AtomicU64; COUNTERS];

fn new_row() -> Row {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// One thread's counters: a row per region slot.
struct Block {
    rows: Box<[Row]>,
}

impl Block {
    fn new() -> Self {
        Block {
            rows: (0..ROWS).map(|_| new_row()).collect(),
        }
    }
}

/// Every live thread's block, and the totals of threads that have exited.
struct Registry {
    blocks: Vec<Arc<Block>>,
    retired: Box<[[u64; COUNTERS]]>,
    free_rows: Vec<usize>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| {
    Mutex::new(Registry {
        blocks: Vec::new(),
        retired: vec![[0; COUNTERS]; ROWS].into_boxed_slice(),
        free_rows: (0..ROWS).rev().collect(),
    })
});

/// A thread's handle on its block: registers it, and folds it into the totals on exit.
struct Owner(Arc<Block>);

impl Owner {
    fn register() -> Self {
        let block = Arc::new(Block::new());
        REGISTRY.lock().blocks.push(block.clone());
        Owner(block)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let mut reg = REGISTRY.lock();
        for (row, total) in self.0.rows.iter().zip(reg.retired.iter_mut()) {
            for (c, t) in row.iter().zip(total.iter_mut()) {
                *t += c.load(Ordering::Relaxed);
            }
        }
        reg.blocks.retain(|b| !Arc::ptr_eq(b, &self.0));
    }
}

thread_local! {
    static OWNER: OnceCell<Owner> = const { OnceCell::new() };
}

const UNASSIGNED: usize = usize::MAX;
const SHARED: usize = usize::MAX - 1;

/// Adds `n` to a cell of this thread's block. Only this thread writes it, so a load and a store
/// lose no counts (and cost no atomic read-modify-write on the hit path).
#[inline(always)]
fn bump(cell: &AtomicU64, n: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// A region's claim on its counters: its row in every thread's block (or `SHARED`), and the
/// row of atomics its counts go to when it has none. The region and each of its handles hold
/// it, so the row goes to another region only once the last of them is dropped: a late count
/// of a handle never lands in another region's statistics.
struct Lease {
    row: usize,
    shared: Row,
}

impl Lease {
    /// Counts in this thread's block, or in the shared row when the region has no row or the
    /// thread is exiting and its block is gone.
    fn add(&self, counter: Counter, n: u64) {
        if self.row < ROWS {
            let counted = OWNER.try_with(|owner| {
                bump(
                    &owner.get_or_init(Owner::register).0.rows[self.row][counter as usize],
                    n,
                );
            });
            if counted.is_ok() {
                return;
            }
        }
        self.shared[counter as usize].fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.row >= ROWS {
            return;
        }
        // Nobody counts into this row any more: clear it for the next region.
        let mut reg = REGISTRY.lock();
        for block in &reg.blocks {
            for c in block.rows[self.row].iter() {
                c.store(0, Ordering::Relaxed);
            }
        }
        reg.retired[self.row] = [0; COUNTERS];
        reg.free_rows.push(self.row);
    }
}

/// A region's counters.
pub(crate) struct RegionStats {
    /// The region's row in every thread's block, copied from its lease for the hit path;
    /// `UNASSIGNED` until first use, `SHARED` when no row was free.
    row: AtomicUsize,
    lease: OnceLock<Arc<Lease>>,
}

impl RegionStats {
    pub(crate) const fn new() -> Self {
        RegionStats {
            row: AtomicUsize::new(UNASSIGNED),
            lease: OnceLock::new(),
        }
    }

    /// The region's lease, taken on first use.
    fn lease(&self) -> &Arc<Lease> {
        self.lease.get_or_init(|| {
            let row = REGISTRY.lock().free_rows.pop().unwrap_or(SHARED);
            self.row.store(row, Ordering::Relaxed);
            Arc::new(Lease {
                row,
                shared: new_row(),
            })
        })
    }

    /// Adds `n` to a counter.
    #[inline(always)]
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        let row = self.row.load(Ordering::Relaxed);
        if row < ROWS {
            let counted = OWNER.try_with(|owner| match owner.get() {
                Some(owner) => {
                    bump(&owner.0.rows[row][counter as usize], n);
                    true
                }
                None => false,
            });
            if counted == Ok(true) {
                return;
            }
        }
        self.add_slow(counter, n);
    }

    /// The first count of a region or of a thread, or a count in the shared row.
    #[cold]
    #[inline(never)]
    fn add_slow(&self, counter: Counter, n: u64) {
        self.lease().add(counter, n);
    }

    /// Adds one to a counter.
    #[inline(always)]
    pub(crate) fn incr(&self, counter: Counter) {
        self.add(counter, 1);
    }

    /// Adds a duration, in nanoseconds, to a counter.
    pub(crate) fn add_time(&self, counter: Counter, d: Duration) {
        self.add(counter, u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// A handle that counts into this region's row from anywhere, for work that outlives the
    /// call (a creation on the async runner's thread).
    pub(crate) fn handle(&self) -> StatsHandle {
        StatsHandle {
            lease: self.lease().clone(),
        }
    }

    /// The counts so far.
    pub(crate) fn snapshot(&self) -> Stats {
        let mut sum = [0u64; COUNTERS];
        let Some(lease) = self.lease.get() else {
            return Stats::from_counters(sum);
        };
        for (s, c) in sum.iter_mut().zip(lease.shared.iter()) {
            *s = c.load(Ordering::Relaxed);
        }
        let row = lease.row;
        if row < ROWS {
            let reg = REGISTRY.lock();
            for block in &reg.blocks {
                for (s, c) in sum.iter_mut().zip(block.rows[row].iter()) {
                    *s = s.wrapping_add(c.load(Ordering::Relaxed));
                }
            }
            for (s, c) in sum.iter_mut().zip(reg.retired[row].iter()) {
                *s = s.wrapping_add(*c);
            }
        }
        Stats::from_counters(sum)
    }
}

/// Something counts can be added to: a region's counters, or a handle on them.
pub(crate) trait CountSink {
    /// Adds `n` to a counter.
    fn add(&self, counter: Counter, n: u64);

    /// Adds one to a counter.
    fn incr(&self, counter: Counter) {
        self.add(counter, 1);
    }

    /// Adds a duration, in nanoseconds, to a counter.
    fn add_time(&self, counter: Counter, d: Duration) {
        self.add(counter, u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

impl CountSink for RegionStats {
    #[inline]
    fn add(&self, counter: Counter, n: u64) {
        RegionStats::add(self, counter, n)
    }
}

/// Counts into a region's counters without borrowing the region. It keeps the region's row
/// leased: a count made after the region is dropped goes nowhere visible, never into another
/// region's statistics.
pub(crate) struct StatsHandle {
    lease: Arc<Lease>,
}

impl CountSink for StatsHandle {
    fn add(&self, counter: Counter, n: u64) {
        self.lease.add(counter, n);
    }
}

/// A snapshot of a region's statistics, from [`CacheRegion::stats`](crate::CacheRegion::stats).
///
/// Its `Display` is a small table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Reads that found a fresh value.
    pub hits: u64,
    /// Reads that found no value (or a hard-invalidated or undecodable one).
    pub misses: u64,
    /// Reads that found an expired or soft-invalidated value.
    pub stale_found: u64,
    /// Callers of the get-or-create methods that got a stale value while another created.
    pub stale_served: u64,
    /// Times a creator ran and returned a value.
    pub creations: u64,
    /// Time spent in creators, in total.
    pub creation_time: Duration,
    /// Times a creator returned an error or panicked.
    pub creator_errors: u64,
    /// Callers that waited for another caller's creation (once each, however often they waited).
    pub waits: u64,
    /// Time spent waiting, in total.
    pub wait_time: Duration,
    /// Creations handed to the async creation runner.
    pub async_refreshes: u64,
    /// Backend calls that failed.
    pub backend_errors: u64,
    /// Callers that gave up waiting for another's creation past `lock_blocking_timeout` (a
    /// decorated function then ran its body).
    pub lock_timeouts: u64,
    /// Locks that a backend found gone when it extended or released them (their holder's
    /// creation then ran unprotected), reported through [`lock_lost`](crate::lock::lock_lost).
    /// Counted for the whole process, not per region: a backend's lock does not know its region.
    pub locks_lost: u64,
    /// Reads answered by the [local tier](crate::LocalTier) without the shared backend: a call's
    /// first read among them is counted in `hits` too, and a read again under the dogpile lock
    /// only here.
    pub local_hits: u64,
    /// [Backplane](crate::backplane) messages this region sent.
    pub backplane_sent: u64,
    /// Backplane messages from other processes this region applied.
    pub backplane_received: u64,
    /// Backplane messages lost: not sent (the link was down) or received undecodable.
    pub backplane_dropped: u64,
    /// Times the backplane link came back after it was lost.
    pub backplane_reconnects: u64,
    /// Callers that got an expired value because its creator failed (fail-safe, see
    /// [`RegionConfig::fail_safe_max_duration`](crate::RegionConfig::fail_safe_max_duration)),
    /// while the key was throttled or right after the failure.
    pub fail_safe_served: u64,
    /// Callers that got the stale value because their creator ran past `soft_timeout`.
    pub soft_timeouts: u64,
    /// Callers whose creator ran past `hard_timeout`: an error, or the stale value when there
    /// was one.
    pub hard_timeouts: u64,
    /// Refreshes of a value not yet expired, started past `eager_refresh` of its life.
    pub eager_refreshes: u64,
    /// Regenerations of a value not yet expired, drawn by XFetch (`early_expiration_beta`).
    pub early_expirations: u64,
}

impl Stats {
    fn from_counters(c: [u64; COUNTERS]) -> Self {
        use Counter::*;
        Stats {
            hits: c[Hits as usize],
            misses: c[Misses as usize],
            stale_found: c[StaleFound as usize],
            stale_served: c[StaleServed as usize],
            creations: c[Creations as usize],
            creation_time: Duration::from_nanos(c[CreationNanos as usize]),
            creator_errors: c[CreatorErrors as usize],
            waits: c[Waits as usize],
            wait_time: Duration::from_nanos(c[WaitNanos as usize]),
            async_refreshes: c[AsyncRefreshes as usize],
            backend_errors: c[BackendErrors as usize],
            lock_timeouts: c[LockTimeouts as usize],
            locks_lost: crate::lock::locks_lost(),
            local_hits: c[LocalHits as usize],
            backplane_sent: c[BackplaneSent as usize],
            backplane_received: c[BackplaneReceived as usize],
            backplane_dropped: c[BackplaneDropped as usize],
            backplane_reconnects: c[BackplaneReconnects as usize],
            fail_safe_served: c[FailSafeServed as usize],
            soft_timeouts: c[SoftTimeouts as usize],
            hard_timeouts: c[HardTimeouts as usize],
            eager_refreshes: c[EagerRefreshes as usize],
            early_expirations: c[EarlyExpirations as usize],
        }
    }

    /// Hits as a share of all reads (0 when there were none).
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses + self.stale_found;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let avg = |total: Duration, n: u64| {
            if n == 0 {
                "-".to_owned()
            } else {
                format!("{:.3?}", total / u32::try_from(n).unwrap_or(u32::MAX))
            }
        };
        let rows = [
            ("hits", self.hits.to_string()),
            ("misses", self.misses.to_string()),
            ("stale values found", self.stale_found.to_string()),
            ("hit ratio", format!("{:.1}%", self.hit_ratio() * 100.0)),
            ("creations", self.creations.to_string()),
            (
                "mean creation time",
                avg(self.creation_time, self.creations),
            ),
            ("creator errors", self.creator_errors.to_string()),
            ("stale values served", self.stale_served.to_string()),
            ("callers that waited", self.waits.to_string()),
            ("mean wait", avg(self.wait_time, self.waits)),
            ("async refreshes", self.async_refreshes.to_string()),
            ("backend errors", self.backend_errors.to_string()),
            ("lock wait timeouts", self.lock_timeouts.to_string()),
            ("locks lost", self.locks_lost.to_string()),
            ("local tier hits", self.local_hits.to_string()),
            ("backplane sent", self.backplane_sent.to_string()),
            ("backplane received", self.backplane_received.to_string()),
            ("backplane dropped", self.backplane_dropped.to_string()),
            (
                "backplane reconnects",
                self.backplane_reconnects.to_string(),
            ),
            ("fail-safe served", self.fail_safe_served.to_string()),
            ("soft timeouts", self.soft_timeouts.to_string()),
            ("hard timeouts", self.hard_timeouts.to_string()),
            ("eager refreshes", self.eager_refreshes.to_string()),
            ("early expirations", self.early_expirations.to_string()),
        ];
        writeln!(f, "| {:<20} | {:>12} |", "statistic", "value")?;
        writeln!(f, "|{:-<22}|{:->14}|", "", "")?;
        for (name, value) in rows {
            writeln!(f, "| {name:<20} | {value:>12} |")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up_and_survive_thread_exit() {
        let stats = Arc::new(RegionStats::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        stats.incr(Counter::Hits);
                    }
                    stats.add_time(Counter::WaitNanos, Duration::from_micros(1));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        stats.incr(Counter::Misses);
        let s = stats.snapshot();
        assert_eq!(s.hits, 8000);
        assert_eq!(s.misses, 1);
        assert_eq!(s.wait_time, Duration::from_micros(8));
        assert!((s.hit_ratio() - 8000.0 / 8001.0).abs() < 1e-9);
        assert!(s
            .to_string()
            .contains("| hits                 |         8000 |"));
    }

    #[test]
    fn a_handle_that_outlives_its_region_never_counts_into_another() {
        let a = RegionStats::new();
        let late = a.handle();
        let row = a.row.load(Ordering::Relaxed);
        drop(a);
        // Take rows until a's comes back (it must not while its handle lives) or none is left.
        let mut held = Vec::new();
        for _ in 0..ROWS {
            let b = RegionStats::new();
            b.incr(Counter::Misses);
            let r = b.row.load(Ordering::Relaxed);
            held.push(b);
            if r == row || r == SHARED {
                break;
            }
        }
        late.add(Counter::Hits, 5);
        for b in &held {
            assert_eq!(
                b.snapshot().hits,
                0,
                "a dropped region's late count landed in row {}",
                b.row.load(Ordering::Relaxed)
            );
        }
    }

    #[test]
    fn a_handle_of_a_region_without_a_row_counts() {
        // Take rows until none is left: the next region counts in its shared row.
        let mut held = Vec::new();
        let shared = loop {
            let b = RegionStats::new();
            b.incr(Counter::Misses);
            if b.row.load(Ordering::Relaxed) == SHARED {
                break b;
            }
            held.push(b);
            assert!(held.len() <= ROWS, "more rows than ROWS were handed out");
        };
        shared.handle().add(Counter::Hits, 3);
        std::thread::spawn({
            let h = shared.handle();
            move || h.incr(Counter::Hits)
        })
        .join()
        .unwrap();
        assert_eq!(shared.snapshot().hits, 3 + 1);
        assert_eq!(shared.snapshot().misses, 1);
    }

    #[test]
    fn a_dropped_regions_row_is_cleared_for_the_next() {
        let a = RegionStats::new();
        a.add(Counter::Creations, 5);
        let row = a.row.load(Ordering::Relaxed);
        drop(a);
        // Take rows until we get the same one back; it must start at zero.
        let mut held = Vec::new();
        loop {
            let b = RegionStats::new();
            b.incr(Counter::Hits);
            let r = b.row.load(Ordering::Relaxed);
            if r == row || r == SHARED {
                assert_eq!(b.snapshot().creations, 0);
                break;
            }
            held.push(b);
        }
    }
}
