//! The xenvmm command line without KVM: argument checking and one-line errors for bad input.
//! These run on any machine (the checks happen before /dev/kvm is opened).

use std::process::{Command, Output};

const XENVMM: &str = env!("CARGO_BIN_EXE_xenvmm");

fn run(args: &[&str]) -> Output {
    Command::new(XENVMM).args(args).output().expect("cannot run xenvmm")
}

fn one_line_error(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "want one line, got: {err}");
    assert!(err.starts_with("xenvmm: error: "), "{err}");
    assert!(err.contains(needle), "{err} lacks {needle:?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn not_a_kernel_is_refused_in_one_line() {
    one_line_error(&run(&["--kernel", "/etc/hostname"]), 1, "/etc/hostname: not a bzImage or ELF file");
}

#[test]
fn missing_kernel_file_is_named() {
    one_line_error(
        &run(&["--kernel", "/nonexistent/vmlinuz"]),
        1,
        "cannot read the kernel /nonexistent/vmlinuz",
    );
}

#[test]
fn a_directory_is_not_a_kernel() {
    one_line_error(&run(&["--kernel", "/"]), 1, "cannot read the kernel /");
}

#[test]
fn an_elf_without_xen_notes_is_not_a_pv_kernel() {
    // This very test binary is an ELF file, but no Xen PV kernel.
    let me = std::env::current_exe().unwrap();
    one_line_error(&run(&["--kernel", me.to_str().unwrap()]), 1, "Xen");
}

#[test]
fn missing_initrd_is_named() {
    one_line_error(
        &run(&["--kernel", xenvmm_tests::guests::HELLO, "--initrd", "/nonexistent/initrd"]),
        1,
        "cannot read the initrd /nonexistent/initrd",
    );
}

#[test]
fn more_than_one_cpu_is_refused_with_a_reason() {
    one_line_error(&run(&["--kernel", xenvmm_tests::guests::HELLO, "--cpus", "2"]), 1, "use --cpus 1");
}

#[test]
fn bad_memory_sizes_are_usage_errors() {
    for bad in ["lots", "8M", "1T", "16385k"] {
        let out = run(&["--kernel", xenvmm_tests::guests::HELLO, "--mem", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--mem"));
    }
}

#[test]
fn kernel_is_required_and_help_documents_exit_codes() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit status:") && help.contains("the VM faulted"));
}
