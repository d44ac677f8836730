//! The usage guide's recipe "Invalidating a group of related keys": three memoized functions of a user
//! id, a region-wide `function_key_generator` that remembers a key template for each function it
//! sees, and `invalidate_user_id`, which deletes every key of one user in one go.
//!
//! The generator turns `user_fn_one(5)` into the key `user_fn_one_5` and records the template
//! `user_fn_one_%d`; to forget everything about user 5, fill each recorded template with 5 and
//! delete that key. Other users' entries stay cached.
//!
//! Run with `cargo run --example group_invalidation`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, RwLock};

use dogpile::key::{key_text, FunctionInfo};
use dogpile::{cache_on_arguments, CacheRegion, KeyArg, RegionConfig};

/// The key templates seen so far, one per function (and per extra arguments, if any).
static USER_KEYS: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// Where the user id goes in a template.
const ID: &str = "%d";

/// The key of one call: `fname_<user id>[_<other arguments>]`. The first argument is taken to be
/// the user id, as in the usage guide.
fn user_key_generator(info: &FunctionInfo, args: &[&dyn KeyArg]) -> String {
    let mut template = format!("{}_{ID}", info.name);
    for arg in args.iter().skip(1) {
        template.push('_');
        template.push_str(&key_text(*arg));
    }
    // The generator runs on every call, hits included: look before taking the write lock, so the
    // common case (a template already known) only reads.
    let known = USER_KEYS
        .read()
        .map(|keys| keys.contains(&template))
        .unwrap_or(false);
    if !known {
        if let Ok(mut keys) = USER_KEYS.write() {
            keys.insert(template.clone());
        }
    }
    let user_id = args.first().map(|id| key_text(*id)).unwrap_or_default();
    template.replace(ID, &user_id)
}

/// Deletes every cached entry of `user_id`, whichever function made it.
fn invalidate_user_id(region: &CacheRegion, user_id: u64) -> dogpile::Result<()> {
    let templates: Vec<String> = match USER_KEYS.read() {
        Ok(keys) => keys.iter().cloned().collect(),
        Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
    };
    for template in templates {
        region.delete(&template.replace(ID, &user_id.to_string()))?;
    }
    Ok(())
}

/// The region: built with `make_region()` so it can carry the key generator, configured in
/// `main`. A `LazyLock` is what `region = …` takes for a region built at run time.
static REGION: LazyLock<CacheRegion> = LazyLock::new(|| {
    dogpile::make_region()
        .name("users")
        .function_key_generator(user_key_generator)
        .build()
});

/// A counter, so a value made by a fresh call can be told from a cached one.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn next() -> usize {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

#[cache_on_arguments(region = REGION)]
fn user_fn_one(user_id: u64) -> String {
    format!("user fn one: {}, {user_id}", next())
}

#[cache_on_arguments(region = REGION)]
fn user_fn_two(user_id: u64) -> String {
    format!("user fn two: {}, {user_id}", next())
}

#[cache_on_arguments(region = REGION)]
fn user_fn_three(user_id: u64) -> String {
    format!("user fn three: {}, {user_id}", next())
}

fn print_all() {
    println!("  {}", user_fn_one(5));
    println!("  {}", user_fn_two(5));
    println!("  {}", user_fn_three(7));
    println!("  {}", user_fn_two(7));
}

fn main() -> dogpile::Result<()> {
    REGION.configure(RegionConfig::new("dogpile.cache.memory"))?;

    println!("first calls (each runs its body):");
    print_all();
    println!("again (all four are hits: the counters do not move):");
    print_all();

    let templates: Vec<String> = match USER_KEYS.read() {
        Ok(keys) => keys.iter().cloned().collect(),
        Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
    };
    println!("key templates recorded: {}", templates.join(", "));

    invalidate_user_id(&REGION, 5)?;
    println!("invalidated user 5 (user 7 keeps its cached values):");
    print_all();
    Ok(())
}

/// The recipe, checked: `cargo test` runs this (the example has `test = true`).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidating_a_user_remakes_only_that_users_values() {
        REGION
            .configure(RegionConfig::new("dogpile.cache.memory"))
            .unwrap();
        let calls = || {
            [
                user_fn_one(5),
                user_fn_two(5),
                user_fn_three(7),
                user_fn_two(7),
            ]
        };
        let before = calls();
        assert_eq!(
            before,
            [
                "user fn one: 0, 5",
                "user fn two: 1, 5",
                "user fn three: 2, 7",
                "user fn two: 3, 7"
            ]
        );
        assert_eq!(calls(), before, "the second calls are hits");
        assert_eq!(
            *USER_KEYS.read().unwrap(),
            ["user_fn_one_%d", "user_fn_three_%d", "user_fn_two_%d"]
                .map(String::from)
                .into()
        );
        assert_eq!(
            REGION.get::<String>("user_fn_one_5").unwrap().as_deref(),
            Some("user fn one: 0, 5")
        );

        invalidate_user_id(&REGION, 5).unwrap();
        // User 5's values are made again; user 7's are still cached.
        assert_eq!(
            calls(),
            [
                "user fn one: 4, 5",
                "user fn two: 5, 5",
                "user fn three: 2, 7",
                "user fn two: 3, 7"
            ]
        );
    }
}
