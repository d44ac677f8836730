//! Key texts are injective: two different values of one type never write the same text (nested
//! `Option`s, `Vec`s, tuples, text with every special character, integers, floats, `bool`,
//! `char`), and neither do two argument lists of one function, joined by `write_args`, by the
//! default key generator, by a decorated function or by a `key = "…"` template. The memcached
//! mangler never returns a key another input keeps as it is.
//!
//! 256 cases per property in `cargo test`; `PROPTEST_CASES=N` for more.

use std::collections::HashMap;

use dogpile::__private::{Key, Piece, Site};
use dogpile::key::{key_text, write_args, FunctionInfo};
use dogpile::{cache_on_arguments, function_key_generator, CacheRegion, KeyArg, RegionConfig};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Values of a random type, written by the built-in implementations.

/// A type built from the built-in `KeyArg` types.
#[derive(Clone, Debug)]
enum Shape {
    Str,
    Int,
    Unsigned,
    Float,
    Float32,
    Bool,
    Char,
    Opt(Box<Shape>),
    Vec(Box<Shape>),
    Pair(Box<Shape>, Box<Shape>),
    Triple(Box<Shape>, Box<Shape>, Box<Shape>),
}

/// A value of a [`Shape`]. Its `KeyArg` hands each part to the built-in implementation of that
/// part's type (`String`, `Option<_>`, `Vec<_>`, tuples), so what is tested is those.
#[derive(Clone, Debug)]
enum Val {
    Str(String),
    Int(i64),
    Unsigned(u64),
    Float(f64),
    Float32(f32),
    Bool(bool),
    Char(char),
    Opt(Option<Box<Val>>),
    Vec(Vec<Val>),
    Pair(Box<Val>, Box<Val>),
    Triple(Box<Val>, Box<Val>, Box<Val>),
}

impl KeyArg for Val {
    fn write_key(&self, out: &mut String) {
        match self {
            Val::Str(s) => s.write_key(out),
            Val::Int(i) => i.write_key(out),
            Val::Unsigned(u) => u.write_key(out),
            Val::Float(x) => x.write_key(out),
            Val::Float32(x) => x.write_key(out),
            Val::Bool(b) => b.write_key(out),
            Val::Char(c) => c.write_key(out),
            Val::Opt(o) => o.as_deref().write_key(out),
            Val::Vec(v) => v.write_key(out),
            Val::Pair(a, b) => (&**a, &**b).write_key(out),
            Val::Triple(a, b, c) => (&**a, &**b, &**c).write_key(out),
        }
    }
}

/// Equality of values, floats by their bits (so `0.0` and `-0.0` differ, and one NaN is
/// itself).
fn same(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Str(a), Val::Str(b)) => a == b,
        (Val::Int(a), Val::Int(b)) => a == b,
        (Val::Unsigned(a), Val::Unsigned(b)) => a == b,
        (Val::Float(a), Val::Float(b)) => a.to_bits() == b.to_bits(),
        (Val::Float32(a), Val::Float32(b)) => a.to_bits() == b.to_bits(),
        (Val::Bool(a), Val::Bool(b)) => a == b,
        (Val::Char(a), Val::Char(b)) => a == b,
        (Val::Opt(None), Val::Opt(None)) => true,
        (Val::Opt(Some(a)), Val::Opt(Some(b))) => same(a, b),
        (Val::Vec(a), Val::Vec(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
        }
        (Val::Pair(a1, a2), Val::Pair(b1, b2)) => same(a1, b1) && same(a2, b2),
        (Val::Triple(a1, a2, a3), Val::Triple(b1, b2, b3)) => {
            same(a1, b1) && same(a2, b2) && same(a3, b3)
        }
        _ => false,
    }
}

