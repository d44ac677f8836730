//! The attributes of the dogpile caching toolkit: [`macro@cache_on_arguments`] memoizes a
//! function in a cache region, [`macro@cache_multi_on_arguments`] a batch function, and
//! [`macro@cache_impl`] lets both work in the `impl` block of a trait.
//!
//! Use them through the `dogpile` crate (`dogpile::cache_on_arguments`): the generated code names
//! only `::dogpile::__private`, so `dogpile` is the one dependency a user needs. The examples,
//! compiled and run as tests, are on the re-exports in `dogpile`.
//!
//! Layout: `args.rs` parses the options, `expand.rs` generates the code, `impl_block.rs` handles
//! `#[cache_impl]`.

use proc_macro::TokenStream;

mod args;
mod errors;
mod expand;
mod impl_block;

/// Memoizes a function in a cache region: the first call with some arguments runs the body and
/// stores its value under a key made from the arguments; later calls return the stored value
/// until it expires. When the value is missing or expired, one caller runs the body (the dogpile
/// lock); the others wait for it, or get the stale value.
///
/// Applies to free functions, methods in `impl` blocks (`self` is left out of the key), generic
/// functions whose key arguments implement `KeyArg`, and `async fn` (waiters `.await`). In an
/// `impl Trait for Type` block, put `#[cache_impl]` on the block: it moves the companions into an
/// inherent block, since a trait's `impl` can hold only the trait's methods.
///
/// # Options
///
/// - `region = EXPR` (required): the region, typically a `static REGION: dogpile::CacheRegion`
///   or a `static REGION: LazyLock<dogpile::CacheRegion>`; any expression of type
///   `&CacheRegion` also works.
/// - `namespace = "…"`: a part of the default key, to tell apart functions of the same name in
///   one module (methods of two types).
/// - `expiration_time = …` (or `expiration = …`): overrides the region's expiration for this
///   function: whole seconds (`-1` means never), a `Duration`, an `Expiration`, or the path of a
///   function returning one of these, called on every call ("cache until midnight").
/// - `should_cache_fn = path`: a `fn(&T) -> bool`; a created value it refuses is returned but not
///   stored. For a function returning `Result<T, E>`, it sees the `Ok` value.
/// - `function_key_generator = path`: a `fn(&FunctionInfo, &[&dyn KeyArg]) -> String` that makes
///   this function's keys (it receives the key arguments, `self` and `ignore`d ones left out).
///   Without it the region's generator is used, and without that the default key. For a generic
///   function the generated key is followed by what tells its instances apart (`|u8`), as the
///   default key is.
/// - `key = "user:{id}:{lang}"`: the key, as a template of the argument names (`{{`, `}}` for
///   braces). Checked at compile time: a name that is not an argument is an error, and so is an
///   argument neither in the template nor in `ignore`.
/// - `ignore = [conn, log]`: arguments left out of the key (a connection, a logger).
/// - `tags = ["user:{id}", "users"]`: tags of every value this function stores, templates over
///   the arguments; `REGION.invalidate_tag("user:42", true)` drops the values tagged so. An
///   argument is written into a tag as into a key, by its `KeyArg`: integers and plain words as
///   they are, a text with a space or one of `,()[]|"\` escaped (`team:Red\ Team`). Build the
///   tag to invalidate the same way: `let mut tag = String::from("team:");
///   KeyArg::write_key(&name, &mut tag);`.
/// - `background = true`: when the value is stale and the region has an async creation runner,
///   the body runs on the runner while callers get the stale value at once (as every decorated
///   function does in Python's dogpile). Rust cannot move a body that borrows its arguments to
///   another thread, so this is opt-in, for bodies that own what they use (`Send + 'static`):
///   a borrowing body is a compile error. Not for `async fn` or `Result`-returning functions.
/// - `fail_safe_max_duration = …`, `fail_safe_throttle = …`, `soft_timeout = …`,
///   `hard_timeout = …` (seconds or a `Duration`), `eager_refresh = 0.8`,
///   `early_expiration_beta = 1.0`: the region's resilience options of the same names (see
///   `RegionConfig`), for this function only; a literal no region can use is a compile error.
///   With fail-safe, a `Result` function whose body returns `Err` gets the expired value
///   instead, within the bound. The timeouts bound a creation only with `background = true` (a
///   body that can run on another thread): the caller then gets the stale value past
///   `soft_timeout`. Otherwise the caller that creates runs the body inline (it borrows the
///   arguments), unbounded. `hard_timeout` bounds a *waiter* (a caller with no value, waiting
///   for another caller's creation) only where it has an error to give:
///   - a function returning `Result<T, E>` with `E: From<dogpile::Error>` (your own
///     `impl From<dogpile::Error> for MyError`, or `anyhow::Error`): past `hard_timeout` the
///     waiter returns `Err(E::from(dogpile::Error::CreatorTimeout { .. }))`, counted in
///     `hard_timeouts`, and never runs its body; the creation goes on and stores its value.
///     Chosen at compile time from the return type, so the error type needs no bound: a `fn`
///     generic over its error type, or an error without the conversion, takes the next case;
///   - any other function (its value returned as is, or an `E` without the conversion) keeps
///     waiting for the value, up to the region's `lock_blocking_timeout` (then it runs its
///     body): its only answer to an error would be to run its body, which beside a running
///     creator is the stampede the lock prevents;
///   - `background = true` functions are not bounded as waiters either.
///
/// # The key
///
/// By default `module::path:name|namespace|a b`: `module_path!()`, the function's name, the
/// namespace if any, and the key text of each argument (its `KeyArg` implementation) joined by one
/// space. Text holding a separator is escaped, so two different argument lists never share a key.
///
/// A key argument whose type holds `dyn` (`&dyn KeyArg`, `Box<dyn KeyArg>`,
/// `Vec<Box<dyn KeyArg>>`) is a compile error: values of different types behind it can write one
/// text (`&5u8` and `&"5"` both write `5`), and the key cannot record the type. Take a concrete
/// type, a type parameter or `impl Trait` (the key records its type), or `ignore` the argument.
///
/// # Return types
///
/// The returned type must be `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`.
/// `Result<T, E>` caches only `Ok(T)` and hands `Err` to the caller; `Option<T>` caches `None`
/// like any other value unless `should_cache_fn` refuses it.
///
/// # Companions
///
/// For `fn one(a: A, b: B) -> T`, with the function's visibility (methods for a method, `async`
/// for an `async fn`); `V` is `T`, or the `Ok` type of a `Result`:
///
/// - `one_get(a, b) -> Option<V>`: the cached value, without calling the body (`None` when it is
///   older than the function's `expiration_time`; an `async fn` reads with the region's);
/// - `one_set(value: V, a, b)`: stores a value;
/// - `one_invalidate(a, b)`: deletes the entry;
/// - `one_refresh(a, b) -> T`: runs the body, stores and returns its value;
/// - `one_uncached(a, b) -> T`: the body alone, without the cache.
///
/// `_get`, `_set` and `_invalidate` take the key arguments only (not the `ignore`d ones) and
/// `&self` for a method; `_refresh` and `_uncached` take every argument.
///
/// # When the cache fails
///
/// Caching never breaks the function: if the region is not configured or its backend fails, the
/// error is logged with `tracing::warn!` and the body's value is returned. The companions log and
/// do nothing (`_get` returns `None`).
#[proc_macro_attribute]
pub fn cache_on_arguments(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(args::Kind::Single, attr.into(), item.into()).into()
}

