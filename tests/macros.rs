//! `#[cache_on_arguments]` and `#[cache_multi_on_arguments]`: keys, companions, methods, return
//! types, backend failures, async, batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use dogpile::clock::{Clock, ManualClock};
use dogpile::key::FunctionInfo;
use dogpile::testing::MapBackend;
use dogpile::{cache_multi_on_arguments, cache_on_arguments, CacheRegion, KeyArg, RegionConfig};

/// Configures `region` with a fresh shared map and returns the map.
fn setup(region: &CacheRegion) -> Arc<MapBackend> {
    let map = Arc::new(MapBackend::default());
    region
        .configure(RegionConfig::with_backend(map.clone()).replace_existing_backend(true))
        .expect("configuring a test region");
    map
}

fn count(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

// ------------------------------------------------------------------------------------------------
// keys

mod myapp {
    pub mod tools {
        use dogpile::{cache_on_arguments, CacheRegion};
        use std::sync::atomic::{AtomicUsize, Ordering};

        pub static REGION: CacheRegion = CacheRegion::new();
        pub static CALLS: AtomicUsize = AtomicUsize::new(0);

        #[cache_on_arguments(region = REGION, namespace = "foo")]
        pub fn one(a: i32, b: i32) -> i32 {
            CALLS.fetch_add(1, Ordering::SeqCst);
            a + b
        }

        #[cache_on_arguments(region = REGION)]
        pub fn two(a: i32, b: i32) -> i32 {
            a * b
        }

        #[cache_on_arguments(region = REGION)]
        pub fn join(a: String, b: &str) -> String {
            CALLS.fetch_add(1, Ordering::SeqCst);
            format!("{a}+{b}")
        }
    }
}

#[test]
fn default_key_is_module_name_namespace_and_arguments() {
    let map = setup(&myapp::tools::REGION);
    assert_eq!(myapp::tools::one(3, 4), 7);
    assert_eq!(myapp::tools::two(3, 4), 12);
    // An owned `String` and a borrowed `str` write the same text.
    assert_eq!(myapp::tools::join("x".to_string(), "y"), "x+y");
    assert_eq!(
        map.keys(),
        vec![
            "macros::myapp::tools:join|x y".to_string(),
            "macros::myapp::tools:one|foo|3 4".to_string(),
            "macros::myapp::tools:two|3 4".to_string(),
        ]
    );
    // A hit does not run the body.
    let before = count(&myapp::tools::CALLS);
    assert_eq!(myapp::tools::one(3, 4), 7);
    assert_eq!(count(&myapp::tools::CALLS), before);
}

#[test]
fn separators_in_arguments_never_make_two_calls_share_a_key() {
    static REGION: CacheRegion = CacheRegion::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION)]
    fn pair(a: &str, b: &str) -> String {
        CALLS.fetch_add(1, Ordering::SeqCst);
        format!("{a}/{b}")
    }

    let map = setup(&REGION);
    assert_eq!(pair("a b", "c"), "a b/c");
    assert_eq!(pair("a", "b c"), "a/b c");
    assert_eq!(pair("a|b", "c"), "a|b/c");
    assert_eq!(pair("a", "b|c"), "a/b|c");
    assert_eq!(count(&CALLS), 4);
    assert_eq!(map.keys().len(), 4);
    assert!(map.keys().contains(&"macros:pair|a\\ b c".to_string()));
    // Each is a hit now.
    assert_eq!(pair("a b", "c"), "a b/c");
    assert_eq!(pair("a", "b c"), "a/b c");
    assert_eq!(count(&CALLS), 4);
}

#[test]
fn key_text_of_common_argument_types() {
    static REGION: CacheRegion = CacheRegion::new();

    #[cache_on_arguments(region = REGION, namespace = "ns")]
    fn many(a: Option<u8>, b: Option<u8>, c: &[u32], d: (bool, char), e: f64) -> u8 {
        a.unwrap_or(0) + b.unwrap_or(0) + c.len() as u8 + u8::from(d.0) + e as u8
    }

    let map = setup(&REGION);
    assert_eq!(many(Some(1), None, &[1, 2], (true, 'x'), 1.5), 5);
    assert_eq!(
        map.keys(),
        vec!["macros:many|ns|1 None [1,2] (true,x) 1.5".to_string()]
    );
}