/// Every character with a meaning somewhere in a key (the separators `|`, space and `:`,
/// brackets, commas, quotes, the escape `\`, memcached's `#`), a control character, non-ASCII,
/// and the letters of `None` and `Some`.
const CHARS: &[char] = &[
    '|', ' ', ':', '[', ']', '(', ')', ',', '"', '\'', '\\', '#', '{', '}', '\n', '\u{e9}', 'a',
    'N', 'o', 'n', 'e', 'S', 'm',
];

fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => proptest::sample::select(CHARS).prop_map(String::from),
        1 => proptest::sample::select(&["None", "Some(", "\"\"", "\\None", "NaN", "[]"][..])
            .prop_map(str::to_owned),
    ];
    proptest::collection::vec(piece, 0..4).prop_map(|p| p.concat())
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        proptest::sample::select(vec![
            0.0,
            -0.0,
            1.5,
            -2.0,
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7ff8_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            1e-300,
            f64::MIN_POSITIVE,
        ]),
        any::<f64>(),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    let leaf = prop_oneof![
        Just(Shape::Str),
        Just(Shape::Int),
        Just(Shape::Unsigned),
        Just(Shape::Float),
        Just(Shape::Float32),
        Just(Shape::Bool),
        Just(Shape::Char),
    ];
    leaf.prop_recursive(4, 16, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| Shape::Opt(Box::new(s))),
            inner.clone().prop_map(|s| Shape::Vec(Box::new(s))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Shape::Pair(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone(), inner).prop_map(|(a, b, c)| Shape::Triple(
                Box::new(a),
                Box::new(b),
                Box::new(c)
            )),
        ]
    })
}

/// Values of one shape, from small domains so that near neighbours (`[]` and `[""]`, `None`
/// and `Some(None)`) come up often.
fn value(shape: &Shape) -> BoxedStrategy<Val> {
    match shape {
        Shape::Str => text().prop_map(Val::Str).boxed(),
        Shape::Int => prop_oneof![-3i64..4, any::<i64>()]
            .prop_map(Val::Int)
            .boxed(),
        Shape::Unsigned => prop_oneof![0u64..4, any::<u64>()]
            .prop_map(Val::Unsigned)
            .boxed(),
        Shape::Float => float().prop_map(Val::Float).boxed(),
        Shape::Float32 => prop_oneof![
            float().prop_map(|x| x as f32),
            any::<f32>(),
            Just(f32::from_bits(0xffc0_0001)),
        ]
        .prop_map(Val::Float32)
        .boxed(),
        Shape::Bool => any::<bool>().prop_map(Val::Bool).boxed(),
        Shape::Char => proptest::sample::select(CHARS).prop_map(Val::Char).boxed(),
        Shape::Opt(s) => proptest::option::weighted(0.6, value(s))
            .prop_map(|o| Val::Opt(o.map(Box::new)))
            .boxed(),
        Shape::Vec(s) => proptest::collection::vec(value(s), 0..3)
            .prop_map(Val::Vec)
            .boxed(),
        Shape::Pair(a, b) => (value(a), value(b))
            .prop_map(|(a, b)| Val::Pair(Box::new(a), Box::new(b)))
            .boxed(),
        Shape::Triple(a, b, c) => (value(a), value(b), value(c))
            .prop_map(|(a, b, c)| Val::Triple(Box::new(a), Box::new(b), Box::new(c)))
            .boxed(),
    }
}

/// Fails when two different items of `items` have one text.
fn assert_injective<T: std::fmt::Debug>(
    items: &[T],
    text: impl Fn(&T) -> String,
    same: impl Fn(&T, &T) -> bool,
) -> Result<(), TestCaseError> {
    let mut seen: HashMap<String, &T> = HashMap::new();
    for item in items {
        let t = text(item);
        if let Some(other) = seen.get(&t) {
            prop_assert!(same(other, item), "{other:?} and {item:?} both write {t:?}");
        }
        seen.insert(t, item);
    }
    Ok(())
}

