use dogpile::cache_on_arguments;

#[cache_on_arguments(namespace = "x")]
fn f(a: u32) -> u32 {
    a
}

fn main() {
    f(1);
}
