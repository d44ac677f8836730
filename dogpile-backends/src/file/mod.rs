//! `dogpile.cache.dbm`: the embedded file store, the cache that several processes on one host
//! share without a server.
//!
//! Arguments (dogpile's):
//!
//! | name | type | default | meaning |
//! |---|---|---|---|
//! | `filename` | path | required | the store, an SQLite database (created if missing; its folder must exist) |
//! | `rw_lockfile` | path or bool | `true` | accepted for dogpile configs; SQLite's own locking is the readers/writer lock, so no file is made |
//! | `dogpile_lockfile` | path or bool | `true`: `FILENAME.dogpile.lock` | the file whose locks are the dogpile lock across processes; `false`: the region's in-process lock |
//!
//! **Storage engine.** SQLite (bundled by `rusqlite`, so no system library is needed) in WAL
//! mode: any number of processes read and write one file safely, readers never block the
//! writer, and a busy timeout (10 s) queues writers instead of failing them. Values survive a
//! restart. An embedded engine that admits one process at a time (`redb`, `sled`) would break
//! the point of this backend. The file is marked with an SQLite `application_id`; a file that is
//! not SQLite, or an SQLite database of another application, is an error naming the file at
//! configuration (never a panic); an entry whose bytes do not decode is a miss.
//!
//! **The dogpile lock.** On Linux, `get_mutex` takes an exclusive open-file-description lock
//! (`fcntl(F_OFD_SETLK)`) on one byte of the lock file: byte `hash(key) mod 2^20`, so each key
//! (up to rare hash collisions, which only serialize two keys across processes) has its own lock,
//! in one file. Within a process a byte is locked once and shared by every key on it, so a caller
//! never waits on its own process's lock for another key; the same key is still held once. The
//! kernel drops the locks of a process that dies, so a killed creator never blocks the others.
//! Waits poll, and end by their deadline. On other systems the region's in-process lock is used.
//!
//! **Async callers.** `get_async`, `set_async`, `delete_async` and the lock's `wait_async` run
//! their blocking SQLite and lock calls on the `blocking` crate's thread pool, which needs no
//! particular runtime: an executor thread never waits on the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use dogpile_core::codec::{decode_envelope_or_miss, encode_envelope_for};
use dogpile_core::{
    ArgValue, Arguments, Backend, BoxFuture, CacheMutex, CachedValue, Error, PayloadKind, Result,
};

const NAME: &str = "dogpile.cache.dbm";
/// The SQLite `application_id` of a dogpile store: `DGPC`.
const APPLICATION_ID: i64 = 0x4447_5043;
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_CONNECTIONS: usize = 8;

/// The embedded file store.
pub struct FileBackend {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    name: String,
    idle: Mutex<Vec<Connection>>,
    lockfile: Option<Arc<lock::LockFile>>,
}

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBackend")
            .field("path", &self.inner.path)
            .field("lockfile", &self.inner.lockfile)
            .finish()
    }
}

/// A path-or-boolean argument, as dogpile reads `rw_lockfile` and `dogpile_lockfile`:
/// `Some(path)` for a path, the default path for `true` or absent, `None` for `false`.
fn lockfile_arg(args: &Arguments, name: &str, default: PathBuf) -> Result<Option<PathBuf>> {
    match args.get(name) {
        None | Some(ArgValue::None) | Some(ArgValue::Bool(true)) => Ok(Some(default)),
        Some(ArgValue::Bool(false)) => Ok(None),
        Some(ArgValue::Str(s)) if !s.trim().is_empty() => Ok(Some(PathBuf::from(s))),
        Some(other) => Err(args.error(
            name,
            format!(
                "expected a file path, true or false; got {} {other}",
                other.type_name()
            ),
        )),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Reading the header first: a file that is not SQLite fails here, before anything is written.
    conn.query_row("PRAGMA application_id", [], |r| r.get::<_, i64>(0))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!(
                "cannot switch the journal to WAL (it stays {mode})"
            )),
        ));
    }
    // WAL makes NORMAL safe from corruption; a power cut may lose the last writes of a cache.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Whether SQLite said the file is busy or locked by another connection.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Why a file is not a store we may use, or `None` when it is one (after marking a new file).
