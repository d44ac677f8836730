//! Plain reads and writes: get, set, delete, one key or many, blocking and async.

use std::borrow::Cow;

use super::{decode_payload, CacheRegion, CacheValue};
use crate::backend::FORMAT_VERSION;
use crate::error::Result;
use crate::expiration::Expiration;
use crate::lock::Lookup;
use crate::registry::BackendCatalog;

impl<C: BackendCatalog> CacheRegion<C> {
    /// The value at `key`, or `None` when there is none, it has expired (under the region's
    /// expiration) or it was invalidated. A cached `None`, `0` or empty value is a hit.
    pub fn get<T: CacheValue>(&self, key: &str) -> Result<Option<T>> {
        self.get_inner(key, None, false)
    }

    /// [`get`](CacheRegion::get) with an expiration that overrides the region's for this call.
    pub fn get_with_expiration<T: CacheValue>(
        &self,
        key: &str,
        expiration_time: impl Into<Expiration>,
    ) -> Result<Option<T>> {
        self.get_inner(key, Some(&expiration_time.into()), false)
    }

    /// [`get`](CacheRegion::get) that returns any value present, however old or invalidated.
    pub fn get_ignore_expiration<T: CacheValue>(&self, key: &str) -> Result<Option<T>> {
        self.get_inner(key, None, true)
    }

    fn get_inner<T: CacheValue>(
        &self,
        key: &str,
        expiration: Option<&Expiration>,
        ignore_expiration: bool,
    ) -> Result<Option<T>> {
        self.state.with(|cfg| {
            let cfg = cfg.ok_or_else(|| self.not_configured())?;
            let mkey = cfg.mangle(key);
            if ignore_expiration {
                let mut out = None;
                cfg.backend.visit(&mkey, &mut |v| {
                    if v.metadata.version == FORMAT_VERSION {
                        out = decode_payload::<T>(&v.payload, &mkey, &cfg.backend_name);
                    }
                })?;
                return Ok(out);
            }
            let ttl = cfg.ttl(expiration);
            let found = self.lookup::<T>(cfg, &mkey, ttl)?;
            self.count_read(&found);
            Ok(found.fresh())
        })
    }

    /// The values at `keys`, in order; `None` where [`get`](CacheRegion::get) would give `None`.
    pub fn get_multi<T: CacheValue, K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<T>>> {
        let cfg = self.configured()?;
        let ttl = cfg.ttl(None);
        let mkeys: Vec<Cow<'_, str>> = keys.iter().map(|k| cfg.mangle(k.as_ref())).collect();
        let refs: Vec<&str> = mkeys.iter().map(|k| &**k).collect();
        let raw = self.read_multi(&cfg, &refs, ttl)?;
        Ok(raw.into_iter().map(Lookup::fresh).collect())
    }

    /// Stores `value` at `key`, created now.
    pub fn set<T: CacheValue>(&self, key: &str, value: T) -> Result<()> {
        self.state.with(|cfg| {
            let cfg = cfg.ok_or_else(|| self.not_configured())?;
            cfg.store(&cfg.mangle(key), &value, cfg.clock.now())
        })
    }

    /// Stores every pair, in one backend call where the backend has a batch command; every value
    /// of the call is stamped with one creation time.
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
                let value = cfg.wrap_value(&mkey, &v, created_at)?;
                Ok((mkey, value))
            })
            .collect::<Result<Vec<_>>>()?;
        if wrapped.is_empty() {
            return Ok(());
        }
        cfg.backend.set_multi(wrapped)
    }

    /// Removes `key`. Removing a missing key is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        let cfg = self.configured()?;
        cfg.backend.delete(&cfg.mangle(key))
    }

    /// Removes every key.
    pub fn delete_multi<K: AsRef<str>>(&self, keys: &[K]) -> Result<()> {
        let cfg = self.configured()?;
        let mkeys: Vec<Cow<'_, str>> = keys.iter().map(|k| cfg.mangle(k.as_ref())).collect();
        let refs: Vec<&str> = mkeys.iter().map(|k| &**k).collect();
        if refs.is_empty() {
            return Ok(());
        }
        cfg.backend.delete_multi(&refs)
    }

    /// [`get`](CacheRegion::get) for async callers: backends with an async client do not block
    /// the executor.
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
    pub async fn set_async<T: CacheValue>(&self, key: &str, value: T) -> Result<()> {
        let cfg = self.configured()?;
        cfg.store_async(&cfg.mangle(key), &value, cfg.clock.now())
            .await
    }

    /// [`delete`](CacheRegion::delete) for async callers.
    pub async fn delete_async(&self, key: &str) -> Result<()> {
        let cfg = self.configured()?;
        if cfg.never_blocks {
            return cfg.backend.delete(&cfg.mangle(key));
        }
        cfg.backend.delete_async(&cfg.mangle(key)).await
    }
}
