//! The core of the dogpile caching toolkit: the region, the dogpile lock, and the backend API.
//!
//! Users depend on the `dogpile` facade, which re-exports this crate with the built-in backends
//! and the memoizing attributes; backend authors depend on this crate alone.
#![warn(missing_docs)]

pub mod backend;
pub mod backplane;
pub mod clock;
pub mod codec;
pub mod config;
pub mod error;
pub mod expiration;
mod fleet;
pub mod invalidation;
pub mod key;
pub mod lock;
pub mod mutex;
pub mod proxy;
pub mod region;
pub mod registry;
pub mod serializer;
mod slot;
pub mod stable_hash;
pub mod stats;
mod tags;
pub mod testing;
pub mod tier;

pub use backend::{
    Backend, BoxFuture, CachedValue, Metadata, Payload, PayloadKind, FORMAT_VERSION,
};
pub use clock::{Clock, ManualClock, Timestamp};
pub use config::{
    coerce_string, ArgValue, Arguments, BackendSpec, RegionConfig, DEFAULT_LOCK_BLOCKING_TIMEOUT,
};
pub use error::{BoxError, CreateError, Error, Result};
pub use expiration::Expiration;
pub use invalidation::{DefaultInvalidation, RegionInvalidationStrategy};
pub use key::{
    function_key_generator, function_multi_key_generator, key_text, length_conditional_mangler,
    sha1_mangle_key, write_args, write_key_text, FunctionInfo, FunctionKeyGenerator,
    FunctionMultiKeyGenerator, KeyArg, KeyMangler,
};
pub use lock::{AsyncCreation, AsyncCreationRunner};
pub use mutex::{CacheMutex, LockGuard};
pub use proxy::ProxyBackend;
pub use region::{CacheRegion, CacheValue, CachedEntry, CreateOptions, RegionBuilder};
pub use registry::{
    register_backend, register_proxy, BackendCatalog, BackendFactory, BuiltinBackend, NoBuiltins,
    ProxyFactory,
};
pub use stats::Stats;
pub use tier::LocalTier;
