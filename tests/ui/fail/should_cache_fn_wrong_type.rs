use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

fn keep(value: &String) -> bool {
    !value.is_empty()
}

#[cache_on_arguments(region = REGION, should_cache_fn = keep)]
fn f(a: u32) -> u32 {
    a
}

fn main() {
    f(1);
}
