//! Link options of the `extractor-runtime` binary in optimised builds on x86_64 Linux, where
//! rustc links with lld.
//!
//! `link/symbol-order.txt` puts the functions a running service executes (start-up, a run, a
//! request, the idle loop) next to each other at the start of `.text`. The kernel maps a
//! binary's pages around each one a process touches, so a service executing 2 MB of scattered
//! code kept 7.8 MiB of a 12 MB `.text` resident; packed, it keeps about what it runs. Names that
//! no longer exist (the code changed since the list was made) are skipped: a stale list costs
//! memory, never correctness. `tools/symbol-order.sh` makes the list again.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    let optimised = std::env::var("PROFILE").as_deref() == Ok("release");
    let lld = std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    if !(optimised && lld) {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!(
        "cargo:rustc-link-arg-bin=extractor-runtime=-Wl,--symbol-ordering-file={dir}/link/symbol-order.txt"
    );
}