#[test]
fn key_template_and_ignored_arguments() {
    static REGION: CacheRegion = CacheRegion::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    struct Connection;

    #[cache_on_arguments(region = REGION, key = "user:{id}:{lang}", ignore = [conn])]
    fn greeting(conn: &Connection, id: u64, lang: &str) -> String {
        let _ = conn;
        CALLS.fetch_add(1, Ordering::SeqCst);
        format!("{lang}-{id}")
    }

    #[cache_on_arguments(region = REGION, key = "{{literal}}:{b}:{a}")]
    fn swapped(a: u8, b: u8) -> u8 {
        a - b
    }

    let map = setup(&REGION);
    assert_eq!(greeting(&Connection, 7, "en"), "en-7");
    assert_eq!(greeting(&Connection, 7, "en"), "en-7");
    assert_eq!(count(&CALLS), 1);
    assert_eq!(swapped(5, 2), 3);
    assert_eq!(
        map.keys(),
        vec!["user:7:en".to_string(), "{literal}:2:5".to_string()]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    // The companions take the key arguments only.
    assert_eq!(greeting_get(7, "en").as_deref(), Some("en-7"));
    greeting_invalidate(7, "en");
    assert_eq!(greeting_get(7, "en"), None);
}

fn custom_key(info: &FunctionInfo, args: &[&dyn KeyArg]) -> String {
    let mut out = format!("custom/{}", info.name);
    for a in args {
        out.push('/');
        a.write_key(&mut out);
    }
    out
}

#[test]
fn function_key_generator_on_the_attribute_and_on_the_region() {
    static REGION: CacheRegion = CacheRegion::new();
    static MADE: LazyLock<CacheRegion> = LazyLock::new(|| {
        dogpile::make_region()
            .function_key_generator(custom_key)
            .build()
    });

    #[cache_on_arguments(region = REGION, function_key_generator = custom_key)]
    fn by_attribute(a: u8, b: &str) -> String {
        format!("{a}{b}")
    }

    #[cache_on_arguments(region = MADE, namespace = "ignored by the generator")]
    fn by_region(a: u8) -> u8 {
        a
    }

    let map = setup(&REGION);
    assert_eq!(by_attribute(1, "x"), "1x");
    assert_eq!(map.keys(), vec!["custom/by_attribute/1/x".to_string()]);
    let map = setup(&MADE);
    assert_eq!(by_region(9), 9);
    assert_eq!(map.keys(), vec!["custom/by_region/9".to_string()]);
}

// ------------------------------------------------------------------------------------------------
// companions, methods, generics

#[test]
fn companions_get_set_invalidate_refresh_uncached() {
    static REGION: CacheRegion = CacheRegion::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION)]
    fn square(x: u64) -> u64 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        x * x
    }

    setup(&REGION);
    assert_eq!(square_get(3), None, "get never calls the body");
    assert_eq!(count(&CALLS), 0);
    square_set(100, 3);
    assert_eq!(square_get(3), Some(100));
    assert_eq!(square(3), 100, "a set value is a hit");
    assert_eq!(count(&CALLS), 0);
    assert_eq!(square_refresh(3), 9, "refresh always calls the body");
    assert_eq!(count(&CALLS), 1);
    assert_eq!(square(3), 9);
    assert_eq!(count(&CALLS), 1);
    square_invalidate(3);
    assert_eq!(square_get(3), None);
    assert_eq!(square(3), 9);
    assert_eq!(count(&CALLS), 2);
    assert_eq!(square_uncached(3), 9);
    assert_eq!(count(&CALLS), 3);
    square_set(1, 3);
    assert_eq!(square_uncached(3), 9, "uncached neither reads…");
    assert_eq!(square_get(3), Some(1), "…nor stores");
}

static METHODS: CacheRegion = CacheRegion::new();

struct Repo {
    calls: AtomicUsize,
    prefix: String,
}

impl Repo {
    #[cache_on_arguments(region = METHODS, namespace = "Repo")]
    fn name(&self, id: u32) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        format!("{}{id}", self.prefix)
    }

    #[cache_on_arguments(region = METHODS, namespace = "Repo")]
    fn associated(id: u32) -> u32 {
        id + 1
    }

    #[cache_on_arguments(region = METHODS, namespace = "Repo")]
    fn consume(mut self, (a, b): (u32, u32)) -> u32 {
        self.prefix.push('!');
        a + b + self.prefix.len() as u32
    }
}

/// A trait whose implementation is cached: `#[cache_impl]` puts the companions in an inherent
/// block of `Repo`.
trait Names {
    fn display_name(&self, id: u32) -> String;
}

static TRAITS: CacheRegion = CacheRegion::new();

#[dogpile::cache_impl]
impl Names for Repo {
    #[cache_on_arguments(region = TRAITS, namespace = "Names")]
    fn display_name(&self, id: u32) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        format!("{}#{id}", self.prefix)
    }
}

#[test]
fn trait_methods_are_cached_through_the_trait_and_dyn() {
    let map = setup(&TRAITS);
    let repo = Repo {
        calls: AtomicUsize::new(0),
        prefix: "r".into(),
    };
    let names: &dyn Names = &repo;
    assert_eq!(names.display_name(1), "r#1");
    assert_eq!(names.display_name(1), "r#1");
    assert_eq!(repo.display_name(1), "r#1");
    assert_eq!(count(&repo.calls), 1, "one body call for three calls");
    assert_eq!(map.keys(), vec!["macros:display_name|Names|1".to_string()]);
    assert_eq!(repo.display_name_get(1).as_deref(), Some("r#1"));
    repo.display_name_set("set".into(), 2);
    assert_eq!(names.display_name(2), "set");
    repo.display_name_invalidate(2);
    assert_eq!(names.display_name(2), "r#2");
    assert_eq!(repo.display_name_uncached(3), "r#3");
    assert_eq!(repo.display_name_get(3), None);
    assert_eq!(count(&repo.calls), 3);
}

