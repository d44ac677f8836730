//! The usage guide's recipe "Asynchronous data updates with ORM events", on SQLite: when a transaction
//! that changed the data commits, the cached query result is refreshed in a background thread
//! with the generated `get_some_data_refresh`. The writer does not wait for the re-query, and
//! readers never wait either: they keep getting the cached value until the refreshed one replaces
//! it.
//!
//! The usage guide hooks SQLAlchemy's `after_commit` event. SQLite's own hook,
//! `Connection::commit_hook`, runs *while* the transaction commits: the new rows are not yet
//! visible to other connections, and the commit can still fail. Starting the refresh from inside
//! the hook would race the commit and could cache the old rows. So the hook only marks the
//! refreshes queued in that transaction as due, and they start once `COMMIT` has returned; a
//! rollback hook drops the refreshes of a transaction that is rolled back.
//!
//! The database is a file in the temporary directory, removed at the end: the refresh opens a
//! connection of its own, as the usage guide's refresh uses a session local to it.
//!
//! Run with `cargo run --example refresh_after_commit`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};
use rusqlite::Connection;

static REGION: CacheRegion = CacheRegion::named("data");

/// Where the database is; set once in `main`.
static DB_PATH: OnceLock<PathBuf> = OnceLock::new();

/// How many times the query really ran.
static QUERIES: AtomicUsize = AtomicUsize::new(0);

/// How long the "expensive" query takes.
const QUERY_TIME: Duration = Duration::from_millis(200);

fn open_db() -> rusqlite::Result<Connection> {
    let path = DB_PATH
        .get()
        .map(PathBuf::as_path)
        .unwrap_or(Path::new(":memory:"));
    let conn = Connection::open(path)?;
    // Another connection may be committing: wait for it rather than fail.
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn query(argument: &str) -> rusqlite::Result<Vec<String>> {
    QUERIES.fetch_add(1, Ordering::SeqCst);
    // A connection of the caller's own: the refresh runs on another thread than the writer.
    let conn = open_db()?;
    std::thread::sleep(QUERY_TIME);
    let mut statement = conn.prepare("SELECT value FROM data WHERE argument = ?1 ORDER BY id")?;
    let rows = statement.query_map([argument], |row| row.get(0))?;
    rows.collect()
}

/// The cached query. An error is returned to the caller and not cached.
#[cache_on_arguments(region = REGION)]
fn get_some_data(argument: &str) -> Result<Vec<String>, String> {
    query(argument).map_err(|e| e.to_string())
}

/// Work to do once a transaction has committed.
type Refresh = Box<dyn FnOnce() + Send>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection with SQLAlchemy's `after_commit` event, as far as this recipe needs it.
struct Session {
    conn: Connection,
    /// Refreshes asked for in the open transaction.
    queued: Arc<Mutex<Vec<Refresh>>>,
    /// Refreshes of the transaction being committed: the commit hook moves them here.
    due: Arc<Mutex<Vec<Refresh>>>,
}

impl Session {
    fn open() -> rusqlite::Result<Session> {
        let conn = open_db()?;
        let queued: Arc<Mutex<Vec<Refresh>>> = Arc::default();
        let due: Arc<Mutex<Vec<Refresh>>> = Arc::default();
        let (q, d) = (queued.clone(), due.clone());
        conn.commit_hook(Some(move || {
            // SQLite is committing: this transaction's refreshes are due once COMMIT returns.
            // Nothing else happens here: the data is not visible to other connections yet.
            let refreshes = std::mem::take(&mut *lock(&q));
            lock(&d).extend(refreshes);
            false // false lets the commit go on
        }));
        let q = queued.clone();
        conn.rollback_hook(Some(move || lock(&q).clear()));
        Ok(Session { conn, queued, due })
    }

    /// The usage guide's `cache_refresh(session, refresher, *args)`: run `refresher` in a background
    /// thread after the current transaction commits, and not at all if it rolls back.
    fn cache_refresh(&self, refresher: impl FnOnce() + Send + 'static) {
        lock(&self.queued).push(Box::new(refresher));
    }

    fn begin(&self) -> rusqlite::Result<()> {
        self.conn.execute_batch("BEGIN")
    }

    /// Commits, then starts the refreshes the commit made due; returns their threads so the
    /// example can tell when they are done.
    fn commit(&self) -> rusqlite::Result<Vec<JoinHandle<()>>> {
        let committed = self.conn.execute_batch("COMMIT");
        let due = std::mem::take(&mut *lock(&self.due));
        committed?; // a failed commit drops them
        Ok(due.into_iter().map(std::thread::spawn).collect())
    }

    fn rollback(&self) -> rusqlite::Result<()> {
        self.conn.execute_batch("ROLLBACK")
    }

    /// How many refreshes are queued or due.
    fn pending_refreshes(&self) -> usize {
        lock(&self.queued).len() + lock(&self.due).len()
    }
}

/// The usage guide's `add_new_data`: add a row, and ask for the cached query to be refreshed after the
/// commit.
fn add_new_data(session: &Session, argument: &str, value: &str) -> rusqlite::Result<()> {
    session.conn.execute(
        "INSERT INTO data (argument, value) VALUES (?1, ?2)",
        [argument, value],
    )?;
    let argument = argument.to_owned();
    session.cache_refresh(move || {
        if let Err(e) = get_some_data_refresh(&argument) {
            eprintln!("refreshing get_some_data({argument:?}) failed: {e}");
        }
    });
    Ok(())
}

/// Removes the database file (and SQLite's journal) when dropped.
struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let mut journal = self.0.clone().into_os_string();
        journal.push("-journal");
        let _ = std::fs::remove_file(journal);
    }
}

