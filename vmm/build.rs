//! Builds the ring-0 PV shim for x86_64-unknown-none and hands its ELF to the crate, which
//! embeds it: xenvmm ships as one file.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for dir in ["pv-shim/src", "pv-shim/link.ld", "pv-shim/build.rs", "pv-shim/Cargo.toml", "xen-abi/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=XENVMM_SHIM_ELF");

    // A prebuilt shim may be supplied (e.g. by a packager); otherwise build it.
    let elf = match std::env::var_os("XENVMM_SHIM_ELF") {
        Some(p) => PathBuf::from(p),
        None => build_shim(&root),
    };
    std::fs::copy(&elf, out.join("pv-shim.elf"))
        .unwrap_or_else(|e| panic!("cannot copy the shim from {}: {e}", elf.display()));
}

fn build_shim(root: &std::path::Path) -> PathBuf {
    let target_dir = root.join("target").join("shim");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "-p", "pv-shim", "--bin", "pv-shim", "--release", "--target", "x86_64-unknown-none"])
        .arg("--target-dir")
        .arg(&target_dir);
    // Nothing of the outer build's configuration applies to a bare-metal ring-0 binary.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_ENCODED_")
            || k.starts_with("DEP_")
            || matches!(
                k.as_str(),
                "RUSTFLAGS"
                    // The shim is built with the repository's pinned toolchain (which has the
                    // bare-metal target), also when the outer build runs another one (cargo
                    // +nightly fuzz).
                    | "RUSTUP_TOOLCHAIN"
                    | "RUSTC"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_BUILD_TARGET"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTC_WRAPPER"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "OUT_DIR"
                    | "TARGET"
                    | "HOST"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTC_LINKER"
            )
        {
            cmd.env_remove(k);
        }
    }
    // The pinned toolchain by name: rustup would otherwise pick each dependency's own
    // rust-toolchain file when resolving `rustc` in its directory.
    if let Some(channel) = pinned_toolchain(root) {
        cmd.env("RUSTUP_TOOLCHAIN", channel);
    }
    let status = cmd.status().expect("cannot run cargo to build the PV shim");
    if !status.success() {
        panic!("building the PV shim (pv-shim for x86_64-unknown-none) failed; run scripts/setup to install the target");
    }
    target_dir.join("x86_64-unknown-none").join("release").join("pv-shim")
}

/// The `channel` of the repository's rust-toolchain.toml.
fn pinned_toolchain(root: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("rust-toolchain.toml")).ok()?;
    let line = text.lines().find(|l| l.trim_start().starts_with("channel"))?;
    Some(line.split('"').nth(1)?.to_string())
}
