use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

#[cache_on_arguments(region = REGION, key = "user:{id}:{lang}")]
fn f(id: u32) -> u32 {
    id
}

fn main() {
    f(1);
}
