//! Backends by name: the built-in ones a build has, and those registered with
//! [`register_backend`].

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;

use crate::backend::Backend;
use crate::config::Arguments;
use crate::error::{Error, Result};

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
