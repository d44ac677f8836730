use std::fmt::Display;

use dogpile::{cache_on_arguments, CacheRegion, KeyArg, RegionConfig};

static REGION: CacheRegion = CacheRegion::new();

#[cache_on_arguments(region = REGION)]
fn show<T: KeyArg + Display>(value: T) -> String {
    value.to_string()
}

#[cache_on_arguments(region = REGION)]
fn show_impl(value: impl KeyArg + Display, times: usize) -> String {
    value.to_string().repeat(times)
}

#[cache_on_arguments(region = REGION)]
fn with_lifetime<'a>(parts: &'a [&'a str]) -> String
where
    'a: 'a,
{
    parts.concat()
}

fn main() {
    REGION
        .configure(RegionConfig::new("dogpile.cache.memory"))
        .unwrap();
    assert_eq!(show(5u8), "5");
    assert_eq!(show("a"), "a");
    assert_eq!(show_impl('x', 3), "xxx");
    assert_eq!(with_lifetime(&["a", "b"]), "ab");
}
