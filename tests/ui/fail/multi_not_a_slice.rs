use dogpile::{cache_multi_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

#[cache_multi_on_arguments(region = REGION)]
fn f(ids: Vec<u32>) -> Vec<u32> {
    ids
}

#[cache_multi_on_arguments(region = REGION, key = "x")]
fn g(ids: &[u32]) -> Vec<u32> {
    ids.to_vec()
}

fn main() {
    f(vec![1]);
    g(&[1]);
}
