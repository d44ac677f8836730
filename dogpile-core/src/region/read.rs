//! Plain reads and writes: get, set, delete, one key or many, blocking and async.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use super::{decode_payload, visit_each, CacheRegion, CacheValue, Configured};
use crate::backend::{CachedValueRef, Metadata, FORMAT_VERSION};
use crate::error::Result;
use crate::expiration::Expiration;
use crate::registry::BackendCatalog;

/// A value read with what is stored beside it: what
/// [`get_value_metadata`](CacheRegion::get_value_metadata) returns (dogpile's `CachedValue`, with
/// its `cached_time` and `age`).
///
/// ```
/// # use dogpile_core::{CacheRegion, RegionConfig};
/// # let region: CacheRegion = CacheRegion::new();
/// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())).unwrap();
/// region.set("k", 7u32).unwrap();
/// let entry = region.get_value_metadata::<u32>("k").unwrap().unwrap();
/// assert_eq!(entry.value, 7);
/// assert!(entry.age < std::time::Duration::from_secs(60));
/// assert!(entry.created_at() <= std::time::SystemTime::now());
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CachedEntry<T> {
    /// The value.
    pub value: T,
    /// When it was created, and in which format version it is stored.
    pub metadata: Metadata,
    /// How long ago it was created, by the region's clock.
    pub age: Duration,
}

impl<T> CachedEntry<T> {
    /// When the value was created (dogpile's `cached_time`).
    pub fn created_at(&self) -> SystemTime {
        self.metadata.created_at_system_time()
    }
}

/// How a plain read judges a stored value's age.
#[derive(Clone, Copy)]
enum Age<'e> {
    /// Fresh under the region's expiration, or under this one for the call; not invalidated.
    Expiring(Option<&'e Expiration>),
    /// Any value present in this build's format, however old or invalidated.
    Ignored,
}