fn args_text(args: &[Val]) -> String {
    let dyns: Vec<&dyn KeyArg> = args.iter().map(|a| a as &dyn KeyArg).collect();
    let mut out = String::new();
    write_args(&mut out, &dyns);
    out
}

fn same_list(a: &[Val], b: &[Val]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
}

/// A shape per argument, and many argument lists of those shapes.
fn argument_lists() -> impl Strategy<Value = Vec<Vec<Val>>> {
    proptest::collection::vec(shape(), 1..4).prop_flat_map(|shapes| {
        let list: Vec<BoxedStrategy<Val>> = shapes.iter().map(value).collect();
        proptest::collection::vec(list, 1..48)
    })
}

proptest! {
    #[test]
    fn different_values_of_one_type_write_different_texts(
        values in shape().prop_flat_map(|s| proptest::collection::vec(value(&s), 1..48))
    ) {
        assert_injective(&values, key_text, same)?;
    }

    #[test]
    fn different_argument_lists_give_different_keys(lists in argument_lists()) {
        assert_injective(&lists, |l| args_text(l), |a, b| same_list(a, b))?;
        let info = FunctionInfo { module_path: "myapp::tools", name: "one", namespace: Some("foo") };
        assert_injective(
            &lists,
            |l| {
                let dyns: Vec<&dyn KeyArg> = l.iter().map(|a| a as &dyn KeyArg).collect();
                function_key_generator(&info, &dyns)
            },
            |a, b| same_list(a, b),
        )?;
    }

    #[test]
    fn different_argument_lists_give_different_template_keys(
        (template, lists) in template_and_lists()
    ) {
        let template: &'static [Piece] = Box::leak(template.into_boxed_slice());
        let site = Site {
            info: FunctionInfo { module_path: "m", name: "f", namespace: None },
            prefix: "m:f|",
            generator: None,
            template: Some(template),
            instance: None,
        };
        let region = CacheRegion::new();
        assert_injective(
            &lists,
            |l| {
                let dyns: Vec<&dyn KeyArg> = l.iter().map(|a| a as &dyn KeyArg).collect();
                Key::build(
                    &region,
                    &site,
                    &dyns,
                    |_| unreachable!("a template key"),
                    |_| unreachable!("a template key"),
                )
                .as_str()
                .to_owned()
            },
            |a, b| same_list(a, b),
        )?;
    }
}

/// A template naming every argument once, in order, with random literals (or none) around
/// them, and argument lists for it.
fn template_and_lists() -> impl Strategy<Value = (Vec<Piece>, Vec<Vec<Val>>)> {
    let literal = proptest::option::of(
        proptest::collection::vec(proptest::sample::select(CHARS), 1..3)
            .prop_map(|c| &*Box::leak(String::from_iter(c).into_boxed_str())),
    );
    let shapes = proptest::collection::vec(shape(), 1..4);
    shapes.prop_flat_map(move |shapes| {
        let literals = proptest::collection::vec(literal.clone(), shapes.len() + 1);
        let list: Vec<BoxedStrategy<Val>> = shapes.iter().map(value).collect();
        let lists = proptest::collection::vec(list, 1..48);
        (literals, lists).prop_map(|(literals, lists)| {
            let mut pieces = Vec::new();
            for (i, lit) in literals.iter().enumerate() {
                if let Some(s) = lit {
                    pieces.push(Piece::Lit(s));
                }
                if i + 1 < literals.len() {
                    pieces.push(Piece::Arg(i));
                }
            }
            (pieces, lists)
        })
    })
}

// ---------------------------------------------------------------------------------------------
// The pairs that met on main, through decorated functions.

static REGION: CacheRegion = CacheRegion::new();

fn configured() -> &'static CacheRegion {
    let _ = REGION.configure(RegionConfig::new("dogpile.cache.memory"));
    &REGION
}

#[cache_on_arguments(region = REGION)]
fn describe(names: Vec<String>, limit: Option<Option<i32>>) -> String {
    format!("{names:?} {limit:?}")
}

