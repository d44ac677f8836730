//! The usage guide's "Creating Backends": a `DictionaryBackend` written in a few lines, registered by
//! name with `register_backend("dictionary", …)`, and then chosen like a built-in backend, from
//! code with `configure("dictionary")` or from a configuration map (`cache.dict.backend =
//! dictionary`). Its arguments are checked like the built-in backends' are.
//!
//! What a backend stores is a `CachedValue`: the payload and its metadata (creation time and
//! format version), the usage guide's `(payload, metadata)` tuple. This backend says it keeps objects
//! (`PayloadKind::Object`), so the region hands it the values themselves, unserialized; a backend
//! that stores bytes says `PayloadKind::Bytes` and receives encoded values instead.
//!
//! Run with `cargo run --example custom_backend`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use dogpile::backend::PayloadKind;
use dogpile::config::Arguments;
use dogpile::{cache_on_arguments, register_backend, Backend, CacheRegion, CachedValue};

/// The usage guide's `DictionaryBackend`: a map behind a mutex.
struct DictionaryBackend {
    cache: Mutex<HashMap<String, CachedValue>>,
}

impl DictionaryBackend {
    /// Its one argument, `initial_capacity`, is optional; anything else is an error that names
    /// the argument.
    fn from_arguments(args: &Arguments) -> dogpile::Result<Self> {
        args.expect_only("dictionary", &["initial_capacity"])?;
        let capacity = args.u64("initial_capacity")?.unwrap_or(0);
        let capacity = usize::try_from(capacity)
            .map_err(|_| args.error("initial_capacity", format!("{capacity} is too large")))?;
        Ok(DictionaryBackend {
            cache: Mutex::new(HashMap::with_capacity(capacity)),
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, CachedValue>> {
        // A thread that panicked while holding the lock left the map whole: keep using it.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Backend for DictionaryBackend {
    fn name(&self) -> &str {
        "dictionary"
    }

    fn payload_kind(&self) -> PayloadKind {
        PayloadKind::Object
    }

    fn get(&self, key: &str) -> dogpile::Result<Option<CachedValue>> {
        Ok(self.map().get(key).cloned())
    }

    fn set(&self, key: &str, value: CachedValue) -> dogpile::Result<()> {
        self.map().insert(key.to_owned(), value);
        Ok(())
    }

    fn delete(&self, key: &str) -> dogpile::Result<()> {
        // Unlike the usage guide's `dict.pop(key)`, deleting a missing key is not an error.
        self.map().remove(key);
        Ok(())
    }
}

/// A region configured from a map, with a memoized function on it.
static FROM_CONFIG: CacheRegion = CacheRegion::named("from-config");

#[cache_on_arguments(region = FROM_CONFIG)]
fn double(x: u64) -> u64 {
    println!("    (double({x}) computed)");
    x * 2
}

fn main() -> dogpile::Result<()> {
    // In dogpile's usage guide: register_backend("dictionary", "mypackage.mybackend", "DictionaryBackend").
    register_backend("dictionary", DictionaryBackend::from_arguments);

    // From code, as in the usage guide.
    let region = dogpile::make_region()
        .name("myregion")
        .configure("dictionary")?;
    region.set("somekey", "somevalue".to_string())?;
    println!("configure(\"dictionary\"):");
    println!(
        "  region.get(\"somekey\") = {:?}",
        region.get::<String>("somekey")?
    );
    println!("  backend: {:?}", region.backend_name().unwrap_or_default());
    // What the backend itself holds: a CachedValue, payload and metadata.
    let stored = region.backend()?.get("somekey")?;
    println!("  the backend holds: {stored:?}");

    // From a configuration map, with dogpile's key layout.
    let config = HashMap::from([
        ("cache.dict.backend", "dictionary"),
        ("cache.dict.expiration_time", "300"),
        ("cache.dict.arguments.initial_capacity", "64"),
    ]);
    FROM_CONFIG.configure_from_config(&config, "cache.dict.")?;
    println!("configure_from_config(cache.dict.*):");
    println!("  double(21) = {}", double(21));
    println!("  double(21) = {} (a hit)", double(21));

    // A mistyped argument is an error that says which key and what was expected.
    let bad = HashMap::from([
        ("cache.bad.backend", "dictionary"),
        ("cache.bad.arguments.initial_capacity", "lots"),
    ]);
    let err = CacheRegion::new()
        .configure_from_config(&bad, "cache.bad.")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "(accepted)".into());
    println!("a bad argument: {err}");
    let unknown = HashMap::from([
        ("cache.bad.backend", "dictionary"),
        ("cache.bad.arguments.colour", "blue"),
    ]);
    let err = CacheRegion::new()
        .configure_from_config(&unknown, "cache.bad.")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "(accepted)".into());
    println!("an unknown argument: {err}");
    Ok(())
}
