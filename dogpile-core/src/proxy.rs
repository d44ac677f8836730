//! Proxies: [`ProxyBackend`] changes what a backend does without subclassing it, and `wrap` chains
//! proxies around the backend, the first in the list outermost.

use std::sync::Arc;

use crate::backend::{Backend, BoxFuture, CachedValue, PayloadKind};
use crate::error::Result;
use crate::mutex::CacheMutex;

/// A proxy around a backend: override the methods whose behaviour you change; the others pass
/// the call to `proxied`, the next proxy in the chain or the backend itself.
///
/// The two proxies of dogpile's usage guide:
///
/// ```
/// use dogpile_core::{Backend, CachedValue, ProxyBackend, Result};
///
/// /// Logs every set.
/// struct LoggingProxy;
/// impl ProxyBackend for LoggingProxy {
///     fn set(&self, proxied: &dyn Backend, key: &str, value: CachedValue) -> Result<()> {
///         tracing::debug!("Setting Cache Key: {key}");
///         proxied.set(key, value)
///     }
/// }
///
/// /// Retries a failed delete up to `retry_count` times.
/// struct RetryDeleteProxy { retry_count: usize }
/// impl ProxyBackend for RetryDeleteProxy {
///     fn delete(&self, proxied: &dyn Backend, key: &str) -> Result<()> {
///         let mut last = Ok(());
///         for _ in 0..self.retry_count.max(1) {
///             last = proxied.delete(key);
///             if last.is_ok() { break; }
///         }
///         last
///     }
/// }
/// # let _ = (LoggingProxy, RetryDeleteProxy { retry_count: 5 });
/// ```
pub trait ProxyBackend: Send + Sync + 'static {
    /// See [`Backend::get`].
    fn get(&self, proxied: &dyn Backend, key: &str) -> Result<Option<CachedValue>> {
        proxied.get(key)
    }

    /// See [`Backend::set`].
    fn set(&self, proxied: &dyn Backend, key: &str, value: CachedValue) -> Result<()> {
        proxied.set(key, value)
    }

    /// See [`Backend::delete`].
    fn delete(&self, proxied: &dyn Backend, key: &str) -> Result<()> {
        proxied.delete(key)
    }

    /// See [`Backend::get_multi`].
    fn get_multi(&self, proxied: &dyn Backend, keys: &[&str]) -> Result<Vec<Option<CachedValue>>> {
        proxied.get_multi(keys)
    }

    /// See [`Backend::set_multi`].
    fn set_multi(&self, proxied: &dyn Backend, items: Vec<(String, CachedValue)>) -> Result<()> {
        proxied.set_multi(items)
    }

    /// See [`Backend::delete_multi`].
    fn delete_multi(&self, proxied: &dyn Backend, keys: &[&str]) -> Result<()> {
        proxied.delete_multi(keys)
    }

    /// See [`Backend::get_mutex`].
    fn get_mutex(&self, proxied: &dyn Backend, key: &str) -> Option<Box<dyn CacheMutex>> {
        proxied.get_mutex(key)
    }
}

/// A backend seen through one proxy.
struct Proxied {
    proxy: Arc<dyn ProxyBackend>,
    inner: Arc<dyn Backend>,
}

impl Backend for Proxied {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn payload_kind(&self) -> PayloadKind {
        self.inner.payload_kind()
    }

    fn never_blocks(&self) -> bool {
        self.inner.never_blocks()
    }

    fn get(&self, key: &str) -> Result<Option<CachedValue>> {
        self.proxy.get(&*self.inner, key)
    }

    fn set(&self, key: &str, value: CachedValue) -> Result<()> {
        self.proxy.set(&*self.inner, key, value)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.proxy.delete(&*self.inner, key)
    }

    // `visit` keeps its default, which goes through `get`: a proxy that changes `get` must see
    // every read.

    fn get_multi(&self, keys: &[&str]) -> Result<Vec<Option<CachedValue>>> {
        self.proxy.get_multi(&*self.inner, keys)
    }

    fn set_multi(&self, items: Vec<(String, CachedValue)>) -> Result<()> {
        self.proxy.set_multi(&*self.inner, items)
    }

    fn delete_multi(&self, keys: &[&str]) -> Result<()> {
        self.proxy.delete_multi(&*self.inner, keys)
    }

    fn get_mutex(&self, key: &str) -> Option<Box<dyn CacheMutex>> {
        self.proxy.get_mutex(&*self.inner, key)
    }

    fn key_mangler(&self) -> Option<crate::KeyMangler> {
        self.inner.key_mangler()
    }

    fn lock_blocking_timeout(&self) -> Option<std::time::Duration> {
        self.inner.lock_blocking_timeout()
    }

    fn check_region_expiration(&self, expiration: Option<&crate::Expiration>) -> Result<()> {
        self.inner.check_region_expiration(expiration)
    }

    // A proxy is written against the blocking methods, so async calls go through them too: at
    // once over a backend that never blocks, on the `blocking` pool over one that does I/O, so
    // that an async caller's executor thread never waits on a round trip (a frozen server holds
    // it to the socket timeout, and every task of that thread with it).
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<CachedValue>>> {
        let key = key.to_owned();
        self.off_executor(move |proxy, inner| proxy.get(inner, &key))
    }

    fn set_async<'a>(&'a self, key: &'a str, value: CachedValue) -> BoxFuture<'a, Result<()>> {
        let key = key.to_owned();
        self.off_executor(move |proxy, inner| proxy.set(inner, &key, value))
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        let key = key.to_owned();
        self.off_executor(move |proxy, inner| proxy.delete(inner, &key))
    }
}

impl Proxied {
    /// `call` with the proxy and the backend it wraps, as an async call's future: run when
    /// polled over a backend that never blocks, on the `blocking` pool over one that does I/O.
    fn off_executor<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn ProxyBackend, &dyn Backend) -> Result<T> + Send + 'static,
    ) -> BoxFuture<'_, Result<T>> {
        if self.inner.never_blocks() {
            return Box::pin(async move { call(&*self.proxy, &*self.inner) });
        }
        let (proxy, inner) = (self.proxy.clone(), self.inner.clone());
        Box::pin(blocking::unblock(move || call(&*proxy, &*inner)))
    }
}

/// Wraps `backend` in `proxies`, the first outermost.
pub(crate) fn wrap_chain(
    backend: Arc<dyn Backend>,
    proxies: &[Arc<dyn ProxyBackend>],
) -> Arc<dyn Backend> {
    proxies.iter().rev().fold(backend, |inner, proxy| {
        Arc::new(Proxied {
            proxy: proxy.clone(),
            inner,
        })
    })
}
