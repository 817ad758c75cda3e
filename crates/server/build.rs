//! Link-time layout of the `riffle` executable (Linux with LLD only; everything else links
//! as before).
//!
//! A server's resident memory starts with the executable's code pages, and the kernel maps
//! code in 64 KiB windows around each page it faults in: the 1 to 2 MB of functions a running
//! server executes, scattered over 7 MB of text, kept 4 to 5 MiB of it resident. The
//! functions listed in `link/hot-functions.txt` (recorded from a running server by
//! `bench/hot-functions.sh`) are placed first, together, so the code a server runs shares
//! pages. A name the build no longer has is skipped, so a stale list costs memory, never
//! correctness. `.cargo/config.toml` links glibc statically on this target, so the list holds
//! the libc functions a server calls as well (glibc's archive has about one function per
//! section), and they share the hot pages instead of each pulling a window of libc.so.6 in.
//! Relative relocations are packed (`DT_RELR`, when the build machine's glibc is 2.36 or
//! later), so start-up reads a few KiB of them instead of 240 KB.
//!
//! Set `RIFFLE_PLAIN_LINK=1` to link without either.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/hot-functions.txt");
    println!("cargo:rerun-if-env-changed=RIFFLE_PLAIN_LINK");
    if !uses_lld() {
        return;
    }
    let list = Path::new(&env("CARGO_MANIFEST_DIR")).join("link/hot-functions.txt");
    if let Ok(names) = std::fs::read(&list) {
        // Cargo relinks only when the link arguments change, not when a file they name
        // does: the list is passed under a name that carries its content's hash.
        let mut hash = DefaultHasher::new();
        names.hash(&mut hash);
        let copy = Path::new(&env("OUT_DIR")).join(format!("hot-{:016x}.txt", hash.finish()));
        if std::fs::write(&copy, &names).is_ok() {
            println!(
                "cargo:rustc-link-arg-bin=riffle=-Wl,--symbol-ordering-file={}",
                copy.display()
            );
            println!("cargo:rustc-link-arg-bin=riffle=-Wl,--no-warn-symbol-ordering");
        }
    }
    // The loader must know DT_RELR, or relocations would silently not be applied.
    if glibc_minor().is_some_and(|m| m >= 36) {
        println!("cargo:rustc-link-arg-bin=riffle=-Wl,-z,pack-relative-relocs");
    }
}

/// The build machine's glibc 2.x (the executable runs where it is built).
fn glibc_minor() -> Option<u32> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.trim()
        .strip_prefix("glibc 2.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_default()
}

/// Whether the executable is linked by rustc's own LLD: the default for
/// `x86_64-unknown-linux-gnu` since Rust 1.90, unless a linker is configured.
fn uses_lld() -> bool {
    if !env("RIFFLE_PLAIN_LINK").is_empty() || env("TARGET") != "x86_64-unknown-linux-gnu" {
        return false;
    }
    // Cargo passes a configured `target.<triple>.linker` to build scripts as RUSTC_LINKER.
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    if !env("RUSTC_LINKER").is_empty() || flags.contains("linker") {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let minor = text
        .lines()
        .find_map(|l| l.strip_prefix("release: 1."))
        .and_then(|rest| rest.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
