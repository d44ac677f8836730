//! What macro output names. Not a public API: it changes without notice.
//!
//! The code `#[cache_on_arguments]` and `#[cache_multi_on_arguments]` generate is small: it builds
//! the key arguments, the per-call options and the body closure, and hands them to the functions
//! here, which hold the logic once: the key built in a reused thread-local buffer, the region
//! call, and the fallback to the body when the cache fails.

use std::cell::Cell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

pub use dogpile_core;
pub use dogpile_core::{
    CacheValue, CreateError, CreateOptions, Expiration, FunctionInfo, FunctionKeyGenerator, KeyArg,
};

pub use crate::CacheRegion;

// ------------------------------------------------------------------------------------------------
// region = …

/// What `region = …` may name: a region, or something that derefs to one (a `LazyLock`, an
/// `Arc`, a reference).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a cache region",
    label = "`region = …` must name a `dogpile::CacheRegion`",
    note = "use a `static REGION: dogpile::CacheRegion = dogpile::CacheRegion::new();`, a `static REGION: LazyLock<dogpile::CacheRegion>`, or an expression of type `&dogpile::CacheRegion`"
)]
pub trait AsRegion {
    /// The region.
    fn as_region(&self) -> &CacheRegion;
}

impl AsRegion for CacheRegion {
    #[inline(always)]
    fn as_region(&self) -> &CacheRegion {
        self
    }
}

impl<R: AsRegion + ?Sized> AsRegion for &R {
    #[inline(always)]
    fn as_region(&self) -> &CacheRegion {
        (**self).as_region()
    }
}

impl<R: AsRegion, F: FnOnce() -> R> AsRegion for LazyLock<R, F> {
    #[inline(always)]
    fn as_region(&self) -> &CacheRegion {
        LazyLock::force(self).as_region()
    }
}

impl<R: AsRegion + ?Sized> AsRegion for Arc<R> {
    #[inline(always)]
    fn as_region(&self) -> &CacheRegion {
        (**self).as_region()
    }
}

impl<R: AsRegion + ?Sized> AsRegion for Box<R> {
    #[inline(always)]
    fn as_region(&self) -> &CacheRegion {
        (**self).as_region()
    }
}

/// The region named by `region = …`.
#[inline(always)]
pub fn region<R: AsRegion + ?Sized>(r: &R) -> &CacheRegion {
    r.as_region()
}

// ------------------------------------------------------------------------------------------------
// expiration_time = …

/// What `expiration_time = …` may be: seconds (`-1`: never), a `Duration`, an `Option<Duration>`,
/// an [`Expiration`], or a function returning one of these, called on every call.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an expiration time",
    label = "`expiration_time = …` must be seconds, a `Duration`, or a function returning one",
    note = "use whole seconds (`3600`, or `-1` for never), a `std::time::Duration`, a `dogpile::Expiration`, or the path of a `fn() -> Duration` (called on every call)"
)]
pub trait IntoExpiration {
    /// The expiration in force for this call.
    fn to_expiration(&self) -> Expiration;
}

macro_rules! expiration_from_copy {
    ($($t:ty)*) => {$(
        impl IntoExpiration for $t {
            #[inline]
            fn to_expiration(&self) -> Expiration {
                Expiration::from(*self)
            }
        }
    )*};
}
expiration_from_copy!(u32 u64 i32 i64 Duration Option<Duration>);

impl IntoExpiration for Expiration {
    #[inline]
    fn to_expiration(&self) -> Expiration {
        self.clone()
    }
}

impl<F, E> IntoExpiration for F
where
    F: Fn() -> E,
    E: Into<Expiration>,
{
    #[inline]
    fn to_expiration(&self) -> Expiration {
        self().into()
    }
}

/// The expiration of one call.
#[inline]
pub fn expiration<E: IntoExpiration + ?Sized>(e: &E) -> Expiration {
    e.to_expiration()
}

/// What a resilience option of an attribute that takes a duration accepts: seconds (an integer
/// or a float) or a `Duration`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a duration",
    label = "this option takes seconds or a `Duration`",
    note = "use seconds (`60`, `0.5`) or a `std::time::Duration`"
)]
pub trait IntoSeconds {
    /// The duration; a negative or not-a-number count of seconds is zero.
    fn to_duration(&self) -> Duration;
}

