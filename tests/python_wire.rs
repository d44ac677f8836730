//! The Python wire format against the exact bytes Python dogpile.cache 1.5.0 wrote into Redis
//! (`tests/fixtures/python-dogpile-1.5-redis-samples.txt`, captured from the real library): a
//! Rust region with the Python side's serializer reads every value, and what it writes in the
//! Python format has the same layout. Bad input from the other side is a miss, never a panic.
//! The same format against the live Python library is in `tests/python_interop.rs`.
#![cfg(feature = "testing")]

use std::collections::BTreeMap;
use std::sync::Arc;

use dogpile::codec::WireFormat;
use dogpile::serializer::{Json, Pickle, Serializer};
use dogpile::testing::MapBackend;
use dogpile::{CacheRegion, RegionConfig};

/// Reads a Python bytes literal (`b'…'`) as Python's `repr` writes it.
fn python_bytes(lit: &str) -> Vec<u8> {
    let body = lit
        .strip_prefix("b'")
        .and_then(|l| l.strip_suffix('\''))
        .or_else(|| lit.strip_prefix("b\"").and_then(|l| l.strip_suffix('"')))
        .unwrap_or_else(|| panic!("not a bytes literal: {lit}"));
    let mut out = Vec::new();
    let mut chars = body.bytes();
    while let Some(c) = chars.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        match chars.next().expect("an escape") {
            b'x' => {
                let hex = [chars.next().unwrap(), chars.next().unwrap()];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
            }
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            other => out.push(other),
        }
    }
    out
}

/// The samples: key -> the bytes Python stored.
fn samples() -> BTreeMap<String, Vec<u8>> {
    let text = include_str!("fixtures/python-dogpile-1.5-redis-samples.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split('\t');
            let key = python_bytes(parts.next().unwrap());
            let value = python_bytes(parts.next().unwrap());
            (String::from_utf8(key).unwrap(), value)
        })
        .collect()
}

/// A byte-backend region holding the samples, reading with `serializer`.
fn region_with(serializer: impl Serializer) -> (CacheRegion, Arc<MapBackend>) {
    let map = Arc::new(MapBackend::bytes());
    for (k, v) in samples() {
        map.put_raw(&k, v);
    }
    let region = dogpile::make_region()
        .configure(
            RegionConfig::with_backend(map.clone())
                // A century: the samples, written on 2026-12-01, stay fresh.
                .expiration_time(std::time::Duration::from_secs(100 * 365 * 24 * 3600))
                .serializer(serializer)
                .wire_format(WireFormat::Python),
        )
        .unwrap();
    (region, map)
}

#[test]
fn rust_reads_what_python_pickled() {
    let (region, _) = region_with(Pickle);
    assert_eq!(region.get::<i64>("p:int").unwrap(), Some(42));
    assert_eq!(region.get::<f64>("p:float").unwrap(), Some(1.5));
    assert_eq!(
        region.get::<String>("p:str").unwrap().as_deref(),
        Some("héllo")
    );
    assert_eq!(region.get::<bool>("p:bool").unwrap(), Some(true));
    assert_eq!(region.get::<Option<i64>>("p:none").unwrap(), Some(None));
    assert_eq!(
        region.get::<(i64, String)>("p:tuple").unwrap(),
        Some((1, "x".to_string()))
    );
    assert_eq!(
        region.get::<serde_json::Value>("p:list").unwrap(),
        Some(serde_json::json!([1, "a", null]))
    );
    assert_eq!(
        region.get::<serde_json::Value>("p:dict").unwrap(),
        Some(serde_json::json!({"a": 1, "b": [1, 2]}))
    );
    // The entry of a decorated Python function: a dict it returned.
    #[derive(serde::Deserialize, serde::Serialize, Clone, Debug, PartialEq)]
    struct User {
        id: u32,
        lang: String,
    }
    assert_eq!(
        region.get::<User>("__main__:load_user|ns|7 en").unwrap(),
        Some(User {
            id: 7,
            lang: "en".into()
        })
    );
    // Its creation time is Python's `ct`.
    let entry = region
        .get_value_metadata_ignore_expiration::<i64>("p:int")
        .unwrap()
        .unwrap();
    let ct = entry
        .created_at()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((ct - 1796155618.951386).abs() < 1e-6, "{ct}");
    // A value of another type is a miss.
    assert_eq!(region.get::<Vec<u64>>("p:str").unwrap(), None);
    assert_eq!(region.get::<String>("p:int").unwrap(), None);
    // Invalidation goes by Python's `ct` too: soft makes the value stale (a creator runs, the
    // others would get it), hard makes it absent.
    region.invalidate(false);
    assert_eq!(region.get::<i64>("p:int").unwrap(), None);
    assert_eq!(region.get_or_create("p:int", || 43i64).unwrap(), 43);
    region.invalidate(true);
    assert_eq!(region.get::<i64>("p:float").unwrap(), None);
    assert_eq!(
        region.get_ignore_expiration::<f64>("p:float").unwrap(),
        Some(1.5)
    );
}

