//! The storage interface: [`Backend`], and the [`CachedValue`] it stores.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::codec::WireFormat;
use crate::error::Result;
use crate::expiration::Expiration;
use crate::mutex::CacheMutex;

/// A boxed, sendable future: what the async methods of [`Backend`] return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The version of the value format: the envelope of byte backends and the metadata of object
/// backends. An entry of another version is a miss.
///
/// Version 2: payloads are MessagePack by default (version 1 wrote bincode), so an entry an
/// earlier build wrote is a clean miss rather than bincode bytes read as MessagePack.
pub const FORMAT_VERSION: u8 = 2;

/// What is stored beside a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// When the value was created (the precise clock of the region that created it).
    pub created_at: Timestamp,
    /// The value format version ([`FORMAT_VERSION`] when written by this build).
    pub version: u8,
    /// How a byte backend lays the value out beside this metadata: this toolkit's envelope, or
    /// the one Python dogpile writes (for a cache shared with Python services).
    pub wire: WireFormat,
}

impl Metadata {
    /// Metadata for a value created at `created_at` in this build's format.
    pub fn new(created_at: Timestamp) -> Self {
        Self::with_version(created_at, FORMAT_VERSION)
    }

    /// Metadata of format `version`, in this toolkit's envelope.
    pub fn with_version(created_at: Timestamp, version: u8) -> Self {
        Metadata {
            created_at,
            version,
            wire: WireFormat::Dogpile,
        }
    }

    /// When the value was created, as a `SystemTime`.
    pub fn created_at_system_time(&self) -> std::time::SystemTime {
        self.created_at.to_system_time()
    }
}

/// The thing being cached, in the form the backend keeps.
#[derive(Clone)]
pub enum Payload {
    /// The value itself, for backends that keep objects in this process (`dogpile.cache.memory`).
    /// A hit clones the `T` inside; cache an `Arc<T>` to make large values cheap to hand out.
    Object(Arc<dyn Any + Send + Sync>),
    /// The value serialized by the region's codec, for backends that store bytes.
    Bytes(Arc<[u8]>),
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Object(_) => f.write_str("Payload::Object(..)"),
            Payload::Bytes(b) => write!(f, "Payload::Bytes({} bytes)", b.len()),
        }
    }
}

/// A payload with its metadata: what a [`Backend`] stores under a key.
///
/// This is dogpile's `CachedValue(payload, metadata)`. Byte backends turn it into bytes with
/// [`codec::encode_envelope`](crate::codec::encode_envelope) and back with
/// [`codec::decode_envelope`](crate::codec::decode_envelope).
#[derive(Clone, Debug)]
pub struct CachedValue {
    /// The value.
    pub payload: Payload,
    /// When it was created, and in which format.
    pub metadata: Metadata,
}

impl Payload {
    /// The payload borrowed, as [`CachedValueRef`] holds it.
    pub fn view(&self) -> PayloadRef<'_> {
        match self {
            Payload::Object(obj) => PayloadRef::Object(obj),
            Payload::Bytes(bytes) => PayloadRef::Bytes(bytes),
        }
    }
}

impl CachedValue {
    /// The value borrowed: what [`Backend::visit_multi`] hands out.
    ///
    /// ```
    /// use dogpile_core::backend::{CachedValue, Metadata, Payload, PayloadRef};
    /// use dogpile_core::clock::Timestamp;
    ///
    /// let value = CachedValue {
    ///     payload: Payload::Bytes(b"42".to_vec().into()),
    ///     metadata: Metadata::new(Timestamp::from_nanos(7)),
    /// };
    /// let view = value.view();
    /// assert!(matches!(view.payload, PayloadRef::Bytes(b"42")));
    /// assert_eq!(view.metadata, value.metadata);
    /// ```
    pub fn view(&self) -> CachedValueRef<'_> {
        CachedValueRef {
            payload: self.payload.view(),
            metadata: self.metadata,
        }
    }
}

/// A [`Payload`] borrowed from where the backend holds it: a reply buffer, a map entry.
#[derive(Clone, Copy)]
pub enum PayloadRef<'a> {
    /// The value itself (see [`Payload::Object`]).
    Object(&'a Arc<dyn Any + Send + Sync>),
    /// The value's bytes, as the region's codec wrote them (see [`Payload::Bytes`]).
    Bytes(&'a [u8]),
}

impl fmt::Debug for PayloadRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadRef::Object(_) => f.write_str("PayloadRef::Object(..)"),
            PayloadRef::Bytes(b) => write!(f, "PayloadRef::Bytes({} bytes)", b.len()),
        }
    }
}

