//! Cache keys: the text of function arguments ([`KeyArg`]), the default key generators, and key
//! manglers ([`sha1_mangle_key`], [`length_conditional_mangler`]).
//!
//! The default key of a memoized function is dogpile's: `module::path:function|namespace|a b`
//! (no `|namespace` part without a namespace). Argument texts are joined by one space.
//!
//! # Key texts
//!
//! Integers, `bool`s and text without special characters are written as they are (`3`, `true`,
//! `user:7`), so keys stay readable. The rest is framed so that **two different values of one
//! type never write the same text**, nested too:
//!
//! | value | text |
//! |---|---|
//! | text holding `\`, space, `\|`, `,`, `(`, `)`, `[`, `]` or `"` | that character after a `\`: `a b` is `a\ b` |
//! | the empty text | `""` |
//! | the text `None` | `\None` |
//! | `None` | `None` |
//! | `Some(v)` | the text of `v`; `Some(…)` around it when that text is `None` or starts with `Some(`, so `Some(None)` is `Some(None)` |
//! | a slice, array or `Vec` | `[a,b]` (`[]` when empty) |
//! | a tuple | `(a,b)` |
//! | a float | as Rust prints it (`1.5`, `-0`, `inf`, `NaN`); a NaN other than `f64::NAN` (or `f32::NAN`) adds its bits, `NaN:fff8000000000000` |
//!
//! So within one type: texts give back their value; no built-in text is empty or holds an
//! unescaped space, `|` or `"` (but the `""` of the empty text), and every unescaped `,` is
//! inside brackets, which balance. This is what makes joined argument lists (by [`write_args`])
//! and nested values decodable, and so injective.
//!
//! Across types texts may meet: the string `3`, the integer `3` and `Some(3)` all write `3`. A
//! function's arguments have fixed types, so one function never gives two argument lists one
//! key (the attributes refuse a key argument whose type holds `dyn`, which does not fix the type
//! behind it: `&5u8` and `&"5"` as `&dyn KeyArg` both write `5`). Functions are told apart by
//! their module path, name and namespace (a method of a trait's impl under `#[cache_impl]` has
//! `<Type as Trait>` as its namespace by default, so the impls of two traits on one type are two
//! functions). A generic function is one function per instance: its default key ends with `|`
//! and the names of its type parameters, the values of its const parameters and the types of its
//! `impl Trait` arguments (`describe|5|u8`, `describe|5|&str`), and so does each id's key of a
//! generic batch function. A key generator (the region's or the function's) is given the
//! arguments, not their types, so the same text ends a generic function's generated key
//! (`<generated>|u8`, `<generated>|&str,1`). A `key = "…"` template on a generic function is
//! the key as written: it must tell the instances apart itself.
//!
//! A [`KeyArg`] of your own keeps these guarantees when its text follows the same rules: build it
//! from the built-in implementations and [`write_key_text`] for free text, and keep your own
//! separators inside brackets or use characters that are not special (`:`, `/`, `=`).

use std::borrow::Cow;
use std::fmt::Write as _;

use sha1::{Digest, Sha1};
use smallvec::SmallVec;

/// A value that can be part of a cache key: the `to_str` of dogpile.
///
/// Implemented for integers, floats, `bool`, `char`, `str`, `String`, `Option<T>` (`None` is
/// written `None`), references, tuples, slices, arrays and `Vec`; the [module
/// documentation](self) lists the texts, and what is guaranteed of them. Implement it for your own
/// types by writing something that identifies the value, with [`write_key_text`] for free text:
///
/// ```
/// use dogpile_core::{key_text, write_key_text, KeyArg};
///
/// struct UserId(u64);
/// impl KeyArg for UserId {
///     fn write_key(&self, out: &mut String) {
///         self.0.write_key(out)
///     }
/// }
///
/// struct Query { table: String, id: u32 }
/// impl KeyArg for Query {
///     fn write_key(&self, out: &mut String) {
///         write_key_text(out, &self.table);
///         out.push(',');
///         self.id.write_key(out);
///     }
/// }
/// assert_eq!(key_text(&UserId(7)), "7");
/// assert_eq!(key_text(&Query { table: "users".into(), id: 3 }), "users,3");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key: it does not implement `dogpile::KeyArg`",
    label = "this argument is part of the cache key",
    note = "implement `dogpile::KeyArg` for `{Self}`, or leave the argument out of the key with `ignore = [name]`"
)]
pub trait KeyArg {
    /// Appends this value's key text to `out`.
    fn write_key(&self, out: &mut String);
}