macro_rules! seconds_from_int {
    ($($t:ty)*) => {$(
        impl IntoSeconds for $t {
            #[inline]
            fn to_duration(&self) -> Duration {
                Duration::from_secs(u64::try_from(*self).unwrap_or(0))
            }
        }
    )*};
}
seconds_from_int!(u32 u64 i32 i64);

impl IntoSeconds for f64 {
    #[inline]
    fn to_duration(&self) -> Duration {
        Duration::try_from_secs_f64(*self).unwrap_or(Duration::ZERO)
    }
}

impl IntoSeconds for Duration {
    #[inline]
    fn to_duration(&self) -> Duration {
        *self
    }
}

/// The duration of a resilience option of an attribute.
#[inline]
pub fn seconds<S: IntoSeconds + ?Sized>(s: &S) -> Duration {
    s.to_duration()
}

// ------------------------------------------------------------------------------------------------
// return types

/// Checks at compile time that the ids of a batch function can be part of a key.
#[inline(always)]
pub fn assert_key_items<K: KeyArg>(_: &[K]) {}

/// The check behind every cached type in generated code: a projection that fails once, at the
/// return type, instead of a bound failing at every generated call.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: a cached value must be `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`",
    label = "this type is cached",
    note = "derive `serde::Serialize`, `serde::Deserialize` and `Clone` for it, or cache an owned type that has them"
)]
pub trait Cacheable {
    /// The type itself.
    type Out: CacheValue;
}

impl<T: CacheValue> Cacheable for T {
    type Out = T;
}

/// A `should_cache_fn` for `asdict` batch functions: entries the body left out are not stored.
#[inline]
pub fn is_some<V>(value: &Option<V>) -> bool {
    value.is_some()
}

// ------------------------------------------------------------------------------------------------
// keys

/// One piece of a `key = "…"` template.
#[derive(Debug, Clone, Copy)]
pub enum Piece {
    /// Literal text.
    Lit(&'static str),
    /// The key text of the key argument at this index.
    Arg(usize),
}

/// Everything a decorated function knows at compile time about its keys.
#[derive(Debug)]
pub struct Site {
    /// The module path, name and namespace.
    pub info: FunctionInfo,
    /// `module::path:name|namespace|`, built by `concat!`.
    pub prefix: &'static str,
    /// The `function_key_generator = …` of the attribute.
    pub generator: Option<FunctionKeyGenerator>,
    /// The `key = "…"` template of the attribute.
    pub template: Option<&'static [Piece]>,
    /// For a generic function, writes what tells its instances apart (its type parameters'
    /// names, its const parameters' values) after the default key's arguments; `None` for a
    /// function that is not generic.
    pub instance: Option<fn(&mut String)>,
}

thread_local! {
    static KEY_BUF: Cell<String> = const { Cell::new(String::new()) };
}

/// A key built in the thread's reused buffer; the buffer goes back when the key is dropped. A
/// creator that calls other decorated functions takes an empty buffer meanwhile, so reentrancy
/// only costs an allocation.
pub struct Key {
    buf: String,
}

impl Key {
    /// The key of one call. `write_args` writes the default key's arguments (the same text as
    /// `write_args(buf, args)`, with static dispatch); `write_impl_types` the types of its
    /// `impl Trait` arguments, the first part of what tells a generic function's instances
    /// apart (the site's `instance` writes the rest).
    #[inline]
    pub fn build(
        region: &CacheRegion,
        site: &Site,
        args: &[&dyn KeyArg],
        write_args: impl FnOnce(&mut String),
        write_impl_types: impl FnOnce(&mut String),
    ) -> Key {
        let mut buf = KEY_BUF.try_with(Cell::take).unwrap_or_default();
        buf.clear();
        if let Some(template) = site.template {
            write_template(&mut buf, template, args);
            return Key { buf };
        }
        if let Some(generator) = site.generator.or_else(|| region.function_key_generator()) {
            // A generator is given the arguments, not their types: what tells a generic
            // function's instances apart ends its key, as it ends the default one.
            buf.push_str(&generator(&site.info, args));
        } else {
            buf.push_str(site.prefix);
            write_args(&mut buf);
        }
        write_impl_types(&mut buf);
        if let Some(instance) = site.instance {
            instance(&mut buf);
        }
        Key { buf }
    }