/// Two types implementing one trait in one module, with no `namespace`: `#[cache_impl]` gives
/// each block its type's name as the namespace, so their keys differ.
trait Sound {
    fn sound(&self, n: u8) -> String;
}

struct Cat;
struct Dog;

static SOUNDS: CacheRegion = CacheRegion::new();

#[dogpile::cache_impl]
impl Sound for Cat {
    #[cache_on_arguments(region = SOUNDS)]
    fn sound(&self, n: u8) -> String {
        "meow".repeat(n.into())
    }
}

#[dogpile::cache_impl]
impl Sound for Dog {
    #[cache_on_arguments(region = SOUNDS)]
    fn sound(&self, n: u8) -> String {
        "woof".repeat(n.into())
    }
}

#[test]
fn impls_of_one_trait_do_not_share_keys() {
    let map = setup(&SOUNDS);
    let animals: [&dyn Sound; 2] = [&Cat, &Dog];
    assert_eq!(animals[0].sound(1), "meow");
    assert_eq!(animals[1].sound(1), "woof");
    assert_eq!(Cat.sound_get(1).as_deref(), Some("meow"));
    let mut keys = map.keys();
    keys.sort();
    assert_eq!(
        keys,
        [
            "macros:sound|<Cat as Sound>|1",
            "macros:sound|<Dog as Sound>|1"
        ]
    );
}

/// One type implementing two traits whose methods have one name and one argument, and one
/// generic trait twice: the default namespace names the trait too, so each impl has its keys.
trait Render {
    fn render(&self, w: u32) -> String;
}

trait Html {
    fn render(&self, w: u32) -> String;
}

trait Label<T> {
    fn label(&self, id: u32) -> String;
}

struct Page;

static PAGES: CacheRegion = CacheRegion::new();

// `no_companions`: both blocks would put a `render_get` in the one inherent block of `Page`.
#[dogpile::cache_impl(no_companions)]
impl Render for Page {
    #[cache_on_arguments(region = PAGES)]
    fn render(&self, w: u32) -> String {
        format!("text {w}")
    }
}

#[dogpile::cache_impl(no_companions)]
impl Html for Page {
    #[cache_on_arguments(region = PAGES)]
    fn render(&self, w: u32) -> String {
        format!("<p>{w}</p>")
    }
}

#[dogpile::cache_impl(no_companions)]
impl Label<u8> for Page {
    #[cache_on_arguments(region = PAGES)]
    fn label(&self, id: u32) -> String {
        format!("u8 {id}")
    }
}

#[dogpile::cache_impl(no_companions)]
impl Label<u16> for Page {
    #[cache_on_arguments(region = PAGES)]
    fn label(&self, id: u32) -> String {
        format!("u16 {id}")
    }
}

#[test]
fn impls_of_two_traits_on_one_type_do_not_share_keys() {
    let map = setup(&PAGES);
    assert_eq!(Render::render(&Page, 7), "text 7");
    // With the type alone as the namespace, this call found the value of `Render::render`.
    assert_eq!(Html::render(&Page, 7), "<p>7</p>");
    assert_eq!(Label::<u8>::label(&Page, 7), "u8 7");
    assert_eq!(Label::<u16>::label(&Page, 7), "u16 7");
    assert_eq!(
        map.keys(),
        [
            "macros:label|<Page as Label<u16>>|7",
            "macros:label|<Page as Label<u8>>|7",
            "macros:render|<Page as Html>|7",
            "macros:render|<Page as Render>|7",
        ]
    );
}

#[test]
fn methods_leave_self_out_of_the_key() {
    let map = setup(&METHODS);
    let one = Repo {
        calls: AtomicUsize::new(0),
        prefix: "one-".into(),
    };
    let two = Repo {
        calls: AtomicUsize::new(0),
        prefix: "two-".into(),
    };
    assert_eq!(one.name(5), "one-5");
    // Same key for another instance: self is not part of it, as in dogpile.
    assert_eq!(two.name(5), "one-5");
    assert_eq!(count(&two.calls), 0);
    assert_eq!(map.keys(), vec!["macros:name|Repo|5".to_string()]);
    assert_eq!(two.name_get(5).as_deref(), Some("one-5"));
    two.name_set("set".into(), 6);
    assert_eq!(one.name(6), "set");
    assert_eq!(two.name_refresh(5), "two-5");
    assert_eq!(one.name(5), "two-5");
    one.name_invalidate(5);
    assert_eq!(one.name(5), "one-5");
    assert_eq!(count(&one.calls), 2);
    assert_eq!(one.name_uncached(7), "one-7");
    assert_eq!(count(&one.calls), 3);
    assert_eq!(one.name_get(7), None);

    assert_eq!(Repo::associated(1), 2);
    assert_eq!(Repo::associated_get(1), Some(2));
    let three = Repo {
        calls: AtomicUsize::new(0),
        prefix: "abc".into(),
    };
    assert_eq!(three.consume((1, 2)), 7);
    assert!(map
        .keys()
        .contains(&"macros:consume|Repo|(1,2)".to_string()));
}

