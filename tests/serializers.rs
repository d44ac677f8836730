//! The region's serializers on byte backends (`dogpile.cache.memory_pickle` and the testing byte
//! map): a value read as another type is a miss with the default serializer, every built-in
//! serializer round-trips the test value types through a region, and the `serializer`
//! configuration key.

use std::collections::HashMap;

use dogpile::serializer::{Bincode, Json, MessagePack, Pickle, Serializer};
use dogpile::testing::MapBackend;
use dogpile::{CacheRegion, RegionConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    active: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    number: u64,
    items: Vec<String>,
}

/// Byte-backend regions, each with `config` applied, labelled for failure messages.
fn byte_regions(with: impl Fn(RegionConfig) -> RegionConfig) -> Vec<(&'static str, CacheRegion)> {
    let pickle = CacheRegion::new();
    pickle
        .configure(with(RegionConfig::new("dogpile.cache.memory_pickle")))
        .unwrap();
    let map = CacheRegion::new();
    map.configure(with(RegionConfig::with_backend(MapBackend::bytes())))
        .unwrap();
    vec![("memory_pickle", pickle), ("byte map", map)]
}

fn profile() -> Profile {
    Profile {
        id: 7,
        name: "Ada".into(),
        active: true,
    }
}

#[test]
fn a_value_read_as_another_type_is_a_miss_with_the_default_serializer() {
    for (label, region) in byte_regions(|c| c) {
        region.set("s", "x".repeat(32)).unwrap();
        assert_eq!(region.get::<Vec<u64>>("s").unwrap(), None, "{label}");
        assert_eq!(region.get::<u64>("s").unwrap(), None, "{label}");
        assert_eq!(region.get::<Profile>("s").unwrap(), None, "{label}");

        region.set("v", (0..100u64).collect::<Vec<_>>()).unwrap();
        assert_eq!(region.get::<String>("v").unwrap(), None, "{label}");
        assert_eq!(region.get::<Order>("v").unwrap(), None, "{label}");

        region.set("p", profile()).unwrap();
        assert_eq!(region.get::<Order>("p").unwrap(), None, "{label}");
        assert_eq!(region.get::<String>("p").unwrap(), None, "{label}");
        assert_eq!(region.get::<Vec<u64>>("p").unwrap(), None, "{label}");

        region.set("n", 42u64).unwrap();
        assert_eq!(region.get::<String>("n").unwrap(), None, "{label}");

        // The right type still reads, and the creator of a miss overwrites the foreign entry.
        assert_eq!(
            region.get::<Profile>("p").unwrap(),
            Some(profile()),
            "{label}"
        );
        let got: Vec<u64> = region.get_or_create("s", || vec![1u64, 2]).unwrap();
        assert_eq!(got, vec![1, 2], "{label}");
        assert_eq!(
            region.get::<Vec<u64>>("s").unwrap(),
            Some(vec![1, 2]),
            "{label}"
        );
    }
}

/// The reason bincode is not the default: a `String` reads back as the `Vec<u64>` of its bytes.
#[test]
fn bincode_is_not_self_describing() {
    for (label, region) in byte_regions(|c| c.serializer(Bincode)) {
        region.set("s", "abc".to_string()).unwrap();
        assert_eq!(
            region.get::<Vec<u64>>("s").unwrap(),
            Some(vec![97, 98, 99]),
            "{label}"
        );
    }
}

fn round_trips_through(serializer: impl Serializer + Copy) {
    for (label, region) in byte_regions(|c| c.serializer(serializer)) {
        let label = format!("{label} {}", serializer.name());
        region.set("s", "x".repeat(32)).unwrap();
        assert_eq!(
            region.get::<String>("s").unwrap(),
            Some("x".repeat(32)),
            "{label}"
        );
        region.set("v", (0..100u64).collect::<Vec<_>>()).unwrap();
        assert_eq!(
            region.get::<Vec<u64>>("v").unwrap(),
            Some((0..100).collect()),
            "{label}"
        );
        region.set("p", profile()).unwrap();
        assert_eq!(
            region.get::<Profile>("p").unwrap(),
            Some(profile()),
            "{label}"
        );
        region.set("o", Some(-5i32)).unwrap();
        assert_eq!(
            region.get::<Option<i32>>("o").unwrap(),
            Some(Some(-5)),
            "{label}"
        );
        let map = HashMap::from([("a".to_string(), 1u32)]);
        region.set("m", map.clone()).unwrap();
        assert_eq!(
            region.get::<HashMap<String, u32>>("m").unwrap(),
            Some(map),
            "{label}"
        );
        let got: String = region.get_or_create("c", || "made".to_string()).unwrap();
        assert_eq!(got, "made", "{label}");
        assert_eq!(
            region.get::<String>("c").unwrap().as_deref(),
            Some("made"),
            "{label}"
        );
    }
}

#[test]
fn every_built_in_serializer_round_trips_through_a_region() {
    round_trips_through(MessagePack);
    round_trips_through(Json);
    round_trips_through(Pickle);
    round_trips_through(Bincode);
}

#[test]
fn the_serializer_key_of_a_config_map() {
    let config = |name: &str| {
        HashMap::from([
            (
                "cache.backend".to_string(),
                "dogpile.cache.memory_pickle".to_string(),
            ),
            ("cache.serializer".to_string(), name.to_string()),
        ])
    };
    for name in ["msgpack", "json", "pickle", "bincode"] {
        let region: CacheRegion = CacheRegion::new();
        region
            .configure_from_config(&config(name), "cache.")
            .unwrap();
        region.set("k", profile()).unwrap();
        assert_eq!(
            region.get::<Profile>("k").unwrap(),
            Some(profile()),
            "{name}"
        );
    }
    let err = RegionConfig::from_config(&config("yaml"), "cache.")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cache.serializer: "), "{err}");
    assert!(err.contains("\"yaml\""), "{err}");
    assert!(err.contains("msgpack, json, pickle, bincode"), "{err}");
}

/// What JSON writes is JSON: the bytes after the envelope header.
#[test]
fn json_payloads_are_json() {
    let map = std::sync::Arc::new(MapBackend::bytes());
    let region: CacheRegion = CacheRegion::new();
    region
        .configure(RegionConfig::with_backend(map.clone()).serializer(Json))
        .unwrap();
    region.set("k", profile()).unwrap();
    let raw = map.raw("k").expect("stored");
    let header = 4 + 1 + 8;
    assert_eq!(
        std::str::from_utf8(&raw[header..]).unwrap(),
        r#"{"id":7,"name":"Ada","active":true}"#
    );
}
