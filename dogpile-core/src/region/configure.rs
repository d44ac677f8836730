//! Building and configuring a region.

use std::borrow::Cow;
use std::sync::OnceLock;

use super::{CacheRegion, Configured, ManglerChoice, RegionBuilder};
use crate::backend::Backend;
use crate::codec::WireFormat;
use crate::config::{BackendSpec, RegionConfig, DEFAULT_LOCK_BLOCKING_TIMEOUT};
use crate::error::{Error, Result};
use crate::expiration::Expiration;
use crate::invalidation::DefaultInvalidation;
use crate::key::{FunctionKeyGenerator, FunctionMultiKeyGenerator};
use crate::proxy::wrap_chain;
use crate::registry::{make_backend, BackendCatalog};
use crate::serializer::Builtin;
use crate::slot::Slot;
use crate::stats::RegionStats;
use std::marker::PhantomData;
use std::sync::Arc;

impl<C: BackendCatalog> CacheRegion<C> {
    /// A region with no name and default options, not yet configured. A `const fn`, so a region
    /// can be a `static`:
    ///
    /// ```
    /// use dogpile_core::CacheRegion;
    /// static REGION: CacheRegion = CacheRegion::new();
    /// assert!(!REGION.is_configured());
    /// ```
    pub const fn new() -> Self {
        Self::with_name(None)
    }

    const fn with_name(name: Option<Cow<'static, str>>) -> Self {
        CacheRegion {
            name,
            key_mangler: ManglerChoice::BackendDefault,
            function_key_generator: None,
            function_multi_key_generator: None,
            async_creation_runner: None,
            state: Slot::empty(),
            configure_lock: parking_lot::Mutex::new(()),
            invalidation: DefaultInvalidation::new(),
            locks: OnceLock::new(),
            stats: RegionStats::new(),
            _catalog: PhantomData,
        }
    }

    /// A named region with default options; also a `const fn`.
    pub const fn named(name: &'static str) -> Self {
        Self::with_name(Some(Cow::Borrowed(name)))
    }

    /// A builder for the options of dogpile's `make_region()`.
    pub fn builder() -> RegionBuilder<C> {
        RegionBuilder::new()
    }

