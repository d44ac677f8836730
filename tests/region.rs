//! The region's public API on the in-process backends: configuration, get/set/delete, expiration,
//! invalidation, key mangling, proxies, custom backends, the async runner, and the dogpile lock
//! under contention.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, SystemTime};

use dogpile::backend::{CachedValueRef, PayloadKind};
use dogpile::clock::Clock;
use dogpile::lock::AsyncCreation;
use dogpile::testing::MapBackend;
use dogpile::{
    make_region, register_backend, sha1_mangle_key, Backend, CacheRegion, CachedValue, CreateError,
    CreateOptions, Error, Expiration, ProxyBackend, RegionConfig,
};

mod support;
use support::manual_memory_region as memory_region;

// ---------------------------------------------------------------------------------------------
// configuration

#[test]
fn a_static_region_is_configured_at_run_time() {
    static REGION: CacheRegion = CacheRegion::named("static-region");
    assert!(!REGION.is_configured());
    let err = REGION.get::<u32>("k").unwrap_err();
    assert_eq!(
        err.to_string(),
        "region static-region is not configured: call configure() or configure_from_config() before using it"
    );
    REGION.configure("dogpile.cache.memory").unwrap();
    assert!(REGION.is_configured());
    REGION.set("k", 5u32).unwrap();
    assert_eq!(REGION.get::<u32>("k").unwrap(), Some(5));
}

#[test]
fn configuring_twice_needs_replace_existing_backend() {
    let region = make_region()
        .name("twice")
        .configure("dogpile.cache.memory")
        .unwrap();
    region.set("k", 1u8).unwrap();
    let err = region.configure("dogpile.cache.null").unwrap_err();
    assert!(matches!(err, Error::AlreadyConfigured { .. }));
    assert_eq!(
        err.to_string(),
        "region twice already has a backend (dogpile.cache.memory): pass replace_existing_backend(true) to replace it"
    );
    region
        .configure(RegionConfig::new("dogpile.cache.null").replace_existing_backend(true))
        .unwrap();
    assert_eq!(region.backend_name().as_deref(), Some("dogpile.cache.null"));
    assert_eq!(
        region.get::<u8>("k").unwrap(),
        None,
        "the null backend holds nothing"
    );
}

#[test]
fn unknown_backends_list_the_known_ones() {
    let err = make_region().configure("dogpile.cache.nope").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("unknown backend \"dogpile.cache.nope\"; known backends: "),
        "{text}"
    );
    for name in [
        "dogpile.cache.memory",
        "dogpile.cache.memory_pickle",
        "dogpile.cache.null",
    ] {
        assert!(text.contains(name), "{text}");
    }
    // From a configuration map, the error names the key too.
    let err = make_region()
        .build()
        .configure_from_config([("cache.x.backend", "nope")], "cache.x.")
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cache.x.backend: unknown backend \"nope\"; known backends: "),
        "{err}"
    );
}