    /// The key.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.buf
    }
}

/// Writes a `key = "…"` template. The literal after an argument is what tells where that
/// argument's text ends, so the text is escaped for the literal's first character `d`: `\` and
/// `d` get a backslash (nothing changes for the usual `user:{id}:{lang}` with integers and plain
/// words). Two arguments with nothing between them, or before a literal that starts with a
/// backslash, are separated by a space, escaped for in the same way. So different argument
/// lists give different keys, whatever the template and the arguments' texts.
fn write_template(buf: &mut String, template: &[Piece], args: &[&dyn KeyArg]) {
    for (i, piece) in template.iter().enumerate() {
        match *piece {
            Piece::Lit(s) => buf.push_str(s),
            Piece::Arg(a) => {
                let start = buf.len();
                if let Some(arg) = args.get(a) {
                    arg.write_key(buf);
                }
                let end = match template.get(i + 1) {
                    None => continue,
                    Some(Piece::Lit(s)) => s.chars().next().filter(|&c| c != '\\'),
                    Some(Piece::Arg(_)) => None,
                };
                match end {
                    Some(c) => escape_for(buf, start, c),
                    None => {
                        escape_for(buf, start, ' ');
                        buf.push(' ');
                    }
                }
            }
        }
    }
}

/// Escapes `\` and `end` in `buf[start..]` with a backslash.
fn escape_for(buf: &mut String, start: usize, end: char) {
    if !buf[start..].contains(['\\', end]) {
        return;
    }
    let text = buf.split_off(start);
    for c in text.chars() {
        if c == '\\' || c == end {
            buf.push('\\');
        }
        buf.push(c);
    }
}

impl Drop for Key {
    #[inline]
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let _ = KEY_BUF.try_with(|c| c.set(buf));
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.buf)
    }
}

#[cold]
#[inline(never)]
fn cache_failed(region: &CacheRegion, key: &str, what: &str, error: &dogpile_core::Error) {
    tracing::warn!(
        region = region.name(),
        key,
        %error,
        "{what}"
    );
}

const FALLBACK: &str = "cache unavailable: calling the function without it";
const WAITED_TOO_LONG: &str =
    "another caller's creation outlasted lock_blocking_timeout: calling the function without the cache";
const NOT_READ: &str = "cache unavailable: no value read";
const NOT_STORED: &str = "cache unavailable: value not stored";
const NOT_DELETED: &str = "cache unavailable: entry not deleted";

/// A companion's cache call: its value, or (when the cache fails) the error logged and the
/// default (`None`, `()`): caching never breaks the function.
fn logged<T: Default>(
    region: &CacheRegion,
    key: &Key,
    what: &str,
    result: dogpile_core::Result<T>,
) -> T {
    result.unwrap_or_else(|e| {
        cache_failed(region, key.as_str(), what, &e);
        T::default()
    })
}

/// The body of a decorated call the cache failed, after logging the failure. The region reports
/// a cache error only before the creator runs, so the body is always still here.
#[cold]
fn body_after_cache_error<F>(
    region: &CacheRegion,
    key: &Key,
    e: &dogpile_core::Error,
    body: Option<F>,
) -> F {
    let what = match e {
        // Not a broken cache: another caller's creation outlasted lock_blocking_timeout (the
        // region has counted and logged it), so this call computes its own value.
        dogpile_core::Error::LockTimeout { .. } => WAITED_TOO_LONG,
        _ => FALLBACK,
    };
    cache_failed(region, key.as_str(), what, e);
    body.unwrap_or_else(|| unreachable_body())
}

/// The body is taken once, by the creator or by the fallback: never by both, never by neither.
#[cold]
fn unreachable_body() -> ! {
    unreachable!("the body of a decorated function ran without producing a value")
}