fn prepare_schema(conn: &mut Connection) -> rusqlite::Result<Option<String>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let app: i64 = tx.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    if app != APPLICATION_ID {
        if app != 0 {
            return Ok(Some(format!(
                "an SQLite database of another application (application_id {app:#x}), not a dogpile store"
            )));
        }
        let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 {
            return Ok(Some(
                "an SQLite database that already holds other tables, not a dogpile store".into(),
            ));
        }
        tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))?;
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS dogpile_cache (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID",
    )?;
    tx.commit()?;
    Ok(None)
}

impl FileBackend {
    /// Makes one from configuration arguments (see the module documentation). Opens the file, so a
    /// file that is not a store is an error here, naming the file.
    pub fn from_arguments(args: &Arguments) -> Result<Self> {
        args.expect_only(NAME, &["filename", "rw_lockfile", "dogpile_lockfile"])?;
        let filename = args
            .string("filename")?
            .filter(|f| !f.trim().is_empty())
            .ok_or_else(|| args.error("filename", "missing: the path of the store is required"))?;
        let path = PathBuf::from(filename);
        // dogpile's rw_lockfile: SQLite's locks play its part; only its type is checked.
        lockfile_arg(args, "rw_lockfile", with_suffix(&path, ".rw.lock"))?;
        let lockfile = lockfile_arg(
            args,
            "dogpile_lockfile",
            with_suffix(&path, ".dogpile.lock"),
        )?;
        Self::open(path, lockfile)
    }

    /// Opens (or creates) the store at `path`; `lockfile` is the dogpile lock file, `None` for the
    /// region's in-process lock.
    pub fn open(path: PathBuf, lockfile: Option<PathBuf>) -> Result<Self> {
        let name = format!("{NAME} {}", path.display());
        let fail = |what: &str, e: rusqlite::Error| {
            Error::backend(name.clone(), format!("{what}: {e}"), e)
        };
        // Several processes creating one store at once can make SQLite answer "busy" at once,
        // without its busy handler (switching a new file to WAL takes an exclusive lock): retry
        // for as long as the busy timeout would have waited.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let (conn, why) = loop {
            let attempt = open_connection(&path)
                .map_err(|e| ("cannot open the store", e))
                .and_then(|mut conn| {
                    let why =
                        prepare_schema(&mut conn).map_err(|e| ("cannot prepare the store", e))?;
                    Ok((conn, why))
                });
            match attempt {
                Ok(opened) => break opened,
                Err((_, e)) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err((what, e)) => return Err(fail(what, e)),
            }
        };
        if let Some(why) = why {
            return Err(Error::backend_msg(name, format!("the file is {why}")));
        }
        let lockfile = match &lockfile {
            Some(lf) => Some(lock::open(lf).map_err(|e| {
                Error::backend(
                    name.clone(),
                    format!("cannot open the dogpile lock file {}: {e}", lf.display()),
                    e,
                )
            })?),
            None => None,
        };
        Ok(FileBackend {
            inner: Arc::new(Inner {
                path,
                name,
                idle: Mutex::new(vec![conn]),
                lockfile,
            }),
        })
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many entries the store holds.
    pub fn len(&self) -> Result<u64> {
        self.inner.with_conn("count", |c| {
            c.query_row("SELECT count(*) FROM dogpile_cache", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
        })
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl Inner {
    fn with_conn<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let pooled = self.idle.lock().pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path).map_err(|e| self.error(what, e))?,
        };
        let r = f(&mut conn);
        {
            let mut idle = self.idle.lock();
            if idle.len() < IDLE_CONNECTIONS {
                idle.push(conn);
            }
        }
        r.map_err(|e| self.error(what, e))
    }

    fn error(&self, what: &str, e: rusqlite::Error) -> Error {
        Error::backend(self.name.clone(), format!("{what} failed: {e}"), e)
    }

