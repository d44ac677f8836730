use dogpile::cache_on_arguments;

static NOT_A_REGION: u32 = 5;

#[cache_on_arguments(region = NOT_A_REGION)]
fn f(a: u32) -> u32 {
    a
}

fn main() {
    f(1);
}