/// A [`CachedValue`] borrowed from where the backend holds it, so that a batch read
/// ([`Backend::visit_multi`]) decodes each value where it lies instead of copying its bytes into
/// a [`CachedValue`] of its own first.
///
/// ```
/// use dogpile_core::backend::{CachedValueRef, Metadata, PayloadRef};
/// use dogpile_core::clock::Timestamp;
///
/// let reply = b"...42...";
/// let view = CachedValueRef {
///     payload: PayloadRef::Bytes(&reply[3..5]),
///     metadata: Metadata::new(Timestamp::from_nanos(7)),
/// };
/// let owned = view.into_owned();
/// assert_eq!(format!("{:?}", owned.payload), "Payload::Bytes(2 bytes)");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct CachedValueRef<'a> {
    /// The value, borrowed.
    pub payload: PayloadRef<'a>,
    /// When it was created, and in which format.
    pub metadata: Metadata,
}

impl CachedValueRef<'_> {
    /// A [`CachedValue`] of its own: the bytes copied, or the object's `Arc` cloned.
    pub fn into_owned(self) -> CachedValue {
        CachedValue {
            payload: match self.payload {
                PayloadRef::Object(obj) => Payload::Object(obj.clone()),
                PayloadRef::Bytes(bytes) => Payload::Bytes(Arc::from(bytes)),
            },
            metadata: self.metadata,
        }
    }
}

impl<'a> From<&'a CachedValue> for CachedValueRef<'a> {
    fn from(value: &'a CachedValue) -> Self {
        value.view()
    }
}

/// Which payload a backend stores: the region encodes values for byte backends only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    /// The backend keeps [`Payload::Object`] values in this process.
    Object,
    /// The backend keeps bytes ([`Payload::Bytes`]).
    Bytes,
}

/// A storage backend: what a region reads from and writes to.
///
/// Implement `get`, `set` and `delete`; the multi-key methods default to loops, and backends with
/// batch commands override them. Keys reach the backend mangled (see [`Backend::key_mangler`]).
/// Errors are [`Error::Backend`](crate::Error::Backend) values that name the backend and server.
///
/// The `DictionaryBackend` of dogpile's usage guide, in Rust:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use dogpile_core::{Backend, CachedValue, PayloadKind, Result};
///
/// #[derive(Default)]
/// struct DictionaryBackend {
///     cache: Mutex<HashMap<String, CachedValue>>,
/// }
///
/// impl Backend for DictionaryBackend {
///     fn name(&self) -> &str { "dictionary" }
///     fn payload_kind(&self) -> PayloadKind { PayloadKind::Object }
///     fn get(&self, key: &str) -> Result<Option<CachedValue>> {
///         Ok(self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned())
///     }
///     fn set(&self, key: &str, value: CachedValue) -> Result<()> {
///         self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_owned(), value);
///         Ok(())
///     }
///     fn delete(&self, key: &str) -> Result<()> {
///         self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
///         Ok(())
///     }
/// }
/// # let _ = DictionaryBackend::default();
/// ```
pub trait Backend: Send + Sync + 'static {
    /// A short description for errors and logs: the backend name, and the server or file.
    fn name(&self) -> &str;

    /// Whether this backend keeps objects or bytes. Proxies report their innermost backend's.
    fn payload_kind(&self) -> PayloadKind;

    /// Whether every call returns without waiting on I/O (an in-process map). Async callers then
    /// use the blocking methods directly, without boxing a future per call.
    fn never_blocks(&self) -> bool {
        false
    }

    /// The value at `key`, if any.
    fn get(&self, key: &str) -> Result<Option<CachedValue>>;

    /// Stores `value` at `key`.
    fn set(&self, key: &str, value: CachedValue) -> Result<()>;

    /// Removes `key`; removing a missing key is not an error.
    fn delete(&self, key: &str) -> Result<()>;

    /// Calls `f` with the value at `key` without handing it out, and returns whether there was
    /// one. The memory backend overrides this so a hit clones the `T` inside instead of the entry.
    fn visit(&self, key: &str, f: &mut dyn FnMut(&CachedValue)) -> Result<bool> {
        Ok(match self.get(key)? {
            Some(v) => {
                f(&v);
                true
            }
            None => false,
        })
    }

    /// The values at `keys`, in the same order.
    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Calls `f` with the position in `keys` and the value of every key that has one, borrowed
    /// from where the backend holds it; keys without a value are not visited. What the region's
    /// batch reads call: a byte backend whose batch reply holds every value in one buffer
    /// overrides it to hand each value out where it lies, with no copy per value. The default
    /// visits what [`get_multi`](Backend::get_multi) returns.
    ///
    /// ```
    /// use dogpile_core::backend::{Backend, CachedValue, Metadata, Payload};
    /// use dogpile_core::clock::Timestamp;
    /// use dogpile_core::testing::MapBackend;
    ///
    /// let backend = MapBackend::default();
    /// let value = CachedValue {
    ///     payload: Payload::Bytes(b"v".to_vec().into()),
    ///     metadata: Metadata::new(Timestamp::from_nanos(1)),
    /// };
    /// backend.set("b", value).unwrap();
    /// let mut seen = Vec::new();
    /// backend.visit_multi(&["a", "b"], &mut |i, v| seen.push((i, v.metadata))).unwrap();
    /// assert_eq!(seen, [(1, Metadata::new(Timestamp::from_nanos(1)))]);
    /// ```
    fn visit_multi(
        &self,
        keys: &[&str],
        f: &mut dyn FnMut(usize, CachedValueRef<'_>),
    ) -> Result<()> {
        for (i, v) in self.get_multi(keys)?.iter().enumerate() {
            if let Some(v) = v {
                f(i, v.view());
            }
        }
        Ok(())
    }

    /// Stores every pair.
    fn set_multi(&self, items: Vec<(String, CachedValue)>) -> Result<()> {
        for (k, v) in items {
            self.set(&k, v)?;
        }
        Ok(())
    }

    /// Removes every key.
    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        for k in keys {
            self.delete(k)?;
        }
        Ok(())
    }

    /// A mutex for `key` shared with other processes, or `None` to use the region's in-process
    /// lock. Backends with a `distributed_lock` argument return one when it is on.
    fn get_mutex(&self, _key: &str) -> Option<Box<dyn CacheMutex>> {
        None
    }

    /// Checks the region's default expiration against this backend's own settings when a region
    /// is configured with it; an error fails `configure`. Redis uses it to refuse a server-side
    /// TTL that would drop values before the region sees them expire. The default accepts all.
    fn check_region_expiration(&self, _expiration: Option<&Expiration>) -> Result<()> {
        Ok(())
    }

    /// The key mangler this backend recommends (memcached's hashes keys it cannot take), used
    /// when the region sets none. A mangler that keeps most keys as they are is best given as
    /// [`KeyMangler::Keeping`](crate::KeyMangler::Keeping): a kept key is then never copied.
    fn key_mangler(&self) -> Option<crate::KeyMangler> {
        None
    }

    /// How long a caller may wait for another caller's creation of a key, as this backend's
    /// arguments say (dogpile's `lock_blocking_timeout`; `lock_blocking = false` is
    /// `Some(Duration::ZERO)`). `None` (the default) leaves the bound to the region.
    fn lock_blocking_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// A [backplane](crate::backplane) over this backend's own server, for a region whose
    /// `backplane` option asks for the backend's (Redis offers pub/sub on the connection settings
    /// it was configured with). The default has none: `Ok(None)`.
    ///
    /// # Errors
    ///
    /// The backend's error when it has a backplane but cannot build it from its settings.
    fn backplane(&self) -> Result<Option<Arc<dyn crate::backplane::Backplane>>> {
        Ok(None)
    }

    /// [`get`](Backend::get) for async callers. Backends with an async client override it; the
    /// default calls the blocking method.
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<CachedValue>>> {
        Box::pin(async move { self.get(key) })
    }

    /// [`set`](Backend::set) for async callers; the default calls the blocking method.
    fn set_async<'a>(&'a self, key: &'a str, value: CachedValue) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.set(key, value) })
    }

    /// [`delete`](Backend::delete) for async callers; the default calls the blocking method.
    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.delete(key) })
    }
}