// ------------------------------------------------------------------------------------------------
// hard_timeout for the waiters of a `Result` function

/// What a decorated function's caller gives back when it waits for another caller's creation
/// past `hard_timeout`, chosen at the expansion site by autoref specialization, so no bound is
/// imposed on the function's error type:
///
/// ```text
/// (&Probe::<R>::new()).on_timeout()
/// ```
///
/// With `R = Result<T, E>` and `E: From<dogpile::Error>`, [`TimeoutIntoErr`] (a method on
/// `Probe<R>`, found at the first step of method lookup) gives `E::from`: the waiter returns
/// `Err(E::from(Error::CreatorTimeout { .. }))`. Otherwise [`WaitsForCreator`] (a method on
/// `&Probe<R>`, the next step) gives `None`: the caller has no error to return, and waits (up to
/// `lock_blocking_timeout`), as it would rather than run its body beside the creator.
pub struct Probe<R>(std::marker::PhantomData<fn() -> R>);

impl<R> Probe<R> {
    /// The probe of a function returning `R`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Probe(std::marker::PhantomData)
    }
}

/// The conversion of a waiter's timeout into the error of a `Result` function whose error type
/// takes a [`dogpile_core::Error`] (see [`Probe`]).
pub trait TimeoutIntoErr<E> {
    /// `E::from`.
    fn on_timeout(&self) -> Option<fn(dogpile_core::Error) -> E>;
}

impl<T, E: From<dogpile_core::Error>> TimeoutIntoErr<E> for Probe<Result<T, E>> {
    fn on_timeout(&self) -> Option<fn(dogpile_core::Error) -> E> {
        Some(E::from as fn(dogpile_core::Error) -> E)
    }
}

/// The fallback of [`Probe`]: an error type that cannot take a [`dogpile_core::Error`].
pub trait WaitsForCreator<E> {
    /// `None`: the caller waits for the creation.
    fn on_timeout(&self) -> Option<fn(dogpile_core::Error) -> E>;
}

impl<T, E> WaitsForCreator<E> for &Probe<Result<T, E>> {
    fn on_timeout(&self) -> Option<fn(dogpile_core::Error) -> E> {
        None
    }
}

/// The options of a `Result` function's call: `hard_timeout` bounds its waits only when its
/// error type takes the timeout (`on_timeout`); otherwise it waits for the creator.
pub fn waits_unless_timeout_err<T, E>(
    options: CreateOptions<T>,
    on_timeout: Option<fn(dogpile_core::Error) -> E>,
) -> CreateOptions<T> {
    match on_timeout {
        Some(_) => options,
        None => options.waits_for_creator(),
    }
}

/// A `Result` function's cache error: the timeout as its `Err` where it takes it (a waiter past
/// `hard_timeout`); else its body, after the failure is logged.
#[cold]
fn result_after_cache_error<F, E>(
    region: &CacheRegion,
    key: &Key,
    e: dogpile_core::Error,
    on_timeout: Option<fn(dogpile_core::Error) -> E>,
    body: Option<F>,
) -> Result<F, E> {
    match on_timeout {
        Some(into) if matches!(e, dogpile_core::Error::CreatorTimeout { .. }) => Err(into(e)),
        _ => Ok(body_after_cache_error(region, key, &e, body)),
    }
}

// ------------------------------------------------------------------------------------------------
// one key

