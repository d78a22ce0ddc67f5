//! Links Flite 2.2 statically from the system's `flite1-dev` archives.
//!
//! The voices are compiled into those archives, so the binary needs no data files at run
//! time. `FLITE_LIB_DIR` overrides where the archives are looked for.
#![allow(
    clippy::disallowed_methods,
    reason = "a build script reads cargo's environment"
)]

use std::path::{Path, PathBuf};

/// Archives in link order: voices first, then the language and lexicon they use, then core.
const ARCHIVES: &[&str] = &[
    "flite_cmu_us_slt",
    "flite_cmu_us_kal16",
    "flite_cmu_us_rms",
    "flite_cmu_us_awb",
    "flite_usenglish",
    "flite_cmulex",
    "flite",
];

fn main() {
    println!("cargo:rerun-if-env-changed=FLITE_LIB_DIR");
    let dir = std::env::var_os("FLITE_LIB_DIR")
        .map(PathBuf::from)
        .or_else(find_lib_dir)
        .unwrap_or_else(|| {
            panic!(
                "libflite.a not found: install Debian's flite1-dev (scripts/setup installs it) \
                 or set FLITE_LIB_DIR"
            )
        });
    for archive in ARCHIVES {
        let file = dir.join(format!("lib{archive}.a"));
        assert!(
            file.is_file(),
            "{} is missing: install Debian's flite1-dev",
            file.display()
        );
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    for archive in ARCHIVES {
        println!("cargo:rustc-link-lib=static={archive}");
    }
    // libflite.a's audio module (never called: voxgate only synthesizes to memory) refers to
    // ALSA. The runtime library is enough; no -dev package is needed to link it.
    println!("cargo:rustc-link-lib=dylib:+verbatim=libasound.so.2");
    println!("cargo:rustc-link-lib=dylib=m");
}

fn find_lib_dir() -> Option<PathBuf> {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let candidates = [
        format!("/usr/lib/{arch}-linux-gnu"),
        "/usr/lib".to_owned(),
        "/usr/local/lib".to_owned(),
    ];
    candidates
        .iter()
        .map(Path::new)
        .find(|d| d.join("libflite.a").is_file())
        .map(Path::to_path_buf)
}
