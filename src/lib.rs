//! # dogpile
//!
//! Caching and memoization for values that are expensive to make and wanted by many threads,
//! tasks or processes at once: a Rust re-creation of Python's `dogpile.cache`.
//!
//! A [`CacheRegion`] is the front end: it gets, sets and deletes values in a backend chosen at run
//! time, and its [`get_or_create`](CacheRegion::get_or_create) runs the **dogpile lock**: when a
//! value is missing or expired, exactly one caller creates it; the others get the stale value at
//! once or, when there is none, wait for the new one.
//!
//! ```
//! use std::time::Duration;
//! use dogpile::{CacheRegion, RegionConfig};
//!
//! static REGION: CacheRegion = CacheRegion::new();
//!
//! REGION
//!     .configure(RegionConfig::new("dogpile.cache.memory").expiration_time(Duration::from_secs(3600)))
//!     .unwrap();
//! let user = REGION.get_or_create("user:7", || format!("user number {}", 7)).unwrap();
//! assert_eq!(user, "user number 7");
//! assert_eq!(REGION.get::<String>("user:7").unwrap().as_deref(), Some("user number 7"));
//! ```
//!
//! Backends, by dogpile's names: `dogpile.cache.memory`, `dogpile.cache.memory_pickle` and
//! `dogpile.cache.null` always; `dogpile.cache.dbm` (feature `file`), `dogpile.cache.redis` and
//! `dogpile.cache.redis_cluster` (feature `redis`), `dogpile.cache.memcached` (feature
//! `memcached`, also under the names `pylibmc`, `pymemcache` and `bmemcached`).
#![warn(missing_docs)]

pub use dogpile_core::{
    backend, clock, codec, coerce_string, config, error, expiration, function_key_generator,
    function_multi_key_generator, invalidation, key, key_text, mutex, proxy, register_backend,
    sha1_mangle_key, testing, write_args, write_key_text, ArgValue, Arguments, AsyncCreation,
    AsyncCreationRunner, Backend, BackendSpec, BoxError, BoxFuture, CacheMutex, CacheValue,
    CachedValue, Clock, CreateError, CreateOptions, DefaultInvalidation, Error, Expiration,
    FunctionInfo, FunctionKeyGenerator, FunctionMultiKeyGenerator, KeyArg, KeyMangler, LockGuard,
    ManualClock, Metadata, Payload, PayloadKind, ProxyBackend, RegionConfig,
    RegionInvalidationStrategy, Result, Timestamp, FORMAT_VERSION,
};
pub use dogpile_macros::{cache_multi_on_arguments, cache_on_arguments};

/// The backends, for configuring a region with an instance or reading a backend's own API.
pub use dogpile_backends as backends;

/// A cache region that knows every backend of this build by name. See
/// [`dogpile_core::CacheRegion`] for its methods.
pub type CacheRegion = dogpile_core::CacheRegion<dogpile_backends::Builtins>;

/// The builder of [`make_region`].
pub type RegionBuilder = dogpile_core::RegionBuilder<dogpile_backends::Builtins>;

/// Starts a region with dogpile's `make_region()` options: name, key mangler, function key
/// generators, async creation runner.
///
/// ```
/// let region = dogpile::make_region()
///     .name("users")
///     .key_mangler(|key| format!("myapp:dogpile:{key}"))
///     .configure("dogpile.cache.memory")
///     .unwrap();
/// region.set("k", 1u32).unwrap();
/// assert_eq!(region.get::<u32>("k").unwrap(), Some(1));
/// ```
pub fn make_region() -> RegionBuilder {
    RegionBuilder::new()
}

#[doc(hidden)]
pub mod __private;
