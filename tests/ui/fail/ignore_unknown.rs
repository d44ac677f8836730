use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

#[cache_on_arguments(region = REGION, ignore = [conn])]
fn f(a: u32) -> u32 {
    a
}

fn main() {
    f(1);
}
