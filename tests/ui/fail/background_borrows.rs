use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

// A body that borrows its argument cannot move to another thread.
#[cache_on_arguments(region = REGION, background = true)]
fn shout(text: &str) -> String {
    text.to_uppercase()
}

fn main() {}
