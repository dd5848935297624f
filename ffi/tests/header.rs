//! `include/cocoon.h` is what cbindgen generates from the sources: this test fails when the
//! checked-in header is out of date. `COCOON_BLESS=1 cargo test -p cocoon-ffi --test header`
//! rewrites it.

#[test]
fn header_is_up_to_date() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config =
        cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = format!("{dir}/include/cocoon.h");
    if std::env::var_os("COCOON_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write header");
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "ffi/include/cocoon.h is out of date: run COCOON_BLESS=1 cargo test -p cocoon-ffi --test header"
    );
}