impl<C: BackendCatalog> CacheRegion<C> {
    /// The value at `key`, or `None` when there is none, it has expired (under the region's
    /// expiration) or it was invalidated. A cached `None`, `0` or empty value is a hit.
    ///
    /// A value stored as another type (or that does not decode) is a miss, logged at `warn`.
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`](crate::Error::NotConfigured) before [`configure`](CacheRegion::configure); the backend's
    /// error (an [`Error::Backend`](crate::Error::Backend), counted in [`stats`](CacheRegion::stats)) when it cannot be
    /// read.
    pub fn get<T: CacheValue>(&self, key: &str) -> Result<Option<T>> {
        self.get_inner(key, Age::Expiring(None))
    }

    /// [`get`](CacheRegion::get) with an expiration that overrides the region's for this call.
    ///
    /// # Errors
    ///
    /// As [`get`](CacheRegion::get).
    pub fn get_with_expiration<T: CacheValue>(
        &self,
        key: &str,
        expiration_time: impl Into<Expiration>,
    ) -> Result<Option<T>> {
        self.get_inner(key, Age::Expiring(Some(&expiration_time.into())))
    }

    /// [`get`](CacheRegion::get) that returns any value present, however old or invalidated.
    ///
    /// # Errors
    ///
    /// As [`get`](CacheRegion::get).
    pub fn get_ignore_expiration<T: CacheValue>(&self, key: &str) -> Result<Option<T>> {
        self.get_inner(key, Age::Ignored)
    }

    fn get_inner<T: CacheValue>(&self, key: &str, age: Age<'_>) -> Result<Option<T>> {
        self.state.with(|cfg| {
            let cfg = cfg.ok_or_else(|| self.not_configured())?;
            let mkey = cfg.mangle(key);
            let ttl = match age {
                Age::Ignored => {
                    let mut out = None;
                    cfg.backend
                        .visit(&mkey, &mut |v| out = decode_any_age(v, &mkey, cfg))
                        .map_err(|e| self.backend_failed(e, &mkey))?;
                    return Ok(out);
                }
                Age::Expiring(expiration) => cfg.ttl(expiration),
            };
            let found = self.lookup::<T>(cfg, &mkey, ttl)?;
            self.count_read(&found);
            Ok(found.fresh())
        })
    }

    /// The value at `key` with its creation time and age, or `None` where
    /// [`get`](CacheRegion::get) would give `None`. An inspection: not counted in
    /// [`stats`](CacheRegion::stats).
    ///
    /// ```
    /// # use dogpile_core::{CacheRegion, RegionConfig};
    /// # let region: CacheRegion = CacheRegion::new();
    /// # region.configure(RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())).unwrap();
    /// region.set("k", "v".to_string()).unwrap();
    /// region.invalidate(true);
    /// assert_eq!(region.get_value_metadata::<String>("k").unwrap(), None);
    /// // Still there, however invalidated:
    /// let entry = region.get_value_metadata_ignore_expiration::<String>("k").unwrap().unwrap();
    /// assert_eq!(entry.value, "v");
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get`](CacheRegion::get).
    pub fn get_value_metadata<T: CacheValue>(&self, key: &str) -> Result<Option<CachedEntry<T>>> {
        self.entry_inner(key, Age::Expiring(None))
    }

    /// [`get_value_metadata`](CacheRegion::get_value_metadata) with an expiration that overrides
    /// the region's for this call.
    ///
    /// # Errors
    ///
    /// As [`get`](CacheRegion::get).
    pub fn get_value_metadata_with_expiration<T: CacheValue>(
        &self,
        key: &str,
        expiration_time: impl Into<Expiration>,
    ) -> Result<Option<CachedEntry<T>>> {
        self.entry_inner(key, Age::Expiring(Some(&expiration_time.into())))
    }

    /// [`get_value_metadata`](CacheRegion::get_value_metadata) of any value present, however old
    /// or invalidated.
    ///
    /// # Errors
    ///
    /// As [`get`](CacheRegion::get).
    pub fn get_value_metadata_ignore_expiration<T: CacheValue>(
        &self,
        key: &str,
    ) -> Result<Option<CachedEntry<T>>> {
        self.entry_inner(key, Age::Ignored)
    }

    fn entry_inner<T: CacheValue>(
        &self,
        key: &str,
        age: Age<'_>,
    ) -> Result<Option<CachedEntry<T>>> {
        let cfg = self.configured()?;
        let mkey = cfg.mangle(key);
        let mut out = None;
        cfg.backend
            .visit(&mkey, &mut |v| {
                let value = match age {
                    Age::Ignored => decode_any_age(v, &mkey, &cfg),
                    Age::Expiring(expiration) => {
                        let ttl = cfg.ttl(expiration);
                        self.classify::<T>(&cfg, v, ttl, &mkey).fresh()
                    }
                };
                out = value.map(|value| CachedEntry {
                    value,
                    metadata: v.metadata,
                    age: cfg.clock.now().saturating_since(v.metadata.created_at),
                });
            })
            .map_err(|e| self.backend_failed(e, &mkey))?;
        Ok(out)
    }

    /// The values at `keys`, in order, read in one backend call where the backend has a batch
    /// command; `None` where [`get`](CacheRegion::get) would give `None`.
    ///
    /// # Errors
    ///
    /// As [`get`](CacheRegion::get).
    pub fn get_multi<T: CacheValue, K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<T>>> {
        self.get_multi_inner(keys, Age::Expiring(None))
    }

    /// [`get_multi`](CacheRegion::get_multi) with an expiration that overrides the region's for
    /// this call.
    ///
    /// ```
    /// # use std::time::{Duration, SystemTime};
    /// # use dogpile_core::{clock::Clock, CacheRegion, RegionConfig};
    /// let (clock, time) = Clock::manual(SystemTime::now());
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(
    ///         RegionConfig::with_backend(dogpile_core::testing::MapBackend::default())
    ///             .expiration_time(Duration::from_secs(600))
    ///             .clock(clock),
    ///     )
    ///     .unwrap();
    /// region.set("a", 1u8).unwrap();
    /// time.advance(Duration::from_secs(30));
    /// let got: Vec<Option<u8>> = region.get_multi_with_expiration(&["a", "b"], Duration::from_secs(10)).unwrap();
    /// assert_eq!(got, [None, None]);
    /// assert_eq!(region.get_multi::<u8, _>(&["a"]).unwrap(), [Some(1)]);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get`](CacheRegion::get).
    pub fn get_multi_with_expiration<T: CacheValue, K: AsRef<str>>(
        &self,
        keys: &[K],
        expiration_time: impl Into<Expiration>,
    ) -> Result<Vec<Option<T>>> {
        self.get_multi_inner(keys, Age::Expiring(Some(&expiration_time.into())))
    }

    /// [`get_multi`](CacheRegion::get_multi) that returns any value present, however old or
    /// invalidated.
    ///
    /// # Errors
    ///
    /// As [`get`](CacheRegion::get).
    pub fn get_multi_ignore_expiration<T: CacheValue, K: AsRef<str>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<T>>> {
        self.get_multi_inner(keys, Age::Ignored)
    }

    fn get_multi_inner<T: CacheValue, K: AsRef<str>>(
        &self,
        keys: &[K],
        age: Age<'_>,
    ) -> Result<Vec<Option<T>>> {
        let cfg = self.configured()?;
        crate::key::with_mangled(
            keys,
            |k| cfg.mangle(k),
            |refs| match age {
                Age::Expiring(expiration) => self.fresh_multi(&cfg, refs, cfg.ttl(expiration)),
                Age::Ignored => visit_each(
                    &*cfg.backend,
                    refs,
                    || None,
                    |v, mkey| decode_any_age(v, mkey, &cfg),
                )
                .map_err(|e| self.backend_failed(e, refs.first().copied().unwrap_or(""))),
            },
        )
    }

    /// Stores `value` at `key`, created now.
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`](crate::Error::NotConfigured) before
    /// [`configure`](CacheRegion::configure); [`Error::Encode`](crate::Error::Encode) when a
    /// value cannot be serialized for a byte backend (nothing of the call is stored then); the
    /// backend's error when it cannot be written.
    pub fn set<T: CacheValue>(&self, key: &str, value: T) -> Result<()> {
        self.state.with(|cfg| {
            let cfg = cfg.ok_or_else(|| self.not_configured())?;
            cfg.store(&cfg.mangle(key), Cow::<T>::Owned(value), cfg.clock.now())
        })
    }

    /// Stores every pair, in one backend call where the backend has a batch command; every value
    /// of the call is stamped with one creation time.
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`](crate::Error::NotConfigured) before
    /// [`configure`](CacheRegion::configure); [`Error::Encode`](crate::Error::Encode) when a
    /// value cannot be serialized for a byte backend (nothing of the call is stored then); the
    /// backend's error when it cannot be written.
    pub fn set_multi<T: CacheValue, K: AsRef<str>>(
        &self,
        items: impl IntoIterator<Item = (K, T)>,
    ) -> Result<()> {
        let cfg = self.configured()?;
        // One call, one creation time for every value, as dogpile stamps them.
        let created_at = cfg.clock.now();
        let wrapped = items
            .into_iter()
            .map(|(k, v)| {
                let mkey = cfg.mangle(k.as_ref()).into_owned();
                let value = cfg.wrap_value(&mkey, Cow::<T>::Owned(v), created_at)?;
                Ok((mkey, value))
            })
            .collect::<Result<Vec<_>>>()?;
        if wrapped.is_empty() {
            return Ok(());
        }
        // The keys again only for a local tier or a backplane to tell.
        let keys: Vec<String> = match cfg.tells_writes() {
            true => wrapped.iter().map(|(k, _)| k.clone()).collect(),
            false => Vec::new(),
        };
        cfg.backend.set_multi(wrapped)?;
        cfg.wrote(&keys.iter().map(String::as_str).collect::<Vec<_>>());
        Ok(())
    }

