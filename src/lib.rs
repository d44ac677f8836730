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
#![cfg_attr(docsrs, feature(doc_cfg))]

// The root holds what a user of regions and attributes writes (and the names of DESIGN section 4);
// the backend author's API and the rest live in their modules, one concept each.
pub use dogpile_core::{
    function_key_generator, function_multi_key_generator, length_conditional_mangler,
    register_backend, register_proxy, sha1_mangle_key, Backend, CacheMutex, CacheValue,
    CachedEntry, CachedValue, CreateError, CreateOptions, Error, Expiration, KeyArg, LocalTier,
    ProxyBackend, RegionConfig, RegionInvalidationStrategy, Result, Stats,
};

// One path for the rest: the backend author's API (`backend`, `mutex`, `proxy`, `codec`,
// `registry`, `config`), the serializers, keys, time, expiry, invalidation, the lock and the statistics.
pub use dogpile_core::{
    backplane, clock, codec, config, error, expiration, invalidation, key, lock, mutex, proxy,
    registry, serializer, stats, tier,
};

/// Backends: the [`Backend`] trait with what it stores, and the built-in
/// backends, each behind its cargo feature.
///
/// | name | module | feature |
/// |---|---|---|
/// | `dogpile.cache.memory`, `dogpile.cache.memory_pickle` | `memory` | `memory` (default) |
/// | `dogpile.cache.null` | [`null`](backend::null) | always |
/// | `dogpile.cache.dbm` | `file` | `file` |
/// | `dogpile.cache.redis`, `dogpile.cache.redis_cluster` | `redis` | `redis` |
/// | `dogpile.cache.memcached` (and `pylibmc`, `pymemcache`, `bmemcached`) | `memcached` | `memcached` |
///
/// ```
/// use dogpile::backend::{Backend, PayloadKind};
/// use dogpile::backend::null::NullBackend;
///
/// let null = NullBackend::default();
/// assert_eq!(null.payload_kind(), PayloadKind::Object);
/// assert!(null.get("anything").unwrap().is_none());
/// ```
pub mod backend {
    pub use dogpile_backends::null;
    pub use dogpile_core::backend::*;

    #[cfg(feature = "file")]
    #[cfg_attr(docsrs, doc(cfg(feature = "file")))]
    pub use dogpile_backends::file;
    #[cfg(feature = "memcached")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memcached")))]
    pub use dogpile_backends::memcached;
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    pub use dogpile_backends::memory;
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub use dogpile_backends::redis;
    /// The catalog of built-in backends by name, which [`CacheRegion`](crate::CacheRegion) uses.
    pub use dogpile_backends::Builtins;
}

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use dogpile_core::testing;

