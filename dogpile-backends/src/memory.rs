//! `dogpile.cache.memory` and `dogpile.cache.memory_pickle`: a map in this process.
//!
//! `memory` keeps the values themselves: a hit clones the value out of the map under the map's
//! read guard, with no lock and no shared counter written, so reads scale with threads (the map
//! is `papaya`'s lock-free hash map). `memory_pickle` keeps the values serialized by the region's
//! codec, as a server backend would: use it to check that a region's types round-trip before
//! moving it to Redis or memcached.
//!
//! Arguments: `max_size` (optional, a positive integer) bounds the number of entries; the
//! bounded map is `quick_cache`'s, which evicts by its S3-FIFO policy. A bounded hit clones the
//! stored entry's `Arc` (one atomic increment), so the unbounded map stays the fastest.

use foldhash::fast::RandomState;

use dogpile_core::{Arguments, Backend, CachedValue, PayloadKind, Result};

enum Store {
    Unbounded(papaya::HashMap<String, CachedValue, RandomState>),
    Bounded(quick_cache::sync::Cache<String, CachedValue>),
}

/// The in-process map backend.
pub struct MemoryBackend {
    store: Store,
    kind: PayloadKind,
    name: &'static str,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("name", &self.name)
            .field("len", &self.len())
            .finish()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new(None, false)
    }
}

impl MemoryBackend {
    /// A map holding at most `max_size` entries (`None`: no bound); `pickle` stores serialized
    /// values (`dogpile.cache.memory_pickle`).
    pub fn new(max_size: Option<usize>, pickle: bool) -> Self {
        let store = match max_size {
            None => Store::Unbounded(papaya::HashMap::with_hasher(RandomState::default())),
            Some(n) => Store::Bounded(quick_cache::sync::Cache::new(n)),
        };
        let (kind, name) = if pickle {
            (PayloadKind::Bytes, "dogpile.cache.memory_pickle")
        } else {
            (PayloadKind::Object, "dogpile.cache.memory")
        };
        MemoryBackend { store, kind, name }
    }

    /// Makes one from configuration arguments: `max_size`.
    pub fn from_arguments(args: &Arguments, pickle: bool) -> Result<Self> {
        let name = if pickle {
            "dogpile.cache.memory_pickle"
        } else {
            "dogpile.cache.memory"
        };
        args.expect_only(name, &["max_size"])?;
        let max_size = match args.u64("max_size")? {
            Some(0) => return Err(args.error("max_size", "expected a positive integer, got 0")),
            Some(n) => Some(usize::try_from(n).map_err(|_| {
                args.error(
                    "max_size",
                    format!("{n} is more than this machine can address"),
                )
            })?),
            None => None,
        };
        Ok(Self::new(max_size, pickle))
    }

    /// How many entries the map holds.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Unbounded(m) => m.len(),
            Store::Bounded(c) => c.len(),
        }
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &str {
        self.name
    }

    fn payload_kind(&self) -> PayloadKind {
        self.kind
    }

    fn never_blocks(&self) -> bool {
        true
    }

    #[inline]
    fn visit(&self, key: &str, f: &mut dyn FnMut(&CachedValue)) -> Result<bool> {
        Ok(match &self.store {
            Store::Unbounded(m) => match m.pin().get(key) {
                Some(v) => {
                    f(v);
                    true
                }
                None => false,
            },
            Store::Bounded(c) => match c.get(key) {
                Some(v) => {
                    f(&v);
                    true
                }
                None => false,
            },
        })
    }

    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        Ok(match &self.store {
            Store::Unbounded(m) => m.pin().get(key).cloned(),
            Store::Bounded(c) => c.get(key),
        })
    }

    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        match &self.store {
            Store::Unbounded(m) => {
                m.pin().insert(key.to_owned(), value);
            }
            Store::Bounded(c) => c.insert(key.to_owned(), value),
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        match &self.store {
            Store::Unbounded(m) => {
                m.pin().remove(key);
            }
            Store::Bounded(c) => {
                c.remove(key);
            }
        }
        Ok(())
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue>>> {
        Ok(match &self.store {
            Store::Unbounded(m) => {
                let m = m.pin();
                keys.iter().map(|k| m.get(*k).cloned()).collect()
            }
            Store::Bounded(c) => keys.iter().map(|k| c.get(*k)).collect(),
        })
    }

    fn set_multi(&self, items: Vec<(String, CachedValue)>) -> Result<()> {
        match &self.store {
            Store::Unbounded(m) => {
                let m = m.pin();
                for (k, v) in items {
                    m.insert(k, v);
                }
            }
            Store::Bounded(c) => {
                for (k, v) in items {
                    c.insert(k, v);
                }
            }
        }
        Ok(())
    }
}
