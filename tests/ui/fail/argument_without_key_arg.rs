use dogpile::{cache_on_arguments, CacheRegion};

static REGION: CacheRegion = CacheRegion::new();

pub struct Connection;

#[cache_on_arguments(region = REGION)]
fn f(conn: &Connection, id: u32) -> u32 {
    let _ = conn;
    id
}

fn main() {
    f(&Connection, 1);
}
