//! Compile-time behaviour of the attributes: every supported form compiles (and runs), and every
//! misuse is a clear error at the right place.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
