//! Backends by name: the built-in ones a build has, and those registered with
//! [`register_backend`]; and proxies by name, registered with [`register_proxy`], for the
//! `wrap` key of configuration maps.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;

use crate::backend::Backend;
use crate::config::Arguments;
use crate::error::{Error, Result};
use crate::proxy::ProxyBackend;

/// Makes a backend from its arguments.
pub type BackendFactory = Arc<dyn Fn(&Arguments) -> Result<Arc<dyn Backend>> + Send + Sync>;

/// The constructor of a built-in backend.
pub type BuiltinConstructor = fn(&Arguments) -> Result<Arc<dyn Backend>>;

/// A backend that ships with the toolkit.
#[derive(Clone, Copy, Debug)]
pub struct BuiltinBackend {
    /// Its name, as dogpile spells it: `dogpile.cache.memory`.
    pub name: &'static str,
    /// Its constructor; `None` when the cargo feature that brings it is off.
    pub make: Option<BuiltinConstructor>,
    /// The cargo feature of the `dogpile` package that brings it.
    pub feature: &'static str,
}

/// The built-in backends a region knows by name. The `dogpile` facade's regions know every
/// backend of `dogpile-backends`; a bare `dogpile_core::CacheRegion` knows none.
pub trait BackendCatalog: 'static {
    /// The built-in backends.
    fn builtins() -> &'static [BuiltinBackend];
}

/// A catalog with no built-in backends: only registered ones resolve.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBuiltins;

impl BackendCatalog for NoBuiltins {
    fn builtins() -> &'static [BuiltinBackend] {
        &[]
    }
}

static REGISTERED: LazyLock<RwLock<HashMap<String, BackendFactory>>> =
    LazyLock::new(Default::default);

/// Registers a backend under `name`, for `configure(name)` and configuration maps. A registered
/// name takes precedence over a built-in one.
///
/// ```
/// use std::sync::Arc;
/// use dogpile_core::{register_backend, Arguments, Backend, CachedValue, PayloadKind, Result};
///
/// struct Nothing;
/// impl Backend for Nothing {
///     fn name(&self) -> &str { "nothing" }
///     fn payload_kind(&self) -> PayloadKind { PayloadKind::Object }
///     fn get(&self, _: &str) -> Result<Option<CachedValue>> { Ok(None) }
///     fn set(&self, _: &str, _: CachedValue) -> Result<()> { Ok(()) }
///     fn delete(&self, _: &str) -> Result<()> { Ok(()) }
/// }
///
/// register_backend("nothing", |args: &Arguments| {
///     args.expect_only("nothing", &[])?;
///     Ok(Nothing)
/// });
/// ```
pub fn register_backend<B, F>(name: impl Into<String>, factory: F)
where
    B: Backend,
    F: Fn(&Arguments) -> Result<B> + Send + Sync + 'static,
{
    let factory: BackendFactory =
        Arc::new(move |args| factory(args).map(|b| Arc::new(b) as Arc<dyn Backend>));
    REGISTERED.write().insert(name.into(), factory);
}

/// Makes the backend called `name`.
pub(crate) fn make_backend<C: BackendCatalog>(
    name: &str,
    arguments: &Arguments,
) -> Result<Arc<dyn Backend>> {
    let registered = REGISTERED.read().get(name).cloned();
    if let Some(factory) = registered {
        return factory(arguments);
    }
    match C::builtins().iter().find(|b| b.name == name) {
        Some(BuiltinBackend {
            make: Some(make), ..
        }) => make(arguments),
        Some(b) => Err(unknown::<C>(
            name,
            Some(format!(
                "this build leaves it out: enable the cargo feature `{}` of dogpile",
                b.feature
            )),
        )),
        None => Err(unknown::<C>(name, None)),
    }
}

fn unknown<C: BackendCatalog>(name: &str, hint: Option<String>) -> Error {
    let mut known: Vec<String> = C::builtins()
        .iter()
        .filter(|b| b.make.is_some())
        .map(|b| b.name.to_owned())
        .collect();
    known.extend(REGISTERED.read().keys().cloned());
    known.sort();
    known.dedup();
    Error::UnknownBackend {
        key: None,
        name: name.to_owned(),
        hint,
        known,
    }
}

/// Makes a proxy; a configuration map's `wrap` list names them (see [`register_proxy`]).
pub type ProxyFactory = Arc<dyn Fn() -> Arc<dyn ProxyBackend> + Send + Sync>;

static PROXIES: LazyLock<RwLock<HashMap<String, ProxyFactory>>> = LazyLock::new(Default::default);

/// Registers a proxy under `name`, so that a configuration map can wrap a region's backend in it:
/// `PREFIXwrap = name1, name2` (the first outermost), as dogpile's `wrap` list of proxy classes.
/// Each region configured so gets its own proxy from `factory`. Registering a name again
/// replaces the factory for later configurations.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use dogpile_core::{register_proxy, Backend, CacheRegion, CachedValue, ProxyBackend, Result};
/// # use dogpile_core::testing::MapBackend;
///
/// static SETS: AtomicUsize = AtomicUsize::new(0);
///
/// /// Counts every set.
/// struct CountingProxy;
/// impl ProxyBackend for CountingProxy {
///     fn set(&self, proxied: &dyn Backend, key: &str, value: CachedValue) -> Result<()> {
///         SETS.fetch_add(1, Ordering::Relaxed);
///         proxied.set(key, value)
///     }
/// }
///
/// register_proxy("counting", || CountingProxy);
/// # dogpile_core::register_backend("map-for-proxy-doc", |_| Ok(MapBackend::default()));
/// let region: CacheRegion = CacheRegion::new();
/// region
///     .configure_from_config(
///         [("cache.backend", "map-for-proxy-doc"), ("cache.wrap", "counting")],
///         "cache.",
///     )
///     .unwrap();
/// region.set("k", 1u8).unwrap();
/// assert_eq!(SETS.load(Ordering::Relaxed), 1);
/// ```
pub fn register_proxy<P, F>(name: impl Into<String>, factory: F)
where
    P: ProxyBackend,
    F: Fn() -> P + Send + Sync + 'static,
{
    let factory: ProxyFactory = Arc::new(move || Arc::new(factory()) as Arc<dyn ProxyBackend>);
    PROXIES.write().insert(name.into(), factory);
}

/// A new proxy of the one registered as `name`; `key` is the configuration key that names it,
/// for the error.
pub(crate) fn make_proxy(name: &str, key: &str) -> Result<Arc<dyn ProxyBackend>> {
    let factory = PROXIES.read().get(name).cloned();
    match factory {
        Some(factory) => Ok(factory()),
        None => {
            let mut known: Vec<String> = PROXIES.read().keys().cloned().collect();
            known.sort();
            let known = if known.is_empty() {
                "none is registered".to_owned()
            } else {
                format!("registered: {}", known.join(", "))
            };
            Err(Error::config(
                key,
                format!("unknown proxy {name:?} ({known}); register it with register_proxy"),
            ))
        }
    }
}
