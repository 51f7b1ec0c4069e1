//! Link options of the `extractor-runtime` binary in optimised builds on x86_64 Linux, where
//! rustc links with lld.
//!
//! `link/symbol-order.txt` puts the functions a running service executes (start-up, a run, a
//! request, the idle loop) next to each other at the start of `.text`. The kernel maps a
//! binary's pages around each one a process touches, so a service executing 2 MB of scattered
//! code kept 7.8 MiB of a 12 MB `.text` resident; packed, it keeps about what it runs.
//!
//! Names that no longer exist are skipped: a stale list costs memory, never correctness. The
//! code changing renames little, but a new dependency or version of a crate changes the hash in
//! the names of all its functions (and of the crates using it): `.ci/run` fails when fewer than
//! 80 % of the listed names are in the binary; `tools/symbol-order.sh` makes the list again.
//!
//! `-z pack-relative-relocs` stores the relocations of the position-independent binary in 5 KiB
//! instead of the 400 KiB the loader read (and kept resident) at every start. It needs glibc
//! 2.36 or newer (Debian 12, the distroless image); an older one refuses to start the binary,
//! naming `GLIBC_ABI_DT_RELR`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    let optimised = std::env::var("PROFILE").as_deref() == Ok("release");
    let lld = std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    if !(optimised && lld) {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for arg in [
        format!("-Wl,--symbol-ordering-file={dir}/link/symbol-order.txt"),
        "-Wl,-z,pack-relative-relocs".to_owned(),
    ] {
        println!("cargo:rustc-link-arg-bin=extractor-runtime={arg}");
    }
}
