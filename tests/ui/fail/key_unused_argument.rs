use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

#[cache_on_arguments(region = REGION, key = "user:{id}")]
fn f(id: u32, lang: &str) -> String {
    format!("{id}{lang}")
}

fn main() {
    f(1, "en");
}
