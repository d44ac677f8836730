use dogpile::{cache_multi_on_arguments, cache_on_arguments, CacheRegion, KeyArg};

static REGION: CacheRegion = CacheRegion::new();

// `&5u8` and `&"5"` both write the key text `5`: behind a `dyn` the type is lost, so two calls
// would share one key. Every key argument with a `dyn` type is an error, however deep.
#[cache_on_arguments(region = REGION)]
fn f(a: &dyn KeyArg, b: Box<dyn KeyArg>, c: Vec<Box<dyn KeyArg + Send>>, d: u32) -> u32 {
    let _ = (a, b, c);
    d
}

// A template writes the argument the same way.
#[cache_on_arguments(region = REGION, key = "x:{a}")]
fn g(a: &dyn KeyArg) -> u32 {
    let _ = a;
    1
}

// A pattern cannot be named in `ignore`: the error offers only another type.
#[cache_on_arguments(region = REGION)]
fn p((a, b): (&dyn KeyArg, u8)) -> u8 {
    let _ = a;
    b
}

// Left out of the key, a `dyn` argument is fine.
#[cache_on_arguments(region = REGION, ignore = [log])]
fn h(id: u32, log: &dyn Fn(&str)) -> u32 {
    log("h");
    id
}

#[cache_multi_on_arguments(region = REGION)]
fn m(ids: &[&'static dyn KeyArg]) -> Vec<u32> {
    ids.iter().map(|_| 1).collect()
}

#[cache_multi_on_arguments(region = REGION, ignore = [log])]
fn n(log: &dyn Fn(&str), ids: &[u32]) -> Vec<u32> {
    log("n");
    ids.to_vec()
}

fn main() {
    f(&5u8, Box::new("5"), Vec::new(), 1);
    g(&5u8);
    p((&5u8, 1));
    h(1, &|_| {});
    m(&[&5u8, &"5"]);
    n(&|_| {}, &[1]);
}
