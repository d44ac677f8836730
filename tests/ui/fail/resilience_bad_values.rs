use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

#[cache_on_arguments(region = REGION, eager_refresh = 1.5, soft_timeout = -1, early_expiration_beta = 0)]
fn f(a: u32) -> u32 {
    a
}

#[cache_on_arguments(region = REGION, hard_timeout = "5s")]
fn g(a: u32) -> u32 {
    a
}

fn main() {
    f(1);
    g(1);
}