#[test]
fn rust_reads_what_python_wrote_as_json() {
    let (region, _) = region_with(Json);
    assert_eq!(region.get::<i64>("j:int").unwrap(), Some(42));
    assert_eq!(region.get::<f64>("j:float").unwrap(), Some(1.5));
    assert_eq!(
        region.get::<String>("j:str").unwrap().as_deref(),
        Some("héllo")
    );
    assert_eq!(region.get::<bool>("j:bool").unwrap(), Some(true));
    assert_eq!(region.get::<Option<u8>>("j:none").unwrap(), Some(None));
    assert_eq!(
        region.get::<serde_json::Value>("j:list").unwrap(),
        Some(serde_json::json!([1, "a", null]))
    );
    assert_eq!(
        region
            .get::<BTreeMap<String, serde_json::Value>>("j:dict")
            .unwrap(),
        Some(BTreeMap::from([
            ("a".to_string(), serde_json::json!(1)),
            ("b".to_string(), serde_json::json!([1, 2])),
        ]))
    );
    // Pickled bytes read with JSON: a miss, not garbage.
    assert_eq!(region.get::<i64>("p:int").unwrap(), None);
}

#[test]
fn what_rust_writes_in_the_python_format_has_pythons_layout() {
    let (region, map) = region_with(Pickle);
    region.set("r:int", 42i64).unwrap();
    let raw = map.raw("r:int").unwrap();
    let bar = raw.iter().position(|b| *b == b'|').unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&raw[..bar]).unwrap();
    assert_eq!(meta["v"], 2);
    assert!(meta["ct"].as_f64().unwrap() > 1.7e9);
    // The payload is a pickle (protocol 2 or later starts with PROTO).
    assert_eq!(raw[bar + 1], 0x80);
    assert_eq!(region.get::<i64>("r:int").unwrap(), Some(42));
    // The default format stays this toolkit's envelope, and reads Python's entries too.
    let default = dogpile::make_region()
        .configure(RegionConfig::with_backend(map.clone()).serializer(Pickle))
        .unwrap();
    default.set("d:int", 1i64).unwrap();
    assert!(map.raw("d:int").unwrap().starts_with(b"DGPL"));
    assert_eq!(default.get::<i64>("p:int").unwrap(), Some(42));
}

#[test]
fn bad_input_from_the_other_side_is_a_miss() {
    let (region, map) = region_with(Pickle);
    // A pickled instance of a plain Python class (`__main__.Point(1, 2)`) reads as its
    // attributes: a Rust struct with those fields gets them, any other type is a miss.
    map.put_raw(
        "instance",
        b"{\"ct\": 1796155618.95, \"v\": 2}|\x80\x04\x95#\x00\x00\x00\x00\x00\x00\x00\x8c\x08__main__\x94\x8c\x05Point\x94\x93\x94)\x81\x94}\x94(\x8c\x01x\x94K\x01\x8c\x01y\x94K\x02ub."
            .to_vec(),
    );
    #[derive(serde::Deserialize, serde::Serialize, Clone, Debug, PartialEq)]
    struct Point {
        x: i64,
        y: i64,
    }
    assert_eq!(
        region.get::<Point>("instance").unwrap(),
        Some(Point { x: 1, y: 2 })
    );
    assert_eq!(region.get::<i64>("instance").unwrap(), None);
    assert_eq!(region.get::<(i64, i64)>("instance").unwrap(), None);
    let bad: &[(&str, &[u8])] = &[
        // An opcode pickle does not have.
        ("opcode", b"{\"ct\": 1796155618.95, \"v\": 2}|\x80\x04\xff."),
        // A metadata line that is not JSON, or not dogpile's.
        ("not-json", b"{ct: 1}|\x80\x04K*."),
        ("no-bar", b"{\"ct\": 1796155618.95, \"v\": 2}"),
        ("wrong-shape", b"{\"created\": 1, \"v\": 2}|\x80\x04K*."),
        (
            "old-version",
            b"{\"ct\": 1796155618.95, \"v\": 1}|\x80\x04K*.",
        ),
        ("negative-ct", b"{\"ct\": -5, \"v\": 2}|\x80\x04K*."),
        (
            "truncated",
            b"{\"ct\": 1796155618.95, \"v\": 2}|\x80\x04\x95\x18\x00",
        ),
    ];
    for (key, bytes) in bad {
        map.put_raw(key, bytes.to_vec());
        assert_eq!(region.get::<i64>(key).unwrap(), None, "{key}");
        assert_eq!(region.get::<serde_json::Value>(key).unwrap(), None, "{key}");
    }
    // A JSON value of the wrong shape, read with JSON.
    let (json, map) = region_with(Json);
    map.put_raw(
        "shape",
        b"{\"ct\": 1796155618.95, \"v\": 2}|{\"a\": 1}".to_vec(),
    );
    assert_eq!(json.get::<Vec<u64>>("shape").unwrap(), None);
    // The next creation overwrites a bad entry.
    assert_eq!(region.get_or_create("opcode", || 5i64).unwrap(), 5);
}

#[test]
fn the_python_wire_format_takes_a_serializer_python_reads() {
    // Without a serializer, Python's default on Redis: pickle.
    let map = Arc::new(MapBackend::bytes());
    let region = dogpile::make_region()
        .configure(RegionConfig::with_backend(map.clone()).wire_format(WireFormat::Python))
        .unwrap();
    region.set("k", 1i64).unwrap();
    let raw = map.raw("k").unwrap();
    let bar = raw.iter().position(|b| *b == b'|').unwrap();
    assert_eq!(raw[bar + 1], 0x80, "a pickle");
    // MessagePack or bincode would make Python raise: refused.
    for config in [
        RegionConfig::with_backend(MapBackend::bytes())
            .serializer(dogpile::serializer::MessagePack),
        RegionConfig::with_backend(MapBackend::bytes()).serializer(dogpile::serializer::Bincode),
    ] {
        let err = dogpile::make_region()
            .configure(config.wire_format(WireFormat::Python))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("serializer: Python dogpile cannot read"),
            "{err}"
        );
    }
}