#[test]
fn generic_functions_with_key_arguments() {
    static REGION: CacheRegion = CacheRegion::new();

    #[cache_on_arguments(region = REGION)]
    fn describe<T: KeyArg + std::fmt::Debug>(value: T) -> String {
        format!("{value:?}")
    }

    #[cache_on_arguments(region = REGION)]
    fn width<const N: usize>(value: impl KeyArg + std::fmt::Display) -> String {
        format!("{value:>N$}")
    }

    let map = setup(&REGION);
    assert_eq!(describe(5u8), "5");
    assert_eq!(describe("x"), "\"x\"");
    assert_eq!(describe_get::<&str>("x").as_deref(), Some("\"x\""));
    // The same key text from another type is another key: each instance has its own values.
    assert_eq!(describe("5"), "\"5\"");
    assert_eq!(describe(Some(5u8)), "Some(5)");
    assert_eq!(describe_get::<u8>(5).as_deref(), Some("5"));
    assert_eq!(width::<3>(7u8), "  7");
    assert_eq!(width::<2>(7u8), " 7");
    assert_eq!(width::<2>("7"), " 7");
    assert_eq!(
        map.keys(),
        vec![
            "macros:describe|5|&str".to_string(),
            "macros:describe|5|core::option::Option<u8>".to_string(),
            "macros:describe|5|u8".to_string(),
            "macros:describe|x|&str".to_string(),
            "macros:width|7|&str,2".to_string(),
            "macros:width|7|u8,2".to_string(),
            "macros:width|7|u8,3".to_string(),
        ]
    );
}

/// A key generator is given the arguments, not their types: a generic function's generated
/// keys end with what tells its instances apart, as its default keys do (with the library's own
/// generators on the region, `shown(5u8)` and `shown("5")` shared `shown|5`, and the second
/// call got the first's value).
#[test]
fn a_generic_function_with_a_key_generator_keeps_its_instances_apart() {
    static REGION: LazyLock<CacheRegion> = LazyLock::new(|| {
        dogpile::make_region()
            .function_key_generator(dogpile::function_key_generator)
            .function_multi_key_generator(dogpile::function_multi_key_generator)
            .build()
    });

    #[cache_on_arguments(region = REGION)]
    fn shown<T: KeyArg + std::fmt::Debug>(value: T) -> String {
        format!("{value:?}")
    }

    #[cache_multi_on_arguments(region = REGION)]
    fn listed<T: KeyArg + std::fmt::Debug + Clone>(ids: &[T]) -> Vec<String> {
        ids.iter().map(|i| format!("{i:?}")).collect()
    }

    #[cache_on_arguments(region = REGION)]
    fn padded<const N: usize>(value: impl KeyArg + std::fmt::Debug) -> String {
        format!("{value:?}{}", N)
    }

    let map = setup(&REGION);
    // An `impl Trait` argument's type, then the const parameter: the default key's order.
    assert_eq!(padded::<1>(5u8), "51");
    assert_eq!(padded::<1>("5"), "\"5\"1");
    assert!(
        map.keys().contains(&"macros:padded|5|&str,1".to_string()),
        "{:?}",
        map.keys()
    );
    assert_eq!(shown(5u8), "5");
    assert_eq!(shown("5"), "\"5\"");
    assert_eq!(listed(&[6u8]), vec!["6"]);
    assert_eq!(listed(&["6"]), vec!["\"6\""]);
    let keys = map.keys();
    assert_eq!(keys.len(), 6, "{keys:?}");
    assert!(keys.contains(&"macros:shown|5|u8".to_string()), "{keys:?}");
    assert!(
        keys.contains(&"macros:listed|6|&str".to_string()),
        "{keys:?}"
    );
}

#[test]
fn a_body_may_call_decorated_functions_reentrantly() {
    static REGION: CacheRegion = CacheRegion::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION)]
    fn fib(n: u64) -> u64 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        if n < 2 {
            n
        } else {
            fib(n - 1) + fib(n - 2)
        }
    }

    setup(&REGION);
    assert_eq!(fib(40), 102_334_155);
    assert_eq!(count(&CALLS), 41, "each n computed once");
}

// ------------------------------------------------------------------------------------------------
// return types and options

#[derive(Debug, PartialEq)]
struct NotFound;

#[test]
fn result_caches_only_ok() {
    static REGION: CacheRegion = CacheRegion::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION)]
    fn lookup(id: u32) -> Result<String, NotFound> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        if id == 0 {
            return Err(NotFound);
        }
        let n: u32 = format!("{id}").parse().map_err(|_| NotFound)?;
        Ok(format!("#{n}"))
    }

    setup(&REGION);
    assert_eq!(lookup(0), Err(NotFound));
    assert_eq!(lookup(0), Err(NotFound));
    assert_eq!(count(&CALLS), 2, "an Err is not cached");
    assert_eq!(lookup_get(0), None);
    assert_eq!(lookup(1), Ok("#1".to_string()));
    assert_eq!(lookup(1), Ok("#1".to_string()));
    assert_eq!(count(&CALLS), 3, "an Ok is");
    assert_eq!(lookup_get(1).as_deref(), Some("#1"));
    lookup_set("set".into(), 2);
    assert_eq!(lookup(2), Ok("set".to_string()));
    assert_eq!(lookup_refresh(0), Err(NotFound));
}