/// Memoizes a function in a [`CacheRegion`].
///
/// ```
/// use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};
///
/// static REGION: CacheRegion = CacheRegion::new();
///
/// #[cache_on_arguments(region = REGION, namespace = "foo")]
/// fn one(a: i32, b: i32) -> i32 {
///     a + b
/// }
///
/// REGION.configure(RegionConfig::new("dogpile.cache.memory")).unwrap();
/// assert_eq!(one(3, 4), 7); // runs the body and stores 7
/// assert_eq!(one(3, 4), 7); // a hit
/// // The key: module path, name, namespace, arguments joined by one space.
/// let key = concat!(module_path!(), ":one|foo|3 4");
/// assert_eq!(REGION.get::<i32>(key).unwrap(), Some(7));
///
/// // The companions.
/// assert_eq!(one_get(3, 4), Some(7)); // never runs the body
/// one_set(70, 3, 4); // the value first, then the arguments
/// assert_eq!(one(3, 4), 70);
/// assert_eq!(one_refresh(3, 4), 7); // runs the body and stores its value
/// one_invalidate(3, 4); // deletes the entry
/// assert_eq!(one_get(3, 4), None);
/// assert_eq!(one_uncached(3, 4), 7); // the body alone
/// ```
///
/// The region's resilience options can be set for one function (see
/// [`RegionConfig::fail_safe_max_duration`] and the builder methods after it):
///
/// ```
/// use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};
///
/// static REGION: CacheRegion = CacheRegion::new();
///
/// #[cache_on_arguments(region = REGION, fail_safe_max_duration = 3600, eager_refresh = 0.8)]
/// fn exchange_rate(currency: u32) -> Result<f64, String> {
///     Ok(1.0 + f64::from(currency) / 100.0)
/// }
///
/// REGION.configure(RegionConfig::new("dogpile.cache.memory").expiration_time(60)).unwrap();
/// assert_eq!(exchange_rate(25), Ok(1.25));
/// ```
///
/// `region` takes a `static` region, a `LazyLock` of one (for a region built with
/// [`make_region`]), or any expression giving `&CacheRegion`:
///
/// ```
/// use std::sync::LazyLock;
/// use dogpile::{cache_on_arguments, CacheRegion};
///
/// static USERS: LazyLock<CacheRegion> = LazyLock::new(|| {
///     dogpile::make_region()
///         .name("users")
///         .configure("dogpile.cache.memory")
///         .unwrap()
/// });
///
/// #[cache_on_arguments(region = USERS)]
/// fn user_name(id: u64) -> String {
///     format!("user {id}")
/// }
///
/// assert_eq!(user_name(7), "user 7");
/// assert_eq!(user_name_get(7).as_deref(), Some("user 7"));
/// ```
///
/// `expiration_time` (or `expiration`): seconds, `-1` for never, a `Duration`, or a function
/// called on every call; `should_cache_fn`: a `fn(&T) -> bool` deciding whether a created value is
/// stored:
///
/// ```
/// use std::time::Duration;
/// use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};
///
/// static REGION: CacheRegion = CacheRegion::new();
///
/// fn until_the_hour() -> Duration {
///     Duration::from_secs(3600) // computed on every call, e.g. from the clock
/// }
///
/// fn is_found(value: &Option<String>) -> bool {
///     value.is_some()
/// }
///
/// #[cache_on_arguments(region = REGION, expiration_time = 300)]
/// fn five_minutes(id: u32) -> u32 { id }
///
/// #[cache_on_arguments(region = REGION, expiration = Duration::from_millis(1500))]
/// fn a_second_and_a_half(id: u32) -> u32 { id }
///
/// #[cache_on_arguments(region = REGION, expiration_time = -1)]
/// fn forever(id: u32) -> u32 { id }
///
/// #[cache_on_arguments(region = REGION, expiration_time = until_the_hour)]
/// fn hourly(id: u32) -> u32 { id }
///
/// #[cache_on_arguments(region = REGION, should_cache_fn = is_found)]
/// fn find(name: &str) -> Option<String> {
///     (name != "nobody").then(|| name.to_uppercase())
/// }
///
/// REGION.configure(RegionConfig::new("dogpile.cache.memory")).unwrap();
/// for f in [five_minutes, a_second_and_a_half, forever, hourly] {
///     assert_eq!(f(1), 1);
/// }
/// assert_eq!(find("nobody"), None);
/// assert_eq!(find_get("nobody"), None); // not stored: should_cache_fn said no
/// assert_eq!(find("ann").as_deref(), Some("ANN"));
/// assert_eq!(find_get("ann"), Some(Some("ANN".to_string())));
/// ```
///
/// `key` (a template checked at compile time), `ignore` (arguments left out of the key) and
/// `function_key_generator` (a [`FunctionKeyGenerator`](key::FunctionKeyGenerator) for this function):
///
/// ```
/// use dogpile::{cache_on_arguments, CacheRegion, KeyArg, RegionConfig};
/// use dogpile::key::FunctionInfo;
///
/// static REGION: CacheRegion = CacheRegion::new();
///
/// struct Connection;
///
/// #[cache_on_arguments(region = REGION, key = "user:{id}:{lang}", ignore = [conn])]
/// fn greeting(conn: &Connection, id: u64, lang: &str) -> String {
///     format!("[{lang}] hello, user {id}")
/// }
///
/// fn short_keys(info: &FunctionInfo, args: &[&dyn KeyArg]) -> String {
///     let mut key = format!("{}/", info.name);
///     dogpile::key::write_args(&mut key, args);
///     key
/// }
///
/// #[cache_on_arguments(region = REGION, function_key_generator = short_keys)]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// REGION.configure(RegionConfig::new("dogpile.cache.memory")).unwrap();
/// assert_eq!(greeting(&Connection, 7, "en"), "[en] hello, user 7");
/// assert!(REGION.get::<String>("user:7:en").unwrap().is_some());
/// // The companions take the key arguments only.
/// assert!(greeting_get(7, "en").is_some());
/// assert_eq!(square(3), 9);
/// assert_eq!(REGION.get::<u64>("square/3").unwrap(), Some(9));
/// ```
///
/// Methods (`self` is not part of the key, as in dogpile; use `namespace` to tell types apart),
/// `Result` (only `Ok` is cached) and `async fn` (waiters `.await`; one creator per key across
/// tasks):
///
/// ```
/// use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};
///
/// static REGION: CacheRegion = CacheRegion::new();
///
/// struct Catalog {
///     currency: &'static str,
/// }
///
/// impl Catalog {
///     #[cache_on_arguments(region = REGION, namespace = "Catalog")]
///     fn price(&self, item: u32) -> String {
///         format!("{} {}", item * 10, self.currency)
///     }
///
///     #[cache_on_arguments(region = REGION, namespace = "Catalog")]
///     fn parse(text: &str) -> Result<u32, std::num::ParseIntError> {
///         text.parse()
///     }
///
///     #[cache_on_arguments(region = REGION, namespace = "Catalog")]
///     async fn stock(&self, item: u32) -> u32 {
///         item * 2
///     }
/// }
///
/// REGION.configure(RegionConfig::new("dogpile.cache.memory")).unwrap();
/// let catalog = Catalog { currency: "EUR" };
/// assert_eq!(catalog.price(3), "30 EUR");
/// assert_eq!(catalog.price_get(3).as_deref(), Some("30 EUR"));
/// assert!(Catalog::parse("x").is_err());
/// assert_eq!(Catalog::parse_get("x"), None); // an Err is not cached
/// assert_eq!(Catalog::parse("12"), Ok(12));
/// assert_eq!(Catalog::parse_get("12"), Some(12));
///
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// runtime.block_on(async {
///     assert_eq!(catalog.stock(4).await, 8);
///     assert_eq!(catalog.stock_get(4).await, Some(8));
/// });
/// ```
///
/// Caching never breaks the function: when the region is not configured or its backend fails,
/// the body's value is returned and the error logged.
///
/// ```
/// use dogpile::{cache_on_arguments, CacheRegion};
///
/// static NOT_CONFIGURED: CacheRegion = CacheRegion::new();
///
/// #[cache_on_arguments(region = NOT_CONFIGURED)]
/// fn double(x: u32) -> u32 {
///     x * 2
/// }
///
/// assert_eq!(double(21), 42);
/// assert_eq!(double_get(21), None);
/// ```
#[doc(inline)]
pub use dogpile_macros::cache_on_arguments;

