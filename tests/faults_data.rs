//! Corrupt or foreign data at a key: garbage bytes, a truncated envelope, an envelope of another
//! format version, a value of another type. On `dogpile.cache.memory_pickle`,
//! `dogpile.cache.memory`, the file store and memcached, each is a miss (`get` gives `None`, and
//! so does `get_multi`), and `get_or_create` overwrites it with a good value. Never a panic.
//!
//! (`tests/region.rs` does the same on a map backend of the testing module.)

mod support;

use std::sync::Arc;
use std::time::SystemTime;

use dogpile::backend::{Metadata, Payload, FORMAT_VERSION};
use dogpile::clock::Timestamp;
#[cfg(any(feature = "file", feature = "memcached"))]
use dogpile::codec::encode_envelope;
use dogpile::codec::encode_value;
use dogpile::{make_region, CacheRegion, CachedValue};

/// The value read at every key; the good one is a wide number (nine bytes encoded).
const GOOD: i64 = 1 << 40;
const MADE: i64 = 42;

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

fn bytes_value(payload: Vec<u8>, version: u8) -> CachedValue {
    CachedValue {
        payload: Payload::Bytes(payload.into()),
        metadata: Metadata::with_version(now(), version),
    }
}

/// Checks one bad entry the caller has just put at `key`.
fn assert_miss_then_overwritten(region: &CacheRegion, key: &str) {
    assert_eq!(region.get::<i64>(key).unwrap(), None, "{key}");
    assert_eq!(
        region.get_multi::<i64, _>(&[key]).unwrap(),
        vec![None],
        "{key}"
    );
    assert_eq!(region.get_or_create(key, || MADE).unwrap(), MADE, "{key}");
    assert_eq!(region.get::<i64>(key).unwrap(), Some(MADE), "{key}");
}

/// Bad payloads as a byte backend keeps them (`memory_pickle` stores payload and metadata).
fn bad_byte_values() -> Vec<(&'static str, CachedValue)> {
    let good = encode_value(&GOOD).unwrap();
    let string = encode_value(&"a string, not a number".to_string()).unwrap();
    vec![
        (
            "garbage",
            bytes_value(b"\x00\xffnot a payload".to_vec(), FORMAT_VERSION),
        ),
        ("empty", bytes_value(Vec::new(), FORMAT_VERSION)),
        (
            "truncated",
            bytes_value(good[..good.len() - 3].to_vec(), FORMAT_VERSION),
        ),
        (
            "longer",
            bytes_value([&good[..], b"??"].concat(), FORMAT_VERSION),
        ),
        ("version", bytes_value(good.clone(), FORMAT_VERSION + 1)),
        ("old-version", bytes_value(good, 0)),
        ("string", bytes_value(string, FORMAT_VERSION)),
    ]
}

#[test]
fn memory_pickle() {
    let region = make_region()
        .configure(dogpile::RegionConfig::new("dogpile.cache.memory_pickle").expiration_time(60))
        .unwrap();
    let backend = region.backend().unwrap();
    region.set("ok", GOOD).unwrap();
    assert_eq!(region.get::<i64>("ok").unwrap(), Some(GOOD));
    let mut bad = bad_byte_values();
    // An object of another type where bytes are expected (another process cannot do this, a
    // proxy could).
    bad.push((
        "object",
        CachedValue {
            payload: Payload::Object(Arc::new("text".to_string())),
            metadata: Metadata::new(now()),
        },
    ));
    for (key, value) in bad {
        backend.set(key, value).unwrap();
        assert_miss_then_overwritten(&region, key);
    }
    // A value of another type written through the region.
    region.set("typed", "text".to_string()).unwrap();
    assert_miss_then_overwritten(&region, "typed");
}

#[test]
fn memory() {
    let region = make_region()
        .configure(dogpile::RegionConfig::new("dogpile.cache.memory").expiration_time(60))
        .unwrap();
    let backend = region.backend().unwrap();
    let object = |v: Arc<dyn std::any::Any + Send + Sync>, version: u8| CachedValue {
        payload: Payload::Object(v),
        metadata: Metadata::with_version(now(), version),
    };
    let mut bad = bad_byte_values();
    bad.extend([
        (
            "object-string",
            object(Arc::new("text".to_string()), FORMAT_VERSION),
        ),
        ("object-i32", object(Arc::new(42i32), FORMAT_VERSION)),
        ("object-version", object(Arc::new(GOOD), FORMAT_VERSION + 1)),
        ("object-unit", object(Arc::new(()), FORMAT_VERSION)),
    ]);
    for (key, value) in bad {
        backend.set(key, value).unwrap();
        assert_miss_then_overwritten(&region, key);
    }
    region.set("typed", "text".to_string()).unwrap();
    assert_miss_then_overwritten(&region, "typed");
}