/// One call of the reader thread.
struct Sample {
    /// When it started.
    at: Instant,
    took: Duration,
    value: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!(
        "dogpile-refresh-after-commit-{}.sqlite",
        std::process::id()
    ));
    let _cleanup = TempDb(path.clone());
    DB_PATH.get_or_init(|| path);
    REGION.configure(RegionConfig::new("dogpile.cache.memory").expiration_time(3600))?;

    let session = Session::open()?;
    session.conn.execute_batch(
        "CREATE TABLE data (id INTEGER PRIMARY KEY, argument TEXT NOT NULL, value TEXT NOT NULL);
         INSERT INTO data (argument, value) VALUES ('fruit', 'apple'), ('fruit', 'banana');",
    )?;

    let start = Instant::now();
    let first = get_some_data("fruit")?;
    println!(
        "first call runs the query: {first:?} in {:.0} ms",
        ms(start.elapsed())
    );

    // A reader calling every 10 ms while the writer commits and the refresh runs.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let at = Instant::now();
                let value = get_some_data("fruit").unwrap_or_default();
                samples.push(Sample {
                    at,
                    took: at.elapsed(),
                    value,
                });
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };

    std::thread::sleep(Duration::from_millis(60));
    let commit_start = Instant::now();
    session.begin()?;
    add_new_data(&session, "fruit", "cherry")?;
    let refreshes = session.commit()?;
    let committed = Instant::now();
    println!(
        "writer: inserted \"cherry\" and committed in {:.2} ms; {} refresh started in the background",
        ms(committed - commit_start),
        refreshes.len()
    );
    for refresh in refreshes {
        let _ = refresh.join();
    }
    let refreshed = committed.elapsed();
    std::thread::sleep(Duration::from_millis(60));
    stop.store(true, Ordering::SeqCst);
    let samples = reader.join().map_err(|_| "the reader thread panicked")?;

    println!("reader, one call every 10 ms (times relative to the commit):");
    let mut i = 0;
    while i < samples.len() {
        let run = samples[i..]
            .iter()
            .take_while(|s| s.value == samples[i].value)
            .count();
        let (first, last) = (&samples[i], &samples[i + run - 1]);
        println!(
            "  {run:>2} calls from {:>+7.1} ms to {:>+7.1} ms: {:?}",
            signed_ms(first.at, committed),
            signed_ms(last.at, committed),
            first.value
        );
        i += run;
    }
    let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    println!(
        "  slowest reader call: {:.3} ms (never waited for the query, which takes {} ms)",
        ms(slowest),
        QUERY_TIME.as_millis()
    );
    println!(
        "  the refresh stored the new value {:.0} ms after the commit",
        ms(refreshed)
    );

    // A transaction that rolls back queues no refresh: the cached value stays as it is.
    session.begin()?;
    add_new_data(&session, "fruit", "durian")?;
    session.rollback()?;
    let refreshes = session.pending_refreshes();
    println!(
        "writer: inserted \"durian\" and rolled back; refreshes left to run: {refreshes}; cached: {:?}",
        get_some_data("fruit")?
    );
    println!(
        "the query ran {} times: the first call and the refresh",
        QUERIES.load(Ordering::SeqCst)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `at - reference` in milliseconds, negative when `at` is earlier.
fn signed_ms(at: Instant, reference: Instant) -> f64 {
    match at.checked_duration_since(reference) {
        Some(after) => ms(after),
        None => -ms(reference - at),
    }
}
