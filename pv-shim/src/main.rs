//! The ring-0 binary. Its code lives in the library (`pv_shim::arch` holds the entry points);
//! the VMM embeds this ELF and loads it at its link address in Xen's hypervisor hole.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use pv_shim as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("pv-shim runs in ring 0 inside a xenvmm VM; it is built for x86_64-unknown-none and embedded in xenvmm");
    std::process::exit(1);
}