    /// Removes `key`. Removing a missing key is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`](crate::Error::NotConfigured) before
    /// [`configure`](CacheRegion::configure); the backend's error when it cannot be written.
    pub fn delete(&self, key: &str) -> Result<()> {
        let cfg = self.configured()?;
        let mkey = cfg.mangle(key);
        cfg.backend.delete(&mkey)?;
        cfg.deleted(&[&mkey]);
        Ok(())
    }

    /// Removes every key, in one backend call where the backend has a batch command.
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`](crate::Error::NotConfigured) before
    /// [`configure`](CacheRegion::configure); the backend's error when it cannot be written.
    pub fn delete_multi<K: AsRef<str>>(&self, keys: &[K]) -> Result<()> {
        let cfg = self.configured()?;
        let mkeys: Vec<Cow<'_, str>> = keys.iter().map(|k| cfg.mangle(k.as_ref())).collect();
        let refs: Vec<&str> = mkeys.iter().map(|k| &**k).collect();
        if refs.is_empty() {
            return Ok(());
        }
        cfg.backend.delete_multi(&refs)?;
        cfg.deleted(&refs);
        Ok(())
    }

    /// [`get`](CacheRegion::get) for async callers: backends with an async client do not block
    /// the executor.
    ///
    /// # Errors
    ///
    /// As [`get`](CacheRegion::get).
    pub async fn get_async<T: CacheValue>(&self, key: &str) -> Result<Option<T>> {
        let cfg = self.configured()?;
        if cfg.never_blocks {
            return self.get(key);
        }
        let mkey = cfg.mangle(key);
        let ttl = cfg.ttl(None);
        // Counted and logged as the blocking read is.
        let found = self.lookup_async::<T>(&cfg, &mkey, ttl).await?;
        self.count_read(&found);
        Ok(found.fresh())
    }

    /// [`set`](CacheRegion::set) for async callers.
    ///
    /// # Errors
    ///
    /// As [`set`](CacheRegion::set).
    pub async fn set_async<T: CacheValue>(&self, key: &str, value: T) -> Result<()> {
        let cfg = self.configured()?;
        cfg.store_async(&cfg.mangle(key), Cow::<T>::Owned(value), cfg.clock.now())
            .await
    }

    /// [`delete`](CacheRegion::delete) for async callers.
    ///
    /// # Errors
    ///
    /// As [`delete`](CacheRegion::delete).
    pub async fn delete_async(&self, key: &str) -> Result<()> {
        let cfg = self.configured()?;
        let mkey = cfg.mangle(key);
        if cfg.never_blocks {
            cfg.backend.delete(&mkey)?;
        } else {
            cfg.backend.delete_async(&mkey).await?;
        }
        cfg.deleted_async(&mkey).await;
        Ok(())
    }
}

/// The `T` in a stored value (owned, or borrowed from the backend) of this build's format,
/// whatever its age.
fn decode_any_age<'v, T: CacheValue>(
    v: impl Into<CachedValueRef<'v>>,
    mkey: &str,
    cfg: &Configured,
) -> Option<T> {
    let v = v.into();
    (v.metadata.version == FORMAT_VERSION)
        .then(|| decode_payload::<T>(v.payload, mkey, cfg))
        .flatten()
}
