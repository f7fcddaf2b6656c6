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

// ---- --disk: every bad disk is refused in one line, before KVM, and nothing is written ----

/// A scratch file for one test, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str, bytes: &[u8]) -> Scratch {
        let p = std::env::temp_dir().join(format!("xenvmm-cli-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        Scratch(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn with_disk(spec: &str) -> Output {
    run(&["--kernel", xenvmm_tests::guests::HELLO, "--disk", spec])
}

#[test]
fn a_missing_disk_image_is_named() {
    one_line_error(&with_disk("path=/nonexistent/disk.img"), 1, "/nonexistent/disk.img");
}

#[test]
fn a_directory_is_not_a_disk_image() {
    one_line_error(&with_disk("path=/"), 1, "directory");
}

#[test]
fn a_raw_image_whose_size_is_not_whole_sectors_is_refused() {
    let f = Scratch::new("odd.img", &[0u8; 1000]);
    one_line_error(&with_disk(&format!("path={}", f.path())), 1, "512");
    assert_eq!(std::fs::read(&f.0).unwrap(), vec![0u8; 1000], "nothing written");
}

#[test]
fn a_corrupt_qcow2_image_is_refused() {
    // The qcow2 magic and version 3, then garbage: a header no qcow2 reader can accept.
    let mut bytes = b"QFI\xfb\x00\x00\x00\x03".to_vec();
    bytes.resize(4096, 0xee);
    let f = Scratch::new("corrupt.qcow2", &bytes);
    let out = with_disk(&format!("path={}", f.path()));
    one_line_error(&out, 1, f.path());
    assert_eq!(std::fs::read(&f.0).unwrap(), bytes, "nothing written");
}

#[test]
fn bad_disk_specs_name_the_problem() {
    let f = Scratch::new("spec.img", &[0u8; 4096]);
    let p = f.path();
    for (spec, needle) in [
        (format!("path={p},colour=blue"), "colour"),
        (format!("path={p},readonly=maybe"), "maybe"),
        (format!("path={p},format=vmdk"), "vmdk"),
        (format!("path={p},cache=sometimes"), "sometimes"),
        ("readonly=on".to_string(), "path"),
    ] {
        one_line_error(&with_disk(&spec), 1, needle);
    }
}

#[test]
fn an_image_locked_by_another_process_is_refused() {
    use std::os::fd::AsRawFd;
    let f = Scratch::new("locked.img", &[0u8; 8192]);
    let holder = std::fs::OpenOptions::new().read(true).write(true).open(&f.0).unwrap();
    // An OFD write lock over the whole file, as a running xenvmm (or QEMU) holds one.
    // SAFETY: flock is plain data; all zeros is a valid value (a lock from offset 0 to EOF).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as i16;
    lock.l_whence = libc::SEEK_SET as i16;
    // SAFETY: fcntl on a descriptor we own, with a valid flock.
    let r = unsafe { libc::fcntl(holder.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    assert_eq!(r, 0, "taking the test's lock: {}", std::io::Error::last_os_error());
    one_line_error(&with_disk(&format!("path={}", f.path())), 1, "lock");
    // A read-only open needs a shared lock, which a writer's lock also refuses.
    one_line_error(&with_disk(&format!("path={},readonly=on", f.path())), 1, "lock");
    drop(holder);
}
