//! The storage backends of the dogpile caching toolkit, each behind a cargo feature, and the
//! catalog that lets a region find them by dogpile's names.
//!
//! | name | feature | keeps |
//! |---|---|---|
//! | `dogpile.cache.memory` | `memory` | objects, in this process |
//! | `dogpile.cache.memory_pickle` | `memory` | serialized values, in this process |
//! | `dogpile.cache.null` | always | nothing |
//! | `dogpile.cache.dbm` | `file` | serialized values, in a file shared by processes |
//! | `dogpile.cache.redis`, `dogpile.cache.redis_cluster` | `redis` | serialized values, on Redis |
//! | `dogpile.cache.memcached` (and `pylibmc`, `pymemcache`, `bmemcached`) | `memcached` | serialized values, on memcached |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

use dogpile_core::{Arguments, Backend, BackendCatalog, BuiltinBackend, Result};

#[cfg(any(feature = "file", feature = "redis", feature = "memcached"))]
mod backoff;
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub mod file;
#[cfg(feature = "memcached")]
#[cfg_attr(docsrs, doc(cfg(feature = "memcached")))]
pub mod memcached;
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory;
pub mod null;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

/// Every backend of this crate, by name: the catalog of the `dogpile` facade's regions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Builtins;

fn erase<B: Backend>(r: Result<B>) -> Result<Arc<dyn Backend>> {
    r.map(|b| Arc::new(b) as Arc<dyn Backend>)
}

macro_rules! builtin {
    ($name:literal, $feature:literal, $make:expr) => {
        BuiltinBackend {
            name: $name,
            make: {
                #[cfg(feature = $feature)]
                {
                    Some($make)
                }
                #[cfg(not(feature = $feature))]
                {
                    None
                }
            },
            feature: $feature,
        }
    };
}

/// The memcached backend, under each of the names Python's memcached backends have.
#[cfg(feature = "memcached")]
const MEMCACHED: dogpile_core::registry::BuiltinConstructor =
    |a: &Arguments| erase(memcached::MemcachedBackend::from_arguments(a));

static BUILTINS: &[BuiltinBackend] = &[
    builtin!("dogpile.cache.memory", "memory", |a: &Arguments| erase(
        memory::MemoryBackend::from_arguments(a, false)
    )),
    builtin!("dogpile.cache.memory_pickle", "memory", |a: &Arguments| {
        erase(memory::MemoryBackend::from_arguments(a, true))
    }),
    BuiltinBackend {
        name: "dogpile.cache.null",
        make: Some(|a: &Arguments| erase(null::NullBackend::from_arguments(a))),
        feature: "",
    },
    builtin!("dogpile.cache.dbm", "file", |a: &Arguments| erase(
        file::FileBackend::from_arguments(a)
    )),
    builtin!("dogpile.cache.redis", "redis", |a: &Arguments| erase(
        redis::RedisBackend::from_arguments(a)
    )),
    builtin!("dogpile.cache.redis_cluster", "redis", |a: &Arguments| {
        erase(redis::RedisBackend::cluster_from_arguments(a))
    }),
    builtin!("dogpile.cache.redis_sentinel", "redis", |a: &Arguments| {
        erase(redis::RedisBackend::sentinel_from_arguments(a))
    }),
    // Valkey speaks Redis's protocol: the same backends under its names.
    builtin!("dogpile.cache.valkey", "redis", |a: &Arguments| erase(
        redis::RedisBackend::single(redis::VALKEY, a)
    )),
    builtin!("dogpile.cache.valkey_cluster", "redis", |a: &Arguments| {
        erase(redis::RedisBackend::cluster(redis::VALKEY_CLUSTER, a))
    }),
    builtin!("dogpile.cache.valkey_sentinel", "redis", |a: &Arguments| {
        erase(redis::RedisBackend::sentinel(redis::VALKEY_SENTINEL, a))
    }),
    builtin!("dogpile.cache.memcached", "memcached", MEMCACHED),
    // Python's memcached backends, so a dogpile.cache config file works unchanged.
    builtin!("dogpile.cache.pylibmc", "memcached", MEMCACHED),
    builtin!("dogpile.cache.pymemcache", "memcached", MEMCACHED),
    builtin!("dogpile.cache.bmemcached", "memcached", MEMCACHED),
];

impl BackendCatalog for Builtins {
    fn builtins() -> &'static [BuiltinBackend] {
        BUILTINS
    }
}