/// The key text of one value.
pub fn key_text<T: KeyArg + ?Sized>(value: &T) -> String {
    let mut s = String::new();
    value.write_key(&mut s);
    s
}

/// Characters that have a meaning in a key, and so are escaped in free text: the escape itself,
/// the separators of arguments (space) and of the key's parts (`|`), those of sequences and
/// tuples, and the quote that writes the empty text.
const SPECIAL: &[char] = &['\\', ' ', '|', ',', '(', ')', '[', ']', '"'];

/// Appends free text to a key, escaping the characters that structure keys with a backslash;
/// the empty text is written `""`, and the text `None` (which stands for an absent `Option`)
/// `\None`. Different texts give different results.
///
/// ```
/// use dogpile_core::write_key_text;
///
/// let text = |t: &str| {
///     let mut out = String::new();
///     write_key_text(&mut out, t);
///     out
/// };
/// assert_eq!(text("user:7"), "user:7");
/// assert_eq!(text("a b|c"), r"a\ b\|c");
/// assert_eq!(text(""), r#""""#);
/// assert_eq!(text("None"), r"\None");
/// ```
pub fn write_key_text(out: &mut String, text: &str) {
    if text.is_empty() {
        out.push_str("\"\"");
        return;
    }
    if text == "None" {
        out.push_str("\\None");
        return;
    }
    if !text.contains(SPECIAL) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        if SPECIAL.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

macro_rules! int_key_arg {
    ($($t:ty)*) => {$(
        impl KeyArg for $t {
            #[inline]
            fn write_key(&self, out: &mut String) {
                out.push_str(itoa::Buffer::new().format(*self));
            }
        }
    )*};
}
int_key_arg!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize);

impl KeyArg for bool {
    fn write_key(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

macro_rules! float_key_arg {
    ($($t:ty)*) => {$(
        impl KeyArg for $t {
            fn write_key(&self, out: &mut String) {
                // Rust prints the shortest text that reads back as the same float, so distinct
                // floats print distinct texts (`-0` too); only NaNs all print `NaN`, so a NaN
                // other than the usual one adds its bits.
                if self.is_nan() && self.to_bits() != <$t>::NAN.to_bits() {
                    let _ = write!(out, "NaN:{:x}", self.to_bits());
                } else {
                    let _ = write!(out, "{}", self);
                }
            }
        }
    )*};
}
float_key_arg!(f32 f64);

impl KeyArg for char {
    fn write_key(&self, out: &mut String) {
        write_key_text(out, self.encode_utf8(&mut [0; 4]));
    }
}

impl KeyArg for str {
    #[inline]
    fn write_key(&self, out: &mut String) {
        write_key_text(out, self);
    }
}

impl KeyArg for String {
    #[inline]
    fn write_key(&self, out: &mut String) {
        write_key_text(out, self);
    }
}

impl<T: KeyArg + ?Sized> KeyArg for &T {
    #[inline]
    fn write_key(&self, out: &mut String) {
        (**self).write_key(out);
    }
}

impl<T: KeyArg + ?Sized> KeyArg for &mut T {
    #[inline]
    fn write_key(&self, out: &mut String) {
        (**self).write_key(out);
    }
}

impl<T: KeyArg + ?Sized> KeyArg for Box<T> {
    fn write_key(&self, out: &mut String) {
        (**self).write_key(out);
    }
}

impl<T: KeyArg + ?Sized> KeyArg for std::sync::Arc<T> {
    fn write_key(&self, out: &mut String) {
        (**self).write_key(out);
    }
}

impl<T: KeyArg + ?Sized> KeyArg for std::rc::Rc<T> {
    fn write_key(&self, out: &mut String) {
        (**self).write_key(out);
    }
}

impl<T: KeyArg + ToOwned + ?Sized> KeyArg for std::borrow::Cow<'_, T> {
    fn write_key(&self, out: &mut String) {
        (**self).write_key(out);
    }
}

impl<T: KeyArg> KeyArg for Option<T> {
    fn write_key(&self, out: &mut String) {
        match self {
            Some(v) => {
                let start = out.len();
                v.write_key(out);
                // `Some(x)` is written as `x`, unless `x` could be read as `None` or as a
                // `Some(…)` of this rule (nested options): then it is framed, so `Some(None)`
                // and `None` differ.
                let text = &out[start..];
                if text == "None" || text.starts_with("Some(") {
                    out.insert_str(start, "Some(");
                    out.push(')');
                }
            }
            None => out.push_str("None"),
        }
    }
}

fn write_seq<'a, T: KeyArg + 'a>(out: &mut String, items: impl IntoIterator<Item = &'a T>) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item.write_key(out);
    }
    out.push(']');
}