#[test]
fn option_caches_none_unless_should_cache_fn_refuses() {
    static REGION: CacheRegion = CacheRegion::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn is_some(v: &Option<String>) -> bool {
        v.is_some()
    }

    #[cache_on_arguments(region = REGION)]
    fn maybe(id: u32) -> Option<String> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        (id > 0).then(|| id.to_string())
    }

    #[cache_on_arguments(region = REGION, should_cache_fn = is_some)]
    fn maybe_refused(id: u32) -> Option<String> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        (id > 0).then(|| id.to_string())
    }

    setup(&REGION);
    assert_eq!(maybe(0), None);
    assert_eq!(maybe(0), None);
    assert_eq!(count(&CALLS), 1, "a None is cached like any value");
    assert_eq!(maybe_get(0), Some(None));
    assert_eq!(maybe_refused(0), None);
    assert_eq!(maybe_refused(0), None);
    assert_eq!(count(&CALLS), 3, "should_cache_fn refused None");
    assert_eq!(maybe_refused(1).as_deref(), Some("1"));
    assert_eq!(maybe_refused(1).as_deref(), Some("1"));
    assert_eq!(count(&CALLS), 4);
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

#[test]
fn expiration_time_in_seconds_duration_never_and_per_call() {
    static REGION: CacheRegion = CacheRegion::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION, expiration_time = 10)]
    fn ten(x: u8) -> u8 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        x
    }

    #[cache_on_arguments(region = REGION, expiration = Duration::from_millis(20_500))]
    fn twenty(x: u8) -> u8 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        x
    }

    #[cache_on_arguments(region = REGION, expiration_time = thirty_seconds)]
    fn thirty(x: u8) -> u8 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        x
    }

    #[cache_on_arguments(region = REGION, expiration_time = -1)]
    fn never(x: u8) -> u8 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        x
    }

    let (clock, manual): (Clock, Arc<ManualClock>) = Clock::manual(SystemTime::UNIX_EPOCH);
    REGION
        .configure(
            RegionConfig::with_backend(MapBackend::default())
                .expiration_time(5)
                .clock(clock),
        )
        .unwrap();
    for f in [ten, twenty, thirty, never] {
        f(1);
        f(1);
    }
    assert_eq!(count(&CALLS), 4);
    assert_eq!(ten_get(1), Some(1));
    manual.advance(Duration::from_secs(11));
    assert_eq!(ten_get(1), None, "`_get` honours the function's expiration");
    assert_eq!(never_get(1), Some(1));
    for f in [ten, twenty, thirty, never] {
        f(1);
    }
    assert_eq!(count(&CALLS), 5, "only `ten` expired after 11 s");
    manual.advance(Duration::from_secs(10));
    for f in [twenty, thirty, never] {
        f(1);
    }
    assert_eq!(count(&CALLS), 6, "`twenty` expired after 21 s");
    manual.advance(Duration::from_secs(10));
    for f in [thirty, never] {
        f(1);
    }
    assert_eq!(count(&CALLS), 7, "`thirty` expired after 31 s");
    manual.advance(Duration::from_secs(1_000_000));
    never(1);
    assert_eq!(count(&CALLS), 7, "`never` never expires");
}

// ------------------------------------------------------------------------------------------------
// failures

#[test]
fn a_failing_backend_falls_back_to_the_body() {
    static REGION: CacheRegion = CacheRegion::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[cache_on_arguments(region = REGION)]
    fn value(x: u32) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        x + 1
    }

    #[cache_on_arguments(region = REGION)]
    fn fallible(x: u32) -> Result<u32, String> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        if x == 0 {
            Err("zero".into())
        } else {
            Ok(x)
        }
    }

    let map = setup(&REGION);
    map.set_failing(true);
    assert_eq!(value(1), 2);
    assert_eq!(value(1), 2);
    assert_eq!(count(&CALLS), 2, "nothing cached, the body runs each time");
    assert_eq!(fallible(1), Ok(1));
    assert_eq!(fallible(0), Err("zero".into()));
    assert_eq!(value_get(1), None);
    value_set(5, 1);
    value_invalidate(1);
    assert_eq!(value_refresh(1), 2);
    // The backend comes back: caching resumes by itself.
    map.set_failing(false);
    let before = count(&CALLS);
    assert_eq!(value(1), 2);
    assert_eq!(value(1), 2);
    assert_eq!(count(&CALLS), before + 1);
}

#[test]
fn an_unconfigured_region_falls_back_to_the_body() {
    static NEVER_CONFIGURED: CacheRegion = CacheRegion::new();

    #[cache_on_arguments(region = NEVER_CONFIGURED)]
    fn plain(x: u32) -> u32 {
        x * 2
    }

    #[cache_multi_on_arguments(region = NEVER_CONFIGURED)]
    fn batch(ids: &[u32]) -> Vec<u32> {
        ids.iter().map(|i| i * 3).collect()
    }

    assert_eq!(plain(2), 4);
    assert_eq!(plain_get(2), None);
    assert_eq!(batch(&[1, 2]), vec![3, 6]);
    assert_eq!(batch_get(&[1, 2]), vec![None, None]);
}

