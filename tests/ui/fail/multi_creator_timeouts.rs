use dogpile::{cache_multi_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

#[cache_multi_on_arguments(region = REGION, soft_timeout = 1)]
fn many(ids: &[u32]) -> Vec<u32> {
    ids.to_vec()
}

#[cache_multi_on_arguments(region = REGION, fail_safe_max_duration = 60, hard_timeout = 1)]
fn more(ids: &[u32]) -> Vec<u32> {
    ids.to_vec()
}

fn main() {
    many(&[1]);
    more(&[1]);
}