impl<T: KeyArg> KeyArg for [T] {
    fn write_key(&self, out: &mut String) {
        write_seq(out, self);
    }
}

impl<T: KeyArg, const N: usize> KeyArg for [T; N] {
    fn write_key(&self, out: &mut String) {
        write_seq(out, self);
    }
}

impl<T: KeyArg> KeyArg for Vec<T> {
    fn write_key(&self, out: &mut String) {
        write_seq(out, self);
    }
}

impl KeyArg for () {
    fn write_key(&self, out: &mut String) {
        out.push_str("()");
    }
}

macro_rules! tuple_key_arg {
    ($($name:ident)+) => {
        impl<$($name: KeyArg),+> KeyArg for ($($name,)+) {
            #[allow(non_snake_case)]
            fn write_key(&self, out: &mut String) {
                let ($($name,)+) = self;
                out.push('(');
                let mut _first = true;
                $(
                    if !_first { out.push(','); }
                    _first = false;
                    $name.write_key(out);
                )+
                out.push(')');
            }
        }
    };
}
tuple_key_arg!(A);
tuple_key_arg!(A B);
tuple_key_arg!(A B C);
tuple_key_arg!(A B C D);
tuple_key_arg!(A B C D E);
tuple_key_arg!(A B C D E F);
tuple_key_arg!(A B C D E F G);
tuple_key_arg!(A B C D E F G H);

/// What a key generator knows of the function it makes keys for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    /// `module_path!()` where the function is defined.
    pub module_path: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// The `namespace` given to the attribute, if any.
    pub namespace: Option<&'static str>,
}

impl FunctionInfo {
    /// Appends `module::path:name|namespace|` (without `namespace|` when there is none): the part
    /// of the default key before the arguments.
    pub fn write_prefix(&self, out: &mut String) {
        out.push_str(self.module_path);
        out.push(':');
        out.push_str(self.name);
        out.push('|');
        if let Some(ns) = self.namespace {
            out.push_str(ns);
            out.push('|');
        }
    }
}

/// A function key generator: the key of one call, from the function and its key arguments.
///
/// Set on a region with `function_key_generator`, or on one function with the attribute's
/// `function_key_generator = path` option.
pub type FunctionKeyGenerator = fn(&FunctionInfo, &[&dyn KeyArg]) -> String;

/// A multi-key generator: one key per item of a batch, for `#[cache_multi_on_arguments]`.
pub type FunctionMultiKeyGenerator = fn(&FunctionInfo, &[&dyn KeyArg]) -> Vec<String>;

/// The default function key generator: `module::path:name|namespace|arg1 arg2`.
///
/// ```
/// use dogpile_core::{function_key_generator, FunctionInfo, KeyArg};
///
/// let info = FunctionInfo { module_path: "myapp::tools", name: "one", namespace: Some("foo") };
/// assert_eq!(function_key_generator(&info, &[&3, &4]), "myapp::tools:one|foo|3 4");
/// let info = FunctionInfo { namespace: None, ..info };
/// assert_eq!(function_key_generator(&info, &[&3, &4]), "myapp::tools:one|3 4");
/// ```
pub fn function_key_generator(info: &FunctionInfo, args: &[&dyn KeyArg]) -> String {
    let mut out = String::with_capacity(info.module_path.len() + info.name.len() + 16);
    info.write_prefix(&mut out);
    write_args(&mut out, args);
    out
}

