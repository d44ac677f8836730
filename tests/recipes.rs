//! The seed's recipe "Invalidating a group of related keys", as a test: three memoized functions
//! of a user id, a region-wide key generator that records key templates, and a function that
//! deletes every key of one user. (The other recipes that need no server are in `region.rs`:
//! key prefixing, the custom backend, the two proxies, the async runner, `dont_cache_none`.)

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};

use dogpile::{cache_on_arguments, key_text, CacheRegion, FunctionInfo, KeyArg};

static USER_KEYS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn my_key_generator(info: &FunctionInfo, args: &[&dyn KeyArg]) -> String {
    let rest: Vec<String> = args.iter().skip(1).map(|a| key_text(*a)).collect();
    let template = format!("{}_%d{}", info.name, rest.join("_"));
    USER_KEYS.lock().unwrap().insert(template.clone());
    template.replace(
        "%d",
        &args.first().map(|a| key_text(*a)).unwrap_or_default(),
    )
}

fn invalidate_user_id(region: &CacheRegion, user_id: u64) {
    let templates: Vec<String> = USER_KEYS.lock().unwrap().iter().cloned().collect();
    for t in templates {
        region
            .delete(&t.replace("%d", &user_id.to_string()))
            .unwrap();
    }
}

static REGION: LazyLock<CacheRegion> = LazyLock::new(|| {
    dogpile::make_region()
        .function_key_generator(my_key_generator)
        .configure("dogpile.cache.memory")
        .unwrap()
});

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

#[test]
fn invalidating_a_group_of_related_keys() {
    let before = [
        user_fn_one(5),
        user_fn_two(5),
        user_fn_three(7),
        user_fn_two(7),
    ];
    assert_eq!(
        before,
        [
            "user fn one: 0, 5",
            "user fn two: 1, 5",
            "user fn three: 2, 7",
            "user fn two: 3, 7"
        ]
    );
    assert_eq!(
        *USER_KEYS.lock().unwrap(),
        ["user_fn_one_%d", "user_fn_three_%d", "user_fn_two_%d"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        REGION.get::<String>("user_fn_one_5").unwrap().as_deref(),
        Some("user fn one: 0, 5")
    );

    invalidate_user_id(&REGION, 5);
    let after = [
        user_fn_one(5),
        user_fn_two(5),
        user_fn_three(7),
        user_fn_two(7),
    ];
    // User 5's values are made again; user 7's are still cached.
    assert_eq!(
        after,
        [
            "user fn one: 4, 5",
            "user fn two: 5, 5",
            "user fn three: 2, 7",
            "user fn two: 3, 7"
        ]
    );
}