impl fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backend({})", self.name())
    }
}

/// A shared backend is a backend: configure a region with an `Arc` you keep, to look at the
/// backend (or share it between regions) afterwards. (Only for sized backends: a region calls an
/// `Arc<dyn Backend>` through the trait object directly, with no extra hop on the hit path.)
impl<B: Backend> Backend for Arc<B> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn payload_kind(&self) -> PayloadKind {
        (**self).payload_kind()
    }
    fn never_blocks(&self) -> bool {
        (**self).never_blocks()
    }
    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        (**self).get(key)
    }
    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        (**self).set(key, value)
    }
    fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key)
    }
    fn visit(&self, key: &str, f: &mut dyn FnMut(&CachedValue)) -> Result<bool> {
        (**self).visit(key, f)
    }
    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue>>> {
        (**self).get_multi(keys)
    }
    fn visit_multi(
        &self,
        keys: &[&str],
        f: &mut dyn FnMut(usize, CachedValueRef<'_>),
    ) -> Result<()> {
        (**self).visit_multi(keys, f)
    }
    fn set_multi(&self, items: Vec<(String, CachedValue)>) -> Result<()> {
        (**self).set_multi(items)
    }
    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        (**self).delete_multi(keys)
    }
    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        (**self).get_mutex(key)
    }
    fn key_mangler(&self) -> Option<crate::KeyMangler> {
        (**self).key_mangler()
    }
    fn lock_blocking_timeout(&self) -> Option<std::time::Duration> {
        (**self).lock_blocking_timeout()
    }
    fn check_region_expiration(&self, expiration: Option<&Expiration>) -> Result<()> {
        (**self).check_region_expiration(expiration)
    }
    fn backplane(&self) -> Result<Option<Arc<dyn crate::backplane::Backplane>>> {
        (**self).backplane()
    }
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<CachedValue>>> {
        (**self).get_async(key)
    }
    fn set_async<'a>(&'a self, key: &'a str, value: CachedValue) -> BoxFuture<'a, Result<()>> {
        (**self).set_async(key, value)
    }
    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        (**self).delete_async(key)
    }
}
