use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

#[cache_on_arguments(region = REGION)]
struct NotAFunction {
    a: u32,
}

fn main() {
    let _ = NotAFunction { a: 1 }.a;
}
