use dogpile::{cache_impl, cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

trait Render<T> {
    fn render(&self, n: u32) -> String;
}

struct Page;

// `T` belongs to the trait only: an inherent block of `Page` cannot have it.
#[cache_impl]
impl<T> Render<T> for Page {
    #[cache_on_arguments(region = REGION)]
    fn render(&self, n: u32) -> String {
        n.to_string()
    }
}

trait Describe {
    fn describe(&self, n: u32) -> String;
}

// A blanket impl: there is no one type to give an inherent block.
#[cache_impl]
impl<X: Send> Describe for X {
    #[cache_on_arguments(region = REGION)]
    fn describe(&self, n: u32) -> String {
        n.to_string()
    }
}

trait Measure {
    fn describe(&self, n: u32) -> String;
}

// A reference type cannot have an inherent block either.
#[cache_impl(pub)]
impl Measure for &'static str {
    #[cache_on_arguments(region = REGION)]
    fn describe(&self, n: u32) -> String {
        n.to_string()
    }
}

fn main() {}
