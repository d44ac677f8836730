use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

#[cache_on_arguments(region = REGION)]
fn f(a: u32) -> impl std::fmt::Display {
    a
}

fn main() {
    let _ = f(1);
}
