//! Memoizing functions and methods with `#[cache_on_arguments]` and
//! `#[cache_multi_on_arguments]`, and what the companions do.
//!
//! Run with `cargo run --example memoize`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dogpile::{
    cache_impl, cache_multi_on_arguments, cache_on_arguments, CacheRegion, RegionConfig,
};

/// The region: a plain `static`, configured at run time.
static REGION: CacheRegion = CacheRegion::new();

static SLOW_CALLS: AtomicUsize = AtomicUsize::new(0);

/// An "expensive" function: the first call per argument list runs it, the next ones are hits.
#[cache_on_arguments(region = REGION, namespace = "demo", expiration_time = 60)]
fn slow_square(x: u64) -> u64 {
    SLOW_CALLS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(20));
    x * x
}

/// A fallible lookup: only `Ok` is cached.
#[cache_on_arguments(region = REGION)]
fn parse_port(text: &str) -> Result<u16, String> {
    text.parse().map_err(|e| format!("{text:?}: {e}"))
}

/// A user repository whose methods are memoized; `self` is not part of the key.
struct Users {
    lookups: AtomicUsize,
}

impl Users {
    #[cache_on_arguments(region = REGION, namespace = "Users")]
    fn display_name(&self, id: u32) -> String {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        format!("User #{id}")
    }

    /// A batch: one body call with the ids not cached yet.
    #[cache_multi_on_arguments(region = REGION, namespace = "Users")]
    fn emails(&self, ids: &[u32]) -> Vec<String> {
        println!("    (emails body called with {ids:?})");
        ids.iter()
            .map(|id| format!("user{id}@example.com"))
            .collect()
    }
}

/// A trait, and an implementation whose method is memoized: `#[cache_impl]` on the block puts
/// the companions (`greeting_get`, ...) in an inherent block of `Users`.
trait Greeter {
    fn greeting(&self, id: u32) -> String;
}

#[cache_impl]
impl Greeter for Users {
    #[cache_on_arguments(region = REGION, namespace = "Greeter")]
    fn greeting(&self, id: u32) -> String {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        format!("Hello, user #{id}")
    }
}

fn main() {
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory").expiration_time(3600))
        .expect("the memory backend is always there");

    println!("functions:");
    println!("  slow_square(12) = {}", slow_square(12));
    println!("  slow_square(12) = {} (a hit)", slow_square(12));
    println!(
        "  the body ran {} time(s)",
        SLOW_CALLS.load(Ordering::SeqCst)
    );
    println!(
        "  its key: {}",
        concat!(module_path!(), ":slow_square|demo|12")
    );
    println!(
        "  slow_square_get(5) = {:?} (never computes)",
        slow_square_get(5)
    );
    slow_square_set(1000, 5);
    println!(
        "  after slow_square_set(1000, 5): slow_square(5) = {}",
        slow_square(5)
    );
    println!("  slow_square_refresh(5) = {}", slow_square_refresh(5));
    slow_square_invalidate(5);
    println!(
        "  after invalidate: slow_square_get(5) = {:?}",
        slow_square_get(5)
    );
    println!("  slow_square_uncached(7) = {}", slow_square_uncached(7));

    println!("Result:");
    println!("  parse_port(\"80x\") = {:?}", parse_port("80x"));
    println!(
        "  parse_port_get(\"80x\") = {:?} (errors are not cached)",
        parse_port_get("80x")
    );
    println!("  parse_port(\"8080\") = {:?}", parse_port("8080"));
    println!("  parse_port_get(\"8080\") = {:?}", parse_port_get("8080"));

    println!("methods:");
    let users = Users {
        lookups: AtomicUsize::new(0),
    };
    println!("  users.display_name(7) = {}", users.display_name(7));
    println!("  users.display_name(7) = {}", users.display_name(7));
    println!(
        "  lookups: {} (the second call was a hit)",
        users.lookups.load(Ordering::SeqCst)
    );
    println!("  users.emails(&[1, 2]) = {:?}", users.emails(&[1, 2]));
    println!(
        "  users.emails(&[3, 2, 1]) = {:?}",
        users.emails(&[3, 2, 1])
    );
    println!(
        "  users.emails_get(&[1, 4]) = {:?}",
        users.emails_get(&[1, 4])
    );

    println!("trait methods:");
    let greeter: &dyn Greeter = &users;
    let before = users.lookups.load(Ordering::SeqCst);
    println!("  greeter.greeting(3) = {}", greeter.greeting(3));
    println!("  greeter.greeting(3) = {}", greeter.greeting(3));
    println!(
        "  lookups: {} more (the second call through `dyn Greeter` was a hit)",
        users.lookups.load(Ordering::SeqCst) - before
    );
    println!("  users.greeting_get(3) = {:?}", users.greeting_get(3));
}
