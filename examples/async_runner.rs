//! The async creation runner: when a value has expired, the caller that would regenerate it gets
//! the stale value at once instead, and the new value is made on a background thread. This is
//! the usage guide's `async_creation_runner`, which starts a thread per creation.
//!
//! The runner receives an `AsyncCreation` that owns the key's dogpile lock: running it calls the
//! creator, stores the value and releases the lock, on whatever thread runs it. While it runs,
//! other callers see the lock taken and get the stale value too; nobody waits. A key with no
//! value at all never goes to the runner: its first caller creates, the others wait.
//!
//! The creator must be able to move to another thread (`Send + 'static`), so the call is
//! `region.get_or_create_in_background`; without a runner it behaves as `get_or_create_with`.
//!
//! Run with `cargo run --example async_runner`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dogpile::lock::AsyncCreation;
use dogpile::{CacheRegion, CreateOptions, RegionConfig};

/// The threads the runner started, so `main` can wait for them before it reads the new value.
static BACKGROUND: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the example started, for the log lines.
fn now() -> String {
    format!("{:>7.1} ms", START.elapsed().as_secs_f64() * 1e3)
}

/// The usage guide's runner: a new thread per creation.
fn run_in_a_thread(creation: AsyncCreation) {
    println!(
        "{}  runner: refreshing {:?} on a background thread",
        now(),
        creation.key()
    );
    let thread = std::thread::spawn(move || creation.run());
    BACKGROUND
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(thread);
}

static REGION: LazyLock<CacheRegion> = LazyLock::new(|| {
    dogpile::make_region()
        .name("reports")
        .async_creation_runner(run_in_a_thread)
        .build()
});

const EXPIRATION: Duration = Duration::from_millis(500);
const CREATION_TIME: Duration = Duration::from_millis(300);

static VERSION: AtomicUsize = AtomicUsize::new(0);

/// The expensive creator: 300 ms of work, a new version each time.
fn make_report() -> String {
    std::thread::sleep(CREATION_TIME);
    let v = VERSION.fetch_add(1, Ordering::SeqCst) + 1;
    println!("{}  creator: made report v{v}", now());
    format!("report v{v}")
}

/// One call, timed and printed.
fn call(what: &str) -> dogpile::Result<String> {
    let start = Instant::now();
    let value = REGION.get_or_create_in_background("daily", &CreateOptions::new(), make_report)?;
    println!(
        "{}  {what:<34} -> {value:?} in {:.3} ms",
        now(),
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(value)
}

fn main() -> dogpile::Result<()> {
    LazyLock::force(&START);
    REGION.configure(RegionConfig::new("dogpile.cache.memory").expiration_time(EXPIRATION))?;

    call("first call: no value, creates")?;
    call("second call: a hit")?;

    std::thread::sleep(EXPIRATION + Duration::from_millis(50));
    call("expired: stale value, runner starts")?;
    call("during the refresh: stale value")?;
    std::thread::sleep(Duration::from_millis(100));
    call("still refreshing: stale value")?;

    let threads = std::mem::take(
        &mut *BACKGROUND
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    for thread in threads {
        let _ = thread.join();
    }
    call("after the refresh: the new value")?;

    println!();
    println!("region.stats():");
    print!("{}", REGION.stats());
    Ok(())
}
