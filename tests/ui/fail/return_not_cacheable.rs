use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

pub struct Handle;

#[cache_on_arguments(region = REGION)]
fn f(a: u32) -> Handle {
    let _ = a;
    Handle
}

fn main() {
    f(1);
}
