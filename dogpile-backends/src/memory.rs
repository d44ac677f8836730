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
//!
//! Keys of up to 30 bytes are kept inside the map's entry: a hit then compares bytes from the
//! cache line it has already loaded instead of following a pointer to the key. The unbounded map
//! is kept at most a little over half full, so lookups walk short probe sequences.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

use foldhash::fast::RandomState;

use dogpile_core::{Arguments, Backend, CachedValue, PayloadKind, Result};

enum Store {
    Unbounded(Unbounded),
    Bounded(quick_cache::sync::Cache<MemKey, CachedValue>),
}

/// The unbounded map, kept at most a little over half full while it is small.
///
/// papaya grows a table only when an insert probes more than 5·log2(slots) steps, so a small
/// table can fill to nearly every slot, and every lookup then walks a long probe chain: a
/// 1,000-key map measured 64 to 75 ns per decorated hit (depending on the process's hash seed)
/// against 57 ns at half load. Reserving ahead costs 9 bytes per spare slot, and the insert
/// that passes a mark copies the table (papaya's `reserve` finishes the copy at once, where its
/// own growth copies a little on each operation). Past `RESERVE_UP_TO` keys that copy would
/// stall one insert for milliseconds, so bigger maps grow the papaya way.
struct Unbounded {
    map: papaya::HashMap<MemKey, CachedValue, RandomState>,
    /// The length at which to reserve again.
    grow_at: AtomicUsize,
    /// New keys so far, to look at the length once per `GROW_CHECK_EVERY` of them.
    new_keys: AtomicUsize,
}

/// The map's length is looked at once per this many new keys: `len` reads one counter per CPU,
/// too much for every insert.
const GROW_CHECK_EVERY: usize = 16;

/// The largest map that reserves ahead: copying 65,536 entries takes well under a millisecond.
const RESERVE_UP_TO: usize = 1 << 16;

impl Default for Unbounded {
    fn default() -> Self {
        Unbounded {
            map: papaya::HashMap::with_hasher(RandomState::default()),
            grow_at: AtomicUsize::new(0),
            new_keys: AtomicUsize::new(0),
        }
    }
}

impl Unbounded {
    fn insert(
        &self,
        map: &papaya::HashMapRef<'_, MemKey, CachedValue, RandomState, impl papaya::Guard>,
        key: &str,
        value: CachedValue,
    ) {
        if map.insert(MemKey::new(key), value).is_none() {
            self.added(map);
        }
    }

    /// Called after a new key went in: reserves room when the map passes its mark. Reserving
    /// `len` more makes papaya size the table for twice the length, at 4/3 slots per entry
    /// rounded up to a power of two: at least 2.67 slots per entry, so when the length has
    /// grown by half again (the next mark) the table is still at most 56% full.
    fn added(
        &self,
        map: &papaya::HashMapRef<'_, MemKey, CachedValue, RandomState, impl papaya::Guard>,
    ) {
        // A load and a store, not an atomic add (a locked instruction on every new key): threads
        // that count at once lose counts (one may even store an older count), which only puts
        // the next look at the length off.
        let n = self.new_keys.load(Ordering::Relaxed).wrapping_add(1);
        self.new_keys.store(n, Ordering::Relaxed);
        if n % GROW_CHECK_EVERY != 0 {
            return;
        }
        let len = map.len();
        if len >= self.grow_at.load(Ordering::Relaxed) && len <= RESERVE_UP_TO {
            map.reserve(len);
            self.grow_at.store(len + len / 2, Ordering::Relaxed);
        }
    }
}

/// How many key bytes an entry holds without a separate allocation. Thirty bytes make the key
/// 32 bytes, a `String` and a pointer; most decorated-function keys fit
/// (`myapp::users:get_user|12345` is 27).
const INLINE: usize = 30;

/// A stored key: inline when short, boxed otherwise. Hashes and compares as the `str` it holds.
#[derive(Clone)]
enum MemKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<str>),
}

impl MemKey {
    fn new(key: &str) -> Self {
        if key.len() > INLINE {
            return MemKey::Boxed(key.into());
        }
        let mut bytes = [0; INLINE];
        bytes[..key.len()].copy_from_slice(key.as_bytes());
        MemKey::Inline {
            len: key.len() as u8, // at most INLINE
            bytes,
        }
    }

    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match self {
            MemKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            MemKey::Boxed(s) => s.as_bytes(),
        }
    }
}

impl Hash for MemKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The same bytes as `Lookup` hashes, so a lookup finds the key.
        state.write(self.as_bytes());
        state.write_u8(0xff);
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        same_bytes(self.as_bytes(), other.as_bytes())
    }
}

impl Eq for MemKey {}

/// A key as looked up: borrows the caller's `str`.
struct Lookup<'a>(&'a str);

impl Hash for Lookup<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
        state.write_u8(0xff);
    }
}

impl papaya::Equivalent<MemKey> for Lookup<'_> {
    #[inline]
    fn equivalent(&self, key: &MemKey) -> bool {
        same_bytes(self.0.as_bytes(), key.as_bytes())
    }
}