// ------------------------------------------------------------------------------------------------
// async

static ASYNC: CacheRegion = CacheRegion::new();
static ASYNC_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cache_on_arguments(region = ASYNC)]
async fn slow_value(id: u64) -> String {
    ASYNC_CALLS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    format!("value {id}")
}

#[cache_on_arguments(region = ASYNC)]
async fn async_result(id: u64) -> Result<u64, String> {
    let parsed: u64 = id.to_string().parse().map_err(|_| "bad".to_string())?;
    if parsed == 0 {
        return Err("zero".into());
    }
    Ok(parsed)
}

struct AsyncService {
    base: u64,
}

impl AsyncService {
    #[cache_on_arguments(region = ASYNC, namespace = "svc")]
    async fn add(&self, x: u64) -> u64 {
        tokio::task::yield_now().await;
        self.base + x
    }
}

#[test]
fn async_fn_one_creation_for_32_tasks_on_a_cold_key() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let map = setup(&ASYNC);
    runtime.block_on(async {
        let tasks: Vec<_> = (0..32)
            .map(|_| tokio::spawn(async { slow_value(1).await }))
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "value 1");
        }
        assert_eq!(count(&ASYNC_CALLS), 1);
        assert_eq!(slow_value_get(1).await.as_deref(), Some("value 1"));
        slow_value_set("other".into(), 2).await;
        assert_eq!(slow_value(2).await, "other");
        slow_value_invalidate(2).await;
        assert_eq!(slow_value_get(2).await, None);
        assert_eq!(slow_value_refresh(2).await, "value 2");
        assert_eq!(slow_value_uncached(3).await, "value 3");
        assert_eq!(slow_value_get(3).await, None);

        assert_eq!(async_result(0).await, Err("zero".into()));
        assert_eq!(async_result_get(0).await, None);
        assert_eq!(async_result(4).await, Ok(4));
        assert_eq!(async_result_get(4).await, Some(4));

        let svc = AsyncService { base: 10 };
        assert_eq!(svc.add(1).await, 11);
        let other = AsyncService { base: 20 };
        assert_eq!(other.add(1).await, 11);
        assert_eq!(other.add_refresh(1).await, 21);
        assert_eq!(svc.add_get(1).await, Some(21));
    });
    assert!(map.keys().contains(&"macros:add|svc|1".to_string()));
}

#[test]
fn async_fn_falls_back_when_the_backend_fails() {
    static REGION: CacheRegion = CacheRegion::new();

    #[cache_on_arguments(region = REGION)]
    async fn doubled(x: u32) -> u32 {
        x * 2
    }

    let map = setup(&REGION);
    map.set_failing(true);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(doubled(4).await, 8);
        assert_eq!(doubled_get(4).await, None);
    });
}

// ------------------------------------------------------------------------------------------------
// batches

static MULTI: CacheRegion = CacheRegion::new();

#[test]
fn multi_calls_the_body_once_with_the_missing_ids_in_caller_order() {
    static SEEN: parking_lot::Mutex<Vec<Vec<u32>>> = parking_lot::Mutex::new(Vec::new());

    #[cache_multi_on_arguments(region = MULTI, namespace = "m")]
    fn names(ids: &[u32]) -> Vec<String> {
        SEEN.lock().push(ids.to_vec());
        ids.iter().map(|i| format!("n{i}")).collect()
    }

    let map = setup(&MULTI);
    assert_eq!(names(&[]), Vec::<String>::new());
    assert!(
        SEEN.lock().is_empty(),
        "an empty batch never calls the body"
    );
    assert_eq!(names(&[2, 4]), vec!["n2", "n4"]);
    assert_eq!(
        names(&[5, 4, 3, 2, 1, 4]),
        vec!["n5", "n4", "n3", "n2", "n1", "n4"]
    );
    {
        let seen = SEEN.lock();
        assert_eq!(seen.len(), 2, "one body call per batch");
        assert_eq!(seen[0], vec![2, 4]);
        let mut second = seen[1].clone();
        second.sort();
        assert_eq!(second, vec![1, 3, 5], "only the missing ids");
    }
    assert!(map.keys().contains(&"macros:names|m|4".to_string()));
    assert_eq!(names(&[1, 2, 3]), vec!["n1", "n2", "n3"]);
    assert_eq!(SEEN.lock().len(), 2, "all hits");

    assert_eq!(names_get(&[1, 9]), vec![Some("n1".to_string()), None]);
    names_set([(9, "nine".to_string())]);
    names_set(HashMap::from([(8, "eight".to_string())]));
    assert_eq!(names(&[9, 8]), vec!["nine", "eight"]);
    names_invalidate(&[9]);
    assert_eq!(names_get(&[9, 8]), vec![None, Some("eight".to_string())]);
    assert_eq!(names_refresh(&[8]), vec!["n8"]);
    assert_eq!(names(&[8]), vec!["n8"]);
    assert_eq!(names_uncached(&[1]), vec!["n1"]);
}

