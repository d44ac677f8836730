//! Unit tests of the file store.

use super::*;
use dogpile_core::{Metadata, Payload, Timestamp};

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "dogpile-file-unit-{tag}-{}-{}",
            std::process::id(),
            SystemTimeNanos::now()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
struct SystemTimeNanos;
impl SystemTimeNanos {
    fn now() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    }
}

fn value(bytes: &[u8]) -> CachedValue {
    CachedValue {
        payload: Payload::Bytes(Arc::from(bytes)),
        metadata: Metadata::new(Timestamp::from_nanos(42)),
    }
}

fn args(path: &Path) -> Arguments {
    Arguments::new().with("filename", path.to_string_lossy().into_owned())
}

#[test]
fn round_trip_and_undecodable_entries_are_misses() {
    let dir = Dir::new("rt");
    let path = dir.0.join("c.db");
    let b = FileBackend::from_arguments(&args(&path)).unwrap();
    assert!(b.is_empty().unwrap());
    b.set("k", value(b"payload")).unwrap();
    let got = b.get("k").unwrap().unwrap();
    assert_eq!(got.metadata, Metadata::new(Timestamp::from_nanos(42)));
    assert!(matches!(got.payload, Payload::Bytes(p) if &*p == b"payload"));
    // Foreign bytes, text and numbers written by someone else: misses, never errors.
    let c = Connection::open(&path).unwrap();
    c.execute(UPSERT, rusqlite::params!["blob", b"garbage".to_vec()])
        .unwrap();
    c.execute(UPSERT, rusqlite::params!["text", "some text"])
        .unwrap();
    c.execute(UPSERT, rusqlite::params!["int", 7]).unwrap();
    for k in ["blob", "text", "int"] {
        assert!(b.get(k).unwrap().is_none(), "{k}");
    }
    let multi = b.get_multi(&["k", "blob", "none"]).unwrap();
    assert!(multi[0].is_some() && multi[1].is_none() && multi[2].is_none());
    assert_eq!(b.len().unwrap(), 4);
    b.delete_multi(&["k", "blob", "text", "int"]).unwrap();
    assert!(b.is_empty().unwrap());
}

#[test]
fn another_applications_database_is_refused_and_left_alone() {
    let dir = Dir::new("foreign");
    let path = dir.0.join("app.sqlite");
    let c = Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY); INSERT INTO users VALUES (1);")
        .unwrap();
    let err = FileBackend::from_arguments(&args(&path))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&*path.to_string_lossy()), "{err}");
    assert!(err.contains("not a dogpile store"), "{err}");
    let tables: i64 = c
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1);

    let other = dir.0.join("other.sqlite");
    let c = Connection::open(&other).unwrap();
    c.execute_batch("PRAGMA application_id = 1234").unwrap();
    let err = FileBackend::from_arguments(&args(&other))
        .unwrap_err()
        .to_string();
    assert!(err.contains("another application"), "{err}");
}

#[test]
fn lockfile_arguments_read_as_in_dogpile() {
    let dir = Dir::new("lockargs");
    let path = dir.0.join("c.db");
    let off = FileBackend::from_arguments(&args(&path).with("dogpile_lockfile", false)).unwrap();
    assert!(off.get_mutex("k").is_none());
    let named = dir.0.join("my.lock");
    let on = FileBackend::from_arguments(
        &args(&path)
            .with("dogpile_lockfile", named.to_string_lossy().into_owned())
            .with("rw_lockfile", true),
    )
    .unwrap();
    assert!(named.exists());
    let default = FileBackend::from_arguments(&args(&path)).unwrap();
    assert!(with_suffix(&path, ".dogpile.lock").exists());
    if cfg!(target_os = "linux") {
        let a = on.get_mutex("k").unwrap();
        let b = on.get_mutex("k").unwrap();
        let other_file = default.get_mutex("k").unwrap();
        assert!(a.try_acquire().unwrap());
        assert!(!b.try_acquire().unwrap());
        assert!(b.locked().unwrap());
        // Another lock file is another lock.
        assert!(other_file.try_acquire().unwrap());
        a.release().unwrap();
        assert!(!b.locked().unwrap());
        b.wait(std::time::Instant::now() + std::time::Duration::from_secs(3600))
            .unwrap();
        assert!(b.try_acquire().unwrap());
        b.release().unwrap();
        other_file.release().unwrap();
    }
}