/// Raw entries as another program could leave them in a byte store: not envelopes, truncated
/// envelopes, envelopes of another version, and envelopes of another type.
#[cfg(any(feature = "file", feature = "memcached"))]
fn bad_raw_entries() -> Vec<(&'static str, Vec<u8>)> {
    let envelope = |payload: Vec<u8>| {
        encode_envelope(&bytes_value(payload, FORMAT_VERSION)).expect("an envelope")
    };
    let good = envelope(encode_value(&GOOD).unwrap());
    let mut other_version = good.clone();
    other_version[4] = FORMAT_VERSION + 1;
    vec![
        ("garbage", b"\x00\xffnot an envelope at all".to_vec()),
        (
            "pickle",
            b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00".to_vec(),
        ),
        ("short", good[..6].to_vec()),
        ("header-only", good[..13].to_vec()),
        ("truncated", good[..good.len() - 2].to_vec()),
        ("version", other_version),
        (
            "string",
            envelope(encode_value(&"a string".to_string()).unwrap()),
        ),
        (
            "huge-length",
            envelope(vec![0xFD, 0, 0, 0, 0, 0, 1, 0, 0, b'x']),
        ),
    ]
}

#[cfg(feature = "file")]
#[test]
fn file_store() {
    let dir = support::TempDir::new("faults-data");
    let path = dir.path().join("cache.db");
    let region = make_region()
        .configure(
            dogpile::RegionConfig::new("dogpile.cache.dbm")
                .expiration_time(60)
                .argument("filename", path.to_string_lossy().into_owned()),
        )
        .unwrap();
    region.set("ok", GOOD).unwrap();
    // Another program writes into the store's table directly.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    let stored: Vec<u8> = conn
        .query_row(
            "SELECT value FROM dogpile_cache WHERE key = 'ok'",
            [],
            |r| r.get(0),
        )
        .expect("the region's key is stored unmangled in dogpile_cache");
    assert!(stored.starts_with(b"DGPL"));
    let mut entries = bad_raw_entries();
    entries.push(("empty", Vec::new()));
    for (key, raw) in entries {
        conn.execute(
            "INSERT OR REPLACE INTO dogpile_cache (key, value) VALUES (?1, ?2)",
            rusqlite::params![key, raw],
        )
        .unwrap();
        assert_miss_then_overwritten(&region, key);
    }
    // A value of another SQLite type in the BLOB column (SQLite does not enforce column types).
    for (key, sql) in [
        (
            "text",
            "INSERT OR REPLACE INTO dogpile_cache VALUES ('text', 'some text')",
        ),
        (
            "int",
            "INSERT OR REPLACE INTO dogpile_cache VALUES ('int', 12)",
        ),
        (
            "real",
            "INSERT OR REPLACE INTO dogpile_cache VALUES ('real', 1.5)",
        ),
    ] {
        conn.execute(sql, []).unwrap();
        match region.get::<i64>(key) {
            Ok(v) => assert_eq!(v, None, "{key}"),
            Err(e) => assert!(e.is_backend() && e.to_string().contains("cache.db"), "{e}"),
        }
        assert_eq!(region.get_or_create(key, || MADE).unwrap(), MADE, "{key}");
        assert_eq!(region.get::<i64>(key).unwrap(), Some(MADE), "{key}");
    }
    region.set("typed", "text".to_string()).unwrap();
    assert_miss_then_overwritten(&region, "typed");
}

#[cfg(feature = "memcached")]
#[test]
fn memcached() {
    use std::io::{BufRead, BufReader, Write};
    let Some(server) = support::Server::memcached() else {
        return;
    };
    let region = make_region()
        .configure(
            dogpile::RegionConfig::new("dogpile.cache.memcached")
                .expiration_time(60)
                .argument("url", server.addr())
                .argument("socket_timeout", 5.0),
        )
        .unwrap();
    region.set("ok", GOOD).unwrap();
    // Another client writes raw bytes with memcached's text protocol.
    let raw_set = |key: &str, value: &[u8], flags: u32| {
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        write!(s, "set {key} {flags} 0 {}\r\n", value.len()).unwrap();
        s.write_all(value).unwrap();
        s.write_all(b"\r\n").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        assert_eq!(line, "STORED\r\n");
    };
    let mut entries = bad_raw_entries();
    entries.push(("empty", Vec::new()));
    for (key, raw) in entries {
        raw_set(key, &raw, 0);
        assert_miss_then_overwritten(&region, key);
    }
    // Other clients' flags (pylibmc marks pickles and integers with flags).
    for flags in [1, 2, 4, 16, 0xFFFF_FFFF] {
        let key = format!("flags-{flags}");
        raw_set(&key, b"12345", flags);
        assert_miss_then_overwritten(&region, &key);
    }
    region.set("typed", "text".to_string()).unwrap();
    assert_miss_then_overwritten(&region, "typed");
}
