//! Builds `shim.c` and links it against the system libotr (4.1) and libgcrypt.

fn main() {
    println!("cargo:rerun-if-changed=shim.c");
    let otr = pkg_config::Config::new()
        .atleast_version("4.1")
        .probe("libotr")
        .unwrap_or_else(|e| panic!("libotr not found (install libotr5-dev): {e}"));
    // shim.c calls gcry_strerror itself.
    let gcrypt = pkg_config::probe_library("libgcrypt")
        .unwrap_or_else(|e| panic!("libgcrypt not found (install libgcrypt20-dev): {e}"));
    let mut build = cc::Build::new();
    build.file("shim.c").warnings(true).extra_warnings(true);
    for path in otr.include_paths.iter().chain(&gcrypt.include_paths) {
        build.include(path);
    }
    build.compile("otrshim");
}