/// Memoizes a batch function in a [`CacheRegion`]: one entry per id, one body call with only the
/// missing ids.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use dogpile::{cache_multi_on_arguments, CacheRegion, RegionConfig};
///
/// static REGION: CacheRegion = CacheRegion::new();
/// static ASKED: Mutex<Vec<u32>> = Mutex::new(Vec::new());
///
/// #[cache_multi_on_arguments(region = REGION, namespace = "users", expiration_time = 600)]
/// fn names(ids: &[u32]) -> Vec<String> {
///     ASKED.lock().unwrap().extend_from_slice(ids);
///     ids.iter().map(|id| format!("user {id}")).collect()
/// }
///
/// struct Db;
///
/// fn positive(n: &i64) -> bool {
///     *n > 0
/// }
///
/// // `asdict`: the body returns a map, and ids it leaves out are neither cached nor returned.
/// #[cache_multi_on_arguments(region = REGION, asdict = true, ignore = [db], should_cache_fn = positive)]
/// fn balances(db: &Db, ids: &[String]) -> HashMap<String, i64> {
///     ids.iter()
///         .filter(|id| id.as_str() != "closed")
///         .map(|id| (id.clone(), id.len() as i64))
///         .collect()
/// }
///
/// REGION.configure(RegionConfig::new("dogpile.cache.memory")).unwrap();
/// assert_eq!(names(&[1, 2]), ["user 1", "user 2"]);
/// // Answers in the caller's order; the body sees only the missing id 3.
/// assert_eq!(names(&[3, 2, 1]), ["user 3", "user 2", "user 1"]);
/// assert_eq!(*ASKED.lock().unwrap(), [1, 2, 3]);
///
/// // The companions take slices; `_set` takes (id, value) pairs or a map.
/// assert_eq!(names_get(&[1, 9]), [Some("user 1".to_string()), None]);
/// names_set([(9, "nine".to_string())]);
/// assert_eq!(names(&[9]), ["nine"]);
/// names_invalidate(&[9]);
/// assert_eq!(names_refresh(&[9]), ["user 9"]);
/// assert_eq!(names_uncached(&[5]), ["user 5"]);
///
/// let ids = ["ann".to_string(), "closed".to_string()];
/// assert_eq!(balances(&Db, &ids), HashMap::from([("ann".to_string(), 3)]));
/// assert_eq!(balances_get(&ids).len(), 1);
/// ```
#[doc(inline)]
pub use dogpile_macros::cache_multi_on_arguments;

/// # Example
///
/// ```
/// use dogpile::{cache_impl, cache_on_arguments, CacheRegion, RegionConfig};
///
/// static REGION: CacheRegion = CacheRegion::new();
///
/// trait Users {
///     fn name(&self, id: u32) -> String;
/// }
///
/// struct Db;
///
/// #[cache_impl(pub)]
/// impl Users for Db {
///     #[cache_on_arguments(region = REGION, namespace = "Db")]
///     fn name(&self, id: u32) -> String {
///         format!("user {id}")
///     }
/// }
///
/// REGION.configure(RegionConfig::new("dogpile.cache.memory")).unwrap();
/// let users: &dyn Users = &Db;
/// assert_eq!(users.name(7), "user 7"); // runs the body and stores its value
/// assert_eq!(Db.name_get(7).as_deref(), Some("user 7"));
/// Db.name_invalidate(7);
/// assert_eq!(Db.name_get(7), None);
/// ```
#[doc(inline)]
pub use dogpile_macros::cache_impl;

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
