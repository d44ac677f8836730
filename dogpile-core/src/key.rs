//! Cache keys: the text of function arguments ([`KeyArg`]), the default key generators, and key
//! manglers ([`sha1_mangle_key`]).
//!
//! The default key of a memoized function is dogpile's: `module::path:function|namespace|a b`
//! (no `|namespace` part without a namespace). Argument texts are joined by one space. Text that
//! holds a character with a meaning in the key (`\`, space, `|`, `,`, brackets) is escaped with a
//! backslash, so two different argument lists never give the same key.

use std::fmt::Write as _;

use sha1::{Digest, Sha1};

/// A value that can be part of a cache key: the `to_str` of dogpile.
///
/// Implemented for integers, floats, `bool`, `char`, `str`, `String`, `Option<T>` (`None` is
/// written `None`), references, tuples, slices, arrays and `Vec`. Implement it for your own types
/// by writing something that identifies the value, with [`write_key_text`] for free text:
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

/// Characters that have a meaning in a key, and so are escaped in free text.
const SPECIAL: &[char] = &['\\', ' ', '|', ',', '(', ')', '[', ']'];

/// Appends free text to a key, escaping the characters that structure keys (and the text `None`,
/// which stands for an absent `Option`).
pub fn write_key_text(out: &mut String, text: &str) {
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

macro_rules! display_key_arg {
    ($($t:ty)*) => {$(
        impl KeyArg for $t {
            fn write_key(&self, out: &mut String) {
                let _ = write!(out, "{}", self);
            }
        }
    )*};
}
// Floats print as Rust prints them (`1.5`, `-0`, `NaN`, `inf`); none of these hold a special.
display_key_arg!(f32 f64 bool);

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
            Some(v) => v.write_key(out),
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
#[derive(Clone)]
pub enum KeyMangler {
    /// A plain function, such as [`sha1_mangle_key`].
    Fn(fn(&str) -> String),
    /// A closure, for manglers that capture something (a prefix read from configuration).
    Closure(std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>),
}

impl KeyMangler {
    /// A mangler from a closure.
    pub fn closure(f: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        KeyMangler::Closure(std::sync::Arc::new(f))
    }

    /// Mangles one key.
    #[inline]
    pub fn mangle(&self, key: &str) -> String {
        match self {
            KeyMangler::Fn(f) => f(key),
            KeyMangler::Closure(f) => f(key),
        }
    }
}

impl std::fmt::Debug for KeyMangler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyMangler::Fn(_) => "KeyMangler::Fn(..)",
            KeyMangler::Closure(_) => "KeyMangler::Closure(..)",
        })
    }
}

/// The SHA-1 of a key, as 40 lowercase hex digits: a mangler that gives every key the same
/// length and alphabet.
///
/// ```
/// use dogpile_core::sha1_mangle_key;
///
/// assert_eq!(sha1_mangle_key("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
/// assert_eq!(sha1_mangle_key("a key of any length, with spaces").len(), 40);
/// ```
pub fn sha1_mangle_key(key: &str) -> String {
    let digest = Sha1::digest(key.as_bytes());
    let mut out = String::with_capacity(40);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
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