    fn encode(&self, key: &str, value: &CachedValue) -> Result<Vec<u8>> {
        encode_envelope_for(value, &self.name, key)
    }

    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        let raw = self.with_conn("get", |c| read_value(&mut c.prepare_cached(SELECT)?, key))?;
        Ok(raw.and_then(|b| decode_envelope_or_miss(&b, &self.name, key)))
    }

    fn set(&self, key: &str, value: &CachedValue) -> Result<()> {
        let bytes = self.encode(key, value)?;
        self.with_conn("set", |c| {
            c.prepare_cached(UPSERT)?
                .execute(rusqlite::params![key, bytes])
                .map(|_| ())
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.with_conn("delete", |c| {
            c.prepare_cached(DELETE)?.execute([key]).map(|_| ())
        })
    }
}

/// Runs `f` on the `blocking` crate's thread pool, off the caller's executor thread: SQLite
/// calls block (on the disk, and on another process's write for up to the busy timeout).
fn off_executor<T: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
) -> BoxFuture<'static, Result<T>> {
    let inner = inner.clone();
    Box::pin(blocking::unblock(move || f(&inner)))
}

fn read_value(
    stmt: &mut rusqlite::CachedStatement<'_>,
    key: &str,
) -> rusqlite::Result<Option<Vec<u8>>> {
    stmt.query_row([key], |r| {
        Ok(match r.get_ref(0)? {
            ValueRef::Blob(b) | ValueRef::Text(b) => Some(b.to_vec()),
            _ => None,
        })
    })
    .optional()
    .map(Option::flatten)
}

const SELECT: &str = "SELECT value FROM dogpile_cache WHERE key = ?1";
const UPSERT: &str = "INSERT OR REPLACE INTO dogpile_cache (key, value) VALUES (?1, ?2)";
const DELETE: &str = "DELETE FROM dogpile_cache WHERE key = ?1";

impl Backend for FileBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn payload_kind(&self) -> PayloadKind {
        PayloadKind::Bytes
    }

    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        self.inner.set(key, &value)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // One read transaction: the values come from one snapshot.
        let raws = self.inner.with_conn("get_multi", |c| {
            let tx = c.transaction()?;
            let raws = {
                let mut stmt = tx.prepare_cached(SELECT)?;
                keys.iter()
                    .map(|k| read_value(&mut stmt, k))
                    .collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.commit()?;
            Ok(raws)
        })?;
        Ok(keys
            .iter()
            .zip(raws)
            .map(|(k, raw)| raw.and_then(|b| decode_envelope_or_miss(&b, &self.inner.name, k)))
            .collect())
    }

    fn set_multi(&self, items: Vec<(String, CachedValue)>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let encoded = items
            .iter()
            .map(|(k, v)| Ok((k.as_str(), self.inner.encode(k, v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.inner.with_conn("set_multi", |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(UPSERT)?;
                for (k, v) in &encoded {
                    stmt.execute(rusqlite::params![k, v])?;
                }
            }
            tx.commit()
        })
    }

    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.inner.with_conn("delete_multi", |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(DELETE)?;
                for k in keys {
                    stmt.execute([k])?;
                }
            }
            tx.commit()
        })
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        let lockfile = self.inner.lockfile.as_ref()?;
        lock::mutex(lockfile.clone(), key)
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<CachedValue>>> {
        let key = key.to_owned();
        off_executor(&self.inner, move |inner| inner.get(&key))
    }

    fn set_async<'a>(&'a self, key: &'a str, value: CachedValue) -> BoxFuture<'a, Result<()>> {
        let key = key.to_owned();
        off_executor(&self.inner, move |inner| inner.set(&key, &value))
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        let key = key.to_owned();
        off_executor(&self.inner, move |inner| inner.delete(&key))
    }
}

#[cfg(target_os = "linux")]
mod lock;

/// The byte of the lock file that locks `key` (for tests that need two keys on one byte).
#[cfg(target_os = "linux")]
#[doc(hidden)]
pub use lock::slot as lock_slot;

#[cfg(not(target_os = "linux"))]
mod lock {
    //! Without open-file-description locks, the region's in-process lock is used.

    use std::path::Path;
    use std::sync::Arc;

    use dogpile_core::CacheMutex;

    /// Nothing: no lock file is used.
    #[derive(Debug)]
    pub(crate) struct LockFile;

    pub(crate) fn open(_path: &Path) -> std::io::Result<Arc<LockFile>> {
        Ok(Arc::new(LockFile))
    }

    pub(crate) fn mutex(_file: Arc<LockFile>, _key: &str) -> Option<Box<dyn CacheMutex>> {
        None
    }
}

#[cfg(test)]
mod tests;
