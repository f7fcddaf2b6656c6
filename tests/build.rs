//! Builds the PV test guests (`tests/guests`, a workspace of its own for the bare
//! `x86_64-unknown-none` target) and tells the tests where they are.
//!
//! The nested `cargo build --release` runs inside `tests/guests` so that its
//! `.cargo/config.toml` (target, code model, linker script) applies, with
//! `--target-dir <repo>/target/guests` and none of the settings the outer build passes to
//! build scripts. Each guest's path is exported as `XENVMM_GUEST_<NAME>` (`hello-hcpage` →
//! `XENVMM_GUEST_HELLO_HCPAGE`) and listed in `$OUT_DIR/guests.rs` for `src/lib.rs`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-none";

/// Outer-build variables that would change how the guests are compiled.
const LEAKING_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
];

/// Prefixes of outer-build variables to drop as well.
const LEAKING_PREFIXES: &[&str] = &["CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "CARGO_TARGET_"];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let repo = manifest_dir.parent().expect("tests/ lives in the repository root");
    let guests_dir = manifest_dir.join("guests");
    let target_dir = repo.join("target").join("guests");

    for path in ["src", "build.rs", "link.ld", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", guests_dir.join(path).display());
    }
    for path in ["src", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", repo.join("xen-abi").join(path).display());
    }

    build_guests(&guests_dir, &target_dir);

    let bin_dir = target_dir.join(TARGET).join("release");
    let mut consts = String::new();
    let mut all = Vec::new();
    for name in guest_names(&guests_dir.join("src").join("bin")) {
        let path = bin_dir.join(&name);
        assert!(path.is_file(), "guest {name} was not built at {}", path.display());
        let konst = name.to_uppercase().replace('-', "_");
        println!("cargo:rustc-env=XENVMM_GUEST_{konst}={}", path.display());
        writeln!(consts, "/// `tests/guests/src/bin/{name}.rs`, built.").unwrap();
        writeln!(consts, "pub const {konst}: &str = env!(\"XENVMM_GUEST_{konst}\");").unwrap();
        all.push(format!("(\"{name}\", {konst})"));
    }
    writeln!(consts, "/// Every guest as (name, path).").unwrap();
    writeln!(consts, "pub const ALL: &[(&str, &str)] = &[{}];", all.join(", ")).unwrap();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    fs::write(out_dir.join("guests.rs"), consts).expect("writing guests.rs");
}

fn build_guests(guests_dir: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(guests_dir).args(["build", "--release", "--target-dir"]).arg(target_dir);
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if LEAKING_VARS.contains(&key) || LEAKING_PREFIXES.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key);
        }
    }
    let output = cmd.output().expect("running cargo for tests/guests");
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!("building the PV test guests in {} failed", guests_dir.display());
    }
}

/// The guests are the files of `tests/guests/src/bin`; a file's stem is its binary's name.
fn guest_names(bin_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(bin_dir)
        .expect("reading tests/guests/src/bin")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}
