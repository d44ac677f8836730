use dogpile::cache_impl;

#[cache_impl]
struct NotAnImpl;

struct Plain;

#[cache_impl]
impl Plain {
    fn nothing_cached(&self) -> u8 {
        1
    }
}

fn main() {}