/// A decorated function's call: the cached value, or the body's when the cache fails.
#[inline]
pub fn get_or_create<T: CacheValue, F: FnOnce() -> T>(
    region: &CacheRegion,
    key: &Key,
    options: &CreateOptions<T>,
    body: F,
) -> T {
    match try_get_or_create(region, key, options, None, || Ok::<T, Infallible>(body())) {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// A decorated function with `background = true`: its body owns what it uses, so for a stale
/// value it can run on the region's async creation runner while this caller gets the stale
/// value.
#[inline]
pub fn get_or_create_in_background<T, F>(
    region: &CacheRegion,
    key: &Key,
    options: &CreateOptions<T>,
    body: F,
) -> T
where
    T: CacheValue,
    F: FnOnce() -> T + Send + 'static,
{
    match region.get_or_create_detachable(key.as_str(), options, body) {
        Ok(v) => v,
        Err((e, body)) => body_after_cache_error(region, key, &e, body)(),
    }
}

/// A decorated function returning `Result`: only `Ok` is cached; `Err` reaches the caller.
///
/// The region returns a cache error only before the creator runs (a value that was made is
/// returned even when storing it fails), so on a cache error the body is still here to call;
/// but a waiter past `hard_timeout` gets `on_timeout`'s error (see [`Probe`]).
#[inline]
pub fn try_get_or_create<T, E, F>(
    region: &CacheRegion,
    key: &Key,
    options: &CreateOptions<T>,
    on_timeout: Option<fn(dogpile_core::Error) -> E>,
    body: F,
) -> Result<T, E>
where
    T: CacheValue,
    F: FnOnce() -> Result<T, E>,
{
    let mut body = Some(body);
    let out = region.try_get_or_create(key.as_str(), options, || match body.take() {
        Some(f) => f().map_err(Some),
        None => Err(None),
    });
    match out {
        Ok(v) => Ok(v),
        Err(CreateError::Creator(Some(e))) => Err(e),
        Err(CreateError::Creator(None)) => unreachable_body(),
        Err(CreateError::Cache(e)) => result_after_cache_error(region, key, e, on_timeout, body)?(),
    }
}

/// [`get_or_create`] for `async fn`: waiters `.await`.
pub async fn get_or_create_async<T, F, Fut>(
    region: &CacheRegion,
    key: &Key,
    options: &CreateOptions<T>,
    body: F,
) -> T
where
    T: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let out = try_get_or_create_async(region, key, options, None, || async {
        Ok::<T, Infallible>(body().await)
    });
    match out.await {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// [`try_get_or_create`] for `async fn`.
///
/// A fresh value that needs no I/O is answered first, with no future of the region's built. The
/// rest is boxed: its future holds the lock algorithm's state (hundreds of bytes), which would
/// otherwise be part of every decorated call's future, hit or not, and be moved with it.
pub async fn try_get_or_create_async<T, E, F, Fut>(
    region: &CacheRegion,
    key: &Key,
    options: &CreateOptions<T>,
    on_timeout: Option<fn(dogpile_core::Error) -> E>,
    body: F,
) -> Result<T, E>
where
    T: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    if let Some(v) = region.hit_now(key.as_str(), options) {
        return Ok(v);
    }
    Box::pin(try_get_or_create_async_slow(
        region, key, options, on_timeout, body,
    ))
    .await
}

/// [`try_get_or_create_async`] past the hit answered at once.
async fn try_get_or_create_async_slow<T, E, F, Fut>(
    region: &CacheRegion,
    key: &Key,
    options: &CreateOptions<T>,
    on_timeout: Option<fn(dogpile_core::Error) -> E>,
    body: F,
) -> Result<T, E>
where
    T: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut body = Some(body);
    let out = region
        .try_get_or_create_async_past_hit(key.as_str(), options, || {
            let f = body.take();
            async move {
                match f {
                    Some(f) => f().await.map_err(Some),
                    None => Err(None),
                }
            }
        })
        .await;
    match out {
        Ok(v) => Ok(v),
        Err(CreateError::Creator(Some(e))) => Err(e),
        Err(CreateError::Creator(None)) => unreachable_body(),
        Err(CreateError::Cache(e)) => {
            result_after_cache_error(region, key, e, on_timeout, body)?().await
        }
    }
}

/// `<fn>_get`: the cached value, if any; `None` (logged) when the cache fails.
pub fn get<T: CacheValue>(region: &CacheRegion, key: &Key) -> Option<T> {
    logged(region, key, NOT_READ, region.get::<T>(key.as_str()))
}

/// `<fn>_get` of a function with its own `expiration_time`: a value older than that is `None`.
pub fn get_with_expiration<T: CacheValue>(
    region: &CacheRegion,
    key: &Key,
    expiration: Expiration,
) -> Option<T> {
    let read = region.get_with_expiration::<T>(key.as_str(), expiration);
    logged(region, key, NOT_READ, read)
}

/// `<fn>_get` of an `async fn`.
pub async fn get_async<T: CacheValue>(region: &CacheRegion, key: &Key) -> Option<T> {
    let read = region.get_async::<T>(key.as_str()).await;
    logged(region, key, NOT_READ, read)
}

/// `<fn>_get` of a function with `tags`: read with its options, so a tag's invalidation holds.
pub fn get_tagged<T: CacheValue>(
    region: &CacheRegion,
    key: &Key,
    options: &CreateOptions<T>,
) -> Option<T> {
    let read = region.get_with_options::<T>(key.as_str(), options);
    logged(region, key, NOT_READ, read)
}

/// `<fn>_get` of an `async fn` with `tags`.
pub async fn get_tagged_async<T: CacheValue>(
    region: &CacheRegion,
    key: &Key,
    options: &CreateOptions<T>,
) -> Option<T> {
    let read = region
        .get_with_options_async::<T>(key.as_str(), options)
        .await;
    logged(region, key, NOT_READ, read)
}

/// `<fn>_set`: stores a value (logged when the cache fails).
pub fn set<T: CacheValue>(region: &CacheRegion, key: &Key, value: T) {
    logged(region, key, NOT_STORED, region.set(key.as_str(), value))
}

/// `<fn>_set` of an `async fn`.
pub async fn set_async<T: CacheValue>(region: &CacheRegion, key: &Key, value: T) {
    logged(
        region,
        key,
        NOT_STORED,
        region.set_async(key.as_str(), value).await,
    )
}

/// `<fn>_invalidate`: deletes the entry (logged when the cache fails).
pub fn invalidate(region: &CacheRegion, key: &Key) {
    logged(region, key, NOT_DELETED, region.delete(key.as_str()))
}

/// `<fn>_invalidate` of an `async fn`.
pub async fn invalidate_async(region: &CacheRegion, key: &Key) {
    logged(
        region,
        key,
        NOT_DELETED,
        region.delete_async(key.as_str()).await,
    )
}

/// `<fn>_refresh`: stores what the body returned and returns it.
pub fn refresh<T: CacheValue>(region: &CacheRegion, key: &Key, value: T) -> T {
    set(region, key, value.clone());
    value
}

/// `<fn>_refresh` of a function returning `Result`: stores `Ok` only.
pub fn refresh_result<T: CacheValue, E>(
    region: &CacheRegion,
    key: &Key,
    value: Result<T, E>,
) -> Result<T, E> {
    value.map(|v| refresh(region, key, v))
}

/// `<fn>_refresh` of an `async fn`.
pub async fn refresh_async<T: CacheValue>(region: &CacheRegion, key: &Key, value: T) -> T {
    set_async(region, key, value.clone()).await;
    value
}

/// `<fn>_refresh` of an `async fn` returning `Result`.
pub async fn refresh_result_async<T: CacheValue, E>(
    region: &CacheRegion,
    key: &Key,
    value: Result<T, E>,
) -> Result<T, E> {
    match value {
        Ok(v) => Ok(refresh_async(region, key, v).await),
        Err(e) => Err(e),
    }
}

// ------------------------------------------------------------------------------------------------
// batches

/// The keys of a batch, in the caller's order.
pub fn multi_keys<K: KeyArg>(region: &CacheRegion, site: &Site, items: &[K]) -> Vec<String> {
    let args: Vec<&dyn KeyArg> = items.iter().map(|k| k as &dyn KeyArg).collect();
    match region.function_multi_key_generator() {
        Some(generator) => {
            let mut keys = generator(&site.info, &args);
            // As for one key (`Key::build`): the generator does not see the types.
            if let Some(instance) = site.instance {
                keys.iter_mut().for_each(instance);
            }
            keys
        }
        None => args
            .iter()
            .map(|a| {
                let mut key = String::with_capacity(site.prefix.len() + 8);
                key.push_str(site.prefix);
                a.write_key(&mut key);
                if let Some(instance) = site.instance {
                    instance(&mut key);
                }
                key
            })
            .collect(),
    }
}

#[cold]
#[inline(never)]
fn multi_failed(region: &CacheRegion, what: &str, error: &dogpile_core::Error) {
    tracing::warn!(region = region.name(), %error, "{what}");
}

/// Why a batch creator gave no values.
enum MultiFail<V> {
    /// The body had been taken already.
    Gone,
    /// The body returned another number of values than the ids it was given (the second).
    Count(Vec<V>, usize),
}

/// A batch call returning `Vec<V>`: every key looked up, the body called once with the missing
/// items only, the answers in the caller's order.
pub fn get_or_create_multi<K, V, F>(
    region: &CacheRegion,
    site: &Site,
    options: &CreateOptions<V>,
    items: &[K],
    body: F,
) -> Vec<V>
where
    K: KeyArg + Clone,
    V: CacheValue,
    F: FnOnce(&[K]) -> Vec<V>,
{
    if items.is_empty() {
        return Vec::new();
    }
    let keys = multi_keys(region, site, items);
    if keys.len() != items.len() {
        multi_failed(
            region,
            FALLBACK,
            &dogpile_core::Error::Key(format!(
                "the multi key generator made {} keys for {} items",
                keys.len(),
                items.len()
            )),
        );
        return body(items);
    }
    let mut body = Some(body);
    let mut made: Option<Vec<V>> = None;
    let out = region.try_get_or_create_multi(&keys, options, |missing| {
        let f = body.take().ok_or(MultiFail::Gone)?;
        let wanted = missing_items(&keys, items, missing);
        let values = f(&wanted);
        if values.len() != wanted.len() {
            return Err(MultiFail::Count(values, wanted.len()));
        }
        made = Some(values.clone());
        Ok(values)
    });
    match out {
        Ok(v) => v,
        Err(CreateError::Creator(MultiFail::Count(values, given))) => {
            tracing::warn!(
                region = region.name(),
                function = site.info.name,
                "a batch function returned another number of values than it was given ids: nothing cached"
            );
            // Given every id, its answer is the one the function itself gives. Given only the
            // missing ones, its values cannot be matched to them, and returning them would
            // hand the caller values at the wrong ids.
            assert!(
                given == items.len(),
                "`{}` returned {} values for the {given} ids it was given (the {} others were cached): \
                 a batch function returns one value per id, in order",
                site.info.name,
                values.len(),
                items.len() - given,
            );
            values
        }
        Err(CreateError::Creator(MultiFail::Gone)) => made.unwrap_or_default(),
        Err(CreateError::Cache(e)) => {
            multi_failed(region, FALLBACK, &e);
            match (made, body) {
                (_, Some(f)) => f(items),
                (Some(v), None) => v,
                (None, None) => Vec::new(),
            }
        }
    }
}

/// The items whose keys are `missing`, in that order.
fn missing_items<K: Clone>(keys: &[String], items: &[K], missing: &[&str]) -> Vec<K> {
    let index: HashMap<&str, usize> = keys
        .iter()
        .enumerate()
        .rev()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    missing
        .iter()
        .filter_map(|k| index.get(k).map(|&i| items[i].clone()))
        .collect()
}

/// A batch call with `asdict = true`: the body returns a map (any `(K, V)` collection); items it
/// leaves out are neither cached nor returned.
pub fn get_or_create_multi_dict<K, V, M, F>(
    region: &CacheRegion,
    site: &Site,
    options: &CreateOptions<Option<V>>,
    items: &[K],
    body: F,
) -> M
where
    K: KeyArg + Clone,
    V: CacheValue,
    M: IntoIterator<Item = (K, V)> + FromIterator<(K, V)>,
    F: FnOnce(&[K]) -> M,
{
    if items.is_empty() {
        return M::from_iter(std::iter::empty());
    }
    let keys = multi_keys(region, site, items);
    if keys.len() != items.len() {
        return body(items);
    }
    let mut body = Some(body);
    let out = region.try_get_or_create_multi(&keys, options, |missing| {
        let f = body.take().ok_or(())?;
        let wanted = missing_items(&keys, items, missing);
        let mut by_key: HashMap<String, V> = f(&wanted)
            .into_iter()
            .map(|(k, v)| (multi_keys(region, site, std::slice::from_ref(&k)), v))
            .filter_map(|(mut ks, v)| ks.pop().map(|k| (k, v)))
            .collect();
        Ok(missing.iter().map(|k| by_key.remove(*k)).collect())
    });
    match out {
        Ok(values) => items
            .iter()
            .cloned()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
        Err(CreateError::Creator(())) => M::from_iter(std::iter::empty()),
        Err(CreateError::Cache(e)) => {
            multi_failed(region, FALLBACK, &e);
            match body {
                Some(f) => f(items),
                None => M::from_iter(std::iter::empty()),
            }
        }
    }
}

/// `<fn>_get` of a batch function: the cached values, `None` where there is none.
pub fn get_multi<K: KeyArg, V: CacheValue>(
    region: &CacheRegion,
    site: &Site,
    items: &[K],
) -> Vec<Option<V>> {
    let keys = multi_keys(region, site, items);
    region.get_multi::<V, _>(&keys).unwrap_or_else(|e| {
        multi_failed(region, "cache unavailable: no value read", &e);
        items.iter().map(|_| None).collect()
    })
}

/// `<fn>_get` of an `asdict` batch function: the items found, with their values.
pub fn get_multi_dict<K, V, M>(region: &CacheRegion, site: &Site, items: &[K]) -> M
where
    K: KeyArg + Clone,
    V: CacheValue,
    M: FromIterator<(K, V)>,
{
    get_multi::<K, Option<V>>(region, site, items)
        .into_iter()
        .zip(items)
        .filter_map(|(v, k)| v.flatten().map(|v| (k.clone(), v)))
        .collect()
}

/// `<fn>_set` of a batch function: stores every `(item, value)` pair.
pub fn set_multi<K: KeyArg, V: CacheValue>(
    region: &CacheRegion,
    site: &Site,
    pairs: impl IntoIterator<Item = (K, V)>,
) {
    let (items, values): (Vec<K>, Vec<V>) = pairs.into_iter().unzip();
    let keys = multi_keys(region, site, &items);
    if let Err(e) = region.set_multi(keys.into_iter().zip(values)) {
        multi_failed(region, "cache unavailable: values not stored", &e);
    }
}

/// `<fn>_set` of an `asdict` batch function.
pub fn set_multi_dict<K: KeyArg, V: CacheValue>(
    region: &CacheRegion,
    site: &Site,
    pairs: impl IntoIterator<Item = (K, V)>,
) {
    set_multi(region, site, pairs.into_iter().map(|(k, v)| (k, Some(v))));
}

/// `<fn>_invalidate` of a batch function: deletes every item's entry.
pub fn invalidate_multi<K: KeyArg>(region: &CacheRegion, site: &Site, items: &[K]) {
    let keys = multi_keys(region, site, items);
    if let Err(e) = region.delete_multi(&keys) {
        multi_failed(region, "cache unavailable: entries not deleted", &e);
    }
}

/// `<fn>_refresh` of a batch function: stores what the body returned for every item.
pub fn refresh_multi<K: KeyArg + Clone, V: CacheValue>(
    region: &CacheRegion,
    site: &Site,
    items: &[K],
    values: Vec<V>,
) -> Vec<V> {
    if values.len() == items.len() {
        set_multi(
            region,
            site,
            items.iter().cloned().zip(values.iter().cloned()),
        );
    } else {
        tracing::warn!(
            region = region.name(),
            function = site.info.name,
            "a batch function returned another number of values than it was given ids: nothing cached"
        );
    }
    values
}

/// `<fn>_refresh` of an `asdict` batch function.
pub fn refresh_multi_dict<K, V, M>(region: &CacheRegion, site: &Site, map: M) -> M
where
    K: KeyArg + Clone,
    V: CacheValue,
    M: IntoIterator<Item = (K, V)> + FromIterator<(K, V)>,
{
    let pairs: Vec<(K, V)> = map.into_iter().collect();
    set_multi_dict(region, site, pairs.iter().cloned());
    pairs.into_iter().collect()
}