/// Appends argument texts joined by one space.
pub fn write_args(out: &mut String, args: &[&dyn KeyArg]) {
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        a.write_key(out);
    }
}

/// The default multi-key generator: the default key of each item, as if the function took it
/// alone.
pub fn function_multi_key_generator(info: &FunctionInfo, items: &[&dyn KeyArg]) -> Vec<String> {
    items
        .iter()
        .map(|item| function_key_generator(info, std::slice::from_ref(item)))
        .collect()
}

/// A key mangler: applied to every key before it reaches the backend (a prefix, a hash).
///
/// ```
/// use std::borrow::Cow;
/// use dogpile_core::KeyMangler;
///
/// let prefix = KeyMangler::Fn(|k| format!("app:{k}"));
/// assert_eq!(prefix.mangle("user:1"), "app:user:1");
///
/// // A mangler that keeps most keys as they are says so with `Keeping`: a kept key is
/// // borrowed, never copied (memcached's mangler is one).
/// let short = KeyMangler::Keeping(|k| {
///     if k.len() <= 8 { Cow::Borrowed(k) } else { Cow::Owned(dogpile_core::sha1_mangle_key(k)) }
/// });
/// assert!(matches!(short.mangle("user:1"), Cow::Borrowed("user:1")));
/// assert_eq!(short.mangle("a longer key").len(), 40);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum KeyMangler {
    /// A plain function, such as [`sha1_mangle_key`].
    Fn(fn(&str) -> String),
    /// A plain function that may keep the key as it is, borrowed: no allocation for a key it
    /// keeps. For manglers that change only some keys (memcached's hashes only the keys the
    /// server would refuse), on every read and write of the hot path.
    Keeping(for<'k> fn(&'k str) -> Cow<'k, str>),
    /// A closure, for manglers that capture something (a prefix read from configuration).
    Closure(std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>),
}

impl KeyMangler {
    /// A mangler from a closure.
    pub fn closure(f: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        KeyMangler::Closure(std::sync::Arc::new(f))
    }

    /// Mangles one key: borrowed when the mangler keeps it.
    #[inline]
    pub fn mangle<'k>(&self, key: &'k str) -> Cow<'k, str> {
        match self {
            KeyMangler::Fn(f) => Cow::Owned(f(key)),
            KeyMangler::Keeping(f) => f(key),
            KeyMangler::Closure(f) => Cow::Owned(f(key)),
        }
    }
}

impl std::fmt::Debug for KeyMangler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyMangler::Fn(_) => "KeyMangler::Fn(..)",
            KeyMangler::Keeping(_) => "KeyMangler::Keeping(..)",
            KeyMangler::Closure(_) => "KeyMangler::Closure(..)",
        })
    }
}

