//! Builds `shim.c` and links it against the system libotr (4.1) and libgcrypt. Without them
//! the crate still builds, with endpoints that fail to start and say what to install (so the
//! workspace's examples build anywhere); the tests need the real thing.

fn main() {
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo::rustc-check-cfg=cfg(libotr_missing)");
    let otr = pkg_config::Config::new().atleast_version("4.1").probe("libotr");
    // shim.c calls gcry_strerror itself.
    let gcrypt = pkg_config::probe_library("libgcrypt");
    let (Ok(otr), Ok(gcrypt)) = (otr, gcrypt) else {
        println!(
            "cargo:warning=libotr 4.1 or libgcrypt not found (install libotr5-dev libgcrypt20-dev pkg-config): building the harness without libotr"
        );
        println!("cargo:rustc-cfg=libotr_missing");
        return;
    };
    let mut build = cc::Build::new();
    build.file("shim.c").warnings(true).extra_warnings(true);
    for path in otr.include_paths.iter().chain(&gcrypt.include_paths) {
        build.include(path);
    }
    build.compile("otrshim");
}