/// Memoizes a batch function `fn f(ids: &[K]) -> Vec<V>`: each id has its own cache entry; a call
/// looks every id up, calls the body once with only the missing (or expired) ids, stores what it
/// returns, and answers in the caller's order. Per-id locks are taken in one fixed order, so
/// overlapping batches do not deadlock.
///
/// # Options
///
/// - `region = EXPR` (required), `namespace = "…"`, `expiration_time = …` (or `expiration`),
///   `should_cache_fn = path` (a `fn(&V) -> bool`): as for `cache_on_arguments`.
/// - `asdict = true`: the function returns a map of `(K, V)` (`HashMap<K, V>`, `BTreeMap<K, V>`);
///   ids the body leaves out of its map are neither cached nor returned.
/// - `ignore = [conn]`: other arguments, left out of the keys. The slice of ids is the only key
///   argument; ids of a type holding `dyn` are a compile error, as for `cache_on_arguments`.
/// - `fail_safe_max_duration = …`, `fail_safe_throttle = …` (seconds or a `Duration`),
///   `eager_refresh = 0.8`, `early_expiration_beta = 1.0`: the resilience options of
///   `cache_on_arguments`, applied to each id by the one-key rules. A body that panics leaves
///   each id its expired value (within `fail_safe_max_duration`; the ids are then throttled),
///   and the call panics only when an id has none. Ids due for an early refresh get it inline,
///   in the one body call with the missing ids; an id whose refresh another caller is running
///   gets its current value at once. `soft_timeout` and `hard_timeout` are a compile error
///   here: the body borrows its ids and runs on the caller's thread, so no timeout can bound
///   it.
///
/// The key of one id is the default key of a function taking that id alone
/// (`module::path:name|namespace|id`), or the region's `function_multi_key_generator`.
///
/// The body must return one value per id it was given, in order (with `asdict`, any subset). A
/// body that returns another number of values has nothing cached and a warning logged; given
/// every id of the call, its result is returned as is (what the function itself returns).
///
/// # Panics
///
/// When the body, given only the ids that were not cached, returns another number of values:
/// they cannot be matched to their ids, and returning them would give the caller values at the
/// wrong ids.
///
/// # Companions
///
/// - `f_get(ids) -> Vec<Option<V>>` (with `asdict`, the map of the ids found);
/// - `f_set(items)`: stores `(id, value)` pairs, or a map;
/// - `f_invalidate(ids)`: deletes the entries;
/// - `f_refresh(ids)`: runs the body for every id, stores and returns its values;
/// - `f_uncached(ids)`: the body alone.
///
/// `async fn` is not supported by this attribute.
#[proc_macro_attribute]
pub fn cache_multi_on_arguments(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(args::Kind::Multi, attr.into(), item.into()).into()
}