/// The SHA-1 of a key, as 40 lowercase hex digits: a mangler that gives every key the same
/// length and alphabet. It takes text (a `&str`, a `String`) or bytes, as dogpile's takes `str`
/// or `bytes`; text is hashed as its UTF-8 bytes, so both give the same digest.
///
/// ```
/// use dogpile_core::sha1_mangle_key;
///
/// assert_eq!(sha1_mangle_key("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
/// assert_eq!(sha1_mangle_key(b"abc"), sha1_mangle_key("abc"));
/// assert_eq!(sha1_mangle_key(&vec![0xffu8, 0x00]).len(), 40);
/// assert_eq!(sha1_mangle_key("a key of any length, with spaces").len(), 40);
///
/// // It is a plain `fn(&str) -> String` where a mangler is wanted.
/// let mangler: fn(&str) -> String = sha1_mangle_key;
/// assert_eq!(mangler("abc").len(), 40);
/// ```
pub fn sha1_mangle_key<K: AsRef<[u8]> + ?Sized>(key: &K) -> String {
    let digest = Sha1::digest(key.as_ref());
    let mut out = String::with_capacity(40);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A mangler that applies `mangler` to keys of `length` bytes or more and keeps shorter keys as
/// they are: dogpile's `util.length_conditional_mangler` (which counts characters; for ASCII keys
/// the same), to keep short keys readable and long ones within a server's limit.
///
/// A short key is kept as it is, so it could be written to equal the mangled form of a long one
/// (40 hex digits, for [`sha1_mangle_key`]); keys made by [`function_key_generator`] hold `:` and
/// cannot.
///
/// ```
/// use dogpile_core::{length_conditional_mangler, sha1_mangle_key, CacheRegion, RegionBuilder};
///
/// let mangle = length_conditional_mangler(50, sha1_mangle_key);
/// assert_eq!(mangle("user:7"), "user:7");
/// let long = "x".repeat(50);
/// assert_eq!(mangle(&long), sha1_mangle_key(&long));
///
/// let region: CacheRegion = RegionBuilder::new()
///     .key_mangler_fn(length_conditional_mangler(250, sha1_mangle_key))
///     .build();
/// # let _ = region;
/// ```
pub fn length_conditional_mangler<M>(
    length: usize,
    mangler: M,
) -> impl Fn(&str) -> String + Send + Sync + 'static
where
    M: Fn(&str) -> String + Send + Sync + 'static,
{
    move |key: &str| {
        if key.len() >= length {
            mangler(key)
        } else {
            key.to_owned()
        }
    }
}

/// Up to this many keys, a batch's list of mangled keys is held on the stack (2 KiB of `&str`)
/// rather than allocated (see [`with_mangled`]), and so are its answers while they are decoded,
/// when each is at most 32 bytes (up to 4 KiB; they move into their `Vec` at the end).
pub(crate) const BATCH_ON_STACK: usize = 128;

/// Calls `f` with every key of `keys` after `mangle`, as one slice of `&str`: a batch's keys
/// mangled. Most keys come back from a mangler borrowed (a key already in the backend's form);
/// only the ones it rewrote are kept aside (their strings and a list of them). So a batch of
/// keys that need no change allocates nothing up to 128 keys (the slice is on the stack), and
/// just the slice above that.
///
/// ```
/// use std::borrow::Cow;
/// use dogpile_core::key::with_mangled;
///
/// fn upper(k: &str) -> Cow<'_, str> {
///     if k.bytes().any(|b| b.is_ascii_lowercase()) {
///         Cow::Owned(k.to_ascii_uppercase())
///     } else {
///         Cow::Borrowed(k)
///     }
/// }
/// let joined = with_mangled(&["A", "b", "C"], upper, |keys| keys.join(","));
/// assert_eq!(joined, "A,B,C");
/// ```
pub fn with_mangled<'k, K, M, R>(keys: &'k [K], mut mangle: M, f: impl FnOnce(&[&str]) -> R) -> R
where
    K: AsRef<str>,
    M: FnMut(&'k str) -> Cow<'k, str>,
{
    // The rewritten keys first, by position, so the slice can borrow from them.
    let mut rewritten: Vec<(usize, String)> = Vec::new();
    // On the stack up to `BATCH_ON_STACK` keys: a list of 100 is a large block to `malloc`,
    // and asking for one makes glibc merge the small blocks just freed (the previous batch's
    // values), which the values decoded next would otherwise reuse at once.
    let mut refs: SmallVec<[&str; BATCH_ON_STACK]> = SmallVec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        match mangle(k.as_ref()) {
            Cow::Borrowed(b) => refs.push(b),
            Cow::Owned(o) => {
                rewritten.push((i, o));
                refs.push("");
            }
        }
    }
    for (i, o) in &rewritten {
        refs[*i] = o;
    }
    f(&refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&dyn KeyArg]) -> String {
        let mut s = String::new();
        write_args(&mut s, a);
        s
    }

    #[test]
    fn the_seed_key() {
        let info = FunctionInfo {
            module_path: "myapp::tools",
            name: "one",
            namespace: Some("foo"),
        };
        assert_eq!(
            function_key_generator(&info, &[&3, &4]),
            "myapp::tools:one|foo|3 4"
        );
    }

    #[test]
    fn separators_in_text_are_escaped() {
        assert_ne!(args(&[&"a b", &"c"]), args(&[&"a", &"b c"]));
        assert_eq!(args(&[&"a b", &"c"]), "a\\ b c");
        assert_ne!(args(&[&"a\\", &"b"]), args(&[&"a\\ b"]));
        assert_ne!(
            key_text(&vec!["a,b".to_string()]),
            key_text(&vec!["a".to_string(), "b".to_string()])
        );
        assert_ne!(key_text(&Some("None")), key_text(&None::<&str>));
    }

    #[test]
    fn texts_of_common_types() {
        assert_eq!(key_text(&-12i64), "-12");
        assert_eq!(key_text(&1.5f64), "1.5");
        assert_eq!(key_text(&true), "true");
        assert_eq!(key_text(&'x'), "x");
        assert_eq!(key_text(&None::<u8>), "None");
        assert_eq!(key_text(&Some(3u8)), "3");
        assert_eq!(key_text(&(1, "a")), "(1,a)");
        assert_eq!(key_text(&[1u8, 2, 3][..]), "[1,2,3]");
        assert_eq!(key_text(&vec![vec![1], vec![]]), "[[1],[]]");
    }

    #[test]
    fn values_that_wrote_one_text_now_differ() {
        // Each pair wrote the same text before the framing: `[]`, `None`, `[,]`, `[]`.
        assert_ne!(
            key_text(&Vec::<String>::new()),
            key_text(&vec![String::new()])
        );
        assert_ne!(key_text(&None::<Option<i32>>), key_text(&Some(None::<i32>)));
        assert_ne!(
            key_text(&vec![String::new(), String::new()]),
            key_text(&vec![",".to_string()])
        );
        assert_ne!(
            key_text(&Some(Vec::<&str>::new())),
            key_text(&Some(vec![""]))
        );
        assert_ne!(key_text(&f64::NAN), key_text(&-f64::NAN));
    }

    #[test]
    fn framed_texts() {
        assert_eq!(key_text(""), "\"\"");
        assert_eq!(key_text("\"\""), "\\\"\\\"");
        assert_eq!(key_text(&vec![""]), "[\"\"]");
        assert_eq!(key_text(&Some(None::<i32>)), "Some(None)");
        assert_eq!(key_text(&Some(Some(None::<i32>))), "Some(Some(None))");
        assert_eq!(key_text(&Some(Some(3))), "3");
        assert_eq!(key_text(&Some("Some(x)")), "Some\\(x\\)");
        assert_eq!(key_text(&-f64::NAN), "NaN:fff8000000000000");
        assert_eq!(key_text(&f32::NAN), "NaN");
        assert_eq!(key_text(&-0.0f64), "-0");
    }

    #[test]
    fn length_conditional_mangler_hashes_long_keys_only() {
        let m = length_conditional_mangler(5, sha1_mangle_key);
        assert_eq!(m("abcd"), "abcd");
        // dogpile mangles from `length` on (`len(key) >= length`).
        assert_eq!(m("abcde"), sha1_mangle_key("abcde"));
        assert_eq!(m("abcdef"), sha1_mangle_key("abcdef"));
        // Bytes, not characters: `é` is two.
        assert_eq!(m("ab\u{e9}d"), sha1_mangle_key("ab\u{e9}d"));
    }

    #[test]
    fn sha1_takes_text_and_bytes() {
        assert_eq!(sha1_mangle_key(b"abc"), sha1_mangle_key("abc"));
        assert_eq!(
            sha1_mangle_key(&[0xffu8][..]),
            sha1_mangle_key(&vec![0xffu8])
        );
        // sha1 of the empty input, a published vector.
        assert_eq!(
            sha1_mangle_key(b""),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }

    #[test]
    fn sha1_is_40_hex_digits() {
        // sha1("abc") is a published test vector.
        assert_eq!(
            sha1_mangle_key("abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(sha1_mangle_key("x").len(), 40);
    }

    #[test]
    fn multi_keys_match_single_keys() {
        let info = FunctionInfo {
            module_path: "m",
            name: "f",
            namespace: None,
        };
        assert_eq!(
            function_multi_key_generator(&info, &[&1, &2]),
            vec!["m:f|1".to_string(), "m:f|2".to_string()]
        );
    }
}