/// A generic batch function is one function per instance: the same id text from another type
/// is another key.
#[test]
fn a_generic_batch_function_keeps_its_instances_apart() {
    static REGION: CacheRegion = CacheRegion::new();

    #[cache_multi_on_arguments(region = REGION)]
    fn shown<T: KeyArg + std::fmt::Debug + Clone>(ids: &[T]) -> Vec<String> {
        ids.iter().map(|i| format!("{i:?}")).collect()
    }

    let map = setup(&REGION);
    assert_eq!(shown(&[5u8, 6]), vec!["5", "6"]);
    assert_eq!(shown(&["5"]), vec!["\"5\""]);
    assert_eq!(shown_get(&[6u8]), vec![Some("6".to_string())]);
    assert_eq!(shown_get(&["6"]), vec![None]);
    assert_eq!(
        map.keys(),
        vec![
            "macros:shown|5|&str".to_string(),
            "macros:shown|5|u8".to_string(),
            "macros:shown|6|u8".to_string(),
        ]
    );
}

/// A batch body that returns another number of values than the ids it was given: given every
/// id, its answer is returned as is; given only the uncached ones, the call panics rather than
/// hand back values at the wrong ids (it returned `["v2"]` for `[1, 2, 3]`, `v1` cached).
#[test]
fn a_batch_body_with_a_wrong_count_never_pairs_values_with_the_wrong_ids() {
    static REGION: CacheRegion = CacheRegion::new();

    #[cache_multi_on_arguments(region = REGION)]
    fn first_only(ids: &[u32]) -> Vec<String> {
        vec![format!("v{}", ids[0])]
    }

    setup(&REGION);
    assert_eq!(first_only(&[1]), vec!["v1"]);
    // Every id missing: what the function itself returns, nothing cached.
    assert_eq!(first_only(&[7, 8]), vec!["v7"]);
    assert_eq!(first_only_get(&[7, 8]), vec![None, None]);
    // `1` cached, `2` and `3` missing.
    let got = std::panic::catch_unwind(|| first_only(&[1, 2, 3]));
    let message = *got
        .expect_err("no values at the wrong ids")
        .downcast::<String>()
        .unwrap();
    assert!(
        message.contains(
            "`first_only` returned 1 values for the 2 ids it was given (the 1 others were cached)"
        ),
        "{message}"
    );
    // The lock was released: the next call runs.
    assert_eq!(first_only(&[2]), vec!["v2"]);
}

#[test]
fn multi_asdict_leaves_out_what_the_body_left_out() {
    static REGION: CacheRegion = CacheRegion::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    struct Db;

    #[cache_multi_on_arguments(region = REGION, asdict = true, ignore = [db])]
    fn users(db: &Db, ids: &[String]) -> HashMap<String, u32> {
        let _ = db;
        CALLS.fetch_add(1, Ordering::SeqCst);
        ids.iter()
            .filter(|id| !id.starts_with('x'))
            .map(|id| (id.clone(), id.len() as u32))
            .collect()
    }

    setup(&REGION);
    let ids = ["ab".to_string(), "xyz".to_string(), "c".to_string()];
    let got = users(&Db, &ids);
    assert_eq!(got, HashMap::from([("ab".into(), 2), ("c".into(), 1)]));
    let got = users(&Db, &ids);
    assert_eq!(got.len(), 2);
    assert_eq!(
        count(&CALLS),
        2,
        "xyz was not cached, so the second call asks for it"
    );
    let got = users(&Db, &ids[..1]);
    assert_eq!(got, HashMap::from([("ab".into(), 2)]));
    assert_eq!(count(&CALLS), 2);
    assert_eq!(
        users_get(&ids),
        HashMap::from([("ab".into(), 2), ("c".into(), 1)])
    );
    users_set(HashMap::from([("xyz".to_string(), 99)]));
    assert_eq!(users(&Db, &ids).get("xyz"), Some(&99));
    users_invalidate(&ids[..1]);
    assert_eq!(users_get(&ids).len(), 2);
}

#[test]
fn multi_methods_and_failures() {
    static REGION: CacheRegion = CacheRegion::new();

    struct Squares {
        calls: AtomicUsize,
    }

    impl Squares {
        #[cache_multi_on_arguments(region = REGION, expiration_time = -1)]
        fn of(&self, xs: &[u64]) -> Vec<u64> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            xs.iter().map(|x| x * x).collect()
        }
    }

    let map = setup(&REGION);
    let s = Squares {
        calls: AtomicUsize::new(0),
    };
    assert_eq!(s.of(&[2, 3]), vec![4, 9]);
    assert_eq!(s.of(&[3, 2]), vec![9, 4]);
    assert_eq!(count(&s.calls), 1);
    assert_eq!(s.of_get(&[2]), vec![Some(4)]);
    map.set_failing(true);
    assert_eq!(s.of(&[2, 5]), vec![4, 25], "falls back to the body");
    assert_eq!(count(&s.calls), 2);
    assert_eq!(s.of_get(&[2]), vec![None]);
}

// ------------------------------------------------------------------------------------------------
// background = true: the async creation runner

static RUNNER_CREATIONS: LazyLock<parking_lot::Mutex<Vec<String>>> =
    LazyLock::new(Default::default);