#[test]
fn unknown_and_mistyped_arguments_are_errors_that_name_them() {
    let err = make_region()
        .configure(RegionConfig::new("dogpile.cache.memory").argument("max_sise", 10))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "arguments.max_sise: unknown argument for dogpile.cache.memory; it takes: max_size"
    );
    let err = make_region()
        .configure(RegionConfig::new("dogpile.cache.memory").argument("max_size", "lots"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "arguments.max_size: expected a non-negative integer, got a string \"lots\""
    );
    let config: HashMap<String, String> = [
        ("cache.local.backend", "dogpile.cache.memory"),
        ("cache.local.arguments.max_size", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let err = make_region()
        .build()
        .configure_from_config(&config, "cache.local.")
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cache.local.arguments.max_size: expected a positive integer, got 0"
    );
}

#[test]
fn configure_from_config_with_dogpiles_layout() {
    let config: HashMap<String, String> = [
        ("cache.local.backend", "dogpile.cache.memory"),
        ("cache.local.expiration_time", "2"),
        ("cache.local.arguments.max_size", "100"),
        ("cache.other.backend", "dogpile.cache.null"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let local = make_region().build();
    local
        .configure_from_config(&config, "cache.local.")
        .unwrap();
    assert_eq!(
        local.backend_name().as_deref(),
        Some("dogpile.cache.memory")
    );
    let other = make_region().build();
    other
        .configure_from_config(&config, "cache.other.")
        .unwrap();
    assert_eq!(other.backend_name().as_deref(), Some("dogpile.cache.null"));
}

// ---------------------------------------------------------------------------------------------
// get / set / delete

#[test]
fn get_set_delete_and_their_multi_versions() {
    let (region, _) = memory_region(60);
    assert_eq!(region.get::<String>("a").unwrap(), None);
    region.set("a", "one".to_string()).unwrap();
    assert_eq!(region.get::<String>("a").unwrap().as_deref(), Some("one"));
    region.delete("a").unwrap();
    region.delete("a").unwrap(); // idempotent
    assert_eq!(region.get::<String>("a").unwrap(), None);

    region.set_multi([("x", 1i64), ("y", 2), ("z", 3)]).unwrap();
    assert_eq!(
        region.get_multi::<i64, _>(&["z", "missing", "x"]).unwrap(),
        vec![Some(3), None, Some(1)]
    );
    region.delete_multi(&["x", "z"]).unwrap();
    assert_eq!(
        region.get_multi::<i64, _>(&["x", "y", "z"]).unwrap(),
        vec![None, Some(2), None]
    );
}

#[test]
fn cached_none_zero_and_empty_values_are_hits() {
    let (region, _) = memory_region(60);
    let calls = AtomicUsize::new(0);
    let count = || {
        calls.fetch_add(1, Ordering::SeqCst);
    };
    for _ in 0..3 {
        assert_eq!(
            region
                .get_or_create("none", || {
                    count();
                    None::<u8>
                })
                .unwrap(),
            None
        );
        assert_eq!(
            region
                .get_or_create("zero", || {
                    count();
                    0u64
                })
                .unwrap(),
            0
        );
        assert_eq!(
            region
                .get_or_create("empty", || {
                    count();
                    String::new()
                })
                .unwrap(),
            ""
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(region.get::<Option<u8>>("none").unwrap(), Some(None));
}

#[test]
fn the_byte_path_round_trips_and_reads_another_type_as_a_miss() {
    let region = make_region()
        .configure("dogpile.cache.memory_pickle")
        .unwrap();
    region.set("v", vec![1u16, 2, 3]).unwrap();
    assert_eq!(region.get::<Vec<u16>>("v").unwrap(), Some(vec![1, 2, 3]));
    region.set("s", "a string".to_string()).unwrap();
    assert_eq!(region.get::<i64>("s").unwrap(), None);
    // ... and the next creation overwrites it.
    assert_eq!(region.get_or_create("s", || 7i64).unwrap(), 7);
    assert_eq!(region.get::<i64>("s").unwrap(), Some(7));

    let objects = make_region().configure("dogpile.cache.memory").unwrap();
    objects.set("s", "a string".to_string()).unwrap();
    assert_eq!(objects.get::<i64>("s").unwrap(), None);
    assert_eq!(objects.get_or_create("s", || 8i64).unwrap(), 8);
}

#[test]
fn corrupt_and_foreign_bytes_are_a_miss_then_overwritten() {
    let backend = Arc::new(MapBackend::bytes());
    let region = make_region()
        .configure(RegionConfig::with_backend(backend.clone()))
        .unwrap();
    region.set("good", 1u32).unwrap();
    let good = backend.raw("good").unwrap();
    let mut other_version = good.clone();
    other_version[4] += 1;
    for (key, raw) in [
        ("garbage", b"\x00\xffnot an envelope".to_vec()),
        ("truncated", good[..6].to_vec()),
        ("version", other_version),
        ("empty", Vec::new()),
    ] {
        backend.put_raw(key, raw);
        assert_eq!(region.get::<u32>(key).unwrap(), None, "{key}");
        assert_eq!(region.get_or_create(key, || 9u32).unwrap(), 9, "{key}");
        assert_eq!(region.get::<u32>(key).unwrap(), Some(9), "{key}");
    }
}

// ---------------------------------------------------------------------------------------------
// expiration

#[test]
fn get_honours_expiration_unless_told_to_ignore_it() {
    let (region, clock) = memory_region(Duration::from_millis(1500));
    region.set("k", 1u8).unwrap();
    clock.advance(Duration::from_millis(1500));
    assert_eq!(
        region.get::<u8>("k").unwrap(),
        Some(1),
        "expiry is strict: age == ttl is fresh"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(region.get::<u8>("k").unwrap(), None);
    assert_eq!(region.get_ignore_expiration::<u8>("k").unwrap(), Some(1));
    assert_eq!(region.get_with_expiration::<u8>("k", 10).unwrap(), Some(1));
    assert_eq!(region.get_with_expiration::<u8>("k", -1).unwrap(), Some(1));
}

#[test]
fn get_or_create_regenerates_after_expiration() {
    let (region, clock) = memory_region(10);
    let n = AtomicUsize::new(0);
    let make = || n.fetch_add(1, Ordering::SeqCst);
    assert_eq!(region.get_or_create("k", make).unwrap(), 0);
    clock.advance(Duration::from_secs(10));
    assert_eq!(region.get_or_create("k", make).unwrap(), 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(region.get_or_create("k", make).unwrap(), 1);
}

#[test]
fn zero_expires_at_once_and_never_never_expires() {
    let (region, clock) = memory_region(0);
    let n = AtomicUsize::new(0);
    let make = || n.fetch_add(1, Ordering::SeqCst);
    assert_eq!(region.get_or_create("k", make).unwrap(), 0);
    assert_eq!(region.get_or_create("k", make).unwrap(), 1);
    let never = CreateOptions::new().expiration_time(Expiration::Never);
    assert_eq!(region.get_or_create_with("n", &never, make).unwrap(), 2);
    clock.advance(Duration::from_secs(100 * 365 * 24 * 3600));
    assert_eq!(region.get_or_create_with("n", &never, make).unwrap(), 2);

    let (never_region, clock) = memory_region(-1);
    never_region.set("k", 1u8).unwrap();
    clock.advance(Duration::from_secs(10_000_000));
    assert_eq!(never_region.get::<u8>("k").unwrap(), Some(1));
}

#[test]
fn a_computed_expiration_is_asked_on_every_call() {
    let (region, clock) = memory_region(60);
    let ttl = Arc::new(Mutex::new(Duration::from_secs(100)));
    let ttl2 = ttl.clone();
    let dynamic = CreateOptions::new()
        .expiration_time(Expiration::computed(move || Some(*ttl2.lock().unwrap())));
    let n = AtomicUsize::new(0);
    let make = || n.fetch_add(1, Ordering::SeqCst);
    assert_eq!(region.get_or_create_with("k", &dynamic, make).unwrap(), 0);
    clock.advance(Duration::from_secs(61));
    assert_eq!(region.get_or_create_with("k", &dynamic, make).unwrap(), 0);
    *ttl.lock().unwrap() = Duration::from_secs(30);
    assert_eq!(region.get_or_create_with("k", &dynamic, make).unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// invalidation

#[test]
fn hard_invalidation_makes_values_absent() {
    let (region, clock) = memory_region(60);
    region.set("k", 1u8).unwrap();
    clock.advance(Duration::from_millis(1));
    region.invalidate(true);
    assert_eq!(region.get::<u8>("k").unwrap(), None);
    assert_eq!(region.get_ignore_expiration::<u8>("k").unwrap(), Some(1));
    assert_eq!(region.get_or_create("k", || 2u8).unwrap(), 2);
    assert_eq!(
        region.get::<u8>("k").unwrap(),
        Some(2),
        "values created after it are fine"
    );
}

#[test]
fn soft_invalidation_makes_values_stale() {
    let (region, clock) = memory_region(60);
    region.set("k", 1u8).unwrap();
    clock.advance(Duration::from_millis(1));
    region.invalidate(false);
    assert_eq!(
        region.get::<u8>("k").unwrap(),
        None,
        "get treats it as expired"
    );
    // The caller that takes the lock regenerates; one that cannot gets the stale value.
    let holder = {
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let region = Arc::new(region);
        let r2 = region.clone();
        let t = std::thread::spawn(move || {
            r2.get_or_create("k", || {
                tx.send(()).unwrap();
                go_rx.recv().unwrap();
                3u8
            })
            .unwrap()
        });
        rx.recv().unwrap();
        assert!(region.key_is_locked("k").unwrap());
        assert_eq!(
            region.get_or_create("k", || 4u8).unwrap(),
            1,
            "stale served at once"
        );
        go_tx.send(()).unwrap();
        (t, region)
    };
    assert_eq!(holder.0.join().unwrap(), 3);
    assert_eq!(holder.1.get::<u8>("k").unwrap(), Some(3));
}

#[test]
fn soft_invalidation_without_expiration_is_an_error_before_the_creator_runs() {
    let region = make_region()
        .name("noexp")
        .configure("dogpile.cache.memory")
        .unwrap();
    region.set("k", 1u8).unwrap();
    region.invalidate(false);
    let err = region
        .get_or_create("k", || -> u8 { panic!("the creator must not run") })
        .unwrap_err();
    assert!(
        matches!(err, Error::SoftInvalidationWithoutExpiration { .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// should_cache_fn, failing and panicking creators

fn dont_cache_none(value: &Option<String>) -> bool {
    value.is_some()
}

#[test]
fn should_cache_fn_keeps_refused_values_out_and_the_old_entry_in_place() {
    let (region, clock) = memory_region(10);
    let options = CreateOptions::new().should_cache_fn(dont_cache_none);
    assert_eq!(
        region.get_or_create_with("k", &options, || None).unwrap(),
        None
    );
    assert_eq!(region.get::<Option<String>>("k").unwrap(), None);
    let v = region
        .get_or_create_with("k", &options, || Some("x".to_string()))
        .unwrap();
    assert_eq!(v.as_deref(), Some("x"));
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        region.get_or_create_with("k", &options, || None).unwrap(),
        None
    );
    assert_eq!(
        region.get_ignore_expiration::<Option<String>>("k").unwrap(),
        Some(Some("x".to_string())),
        "the refused value did not overwrite the stored one"
    );
}

#[test]
fn a_creator_error_reaches_its_caller_only_and_releases_the_lock() {
    let (region, _) = memory_region(60);
    let r: Result<u8, CreateError<&str>> =
        region.try_get_or_create("k", &CreateOptions::new(), || Err("no database"));
    assert!(matches!(r, Err(CreateError::Creator("no database"))));
    assert!(!region.key_is_locked("k").unwrap());
    assert_eq!(region.get::<u8>("k").unwrap(), None);
    assert_eq!(region.get_or_create("k", || 5u8).unwrap(), 5);
}

#[test]
fn a_panicking_creator_releases_the_lock() {
    let (region, _) = memory_region(60);
    let region = Arc::new(region);
    let r2 = region.clone();
    let result =
        std::thread::spawn(move || r2.get_or_create("k", || -> u8 { panic!("boom") })).join();
    assert!(result.is_err());
    assert!(!region.key_is_locked("k").unwrap());
    assert_eq!(region.get_or_create("k", || 6u8).unwrap(), 6);
    assert_eq!(region.lock_registry_len(), 0);
}

#[test]
fn a_creator_may_get_or_create_other_keys() {
    let (region, _) = memory_region(60);
    let v = region
        .get_or_create("outer", || {
            let a = region.get_or_create("inner-a", || 2u32).unwrap();
            let b = region.get_or_create("inner-b", || 3u32).unwrap();
            a * b
        })
        .unwrap();
    assert_eq!(v, 6);
    assert_eq!(region.get::<u32>("inner-a").unwrap(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// keys

#[test]
fn a_key_mangler_prefixes_every_key() {
    let backend = Arc::new(MapBackend::default());
    let region = make_region()
        .key_mangler(|key| format!("myapp:dogpile:{key}"))
        .configure(RegionConfig::with_backend(backend.clone()))
        .unwrap();
    region.set("user:1", 1u8).unwrap();
    region.get_or_create("user:2", || 2u8).unwrap();
    assert_eq!(
        backend.keys(),
        vec!["myapp:dogpile:user:1", "myapp:dogpile:user:2"]
    );
    assert_eq!(region.get::<u8>("user:1").unwrap(), Some(1));
}

#[test]
fn the_sha1_mangler_gives_fixed_length_keys() {
    let backend = Arc::new(MapBackend::default());
    let region = make_region()
        .key_mangler(sha1_mangle_key)
        .configure(RegionConfig::with_backend(backend.clone()))
        .unwrap();
    region
        .set("a key with spaces and \n a newline", 1u8)
        .unwrap();
    let keys = backend.keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].len(), 40);
    assert!(keys[0].bytes().all(|b| b.is_ascii_hexdigit()));
}

struct ManglingBackend(MapBackend);

impl Backend for ManglingBackend {
    fn name(&self) -> &str {
        "mangling"
    }
    fn payload_kind(&self) -> PayloadKind {
        PayloadKind::Object
    }
    fn get(&self, key: &str) -> dogpile::Result<Option<CachedValue>> {
        self.0.get(key)
    }
    fn set(&self, key: &str, value: CachedValue) -> dogpile::Result<()> {
        self.0.set(key, value)
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.0.delete(key)
    }
    fn key_mangler(&self) -> Option<dogpile::key::KeyMangler> {
        Some(dogpile::key::KeyMangler::Fn(|k| format!("backend:{k}")))
    }
}

#[test]
fn the_backends_mangler_applies_unless_the_region_disables_or_replaces_it() {
    let backend = Arc::new(ManglingBackend(MapBackend::default()));
    let default = make_region()
        .configure(RegionConfig::with_backend(backend.clone()))
        .unwrap();
    default.set("a", 1u8).unwrap();
    let disabled = make_region()
        .no_key_mangler()
        .configure(RegionConfig::with_backend(backend.clone()))
        .unwrap();
    disabled.set("b", 1u8).unwrap();
    let own = make_region()
        .key_mangler(|k| format!("own:{k}"))
        .configure(RegionConfig::with_backend(backend.clone()))
        .unwrap();
    own.set("c", 1u8).unwrap();
    assert_eq!(backend.0.keys(), vec!["b", "backend:a", "own:c"]);
}

#[test]
fn key_is_locked_looks_at_the_mangled_key_and_never_takes_the_lock() {
    let region = Arc::new(
        make_region()
            .key_mangler(sha1_mangle_key)
            .configure("dogpile.cache.memory")
            .unwrap(),
    );
    assert!(!region.key_is_locked("k").unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let r2 = region.clone();
    let t = std::thread::spawn(move || {
        r2.get_or_create("k", || {
            tx.send(()).unwrap();
            go_rx.recv().unwrap();
            1u8
        })
    });
    rx.recv().unwrap();
    assert!(region.key_is_locked("k").unwrap());
    assert!(!region.key_is_locked("other").unwrap());
    go_tx.send(()).unwrap();
    t.join().unwrap().unwrap();
    assert!(!region.key_is_locked("k").unwrap());
    assert_eq!(region.lock_registry_len(), 0);
}

#[test]
fn value_metadata_gives_the_value_its_creation_time_and_age() {
    let (region, clock) = memory_region(10);
    let before = clock.now();
    region.set("k", 1u8).unwrap();
    clock.advance(Duration::from_secs(4));
    let entry = region.get_value_metadata::<u8>("k").unwrap().unwrap();
    assert_eq!(entry.value, 1);
    assert_eq!(entry.metadata.created_at, before);
    assert_eq!(entry.created_at(), before.to_system_time());
    assert_eq!(entry.metadata.version, dogpile::backend::FORMAT_VERSION);
    assert_eq!(entry.age, Duration::from_secs(4));
    // Stored as another type: not this entry.
    assert_eq!(region.get_value_metadata::<String>("k").unwrap(), None);
    // A per-call expiration shorter than its age.
    assert_eq!(
        region
            .get_value_metadata_with_expiration::<u8>("k", 3)
            .unwrap(),
        None
    );
    clock.advance(Duration::from_secs(7));
    assert_eq!(region.get_value_metadata::<u8>("k").unwrap(), None);
    assert_eq!(region.get_value_metadata::<u8>("missing").unwrap(), None);
    // Expired, or invalidated: still there when expiration is ignored.
    region.invalidate(true);
    let old = region
        .get_value_metadata_ignore_expiration::<u8>("k")
        .unwrap()
        .expect("an expired, invalidated value is still there");
    assert_eq!((old.value, old.age), (1, Duration::from_secs(11)));
}

#[test]
fn get_multi_takes_a_per_call_expiration_or_ignores_it() {
    let (region, clock) = memory_region(60);
    region.set_multi([("a", 1u8), ("b", 2)]).unwrap();
    clock.advance(Duration::from_secs(20));
    region.set("c", 3u8).unwrap();
    let keys = ["a", "b", "c", "none"];
    assert_eq!(
        region.get_multi::<u8, _>(&keys).unwrap(),
        [Some(1), Some(2), Some(3), None]
    );
    assert_eq!(
        region
            .get_multi_with_expiration::<u8, _>(&keys, 10)
            .unwrap(),
        [None, None, Some(3), None]
    );
    clock.advance(Duration::from_secs(50));
    assert_eq!(
        region.get_multi::<u8, _>(&keys).unwrap(),
        [None, None, Some(3), None]
    );
    region.invalidate(true);
    assert_eq!(
        region.get_multi::<u8, _>(&keys).unwrap(),
        [None, None, None, None]
    );
    assert_eq!(
        region.get_multi_ignore_expiration::<u8, _>(&keys).unwrap(),
        [Some(1), Some(2), Some(3), None]
    );
    // A value of another type is a miss even when expiration is ignored.
    assert_eq!(
        region
            .get_multi_ignore_expiration::<String, _>(&["a"])
            .unwrap(),
        [None]
    );
}

/// A byte backend whose batch reads go only through `visit_multi`, visiting the keys found last
/// to first and once past the end: `get_multi` fails, so a batch read that used it would fail.
struct VisitOnly(MapBackend);

impl Backend for VisitOnly {
    fn name(&self) -> &str {
        "visit only"
    }
    fn payload_kind(&self) -> PayloadKind {
        PayloadKind::Bytes
    }
    fn get(&self, key: &str) -> dogpile::Result<Option<CachedValue>> {
        self.0.get(key)
    }
    fn set(&self, key: &str, value: CachedValue) -> dogpile::Result<()> {
        self.0.set(key, value)
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.0.delete(key)
    }
    fn get_multi(&self, _keys: &[&str]) -> dogpile::Result<Vec<Option<CachedValue>>> {
        Err(Error::backend_msg(
            "visit only",
            "get_multi is not for batch reads",
        ))
    }
    fn visit_multi(
        &self,
        keys: &[&str],
        f: &mut dyn FnMut(usize, CachedValueRef<'_>),
    ) -> dogpile::Result<()> {
        let found: Vec<(usize, CachedValue)> = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((i, self.0.get(k).ok()??)))
            .collect();
        for (i, v) in found.iter().rev() {
            f(*i, v.view());
        }
        // A faulty backend's position out of range is ignored by the region.
        if let Some((_, v)) = found.first() {
            f(keys.len(), v.view());
        }
        Ok(())
    }
}

#[test]
fn batch_reads_decode_what_visit_multi_hands_out_and_count_each_key() {
    let (clock, time) = Clock::manual(SystemTime::now());
    let region = make_region()
        .configure(
            RegionConfig::with_backend(VisitOnly(MapBackend::bytes()))
                .expiration_time(60)
                .clock(clock),
        )
        .unwrap();
    region.set("old", 1u8).unwrap();
    time.advance(Duration::from_secs(61));
    region.set_multi([("a", 2u8), ("b", 3)]).unwrap();
    let keys = ["a", "none", "old", "b", "a"];
    assert_eq!(
        region.get_multi::<u8, _>(&keys).unwrap(),
        [Some(2), None, None, Some(3), Some(2)]
    );
    let stats = region.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.stale_found),
        (3, 1, 1),
        "{stats}"
    );
    assert_eq!(
        region.get_multi_ignore_expiration::<u8, _>(&keys).unwrap(),
        [Some(2), None, Some(1), Some(3), Some(2)]
    );
    // A value of another type is a miss, not a panic.
    assert_eq!(region.get_multi::<String, _>(&["a"]).unwrap(), [None]);
}

/// Batches of up to 128 small answers are gathered on the stack, the others on the heap: every
/// size across that edge, and answers too large for the stack, come back whole and in order,
/// with keys the region keeps as they are and keys its mangler rewrites.
#[test]
fn batch_reads_of_every_size_and_answer_size_come_back_in_order() {
    let plain = make_region()
        .configure(RegionConfig::with_backend(VisitOnly(MapBackend::bytes())))
        .unwrap();
    let mangled = make_region()
        .key_mangler(sha1_mangle_key)
        .configure(RegionConfig::with_backend(VisitOnly(MapBackend::bytes())))
        .unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    // Every third key is stored, as a small answer (its key) and as a large one (its position,
    // in an [u64; 8]: 72 bytes), so an answer in the wrong place shows.
    let large = |i: usize| [i as u64; 8];
    for region in [&plain, &mangled] {
        region
            .set_multi(keys.iter().step_by(3).map(|k| (k.as_str(), k.clone())))
            .unwrap();
        for (i, k) in keys.iter().enumerate().step_by(3) {
            region.set(&format!("large:{k}"), large(i)).unwrap();
        }
    }
    for region in [&plain, &mangled] {
        for n in [0, 1, 2, 127, 128, 129, 300] {
            let asked = &keys[..n];
            let want: Vec<Option<String>> = asked
                .iter()
                .enumerate()
                .map(|(i, k)| (i % 3 == 0).then(|| k.clone()))
                .collect();
            assert_eq!(region.get_multi::<String, _>(asked).unwrap(), want, "{n}");
            let asked_large: Vec<String> = asked.iter().map(|k| format!("large:{k}")).collect();
            let want_large: Vec<Option<[u64; 8]>> =
                (0..n).map(|i| (i % 3 == 0).then(|| large(i))).collect();
            assert_eq!(
                region.get_multi::<[u64; 8], _>(&asked_large).unwrap(),
                want_large,
                "{n}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the seed's custom backend, proxies and async runner

/// The seed's `DictionaryBackend`.
#[derive(Default)]
struct DictionaryBackend {
    cache: Mutex<HashMap<String, CachedValue>>,
}

impl Backend for DictionaryBackend {
    fn name(&self) -> &str {
        "dictionary"
    }
    fn payload_kind(&self) -> PayloadKind {
        PayloadKind::Object
    }
    fn get(&self, key: &str) -> dogpile::Result<Option<CachedValue>> {
        Ok(self.cache.lock().unwrap().get(key).cloned())
    }
    fn set(&self, key: &str, value: CachedValue) -> dogpile::Result<()> {
        self.cache.lock().unwrap().insert(key.to_owned(), value);
        Ok(())
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        self.cache.lock().unwrap().remove(key);
        Ok(())
    }
}

#[test]
fn a_custom_backend_registered_by_name() {
    register_backend("dictionary", |args: &dogpile::config::Arguments| {
        args.expect_only("dictionary", &[])?;
        Ok(DictionaryBackend::default())
    });
    let region = make_region()
        .name("myregion")
        .configure("dictionary")
        .unwrap();
    region.set("somekey", "somevalue".to_string()).unwrap();
    assert_eq!(
        region.get::<String>("somekey").unwrap().as_deref(),
        Some("somevalue")
    );
    assert_eq!(region.backend_name().as_deref(), Some("dictionary"));
}

/// The seed's `LoggingProxy`, recording what it saw.
#[derive(Default, Clone)]
struct LoggingProxy {
    log: Arc<Mutex<Vec<String>>>,
}

impl ProxyBackend for LoggingProxy {
    fn set(&self, proxied: &dyn Backend, key: &str, value: CachedValue) -> dogpile::Result<()> {
        self.log
            .lock()
            .unwrap()
            .push(format!("Setting Cache Key: {key}"));
        proxied.set(key, value)
    }
}

/// The seed's `RetryDeleteProxy`.
struct RetryDeleteProxy {
    retry_count: usize,
    attempts: Arc<AtomicUsize>,
}

impl ProxyBackend for RetryDeleteProxy {
    fn delete(&self, proxied: &dyn Backend, key: &str) -> dogpile::Result<()> {
        let mut last = Ok(());
        for _ in 0..self.retry_count {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            last = proxied.delete(key);
            if last.is_ok() {
                break;
            }
        }
        last
    }
}

/// A backend whose deletes fail a given number of times first.
struct FlakyDeletes {
    inner: MapBackend,
    failures_left: AtomicUsize,
}

impl Backend for FlakyDeletes {
    fn name(&self) -> &str {
        "flaky"
    }
    fn payload_kind(&self) -> PayloadKind {
        PayloadKind::Object
    }
    fn get(&self, key: &str) -> dogpile::Result<Option<CachedValue>> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: CachedValue) -> dogpile::Result<()> {
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> dogpile::Result<()> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::backend_msg("flaky", "delete failed"));
        }
        self.inner.delete(key)
    }
}

#[test]
fn the_seeds_proxies_wrap_in_order() {
    let logging = LoggingProxy::default();
    let attempts = Arc::new(AtomicUsize::new(0));
    let region = make_region()
        .configure(
            RegionConfig::with_backend(FlakyDeletes {
                inner: MapBackend::default(),
                failures_left: AtomicUsize::new(3),
            })
            .wrap(logging.clone())
            .wrap(RetryDeleteProxy {
                retry_count: 5,
                attempts: attempts.clone(),
            }),
        )
        .unwrap();
    region.set("a", 1u8).unwrap();
    region.get_or_create("b", || 2u8).unwrap();
    assert_eq!(
        *logging.log.lock().unwrap(),
        vec!["Setting Cache Key: a", "Setting Cache Key: b"]
    );
    region.delete("a").unwrap();
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        4,
        "3 failures, then success"
    );
    assert_eq!(region.get::<u8>("a").unwrap(), None);
}

/// Records the order in which proxies see a call.
struct Tag(&'static str, Arc<Mutex<Vec<&'static str>>>);

impl ProxyBackend for Tag {
    fn get(&self, proxied: &dyn Backend, key: &str) -> dogpile::Result<Option<CachedValue>> {
        self.1.lock().unwrap().push(self.0);
        proxied.get(key)
    }
}

#[test]
fn the_first_proxy_in_the_list_is_outermost() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let region = make_region()
        .configure(
            RegionConfig::new("dogpile.cache.memory")
                .wrap(Tag("first", seen.clone()))
                .wrap(Tag("second", seen.clone())),
        )
        .unwrap();
    region.get::<u8>("k").unwrap();
    assert_eq!(*seen.lock().unwrap(), vec!["first", "second"]);
}

#[test]
fn proxies_are_named_in_config_maps_by_their_registered_names() {
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    struct Static(&'static str);
    impl ProxyBackend for Static {
        fn get(&self, proxied: &dyn Backend, key: &str) -> dogpile::Result<Option<CachedValue>> {
            SEEN.lock().unwrap().push(self.0);
            proxied.get(key)
        }
    }
    dogpile::register_proxy("test.outer", || Static("outer"));
    dogpile::register_proxy("test.inner", || Static("inner"));
    let region = make_region().build();
    region
        .configure_from_config(
            [
                ("c.backend", "dogpile.cache.memory"),
                ("c.wrap", "test.outer, test.inner"),
            ],
            "c.",
        )
        .unwrap();
    region.get::<u8>("k").unwrap();
    assert_eq!(*SEEN.lock().unwrap(), ["outer", "inner"]);
    // An unknown name is an error that names the key and the proxies known.
    let err = RegionConfig::from_config(
        [
            ("c.backend", "dogpile.cache.memory"),
            ("c.wrap", "test.nope"),
        ],
        "c.",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("c.wrap: unknown proxy \"test.nope\"") && err.contains("test.outer"),
        "{err}"
    );
}

#[test]
fn the_actual_backend_is_the_one_under_the_proxies() {
    /// Hides every value from reads.
    struct Blind;
    impl ProxyBackend for Blind {
        fn get(&self, _: &dyn Backend, _: &str) -> dogpile::Result<Option<CachedValue>> {
            Ok(None)
        }
    }
    let region = make_region()
        .configure(RegionConfig::new("dogpile.cache.memory").wrap(Blind))
        .unwrap();
    region.set("k", 1u8).unwrap();
    assert_eq!(region.get::<u8>("k").unwrap(), None);
    assert!(region.backend().unwrap().get("k").unwrap().is_none());
    assert!(region.actual_backend().unwrap().get("k").unwrap().is_some());
    assert_eq!(
        region.actual_backend().unwrap().name(),
        "dogpile.cache.memory"
    );
    let unconfigured = make_region().build();
    assert!(matches!(
        unconfigured.actual_backend(),
        Err(Error::NotConfigured { .. })
    ));
}

#[test]
fn the_async_runner_creates_in_the_background_while_callers_get_the_stale_value() {
    let (clock, handle) = Clock::manual(SystemTime::now());
    let (started_tx, started_rx) = std::sync::mpsc::channel::<String>();
    let started_tx = Mutex::new(started_tx);
    let region = Arc::new(
        make_region()
            .async_creation_runner(move |creation: AsyncCreation| {
                started_tx
                    .lock()
                    .unwrap()
                    .send(creation.key().to_owned())
                    .unwrap();
                std::thread::spawn(move || creation.run());
            })
            .configure(
                RegionConfig::new("dogpile.cache.memory")
                    .expiration_time(5)
                    .clock(clock),
            )
            .unwrap(),
    );
    let opts = CreateOptions::new();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let creator = |v: u32| {
        let rx = release_rx.clone();
        move || {
            if v > 1 {
                rx.lock().unwrap().recv().unwrap();
            }
            v
        }
    };
    // The first creation is never given to the runner: this caller creates it.
    assert_eq!(
        region
            .get_or_create_in_background("k", &opts, creator(1))
            .unwrap(),
        1
    );
    assert!(started_rx.try_recv().is_err());
    handle.advance(Duration::from_secs(6));
    // Expired: the runner gets the creation and the caller gets the stale value at once.
    assert_eq!(
        region
            .get_or_create_in_background("k", &opts, creator(2))
            .unwrap(),
        1
    );
    assert_eq!(started_rx.recv().unwrap(), "k");
    assert!(
        region.key_is_locked("k").unwrap(),
        "the runner owns the lock until it is done"
    );
    assert_eq!(
        region
            .get_or_create_in_background("k", &opts, creator(3))
            .unwrap(),
        1
    );
    release_tx.send(()).unwrap();
    while region.key_is_locked("k").unwrap() {
        std::thread::yield_now();
    }
    assert_eq!(region.get::<u32>("k").unwrap(), Some(2));
    let stats = region.stats();
    assert_eq!((stats.creations, stats.async_refreshes), (2, 1), "{stats}");
    assert_eq!(stats.stale_served, 1, "{stats}");
}

// ---------------------------------------------------------------------------------------------
// the dogpile lock under contention

#[test]
fn thirty_two_threads_on_a_cold_key_create_once() {
    let (region, _) = memory_region(60);
    let region = Arc::new(region);
    let creations = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (region, creations, barrier) = (region.clone(), creations.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                region
                    .get_or_create("cold", || {
                        creations.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        "value".to_string()
                    })
                    .unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), "value");
    }
    assert_eq!(creations.load(Ordering::SeqCst), 1);
    assert_eq!(region.lock_registry_len(), 0);
}

#[test]
fn thirty_two_threads_on_an_expired_key_create_once_and_the_rest_get_the_stale_value() {
    let (region, clock) = memory_region(10);
    let region = Arc::new(region);
    region.set("hot", 0u32).unwrap();
    clock.advance(Duration::from_secs(11));
    let creations = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(32));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let done_rx = Arc::new(Mutex::new(done_rx));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (region, creations, barrier, done_rx) = (
                region.clone(),
                creations.clone(),
                barrier.clone(),
                done_rx.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                region
                    .get_or_create("hot", || {
                        creations.fetch_add(1, Ordering::SeqCst);
                        // Hold the lock until every other caller has returned.
                        done_rx.lock().unwrap().recv().unwrap();
                        1u32
                    })
                    .unwrap()
            })
        })
        .collect();
    let mut stale = 0;
    let mut threads: Vec<_> = threads.into_iter().map(Some).collect();
    while stale < 31 {
        for slot in threads.iter_mut() {
            if slot.as_ref().is_some_and(|t| t.is_finished()) {
                assert_eq!(slot.take().unwrap().join().unwrap(), 0, "the stale value");
                stale += 1;
            }
        }
        std::thread::yield_now();
    }
    done_tx.send(()).unwrap();
    let creator_result: Vec<u32> = threads
        .into_iter()
        .flatten()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(creator_result, vec![1]);
    assert_eq!(creations.load(Ordering::SeqCst), 1);
}

#[test]
fn stress_sixteen_threads_over_a_thousand_keys_never_create_twice_per_period() {
    const KEYS: usize = 1000;
    const PERIODS: u64 = 5;
    let (region, clock) = memory_region(Duration::from_secs(1));
    let region = Arc::new(region);
    // Per key: creations so far, and whether a creator is running now.
    let created: Arc<Vec<AtomicUsize>> = Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let running: Arc<Vec<AtomicUsize>> = Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let overlaps = Arc::new(AtomicUsize::new(0));
    for period in 0..PERIODS {
        let barrier = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (region, created, running, overlaps, barrier) = (
                    region.clone(),
                    created.clone(),
                    running.clone(),
                    overlaps.clone(),
                    barrier.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..KEYS * 2 {
                        let k = (i * 7 + t * 131) % KEYS;
                        let key = format!("key{k}");
                        let v = region
                            .get_or_create(&key, || {
                                if running[k].fetch_add(1, Ordering::SeqCst) != 0 {
                                    overlaps.fetch_add(1, Ordering::SeqCst);
                                }
                                created[k].fetch_add(1, Ordering::SeqCst);
                                std::thread::yield_now();
                                running[k].fetch_sub(1, Ordering::SeqCst);
                                (k as u64) * 1000 + period
                            })
                            .unwrap();
                        assert_eq!(v / 1000, k as u64, "a value of another key");
                        assert!(v % 1000 <= period, "a value from the future");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for (k, c) in created.iter().enumerate() {
            assert_eq!(
                c.load(Ordering::SeqCst) as u64,
                period + 1,
                "key{k}: exactly one creation per expiry period"
            );
        }
        clock.advance(Duration::from_millis(1001));
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two creators ran at once for one key"
    );
    assert_eq!(region.lock_registry_len(), 0);
}

// ---------------------------------------------------------------------------------------------
// multi-key get-or-create

#[test]
fn get_or_create_multi_creates_only_missing_keys_in_one_call() {
    let (region, clock) = memory_region(10);
    region.set("b", 20u32).unwrap();
    region.set("d", 40u32).unwrap();
    clock.advance(Duration::from_secs(5));
    region.set("d", 41u32).unwrap();
    clock.advance(Duration::from_secs(6)); // b expired (11 s old), d fresh (6 s old)
    let calls = Mutex::new(Vec::new());
    let values = region
        .get_or_create_multi(&["c", "b", "a", "d", "a"], |missing| {
            calls
                .lock()
                .unwrap()
                .push(missing.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            missing
                .iter()
                .map(|k| (k.as_bytes()[0] - b'a' + 1) as u32 * 100)
                .collect()
        })
        .unwrap();
    assert_eq!(values, vec![300, 200, 100, 41, 100]);
    // The creator gets the missing keys once each, in the caller's order (issue 20 item 4), not
    // in the lock order.
    assert_eq!(*calls.lock().unwrap(), vec![vec!["c", "b", "a"]]);
    assert_eq!(region.get::<u32>("b").unwrap(), Some(200));
    let none: Vec<u32> = region
        .get_or_create_multi::<u32, &str>(&[], |_| panic!("no keys, no creator"))
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn a_multi_creator_returning_the_wrong_count_is_an_error() {
    let (region, _) = memory_region(10);
    let err = region
        .get_or_create_multi(&["a", "b"], |_| vec![1u8])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "key generation failed: the multi creator returned 1 values for 2 keys"
    );
    assert!(!region.key_is_locked("a").unwrap());
}

#[test]
fn overlapping_batches_do_not_deadlock_and_create_each_key_once() {
    let (region, _) = memory_region(60);
    let region = Arc::new(region);
    let creations = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (region, creations) = (region.clone(), creations.clone());
            std::thread::spawn(move || {
                // Each batch names the same keys in another order.
                let mut keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
                keys.rotate_left((t * 3) % 20);
                if t % 2 == 1 {
                    keys.reverse();
                }
                let got = region
                    .get_or_create_multi(&keys, |missing| {
                        creations.fetch_add(missing.len(), Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        missing.iter().map(|k| k.to_string()).collect()
                    })
                    .unwrap();
                assert_eq!(got, keys);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(creations.load(Ordering::SeqCst), 20);
}

// ---------------------------------------------------------------------------------------------
// async callers

#[test]
fn thirty_two_tasks_on_a_cold_key_create_once() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let region = Arc::new(
        make_region()
            .configure(RegionConfig::new("dogpile.cache.memory_pickle").expiration_time(60))
            .unwrap(),
    );
    let (values, creations) = support::thirty_two_tasks_on_one_cold_key(
        rt,
        region,
        Duration::from_millis(20),
        "made once".to_string(),
    );
    assert!(values.iter().all(|v| v == "made once"));
    assert_eq!(creations, 1);
}

#[test]
fn replacing_the_backend_while_readers_run() {
    let region = Arc::new(make_region().configure("dogpile.cache.memory").unwrap());
    region.set("k", 1u32).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (region, stop, reads) = (region.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let v = region.get_or_create("k", || 2u32).unwrap();
                    assert!(v == 1 || v == 2);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for _ in 0..50 {
        region
            .configure(RegionConfig::new("dogpile.cache.memory").replace_existing_backend(true))
            .unwrap();
        // Readers go on through every swap: ten more reads, of which at most one per reader was
        // under way during the swap; the rest read the new backend.
        let before = reads.load(Ordering::Relaxed);
        while reads.load(Ordering::Relaxed) < before + 10 {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(region.get::<u32>("k").unwrap(), Some(2));
}

#[test]
fn a_bounded_memory_backend_holds_no_more_than_max_size() {
    let region = make_region()
        .configure(RegionConfig::new("dogpile.cache.memory").argument("max_size", 100))
        .unwrap();
    for i in 0..10_000u32 {
        region.set(&format!("k{i}"), i).unwrap();
    }
    let held = (0..10_000u32)
        .filter(|i| region.get::<u32>(&format!("k{i}")).unwrap() == Some(*i))
        .count();
    assert!(held > 0 && held <= 100, "held {held}");
}

// ---------------------------------------------------------------------------------------------
// statistics

#[test]
fn statistics_count_what_happened() {
    let backend = Arc::new(MapBackend::default());
    let (clock, handle) = Clock::manual(SystemTime::now());
    let region = Arc::new(
        make_region()
            .configure(
                RegionConfig::with_backend(backend.clone())
                    .expiration_time(10)
                    .clock(clock),
            )
            .unwrap(),
    );
    region.get_or_create("a", || 1u32).unwrap(); // miss + creation
    region.get_or_create("a", || 1u32).unwrap(); // hit
    region.get::<u32>("a").unwrap(); // hit
    region.get::<u32>("b").unwrap(); // miss
    let _: Result<u32, _> = region.try_get_or_create("c", &CreateOptions::new(), || Err("no")); // miss + creator error

    // A stale value served while another caller holds the lock, and a caller that waits.
    handle.advance(Duration::from_secs(11));
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let r2 = region.clone();
    let creator = std::thread::spawn(move || {
        r2.get_or_create("a", || {
            tx.send(()).unwrap();
            go_rx.recv().unwrap();
            2u32
        })
        .unwrap()
    });
    rx.recv().unwrap();
    assert_eq!(region.get_or_create("a", || 3u32).unwrap(), 1); // stale found + served
    let (tx2, rx2) = std::sync::mpsc::channel();
    let r3 = region.clone();
    let cold_creator = std::thread::spawn(move || {
        r3.get_or_create("cold", || {
            tx2.send(()).unwrap();
            // Finish only once the waiter is waiting.
            while r3.stats().waits < 1 {
                std::thread::yield_now();
            }
            4u32
        })
        .unwrap()
    });
    rx2.recv().unwrap();
    let waiter = {
        let r = region.clone();
        std::thread::spawn(move || r.get_or_create("cold", || 5u32).unwrap())
    };
    assert_eq!(waiter.join().unwrap(), 4);
    assert_eq!(cold_creator.join().unwrap(), 4);
    go_tx.send(()).unwrap();
    assert_eq!(creator.join().unwrap(), 2);

    backend.set_failing(true);
    assert!(region.get::<u32>("a").unwrap_err().is_backend());
    backend.set_failing(false);

    let s = region.stats();
    assert_eq!(s.hits, 2, "{s}");
    // a, b, c, the cold creator's and the waiter's first reads.
    assert_eq!(s.misses, 1 + 1 + 1 + 1 + 1, "{s}");
    assert_eq!(s.stale_found, 2, "{s}");
    assert_eq!(s.stale_served, 1, "{s}");
    assert_eq!(s.creations, 3, "{s}");
    assert_eq!(s.creator_errors, 1, "{s}");
    assert_eq!(s.waits, 1, "{s}");
    assert!(s.wait_time > Duration::ZERO, "{s}");
    assert_eq!(s.backend_errors, 1, "{s}");
    assert!(
        s.to_string()
            .contains("| creations            |            3 |"),
        "{s}"
    );
}

/// A backend that refuses every region expiration, as Redis refuses one longer than its own TTL.
struct RefusesExpiration;

impl Backend for RefusesExpiration {
    fn name(&self) -> &str {
        "refuses expiration"
    }
    fn payload_kind(&self) -> PayloadKind {
        PayloadKind::Object
    }
    fn get(&self, _: &str) -> dogpile::Result<Option<CachedValue>> {
        Ok(None)
    }
    fn set(&self, _: &str, _: CachedValue) -> dogpile::Result<()> {
        Ok(())
    }
    fn delete(&self, _: &str) -> dogpile::Result<()> {
        Ok(())
    }
    fn check_region_expiration(&self, _: Option<&Expiration>) -> dogpile::Result<()> {
        Err(Error::Config {
            key: "expiration_time".into(),
            message: "refused".into(),
        })
    }
}

#[test]
fn a_backend_shared_through_an_arc_still_checks_the_region_expiration() {
    for backend in [
        RegionConfig::with_backend(RefusesExpiration),
        RegionConfig::with_backend(Arc::new(RefusesExpiration)),
    ] {
        let region = CacheRegion::new();
        let err = region.configure(backend.expiration_time(60)).unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
    }
}

#[test]
fn async_reads_are_counted_like_blocking_ones() {
    // `MapBackend` may block, so `get_async` takes the backend's async path.
    let region = make_region()
        .configure(RegionConfig::with_backend(MapBackend::default()))
        .unwrap();
    region.set("k", 1u32).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(region.get_async::<u32>("k").await.unwrap(), Some(1));
        assert_eq!(region.get_async::<u32>("missing").await.unwrap(), None);
    });
    let stats = region.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

/// A value that counts its clones in `CLONES[C]`: one counter per test, since tests run at once.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Counted<const C: usize>(u32);

static CLONES: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

impl<const C: usize> Clone for Counted<C> {
    fn clone(&self) -> Self {
        CLONES[C].fetch_add(1, Ordering::SeqCst);
        Counted(self.0)
    }
}

/// `set`, `set_multi` and `set_async` hand their value to an object backend as it is: the
/// caller gave it up, so storing it clones nothing (a hit clones the one it hands out).
#[test]
fn storing_an_owned_value_clones_nothing() {
    let (region, _clock) = memory_region(60);
    region.set("a", Counted::<0>(1)).unwrap();
    region
        .set_multi([("b", Counted::<0>(2)), ("c", Counted(3))])
        .unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(region.set_async("d", Counted::<0>(4)))
        .unwrap();
    assert_eq!(CLONES[0].load(Ordering::SeqCst), 0, "stores cloned");
    assert_eq!(region.get::<Counted<0>>("c").unwrap(), Some(Counted(3)));
    assert_eq!(region.get::<Counted<0>>("d").unwrap(), Some(Counted(4)));
    assert_eq!(CLONES[0].load(Ordering::SeqCst), 2, "one clone per hit");
}

/// A value created in the background with no caller waiting for it goes to the store as it is.
#[test]
fn a_background_creation_nobody_waits_for_stores_its_value_without_a_clone() {
    let (clock, handle) = Clock::manual(SystemTime::now());
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let region = make_region()
        .async_creation_runner(move |creation: AsyncCreation| {
            // The creation waits for the test's word, so its clones are counted apart from the
            // caller's.
            let mut go = go_rx.lock().unwrap();
            let go = std::mem::replace(&mut *go, std::sync::mpsc::channel().1);
            std::thread::spawn(move || {
                go.recv().unwrap();
                creation.run()
            });
        })
        .configure(
            RegionConfig::new("dogpile.cache.memory")
                .expiration_time(5)
                .clock(clock),
        )
        .unwrap();
    region.set("k", Counted::<1>(1)).unwrap();
    handle.advance(Duration::from_secs(10));
    let clones = || CLONES[1].load(Ordering::SeqCst);
    let before = clones();
    let served = region
        .get_or_create_in_background("k", &CreateOptions::new(), || Counted::<1>(2))
        .unwrap();
    assert_eq!(served, Counted::<1>(1));
    let served = clones();
    go_tx.send(()).unwrap();
    // The background creation holds the key's lock until its value is stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while region.key_is_locked("k").unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the creation never ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(clones(), served, "the store cloned the value");
    assert!(served > before, "serving the stale value clones it");
    assert_eq!(
        region.get::<Counted<1>>("k").unwrap(),
        Some(Counted::<1>(2))
    );
}
