use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

#[cache_on_arguments(region = REGION, tags = ["users", "user:{user}"])]
fn f(id: u32) -> u32 {
    id
}

#[cache_on_arguments(region = REGION, tags = "users")]
fn g(id: u32) -> u32 {
    id
}

#[cache_on_arguments(region = REGION, tags = ["user:{id"])]
fn h(id: u32) -> u32 {
    id
}

fn main() {
    f(1);
    g(1);
    h(1);
}
