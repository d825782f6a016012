//! The misuses the Rust API's types forbid do not compile: each case in
//! `tests/ui/` with its expected error (`*.stderr`, rustc 1.95; regenerate
//! with `TRYBUILD=overwrite` and read the diff).

#[test]
fn misuse_does_not_compile() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