/// Lets `#[cache_on_arguments]` and `#[cache_multi_on_arguments]` work on the methods of an
/// `impl Trait for Type` block.
///
/// The companions of a cached method (`_get`, `_set`, `_invalidate`, `_refresh`, `_uncached`)
/// are methods of their own, and the `impl` of a trait can hold only the trait's methods. Put
/// `#[cache_impl]` on the block: it expands the cache attributes of its methods and moves the
/// companions into an inherent `impl Type` block next to it, with the block's generics, `where`
/// clause, `cfg` and lint attributes (a `Self::Name` type in their signatures is written
/// `<Type as Trait>::Name` there). The trait's methods are cached whichever way they are called,
/// on the type or through `dyn Trait`.
///
/// - **Keys.** A method without a `namespace` gets the type and the trait, as written in the
///   block's header without spaces, as its namespace: `module::path:load|<Db as Loader<User>>|7`
///   in `impl Loader<User> for Db`. So neither two types implementing one trait in one module,
///   nor two traits (or two instances of a generic trait) implemented by one type, share keys.
///   (The instances of a generic block, `impl<T> Repo for Wrapper<T>` for `Wrapper<A>` and
///   `Wrapper<B>`, still do: give them a `key` or `namespace` that tells them apart when their
///   values differ.) A method of an inherent block keeps the default key of any method.
/// - **Visibility.** In a trait's block the companions are private to the module; give them a
///   visibility with `#[cache_impl(pub)]` or `#[cache_impl(pub(crate))]`. On an inherent
///   `impl Type` block (where the attribute is not needed) they keep the method's visibility
///   unless one is given.
/// - **No companions.** A type of another crate, a reference or a blanket `impl<T> Trait for T`
///   cannot have an inherent block: write `#[cache_impl(no_companions)]` to cache the methods
///   without companions (a clear error says so otherwise).
///
/// The cache attributes are recognised by their last path segment: `cache_on_arguments` or
/// `dogpile::cache_on_arguments`, not a renamed import.
#[proc_macro_attribute]
pub fn cache_impl(attr: TokenStream, item: TokenStream) -> TokenStream {
    impl_block::expand(attr.into(), item.into()).into()
}
