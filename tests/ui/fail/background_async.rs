use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

#[cache_on_arguments(region = REGION, background = true)]
async fn fetch(id: u64) -> String {
    format!("{id}")
}

fn main() {}
