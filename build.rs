//! Sets `pagepool_naked_fns` when rustc has naked functions (1.88): the C
//! ABI's calls without a site then record the caller's return address.

use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(pagepool_naked_fns)");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split('.').nth(1)?.parse::<u32>().ok());
    if minor.is_some_and(|m| m >= 88) {
        println!("cargo:rustc-cfg=pagepool_naked_fns");
    }
}
