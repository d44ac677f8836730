use std::sync::{Arc, LazyLock};

use dogpile::{cache_on_arguments, CacheRegion, RegionConfig};

static PLAIN: CacheRegion = CacheRegion::new();

static LAZY: LazyLock<CacheRegion> = LazyLock::new(|| {
    dogpile::make_region()
        .name("lazy")
        .configure("dogpile.cache.memory")
        .unwrap()
});

static SHARED: LazyLock<Arc<CacheRegion>> = LazyLock::new(|| {
    Arc::new(
        dogpile::make_region()
            .configure("dogpile.cache.memory")
            .unwrap(),
    )
});

mod regions {
    pub static NESTED: dogpile::CacheRegion = dogpile::CacheRegion::new();
}

fn region() -> &'static CacheRegion {
    &PLAIN
}

#[cache_on_arguments(region = PLAIN)]
fn a(x: u8) -> u8 {
    x
}

#[cache_on_arguments(region = LAZY)]
fn b(x: u8) -> u8 {
    x
}

#[cache_on_arguments(region = SHARED)]
fn c(x: u8) -> u8 {
    x
}

#[cache_on_arguments(region = regions::NESTED)]
fn d(x: u8) -> u8 {
    x
}

#[cache_on_arguments(region = &*LAZY)]
fn e(x: u8) -> u8 {
    x
}

#[cache_on_arguments(region = region())]
fn f(x: u8) -> u8 {
    x
}

fn main() {
    PLAIN
        .configure(RegionConfig::new("dogpile.cache.memory"))
        .unwrap();
    regions::NESTED
        .configure(RegionConfig::new("dogpile.cache.memory"))
        .unwrap();
    for g in [a, b, c, d, e, f] {
        assert_eq!(g(1), 1);
    }
    assert_eq!(b_get(1), Some(1));
    assert_eq!(f_get(1), Some(1));
}