#[cache_on_arguments(region = REGION, key = "pair:{a}:{b}")]
fn pair(a: &str, b: &str) -> String {
    format!("{a}/{b}")
}

#[cache_on_arguments(region = REGION, key = "{a}{b}")]
fn glued(a: u32, b: u32) -> String {
    format!("{a}/{b}")
}

#[test]
fn calls_that_shared_a_key_get_their_own_values() {
    configured();
    assert_eq!(describe(vec![], None), "[] None");
    assert_eq!(
        describe(vec![String::new()], Some(None)),
        "[\"\"] Some(None)"
    );
    assert_eq!(describe(vec![], Some(None)), "[] Some(None)");
    assert_eq!(describe(vec![String::new()], None), "[\"\"] None");

    assert_eq!(pair("a:b", "c"), "a:b/c");
    assert_eq!(pair("a", "b:c"), "a/b:c");

    assert_eq!(glued(1, 23), "1/23");
    assert_eq!(glued(12, 3), "12/3");
}

#[test]
fn default_and_template_keys_stay_readable() {
    let region = configured();
    assert_eq!(pair("en", "7"), "en/7");
    assert!(region.get::<String>("pair:en:7").unwrap().is_some());
    assert_eq!(
        describe(vec!["ann".into()], Some(Some(3))),
        "[\"ann\"] Some(Some(3))"
    );
    let key = concat!(module_path!(), ":describe|[ann] 3");
    assert!(region.get::<String>(key).unwrap().is_some());
    // The seed's `myapp::tools:one|foo|3 4` is pinned in dogpile-core's key tests.
}

// ---------------------------------------------------------------------------------------------
// The memcached mangler.

#[cfg(feature = "memcached")]
mod memcached {
    use dogpile::backend::memcached::{is_valid_key, memcached_key_mangler};
    use proptest::prelude::*;

    /// Keys near the mangler's edges: the marker `#`, 40 hex digits, spaces, controls,
    /// non-ASCII, and lengths around 250.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-f0-9#: ]{0,50}",
            "\\PC{0,20}",
            "[a-z]{0,4}#[0-9a-f]{40}",
            (240usize..260).prop_map(|n| "k".repeat(n)),
            (200usize..215, "[ #]").prop_map(|(n, c)| format!("{}{c}", "k".repeat(n))),
        ]
    }

    proptest! {
        #[test]
        fn a_mangled_key_is_never_a_key_kept_as_it_is(a in key(), b in key()) {
            let (ma, mb) = (memcached_key_mangler(&a), memcached_key_mangler(&b));
            prop_assert!(is_valid_key(&ma), "{a:?} -> {ma:?}");
            // A key kept as it is can never be the mangled form of another.
            if ma == a && mb != b {
                prop_assert_ne!(&ma, &mb, "{:?} is kept and is the mangled form of {:?}", a, b);
            }
            if a != b {
                prop_assert_ne!(ma, mb, "{:?} and {:?}", a, b);
            }
        }

        #[test]
        fn the_mangled_form_of_any_key_is_hashed_again(a in key()) {
            // The mangled form of `a`, given as a key, must not be kept: else it would read
            // and overwrite `a`'s value.
            let ma = memcached_key_mangler(&a);
            if ma != a {
                prop_assert_ne!(memcached_key_mangler(&ma), ma.clone(), "{:?} -> {:?}", a, ma);
            }
        }
    }

    #[test]
    fn keys_with_the_marker_are_hashed() {
        let victim = "user 7";
        let forged = memcached_key_mangler(victim);
        assert!(forged.contains('#'));
        assert_ne!(memcached_key_mangler(&forged), forged);
        assert_ne!(memcached_key_mangler("a#b"), "a#b");
        assert_eq!(memcached_key_mangler("user:7"), "user:7");
    }
}