/// Byte equality in word-sized steps: keys are short, and a call to `memcmp` costs more than
/// comparing them here.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if n < 8 {
        return a == b;
    }
    let word = |s: &[u8], i: usize| u64::from_ne_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    let mut i = 0;
    while i + 8 <= n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    // The last, overlapping word covers the tail.
    word(a, n - 8) == word(b, n - 8)
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
            None => Store::Unbounded(Unbounded::default()),
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
            Store::Unbounded(u) => u.map.len(),
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
            Store::Unbounded(u) => match u.map.pin().get(&Lookup(key)) {
                Some(v) => {
                    f(v);
                    true
                }
                None => false,
            },
            Store::Bounded(c) => match c.get(&Lookup(key)) {
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
            Store::Unbounded(u) => u.map.pin().get(&Lookup(key)).cloned(),
            Store::Bounded(c) => c.get(&Lookup(key)),
        })
    }

    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        match &self.store {
            Store::Unbounded(u) => u.insert(&u.map.pin(), key, value),
            Store::Bounded(c) => c.insert(MemKey::new(key), value),
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        match &self.store {
            Store::Unbounded(u) => {
                u.map.pin().remove(&Lookup(key));
            }
            Store::Bounded(c) => {
                c.remove(&Lookup(key));
            }
        }
        Ok(())
    }

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue>>> {
        Ok(match &self.store {
            Store::Unbounded(u) => {
                let m = u.map.pin();
                keys.iter().map(|k| m.get(&Lookup(k)).cloned()).collect()
            }
            Store::Bounded(c) => keys.iter().map(|k| c.get(&Lookup(k))).collect(),
        })
    }

    fn set_multi(&self, items: Vec<(String, CachedValue)>) -> Result<()> {
        match &self.store {
            Store::Unbounded(u) => {
                let m = u.map.pin();
                for (k, v) in items {
                    u.insert(&m, &k, v);
                }
            }
            Store::Bounded(c) => {
                for (k, v) in items {
                    c.insert(MemKey::new(&k), v);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dogpile_core::{Metadata, Payload, Timestamp};
    use std::sync::Arc;

    fn value(n: usize) -> CachedValue {
        CachedValue {
            payload: Payload::Object(Arc::new(n)),
            metadata: Metadata::new(Timestamp::EPOCH),
        }
    }

    fn read(b: &MemoryBackend, key: &str) -> Option<usize> {
        let v = b.get(key).unwrap()?;
        match v.payload {
            Payload::Object(o) => o.downcast_ref::<usize>().copied(),
            Payload::Bytes(_) => None,
        }
    }

    /// Keys on both sides of the inline limit and of the word size, keys that differ only in
    /// their first, middle or last byte, and multi-byte text.
    fn tricky_keys() -> Vec<String> {
        let mut keys = vec![String::new()];
        for len in [1, 7, 8, 9, 15, 16, 17, 29, 30, 31, 32, 64, 300] {
            let base: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            keys.push(base.clone());
            for at in [0, len / 2, len - 1] {
                let mut k = base.clone().into_bytes();
                k[at] = b'Z';
                keys.push(String::from_utf8(k).unwrap());
            }
        }
        keys.push("clé|é".into());
        keys.push("ключ:значение|١٢٣".into());
        keys.sort();
        keys.dedup();
        keys
    }

    #[test]
    fn every_key_reads_back_its_own_value() {
        for bound in [None, Some(10_000)] {
            let b = MemoryBackend::new(bound, false);
            let keys = tricky_keys();
            for (n, k) in keys.iter().enumerate() {
                b.set(k, value(n)).unwrap();
            }
            assert_eq!(b.len(), keys.len(), "bound {bound:?}");
            for (n, k) in keys.iter().enumerate() {
                assert_eq!(read(&b, k), Some(n), "key {k:?}, bound {bound:?}");
            }
            // A prefix or an extension of a stored key is another key.
            assert_eq!(read(&b, "abcdefghijklmnopqrstuvwxyzab"), None);
            assert_eq!(read(&b, &format!("{}!", keys[3])), None);
            // Overwriting keeps one entry; deleting removes only that key.
            b.set(&keys[5], value(999)).unwrap();
            assert_eq!(read(&b, &keys[5]), Some(999));
            b.delete(&keys[6]).unwrap();
            assert_eq!(read(&b, &keys[6]), None);
            assert_eq!(b.len(), keys.len() - 1);
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let many = b.get_multi(&refs).unwrap();
            assert_eq!(many.iter().filter(|v| v.is_some()).count(), keys.len() - 1);
        }
    }

    #[test]
    fn word_comparison_agrees_with_slice_equality() {
        // Every pair of strings up to 40 bytes that differ in one byte, or in length.
        let base: Vec<u8> = (0..40u8).map(|i| b'0' + i).collect();
        for len in 0..=40 {
            let a = &base[..len];
            assert!(same_bytes(a, a));
            for other in 0..=40 {
                assert_eq!(same_bytes(a, &base[..other]), len == other);
            }
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x80;
                assert!(!same_bytes(a, &b), "len {len}, byte {at}");
            }
        }
    }

    #[test]
    fn a_growing_map_loses_nothing_while_threads_insert_and_read() {
        let b = Arc::new(MemoryBackend::new(None, false));
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        let n = t * 5_000 + i;
                        b.set(&format!("grow:{n}"), value(n)).unwrap();
                        // What this thread stored is there, while the table grows under it.
                        assert_eq!(read(&b, &format!("grow:{n}")), Some(n));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(b.len(), 20_000);
        for n in 0..20_000 {
            assert_eq!(read(&b, &format!("grow:{n}")), Some(n));
        }
    }
}