static BACKGROUND_RUNS: AtomicUsize = AtomicUsize::new(0);
static BACKGROUND_GATE: LazyLock<parking_lot::Mutex<()>> = LazyLock::new(Default::default);
static BACKGROUND_CLOCK: LazyLock<(Clock, Arc<ManualClock>)> =
    LazyLock::new(|| Clock::manual(SystemTime::now()));

static BACKGROUND: LazyLock<CacheRegion> = LazyLock::new(|| {
    dogpile::make_region()
        .async_creation_runner(|creation: dogpile::lock::AsyncCreation| {
            RUNNER_CREATIONS.lock().push(creation.key().to_owned());
            std::thread::spawn(move || creation.run());
        })
        .configure(
            RegionConfig::new("dogpile.cache.memory")
                .expiration_time(5)
                .clock(BACKGROUND_CLOCK.0.clone()),
        )
        .expect("a memory region")
});

#[cache_on_arguments(region = BACKGROUND, background = true)]
fn report(n: u64) -> String {
    // The runner's creation waits here until the test opens the gate.
    let _gate = BACKGROUND_GATE.lock();
    let run = BACKGROUND_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("report {n} v{run}")
}

#[test]
fn background_true_refreshes_a_stale_value_on_the_async_creation_runner() {
    assert_eq!(
        report(1),
        "report 1 v0",
        "the first creation is the caller's"
    );
    assert!(RUNNER_CREATIONS.lock().is_empty());
    BACKGROUND_CLOCK.1.advance(Duration::from_secs(6));
    let gate = BACKGROUND_GATE.lock();
    // Expired: the stale value at once, the new one made on the runner's thread.
    assert_eq!(report(1), "report 1 v0");
    assert_eq!(
        report(1),
        "report 1 v0",
        "still refreshing: stale again, no second creation"
    );
    assert_eq!(RUNNER_CREATIONS.lock().len(), 1);
    drop(gate);
    while BACKGROUND
        .key_is_locked(RUNNER_CREATIONS.lock()[0].as_str())
        .unwrap()
    {
        std::thread::yield_now();
    }
    assert_eq!(report(1), "report 1 v1");
    assert_eq!(BACKGROUND_RUNS.load(Ordering::SeqCst), 2);
    let stats = BACKGROUND.stats();
    assert_eq!(
        (stats.async_refreshes, stats.stale_served),
        (1, 1),
        "{stats}"
    );
}

// ------------------------------------------------------------------------------------------------
// tags

static TAGGED: CacheRegion = CacheRegion::new();
static TAGGED_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cache_on_arguments(region = TAGGED, tags = ["user:{id}", "users"])]
fn profile(id: u32, lang: &str) -> String {
    TAGGED_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("{id}/{lang}")
}

#[test]
fn tags_are_templates_over_the_arguments() {
    TAGGED
        .configure(RegionConfig::with_backend(MapBackend::bytes()).replace_existing_backend(true))
        .unwrap();
    assert_eq!(profile(1, "en"), "1/en");
    assert_eq!(profile(2, "en"), "2/en");
    assert_eq!(profile(1, "en"), "1/en");
    assert_eq!(count(&TAGGED_CALLS), 2);
    std::thread::sleep(Duration::from_millis(2));
    TAGGED.invalidate_tag("user:1", true).unwrap();
    assert_eq!(profile_get(1, "en"), None, "the companion honours the tag");
    assert_eq!(profile_get(2, "en").as_deref(), Some("2/en"));
    assert_eq!(profile(1, "en"), "1/en");
    assert_eq!(count(&TAGGED_CALLS), 3, "user 1 again, user 2 still cached");
    assert_eq!(profile(2, "en"), "2/en");
    assert_eq!(count(&TAGGED_CALLS), 3);
    std::thread::sleep(Duration::from_millis(2));
    TAGGED.invalidate_tag("users", true).unwrap();
    profile(1, "en");
    profile(2, "en");
    assert_eq!(count(&TAGGED_CALLS), 5, "the shared tag drops both");
}

static TEAMS: CacheRegion = CacheRegion::new();
static TEAM_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cache_on_arguments(region = TEAMS, tags = ["team:{name}"])]
fn members(name: &str) -> u32 {
    TEAM_CALLS.fetch_add(1, Ordering::SeqCst);
    name.len() as u32
}

/// An argument is written into a tag as into a key, by its `KeyArg` (a space is escaped), and
/// the tag to invalidate is built the same way, as the attribute's documentation says.
#[test]
fn a_tag_over_a_text_with_a_space_is_invalidated_by_its_key_text() {
    TEAMS
        .configure(RegionConfig::with_backend(MapBackend::bytes()).replace_existing_backend(true))
        .unwrap();
    assert_eq!(members("Red Team"), 8);
    assert_eq!(members("Red Team"), 8);
    assert_eq!(count(&TEAM_CALLS), 1);
    std::thread::sleep(Duration::from_millis(2));
    let mut tag = String::from("team:");
    KeyArg::write_key(&"Red Team", &mut tag);
    assert_eq!(tag, "team:Red\\ Team");
    TEAMS.invalidate_tag(&tag, true).unwrap();
    assert_eq!(members("Red Team"), 8);
    assert_eq!(count(&TEAM_CALLS), 2, "the tag dropped the value");
}
