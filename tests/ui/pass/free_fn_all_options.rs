use std::time::Duration;

use dogpile::{cache_on_arguments, CacheRegion, KeyArg, RegionConfig};
use dogpile::key::FunctionInfo;

static REGION: CacheRegion = CacheRegion::new();

fn keep(value: &String) -> bool {
    !value.is_empty()
}

fn my_keys(info: &FunctionInfo, args: &[&dyn KeyArg]) -> String {
    dogpile::function_key_generator(info, args).to_uppercase()
}

fn until_midnight() -> Duration {
    Duration::from_secs(3600)
}

#[cache_on_arguments(region = REGION)]
pub fn plain(a: u32, b: &str) -> String {
    format!("{a}{b}")
}

#[cache_on_arguments(region = REGION, namespace = "ns", expiration_time = 60, should_cache_fn = keep)]
pub(crate) fn with_options(a: u32) -> String {
    a.to_string()
}

#[cache_on_arguments(region = REGION, expiration = Duration::from_secs(5), function_key_generator = my_keys)]
fn with_generator(a: u32) -> String {
    a.to_string()
}

#[cache_on_arguments(region = REGION, expiration_time = until_midnight)]
fn dynamic_expiration(a: u32) -> u32 {
    a
}

#[cache_on_arguments(region = REGION, expiration_time = -1)]
fn never_expires() -> u64 {
    42
}

#[cache_on_arguments(region = REGION)]
fn patterns(mut a: u32, (b, c): (u8, u8)) -> u32 {
    a += 1;
    a + u32::from(b) + u32::from(c)
}

fn main() {
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory"))
        .unwrap();
    assert_eq!(plain(1, "x"), "1x");
    assert_eq!(plain_get(1, "x").as_deref(), Some("1x"));
    plain_set("y".into(), 1, "x");
    plain_invalidate(1, "x");
    assert_eq!(plain_refresh(1, "x"), "1x");
    assert_eq!(plain_uncached(1, "x"), "1x");
    assert_eq!(with_options(3), "3");
    assert_eq!(with_generator(3), "3");
    assert_eq!(with_generator_get(3).as_deref(), Some("3"));
    assert_eq!(dynamic_expiration(4), 4);
    assert_eq!(never_expires(), 42);
    assert_eq!(never_expires_get(), Some(42));
    assert_eq!(patterns(1, (2, 3)), 7);
    assert_eq!(patterns_get(1, (2, 3)), Some(7));
}