    /// The region's name, or `<unnamed>`.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("<unnamed>")
    }

    /// The key generator set for `#[cache_on_arguments]` functions, if any.
    pub fn function_key_generator(&self) -> Option<FunctionKeyGenerator> {
        self.function_key_generator
    }

    /// The key generator set for `#[cache_multi_on_arguments]` functions, if any.
    pub fn function_multi_key_generator(&self) -> Option<FunctionMultiKeyGenerator> {
        self.function_multi_key_generator
    }

    /// Configures the backend: a name and its arguments, or an instance, with the default
    /// expiration, proxies, and whether to replace a backend already configured.
    ///
    /// ```
    /// use dogpile_core::{CacheRegion, RegionConfig, register_backend};
    /// # use dogpile_core::{Backend, CachedValue, PayloadKind, Result};
    /// # struct Nothing;
    /// # impl Backend for Nothing {
    /// #     fn name(&self) -> &str { "nothing" }
    /// #     fn payload_kind(&self) -> PayloadKind { PayloadKind::Object }
    /// #     fn get(&self, _: &str) -> Result<Option<CachedValue>> { Ok(None) }
    /// #     fn set(&self, _: &str, _: CachedValue) -> Result<()> { Ok(()) }
    /// #     fn delete(&self, _: &str) -> Result<()> { Ok(()) }
    /// # }
    /// register_backend("nothing", |_| Ok(Nothing));
    ///
    /// static REGION: CacheRegion = CacheRegion::new();
    /// REGION.configure(RegionConfig::new("nothing").expiration_time(3600)).unwrap();
    /// assert!(REGION.is_configured());
    /// // A second configure needs replace_existing_backend.
    /// assert!(REGION.configure("nothing").is_err());
    /// REGION.configure(RegionConfig::new("nothing").replace_existing_backend(true)).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyConfigured`] when a backend is configured and `replace_existing_backend`
    /// is not set; [`Error::UnknownBackend`] for a name neither built in (or left out of this
    /// build: the error names the cargo feature) nor registered; the backend's own error for
    /// arguments it rejects ([`Error::Config`], naming the argument), or for an expiration it
    /// cannot keep. The region keeps its earlier configuration on any error.
    pub fn configure(&self, config: impl Into<RegionConfig>) -> Result<&Self> {
        let config = config.into();
        let _serial = self.configure_lock.lock();
        if let Some(existing) = self.state.get() {
            if !config.replace_existing_backend {
                return Err(Error::AlreadyConfigured {
                    region: self.name().to_owned(),
                    backend: existing.backend_name.clone(),
                });
            }
        }
        let (backend, backend_name) = match &config.backend {
            BackendSpec::Name(name) => {
                let backend = make_backend::<C>(name, &config.arguments).map_err(|e| match e {
                    Error::UnknownBackend {
                        key: None,
                        name,
                        hint,
                        known,
                    } => Error::UnknownBackend {
                        key: config.backend_key.clone(),
                        name,
                        hint,
                        known,
                    },
                    other => other,
                })?;
                (backend, name.clone())
            }
            BackendSpec::Instance(b) => (b.clone(), b.name().to_owned()),
        };
        backend.check_region_expiration(config.expiration_time.as_ref())?;
        config.resilience.check()?;
        let mangler = match &self.key_mangler {
            ManglerChoice::BackendDefault => backend.key_mangler(),
            ManglerChoice::Disabled => None,
            ManglerChoice::Use(m) => Some(m.clone()),
        };
        // The region's own setting wins, then the backend's arguments, then the default.
        let lock_wait = config
            .lock_blocking_timeout
            .or_else(|| backend.lock_blocking_timeout())
            .unwrap_or(DEFAULT_LOCK_BLOCKING_TIMEOUT);
        let serializer = match (config.serializer.clone(), config.wire_format) {
            (Some(s), WireFormat::Python)
                if matches!(s.builtin(), Some(Builtin::MessagePack | Builtin::Bincode)) =>
            {
                return Err(Error::config(
                    "serializer",
                    format!(
                        "Python dogpile cannot read {} (it would raise in the Python services); with wire_format = python use pickle (its default on Redis) or json",
                        s.name()
                    ),
                ))
            }
            (Some(s), _) => s,
            // Python dogpile's own default on Redis.
            (None, WireFormat::Python) => Arc::new(crate::serializer::Pickle),
            (None, WireFormat::Dogpile) => crate::serializer::default_serializer(),
        };
        let tiers = self.start_tiers(
            &config,
            &backend,
            mangler.as_ref(),
            &config.clock,
            config
                .expiration_time
                .as_ref()
                .and_then(Expiration::resolve),
        )?;
        let actual_backend = backend.clone();
        let backend = wrap_chain(backend, &config.wrap);
        let configured = Configured {
            actual_backend,
            kind: backend.payload_kind(),
            never_blocks: backend.never_blocks(),
            backend,
            backend_name,
            expiration: config.expiration_time,
            mangler,
            clock: config.clock,
            invalidator: config.region_invalidator.or(tiers.invalidator),
            lock_wait,
            serializer,
            wire_format: config.wire_format,
            tier: tiers.tier,
            fleet: tiers.fleet,
            tags: tiers.tags,
            subscription: parking_lot::Mutex::new(tiers.subscription),
            resilience: super::resilience::ResilienceState::new(config.resilience),
        };
        if let Some(old) = self.state.get() {
            old.subscription.lock().take();
        }
        self.state.store(Arc::new(configured));
        tracing::debug!(region = self.name(), "configured");
        Ok(self)
    }

    /// Configures from a string map with dogpile's key layout under `prefix` (see
    /// [`RegionConfig::from_config`]).
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use dogpile_core::CacheRegion;
    ///
    /// let config: HashMap<String, String> = HashMap::from([
    ///     ("cache.local.backend".into(), "no.such.backend".into()),
    /// ]);
    /// let region: CacheRegion = CacheRegion::new();
    /// let err = region.configure_from_config(&config, "cache.local.").unwrap_err();
    /// assert!(err.to_string().starts_with("cache.local.backend: unknown backend \"no.such.backend\""));
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key for a missing backend, an unknown key under `prefix`, a
    /// value of the wrong type or an unknown proxy in `wrap`; then those of
    /// [`configure`](CacheRegion::configure).
    pub fn configure_from_config<I, K, V>(&self, map: I, prefix: &str) -> Result<&Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        self.configure(RegionConfig::from_config(map, prefix)?)
    }

    /// Whether a backend is configured.
    pub fn is_configured(&self) -> bool {
        self.state.is_some()
    }

    /// The name of the configured backend.
    pub fn backend_name(&self) -> Option<String> {
        self.state.get().map(|c| c.backend_name.clone())
    }

    /// The configured backend, proxies included: for calls the region does not offer.
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`] before [`configure`](CacheRegion::configure).
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        Ok(self.configured()?.backend.clone())
    }

    /// The configured backend under its proxies (dogpile's `actual_backend`): what
    /// [`backend`](CacheRegion::backend) is once every proxy of the `wrap` list is peeled off.
    ///
    /// ```
    /// use dogpile_core::{Backend, CacheRegion, CachedValue, ProxyBackend, RegionConfig, Result};
    /// use dogpile_core::testing::MapBackend;
    ///
    /// /// A proxy that hides every value from reads.
    /// struct Blind;
    /// impl ProxyBackend for Blind {
    ///     fn get(&self, _: &dyn Backend, _: &str) -> Result<Option<CachedValue>> {
    ///         Ok(None)
    ///     }
    /// }
    ///
    /// let region: CacheRegion = CacheRegion::new();
    /// region
    ///     .configure(RegionConfig::with_backend(MapBackend::default()).wrap(Blind))
    ///     .unwrap();
    /// region.set("k", 1u8).unwrap();
    /// assert!(region.backend().unwrap().get("k").unwrap().is_none());
    /// assert!(region.actual_backend().unwrap().get("k").unwrap().is_some());
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`] before [`configure`](CacheRegion::configure).
    pub fn actual_backend(&self) -> Result<Arc<dyn Backend>> {
        Ok(self.configured()?.actual_backend.clone())
    }
}
