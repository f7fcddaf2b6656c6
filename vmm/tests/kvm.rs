//! End-to-end tests on real KVM: the xenvmm binary and the library API run the PV test guests
//! of `tests/guests`.
//!
//! These need a /dev/kvm with hardware virtualization. When this machine has none (KVM-PVM, as
//! on the project's development machines) the test binary runs itself again inside the nested
//! test host (`scripts/nested-host`: QEMU TCG with `-cpu max` and kvm_amd), once for all of its
//! tests, and reports that run's result. It never skips: without a usable KVM and without the
//! nested host, every test fails with instructions.

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vmm::{Domain, DomainConfig, ExitReason, ImageSource};
use xenvmm_tests::guests;

const XENVMM: &str = env!("CARGO_BIN_EXE_xenvmm");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn hw_kvm() -> bool {
    vmm::kvm::flavour() == vmm::kvm::KvmFlavour::Hardware && Path::new("/dev/kvm").exists()
}

fn xenvmm(args: &[&str]) -> Output {
    Command::new(XENVMM).args(args).output().expect("cannot run xenvmm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn expect_code(out: &Output, code: i32) -> Result<(), Failed> {
    if out.status.code() != Some(code) {
        return Err(format!(
            "exit status {:?}, expected {code}\n--- stdout\n{}--- stderr\n{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        )
        .into());
    }
    Ok(())
}

fn expect_contains(hay: &str, needle: &str, what: &str) -> Result<(), Failed> {
    if !hay.contains(needle) {
        return Err(format!("{what} lacks {needle:?}:\n{hay}").into());
    }
    Ok(())
}

/// Runs a self-checking test guest and expects poweroff with every check passed.
fn run_checks_guest(name: &str, extra: &[&str]) -> Result<String, Failed> {
    let mut args = vec!["--kernel", xenvmm_tests::guest(name), "--stats"];
    args.extend_from_slice(extra);
    let out = xenvmm(&args);
    let so = text(&out.stdout);
    if so.contains("not ok") || out.status.code() != Some(0) {
        return Err(format!(
            "guest {name}: exit status {:?}\n--- stdout\n{so}--- stderr\n{}",
            out.status.code(),
            text(&out.stderr)
        )
        .into());
    }
    expect_contains(&so, "checks passed, 0 failed", "stdout")?;
    Ok(so + &text(&out.stderr))
}

fn traps_guest_checks_bounce_frames_and_small_hypercalls() -> Result<(), Failed> {
    run_checks_guest("traps", &[]).map(|_| ())
}

fn usermode_guest_syscall_reaches_the_callback_and_iret_returns_to_user() -> Result<(), Failed> {
    let out = run_checks_guest("usermode", &[])?;
    // Every user-mode SYSCALL was counted by the shim, none left the VM.
    expect_contains(&out, "shim: guest syscalls", "--stats")
}

fn descriptors_guest_installs_its_gdt_and_every_refusal_changes_nothing() -> Result<(), Failed> {
    run_checks_guest("descriptors", &[]).map(|_| ())
}

fn memory_guest_balloons_out_and_back_in() -> Result<(), Failed> {
    let out = run_checks_guest("memory", &[])?;
    // 4 + 600 + 1 pages given back in three calls; the 600 are two continuation chunks
    // (512 + 88), each one hostcall because their frames are contiguous.
    expect_contains(&out, "frames released 605, release hostcalls 4, frames populated 605", "--stats")?;
    eprintln!("# memory: ballooning 600 pages out took 2 hostcall exits (4 for 605 pages in 3 calls)");
    Ok(())
}

/// `name N` from a `--stats` line such as `    irq_exits                 38`, or the total
/// `VM exits (KVM counters, vCPU 0): N`.
fn stat(out: &str, name: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(name)?;
        rest.trim_start_matches(|c: char| c == ':' || c.is_whitespace()).parse().ok()
    })
}

/// VM exits other than host interrupts (which follow wall time, not the guest) of one run.
fn bench_run(iters: u64) -> Result<(u64, String), Failed> {
    let out = run_checks_guest("bench", &["--cmdline", &format!("iters={iters}")])?;
    expect_contains(&out, &format!("# bench: iters {iters} "), "stdout")?;
    let total = stat(&out, "VM exits (KVM counters, vCPU 0)")
        .ok_or_else(|| format!("no KVM exit counters (KVM_GET_STATS_FD) in --stats:\n{out}"))?;
    let irq = stat(&out, "irq_exits").unwrap_or(0);
    Ok((total - irq, out))
}

fn bench_loops_of_hypercalls_and_user_round_trips_cause_no_vm_exit() -> Result<(), Failed> {
    let (few, _) = bench_run(1_000)?;
    let (many, out) = bench_run(21_000)?;
    // 20,000 more of each: null hypercalls, event sends with their upcalls, kernel page
    // faults, user SYSCALL/iret round trips. Were any of them to leave the VM, the
    // difference would be at least 20,000.
    if many.abs_diff(few) > 10 {
        return Err(format!(
            "VM exits (not host interrupts) grew from {few} to {many} with 20000 more iterations:\n{out}"
        )
        .into());
    }
    for l in out.lines().filter(|l| l.starts_with("# bench:")) {
        eprintln!("{l}");
    }
    eprintln!("# bench: VM exits other than host interrupts: {few} (1000 iterations), {many} (21000)");
    Ok(())
}

/// The `mmu` guest's VM exits other than host interrupts, for `iters` iterations.
fn mmu_run(iters: u64) -> Result<(u64, String), Failed> {
    let out = run_checks_guest("mmu", &["--cmdline", &format!("iters={iters}")])?;
    expect_contains(&out, &format!("# mmu: iters {iters} done"), "stdout")?;
    let total = stat(&out, "VM exits (KVM counters, vCPU 0)")
        .ok_or_else(|| format!("no KVM exit counters (KVM_GET_STATS_FD) in --stats:\n{out}"))?;
    Ok((total - stat(&out, "irq_exits").unwrap_or(0), out))
}

fn mmu_guest_refusals_change_nothing_and_page_table_work_stays_in_the_vm() -> Result<(), Failed> {
    let (few, _) = mmu_run(10)?;
    let (many, out) = mmu_run(110)?;
    // 100 more iterations: 6,400 more mmu_update entries in each batch size and 100 more
    // build/pin/switch/unpin/free cycles of a 4-level tree.
    if many.abs_diff(few) > 10 {
        return Err(format!(
            "VM exits (not host interrupts) grew from {few} to {many} with 100 more iterations:\n{out}"
        )
        .into());
    }
    for l in out.lines().filter(|l| l.starts_with("# mmu:")) {
        eprintln!("{l}");
    }
    eprintln!("# mmu: VM exits other than host interrupts: {few} (10 iterations), {many} (110)");
    Ok(())
}

fn ptwr_guest_direct_pte_writes_are_emulated_or_refused() -> Result<(), Failed> {
    let out = run_checks_guest("ptwr", &[])?;
    expect_contains(&out, "pte write", "--stats")?;
    for l in out.lines().filter(|l| l.starts_with("# ptwr:")) {
        eprintln!("{l}");
    }
    Ok(())
}

fn hello_guest_prints_and_powers_off() -> Result<(), Failed> {
    let out = xenvmm(&["--kernel", guests::HELLO, "--stats"]);
    expect_code(&out, 0)?;
    let so = text(&out.stdout);
    // The guest's own first line, and its own verdict on every ABI check it makes.
    if !so.starts_with("Hello from a Xen PV guest!\n") {
        return Err(format!("first console line is not the greeting:\n{so}").into());
    }
    expect_contains(&so, "checks passed, 0 failed", "stdout")?;
    if so.contains("not ok") {
        return Err(format!("a guest check failed:\n{so}").into());
    }
    let se = text(&out.stderr);
    expect_contains(&se, "VM exits to userspace:", "--stats")?;
    expect_contains(&se, "console_io", "--stats")?;
    expect_contains(&se, "(1 answered -ENOSYS)", "--stats")?;
    Ok(())
}

fn hypercall_page_guest_works() -> Result<(), Failed> {
    let out = xenvmm(&["--kernel", guests::HELLO_HCPAGE]);
    expect_code(&out, 0)?;
    let so = text(&out.stdout);
    expect_contains(&so, "ok - hypercall page filled by the domain builder", "stdout")?;
    expect_contains(&so, "checks passed, 0 failed", "stdout")
}

fn crash_guest_exits_4() -> Result<(), Failed> {
    let out = xenvmm(&["--kernel", guests::CRASH]);
    expect_code(&out, 4)?;
    expect_contains(&text(&out.stderr), "crashed", "stderr")
}

fn fault_guest_exits_5_with_a_register_dump() -> Result<(), Failed> {
    let out = xenvmm(&["--kernel", guests::FAULT, "--stats"]);
    expect_code(&out, 5)?;
    let se = text(&out.stderr);
    expect_contains(&se, "the VM faulted: unhandled #UD", "stderr")?;
    expect_contains(&se, "rip ffffffff81", "stderr")?;
    expect_contains(&se, "cs  000000000000e033", "stderr")?;
    expect_contains(&se, "guest exceptions: 1", "stderr")
}

fn emul_guest_privileged_instructions_are_emulated() -> Result<(), Failed> {
    let out = xenvmm(&["--kernel", guests::EMUL]);
    let so = text(&out.stdout);
    if so.contains("not ok") {
        return Err(format!("a guest check failed:\n{so}\n--- stderr\n{}", text(&out.stderr)).into());
    }
    expect_code(&out, 0)?;
    expect_contains(&so, "ok - forced cpuid 0x40000000 has the XenVMMXenVMM signature", "stdout")?;
    expect_contains(&so, "ok - rdmsr IA32_CR_PAT is Xen's PAT", "stdout")?;
    expect_contains(&so, "emul: ", "stdout")?;
    expect_contains(&so, "checks passed, 0 failed", "stdout")
}

fn every_shutdown_reason_has_its_exit_code() -> Result<(), Failed> {
    for (reason, code) in [("reboot", 3), ("suspend", 7), ("watchdog", 6), ("soft_reset", 8), ("crash", 4)] {
        let cmdline = format!("shutdown={reason}");
        let out = xenvmm(&["--kernel", guests::HELLO, "--cmdline", &cmdline, "--mem", "64M"]);
        expect_code(&out, code).map_err(|e| format!("{reason}: {}", e.message().unwrap_or_default()))?;
    }
    Ok(())
}

fn library_api_runs_a_domain_and_captures_its_console() -> Result<(), Failed> {
    let mut cfg = DomainConfig::new(PathBuf::from(guests::HELLO));
    cfg.mem_bytes = 32 << 20;
    let d = Domain::new(&cfg).map_err(|e| e.to_string())?;
    let mut console = Vec::new();
    let r = d.run(&mut console).map_err(|e| e.to_string())?;
    if !matches!(r.exit, ExitReason::Poweroff) {
        return Err(format!("exit {:?}", r.exit).into());
    }
    let c = text(&console);
    expect_contains(&c, "Hello from a Xen PV guest!", "console")?;
    let hc = r.stats.hypercalls();
    let console_io = hc.iter().find(|h| h.0 == 18).map(|h| h.1).unwrap_or(0);
    if console_io == 0 {
        return Err(format!("no console_io hypercalls counted: {hc:?}").into());
    }
    // Every console_io write is exactly one hostcall, and hostcalls are the only exits to
    // userspace in this guest: nothing else leaves the VM.
    let hostcalls = r.stats.shim.map(|s| s.hostcalls).unwrap_or(0);
    if r.stats.userspace_exits.total() != hostcalls {
        return Err(format!("userspace exits {:?} vs hostcalls {hostcalls}", r.stats.userspace_exits).into());
    }
    Ok(())
}

fn library_api_reports_in_memory_kernels_and_bad_images() -> Result<(), Failed> {
    let bytes = std::fs::read(guests::CRASH).map_err(|e| e.to_string())?;
    let mut cfg = DomainConfig::new(ImageSource::Bytes(bytes.into()));
    cfg.mem_bytes = 32 << 20;
    let r = Domain::new(&cfg).and_then(|d| d.run(&mut Vec::new())).map_err(|e| e.to_string())?;
    if !matches!(r.exit, ExitReason::Crash) || r.exit.exit_code() != 4 {
        return Err(format!("exit {:?}", r.exit).into());
    }
    let cfg = DomainConfig::new(ImageSource::Bytes(vec![0u8; 4096].into()));
    match Domain::new(&cfg) {
        Err(vmm::Error::Kernel { .. }) => Ok(()),
        Err(e) => Err(format!("wrong error for a zero image: {e}").into()),
        Ok(_) => Err("a zero image was accepted".into()),
    }
}

/// The 64 KiB the console-ring guest writes through its ring (tests/guests/src/bin/console-ring.rs).
fn console_ring_payload() -> String {
    let mut s = String::new();
    for i in 0..1024usize {
        s.push_str(&format!("ring {i:05} "));
        s.extend((0..52).map(|j| (b'a' + ((i + j) % 26) as u8) as char));
        s.push('\n');
    }
    s
}

/// `needles` occur in `hay` in this order, each once at least.
fn expect_in_order(hay: &str, needles: &[&str]) -> Result<(), Failed> {
    let mut at = 0;
    for n in needles {
        match hay[at..].find(n) {
            Some(i) => at += i + n.len(),
            None => {
                let shown: String = n.chars().take(60).collect();
                return Err(format!(
                    "console lacks {shown:?} after byte {at}:\n{}",
                    &hay[..hay.len().min(2000)]
                )
                .into());
            }
        }
    }
    Ok(())
}

fn console_ring_streams_64k_with_no_userspace_exit_per_notification() -> Result<(), Failed> {
    let mut cfg = DomainConfig::new(PathBuf::from(guests::CONSOLE_RING));
    cfg.mem_bytes = 32 << 20;
    let d = Domain::new(&cfg).map_err(|e| e.to_string())?;
    let mut console = Vec::new();
    let r = d.run(&mut console).map_err(|e| e.to_string())?;
    let c = text(&console);
    let tail: String = c.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect();
    if !matches!(r.exit, ExitReason::Poweroff) || c.contains("not ok") {
        return Err(format!("exit {:?}; console ends:\n{tail}", r.exit).into());
    }
    let payload = console_ring_payload();
    expect_in_order(
        &c,
        &[
            "console-ring: start\n",
            &payload,
            "console-ring: ring text before console_io\nconsole-ring: console_io text after it\n",
            "console-ring: corrupt ring notified\n",
            "console-ring: ring repaired\n",
            "checks passed, 0 failed\nconsole-ring: unnotified tail\n",
        ],
    )?;
    if c.matches("ring 00000 ").count() != 1 {
        return Err("the payload came out more than once".into());
    }

    // Every notification was a doorbell write that KVM handled without leaving the kernel.
    let exits = &r.stats.userspace_exits;
    if exits.0.contains_key("io_out (doorbell)") {
        return Err(format!("doorbell writes reached userspace: {exits:?}").into());
    }
    let shim = r.stats.shim.ok_or("no shim statistics")?;
    if exits.total() != shim.hostcalls {
        return Err(format!("userspace exits {exits:?} are not just the {} hostcalls", shim.hostcalls).into());
    }
    let sends: u64 = c
        .lines()
        .find_map(|l| l.strip_prefix("console-ring: ")?.split_once(" notifications, ")?.0.parse().ok())
        .ok_or_else(|| format!("the guest did not report its notifications:\n{tail}"))?;
    // At least one per line after the first 32, which went with one; xenstore; corrupt; repaired.
    // The shim rings only when its mailbox word was empty; the other sends ride along.
    if sends < 996 || shim.host_sends != sends || shim.doorbells == 0 || shim.doorbells > sends {
        return Err(format!(
            "guest sent {sends} notifications, the shim took {} and rang {} doorbells",
            shim.host_sends, shim.doorbells
        )
        .into());
    }
    if let Some(io) = r.stats.kvm.get("io_exits") {
        if io < shim.doorbells {
            return Err(format!("KVM counted {io} I/O exits for {} doorbells", shim.doorbells).into());
        }
    }

    // The host answered through the irqfd, and the shim took the raised port.
    let ev = &r.stats.events;
    let ring_text = [
        "console-ring: ring text before console_io\n",
        "console-ring: ring repaired\n",
        "console-ring: unnotified tail\n",
    ];
    let ring_bytes = payload.len() + ring_text.iter().map(|t| t.len()).sum::<usize>();
    if ev.console_ring_bytes != ring_bytes as u64 || ev.ports_raised == 0 || ev.irqs == 0 {
        return Err(format!("host event counters {ev:?}, expected {ring_bytes} ring bytes and raises").into());
    }
    if shim.host_raised == 0 {
        return Err(format!("the shim never took a port the host raised ({ev:?})").into());
    }
    expect_contains(&r.stats.to_string(), "doorbells", "--stats")
}

fn too_little_memory_is_a_clear_error() -> Result<(), Failed> {
    // The test guests are linked at 16 MiB above VIRT_BASE, like Linux.
    let out = xenvmm(&["--kernel", guests::HELLO, "--mem", "16M"]);
    expect_code(&out, 1)?;
    let se = text(&out.stderr);
    if se.lines().count() != 1 || !se.contains("memory") {
        return Err(format!("expected one line about memory, got:\n{se}").into());
    }
    Ok(())
}

/// A guest that reports through `Checks` must end with exit `code`, its summary line and no
/// failed check.
fn expect_all_checks_pass(out: &Output, program: &str, code: i32) -> Result<(), Failed> {
    expect_code(out, code)?;
    let so = text(&out.stdout);
    let summary = so.lines().find(|l| l.starts_with(&format!("{program}: ")) && l.contains("checks passed"));
    match summary {
        Some(l) if l.ends_with(" checks passed, 0 failed") && !so.contains("not ok") => Ok(()),
        _ => Err(format!("{program} did not pass all its checks:\n{so}").into()),
    }
}

fn events_guest_passes_every_event_channel_check() -> Result<(), Failed> {
    // Powers off although its last call is SCHEDOP_shutdown(reboot): shutdown_code wins.
    let out = xenvmm(&["--kernel", guests::EVENTS, "--mem", "64M"]);
    expect_all_checks_pass(&out, "events", 0)
}

fn timer_guest_passes_every_time_and_timer_check() -> Result<(), Failed> {
    let out = xenvmm(&["--kernel", guests::TIMER, "--mem", "64M"]);
    expect_all_checks_pass(&out, "timer", 0)
}

fn grants_guest_sets_up_maps_and_uses_its_grant_table() -> Result<(), Failed> {
    run_checks_guest("grants", &[]).map(|_| ())
}

fn main() {
    let args = Arguments::from_args();
    if !hw_kvm() && std::env::var_os("XENVMM_NESTED").is_none() {
        // Run this very binary, with the same arguments, inside the nested test host.
        let me = std::env::current_exe().expect("current_exe");
        let status = Command::new(repo_root().join("scripts/nested-host"))
            .arg(me)
            .args(std::env::args_os().skip(1))
            .status()
            .expect("cannot start scripts/nested-host");
        std::process::exit(status.code().unwrap_or(1));
    }
    let tests = vec![
        Trial::test(
            "debian_kernel_boots_to_init_runs_commands_and_powers_off",
            debian_kernel_boots_to_init_runs_commands_and_powers_off,
        ),
        Trial::test(
            "debian_shell_answers_console_input_and_sigterm_powers_it_off",
            debian_shell_answers_console_input_and_sigterm_powers_it_off,
        ),
        Trial::test("debian_shell_reboot_is_exit_status_3", debian_shell_reboot_is_exit_status_3),
        Trial::test(
            "debian_kernel_with_a_hypercall_page_boots_and_its_panic_is_a_crash",
            debian_kernel_with_a_hypercall_page_boots_and_its_panic_is_a_crash,
        ),
        Trial::test(
            "sigterm_stops_a_guest_that_cannot_power_off_with_status_10",
            sigterm_stops_a_guest_that_cannot_power_off_with_status_10,
        ),
        Trial::test("hello_guest_prints_and_powers_off", hello_guest_prints_and_powers_off),
        Trial::test("hypercall_page_guest_works", hypercall_page_guest_works),
        Trial::test("crash_guest_exits_4", crash_guest_exits_4),
        Trial::test("fault_guest_exits_5_with_a_register_dump", fault_guest_exits_5_with_a_register_dump),
        Trial::test(
            "emul_guest_privileged_instructions_are_emulated",
            emul_guest_privileged_instructions_are_emulated,
        ),
        Trial::test("every_shutdown_reason_has_its_exit_code", every_shutdown_reason_has_its_exit_code),
        Trial::test(
            "library_api_runs_a_domain_and_captures_its_console",
            library_api_runs_a_domain_and_captures_its_console,
        ),
        Trial::test(
            "library_api_reports_in_memory_kernels_and_bad_images",
            library_api_reports_in_memory_kernels_and_bad_images,
        ),
        Trial::test("too_little_memory_is_a_clear_error", too_little_memory_is_a_clear_error),
        Trial::test(
            "events_guest_passes_every_event_channel_check",
            events_guest_passes_every_event_channel_check,
        ),
        Trial::test(
            "timer_guest_passes_every_time_and_timer_check",
            timer_guest_passes_every_time_and_timer_check,
        ),
        Trial::test(
            "traps_guest_checks_bounce_frames_and_small_hypercalls",
            traps_guest_checks_bounce_frames_and_small_hypercalls,
        ),
        Trial::test(
            "usermode_guest_syscall_reaches_the_callback_and_iret_returns_to_user",
            usermode_guest_syscall_reaches_the_callback_and_iret_returns_to_user,
        ),
        Trial::test("memory_guest_balloons_out_and_back_in", memory_guest_balloons_out_and_back_in),
        Trial::test(
            "descriptors_guest_installs_its_gdt_and_every_refusal_changes_nothing",
            descriptors_guest_installs_its_gdt_and_every_refusal_changes_nothing,
        ),
        Trial::test(
            "bench_loops_of_hypercalls_and_user_round_trips_cause_no_vm_exit",
            bench_loops_of_hypercalls_and_user_round_trips_cause_no_vm_exit,
        ),
        Trial::test(
            "mmu_guest_refusals_change_nothing_and_page_table_work_stays_in_the_vm",
            mmu_guest_refusals_change_nothing_and_page_table_work_stays_in_the_vm,
        ),
        Trial::test(
            "ptwr_guest_direct_pte_writes_are_emulated_or_refused",
            ptwr_guest_direct_pte_writes_are_emulated_or_refused,
        ),
        Trial::test(
            "console_ring_streams_64k_with_no_userspace_exit_per_notification",
            console_ring_streams_64k_with_no_userspace_exit_per_notification,
        ),
        Trial::test(
            "grants_guest_sets_up_maps_and_uses_its_grant_table",
            grants_guest_sets_up_maps_and_uses_its_grant_table,
        ),
        Trial::test(
            "debian_two_disks_mkfs_write_read_back_and_the_host_finds_them_clean",
            debian_two_disks_mkfs_write_read_back_and_the_host_finds_them_clean,
        ),
        Trial::test(
            "debian_qcow2_overlay_reads_its_backing_file_and_keeps_writes_to_itself",
            debian_qcow2_overlay_reads_its_backing_file_and_keeps_writes_to_itself,
        ),
        Trial::test("debian_read_only_disk_refuses_writes", debian_read_only_disk_refuses_writes),
        Trial::test(
            "debian_synced_writes_survive_sigkill_of_xenvmm",
            debian_synced_writes_survive_sigkill_of_xenvmm,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}

// ---------------------------------------------------------------------------------------------
// Debian's kernel as the guest.

/// Where scripts fetch Debian's packages (the same default as scripts/lib.sh).
fn cache_dir() -> PathBuf {
    std::env::var_os("XENVMM_CACHE").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/cache"))
}

/// Debian's kernel of `flavour` and the test initramfs for it, prepared by `scripts/setup`
/// (`scripts/prepare-linux-guests`).
fn linux_guest(flavour: &str) -> Result<(String, String), Failed> {
    let dir = cache_dir().join("linux").join(flavour);
    let (k, i) = (dir.join("vmlinuz"), dir.join("initrd.gz"));
    if !k.is_file() || !i.is_file() {
        return Err(format!(
            "{} lacks vmlinuz or initrd.gz: run scripts/setup (it fetches Debian's kernels and builds the test initramfs)",
            dir.display()
        )
        .into());
    }
    Ok((k.display().to_string(), i.display().to_string()))
}

/// A running xenvmm whose stdout is collected by a thread.
struct Running {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
}

/// How long a Debian boot may take in the nested test host (about a minute when idle).
const LINUX_BOOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(420);

impl Running {
    fn start(args: &[&str]) -> Running {
        use std::process::Stdio;
        let mut child = Command::new(XENVMM)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run xenvmm");
        let collect = |mut r: Box<dyn std::io::Read + Send>| {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let b = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
            buf
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Running { child, out, err }
    }

    fn transcript(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.out.lock().unwrap(), self.err.lock().unwrap())
    }

    /// Waits until stdout contains `needle` after byte `from`; returns the offset after it.
    fn wait_for(&mut self, needle: &str, from: usize, timeout: std::time::Duration) -> Result<usize, Failed> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(at) = self.out.lock().unwrap().get(from..).and_then(|s| s.find(needle)) {
                return Ok(from + at + needle.len());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the reader threads catch up before judging.
                std::thread::sleep(std::time::Duration::from_millis(200));
                if let Some(at) = self.out.lock().unwrap().get(from..).and_then(|s| s.find(needle)) {
                    return Ok(from + at + needle.len());
                }
                return Err(
                    format!("xenvmm ended ({st}) before printing {needle:?}\n{}", self.transcript()).into()
                );
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(format!("no {needle:?} within {timeout:?}\n{}", self.transcript()).into());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn send(&mut self, text: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the exit status (killing xenvmm after `timeout`).
    fn wait_exit(&mut self, timeout: std::time::Duration) -> Result<i32, Failed> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(std::time::Duration::from_millis(200));
                return st
                    .code()
                    .ok_or_else(|| format!("xenvmm died by a signal: {st}\n{}", self.transcript()).into());
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(format!("xenvmm did not exit within {timeout:?}\n{}", self.transcript()).into());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

const INIT_MARKER: &str = "xenvmm-init: ready";

fn debian_kernel_boots_to_init_runs_commands_and_powers_off() -> Result<(), Failed> {
    let (k, i) = linux_guest("current")?;
    let t0 = std::time::Instant::now();
    let log = std::env::temp_dir().join(format!("xenvmm-console-{}.log", std::process::id()));
    let log_arg = log.display().to_string();
    let mut r = Running::start(&[
        "--kernel",
        &k,
        "--initrd",
        &i,
        "--cmdline",
        "console=hvc0 xenvmm.test",
        "--stats",
        "--console-log",
        &log_arg,
    ]);
    let at = r.wait_for(INIT_MARKER, 0, LINUX_BOOT_TIMEOUT)?;
    let to_marker = t0.elapsed();
    let code = r.wait_exit(LINUX_BOOT_TIMEOUT)?;
    let out = r.out.lock().unwrap().clone();
    let tail = &out[at..];
    for needle in [
        "Linux (none) 6.1.0-",
        "model name",
        "hypervisor: xen",
        "xenvmm-init: 100 fork/exec done",
        "xenvmm-init: test done",
    ] {
        expect_contains(tail, needle, "the guest's console after the /init marker")
            .map_err(|e| format!("{}\n{}", e.message().unwrap_or_default(), r.transcript()))?;
    }
    if code != 0 {
        return Err(format!("exit status {code}, expected 0 (poweroff)\n{}", r.transcript()).into());
    }
    // --console-log holds the same console output as stdout.
    let logged =
        std::fs::read_to_string(&log).map_err(|e| format!("--console-log {}: {e}", log.display()))?;
    let _ = std::fs::remove_file(&log);
    if !out.ends_with(&logged) || !logged.contains("xenvmm-init: test done") {
        return Err(
            format!("--console-log differs from stdout:\n--- log\n{logged}\n{}", r.transcript()).into()
        );
    }
    eprintln!(
        "# debian current: /init marker after {:.1} s, exit after {:.1} s",
        to_marker.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn debian_shell_answers_console_input_and_sigterm_powers_it_off() -> Result<(), Failed> {
    let (k, i) = linux_guest("current")?;
    let tools = cache_dir().join("xenstore-utils");
    if !tools.join("usr/bin/xenstore-ls").is_file() {
        return Err(format!("{} lacks Debian's xenstore-utils: run scripts/setup", tools.display()).into());
    }
    // Not in the cache: the nested host shares it over 9p, which cannot hold a socket.
    let socket = std::env::temp_dir().join(format!("xenvmm-xenstore-test-{}.sock", std::process::id()));
    let sock = socket.display().to_string();
    let mut r = Running::start(&[
        "--kernel",
        &k,
        "--initrd",
        &i,
        "--shutdown-grace",
        "120",
        "--xenstore-socket",
        &sock,
    ]);
    let at = r.wait_for(INIT_MARKER, 0, LINUX_BOOT_TIMEOUT)?;
    let at = r.wait_for("# ", at, LINUX_BOOT_TIMEOUT)?;
    r.send("echo answer-$((6 * 7)); cat /sys/hypervisor/type\n");
    let at = r.wait_for("answer-42", at, LINUX_BOOT_TIMEOUT)?;
    r.wait_for("xen", at, LINUX_BOOT_TIMEOUT)?;

    // Debian's xenstore-ls against the running guest's store: the toolstack's entries and the
    // ones Linux wrote itself.
    let ls = Command::new(tools.join("usr/bin/xenstore-ls"))
        .args(["-f", "/local/domain/1"])
        .env("XENSTORED_PATH", &socket)
        .env("LD_LIBRARY_PATH", tools.join("usr/lib/x86_64-linux-gnu"))
        .output()
        .map_err(|e| format!("cannot run xenstore-ls: {e}"))?;
    let listing = text(&ls.stdout);
    for needle in [
        "/local/domain/1/name = \"xenvmm\"",
        "/local/domain/1/memory/target = \"524288\"",
        "/local/domain/1/control/feature-poweroff = \"1\"",
    ] {
        expect_contains(&listing, needle, "xenstore-ls -f /local/domain/1")
            .map_err(|e| format!("{}\nstderr: {}", e.message().unwrap_or_default(), text(&ls.stderr)))?;
    }
    // Orderly: xenvmm writes control/shutdown, Linux runs its power-off path.
    r.signal(libc::SIGTERM);
    let code = r.wait_exit(LINUX_BOOT_TIMEOUT)?;
    let err = r.err.lock().unwrap().clone();
    expect_contains(&err, "SIGTERM: asking the guest to power off", "stderr")?;
    if code != 0 {
        return Err(format!(
            "exit status {code} after SIGTERM, expected 0 (the guest powered off)\n{}",
            r.transcript()
        )
        .into());
    }
    Ok(())
}

fn debian_shell_reboot_is_exit_status_3() -> Result<(), Failed> {
    let (k, i) = linux_guest("current")?;
    let mut r = Running::start(&["--kernel", &k, "--initrd", &i]);
    let at = r.wait_for(INIT_MARKER, 0, LINUX_BOOT_TIMEOUT)?;
    r.wait_for("# ", at, LINUX_BOOT_TIMEOUT)?;
    r.send("reboot\n");
    let code = r.wait_exit(LINUX_BOOT_TIMEOUT)?;
    if code != 3 {
        return Err(format!("exit status {code} after reboot, expected 3\n{}", r.transcript()).into());
    }
    let err = r.err.lock().unwrap().clone();
    expect_contains(&err, "asked to reboot", "stderr")
}

fn debian_kernel_with_a_hypercall_page_boots_and_its_panic_is_a_crash() -> Result<(), Failed> {
    let (k, i) = linux_guest("hypercall-page")?;
    let mut r = Running::start(&["--kernel", &k, "--initrd", &i]);
    let at = r.wait_for(INIT_MARKER, 0, LINUX_BOOT_TIMEOUT)?;
    let at = r.wait_for("# ", at, LINUX_BOOT_TIMEOUT)?;
    r.send("uname -r\n");
    r.wait_for("5.10.0-", at, LINUX_BOOT_TIMEOUT)?;
    r.send("echo c > /proc/sysrq-trigger\n");
    let code = r.wait_exit(LINUX_BOOT_TIMEOUT)?;
    if code != 4 {
        return Err(
            format!("exit status {code} after a panic, expected 4 (crash)\n{}", r.transcript()).into()
        );
    }
    let err = r.err.lock().unwrap().clone();
    expect_contains(&err, "the guest's last console lines:", "stderr")?;
    expect_contains(&err, "Kernel panic", "stderr (the kept console lines)")
}

fn sigterm_stops_a_guest_that_cannot_power_off_with_status_10() -> Result<(), Failed> {
    // The bench guest loops for a long time and has no xenstore: nothing answers control/shutdown.
    let mut r = Running::start(&["--kernel", guests::BENCH, "--cmdline", "iters=100000000"]);
    r.wait_for("# bench: TSC read pair", 0, std::time::Duration::from_secs(60))?;
    r.signal(libc::SIGTERM);
    let code = r.wait_exit(std::time::Duration::from_secs(30))?;
    let err = r.err.lock().unwrap().clone();
    expect_contains(&err, "has not said it can power off", "stderr")?;
    expect_contains(&err, "was stopped by the host", "stderr")?;
    if code != 10 {
        return Err(format!("exit status {code}, expected 10\n{}", r.transcript()).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Disks: Debian's xen-blkfront against xenvmm's block backend.

/// A scratch directory for one test's images, removed when dropped. In the nested host's
/// /tmp (a tmpfs): the cache is shared over 9p, which is slow and has no OFD locks.
struct ImageDir(PathBuf);

impl ImageDir {
    fn new(test: &str) -> ImageDir {
        let d = std::env::temp_dir().join(format!("xenvmm-disks-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        ImageDir(d)
    }
    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for ImageDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a host tool; its output, or a failure that names it.
fn host_tool(prog: &str, args: &[&str]) -> Result<Output, Failed> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {prog} (scripts/setup installs it): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} {args:?} failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

/// A sparse raw image of `mib` MiB.
fn raw_image(path: &str, mib: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(mib << 20).unwrap();
}

/// An ext4 image of `mib` MiB holding `files` (name, content), made with mkfs.ext4 -d.
fn ext4_image(dir: &ImageDir, path: &str, mib: u64, files: &[(&str, &str)]) -> Result<(), Failed> {
    let tree = dir.0.join(format!("tree-{}", Path::new(path).file_name().unwrap().to_string_lossy()));
    std::fs::create_dir_all(&tree).unwrap();
    for (name, content) in files {
        std::fs::write(tree.join(name), content).unwrap();
    }
    raw_image(path, mib);
    host_tool("mkfs.ext4", &["-q", "-F", "-d", tree.to_str().unwrap(), path])?;
    Ok(())
}

/// `e2fsck -fn` finds nothing to fix.
fn fsck_clean(path: &str) -> Result<(), Failed> {
    host_tool("e2fsck", &["-fn", path]).map(drop)
}

/// The content of `file` inside the ext2/3/4 image at `path`, read by debugfs (no mount).
fn debugfs_cat(path: &str, file: &str) -> Result<Vec<u8>, Failed> {
    Ok(host_tool("debugfs", &["-R", &format!("cat {file}"), path])?.stdout)
}

fn sha256_hex(path: &str, range: Option<(u64, u64)>) -> Result<String, Failed> {
    let args: Vec<String> = match range {
        None => vec![path.to_string()],
        Some(_) => vec!["-".to_string()],
    };
    let out = match range {
        None => host_tool("sha256sum", &args.iter().map(String::as_str).collect::<Vec<_>>())?,
        Some((off, len)) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            let part = bytes
                .get(off as usize..(off + len) as usize)
                .ok_or_else(|| format!("{path} is shorter than {}", off + len))?;
            let mut child = Command::new("sha256sum")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("sha256sum: {e}"))?;
            use std::io::Write;
            child.stdin.take().unwrap().write_all(part).unwrap();
            child.wait_with_output().map_err(|e| format!("sha256sum: {e}"))?
        }
    };
    Ok(text(&out.stdout).split_whitespace().next().unwrap_or_default().to_string())
}

/// A Debian guest at its shell prompt, with `extra` arguments (the disks).
fn debian_shell(extra: &[&str]) -> Result<(Running, usize), Failed> {
    let (k, i) = linux_guest("current")?;
    let mut args = vec!["--kernel", k.as_str(), "--initrd", i.as_str(), "--stats"];
    args.extend_from_slice(extra);
    let mut r = Running::start(&args);
    let at = r.wait_for(INIT_MARKER, 0, LINUX_BOOT_TIMEOUT)?;
    let at = r.wait_for("# ", at, LINUX_BOOT_TIMEOUT)?;
    Ok((r, at))
}

/// Runs `cmd` in the guest's shell; returns its output (what came after the echoed command,
/// up to the status line) and its exit status. The status line `st<N>x` is printed with
/// arithmetic expansion, so the echoed command line never matches it.
fn guest_sh(r: &mut Running, at: &mut usize, cmd: &str) -> Result<(String, i32), Failed> {
    let n = {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    };
    // The echoed command line shows `$((n+1000))`, never the number it expands to.
    r.send(&format!("{cmd}; echo \"end$(({n}+1000))-st$((0+$?))x\"\n"));
    let start = *at;
    let marker = format!("end{}-st", n + 1000);
    let end = r.wait_for(&marker, start, LINUX_BOOT_TIMEOUT)?;
    let out = r.out.lock().unwrap().clone();
    let tail = &out[end..];
    let code: i32 = tail.split('x').next().unwrap_or_default().trim().parse().unwrap_or(-1);
    let body = out[start..end - marker.len()].to_string();
    *at = end;
    Ok((body, code))
}

/// `guest_sh` that must succeed.
fn guest_ok(r: &mut Running, at: &mut usize, cmd: &str) -> Result<String, Failed> {
    let (body, code) = guest_sh(r, at, cmd)?;
    if code != 0 {
        return Err(format!("guest command {cmd:?} exited {code}:\n{body}\n{}", r.transcript()).into());
    }
    Ok(body)
}

/// Powers the guest off from its shell and expects status 0.
fn guest_poweroff(mut r: Running) -> Result<String, Failed> {
    r.send("poweroff\n");
    let code = r.wait_exit(LINUX_BOOT_TIMEOUT)?;
    if code != 0 {
        return Err(format!("exit status {code} after poweroff, expected 0\n{}", r.transcript()).into());
    }
    let err = r.err.lock().unwrap().clone();
    Ok(err)
}

/// The 64-hex-digit words of `s` (sha256sum output).
fn sha_words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .filter(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(String::from)
        .collect()
}

fn debian_two_disks_mkfs_write_read_back_and_the_host_finds_them_clean() -> Result<(), Failed> {
    let dir = ImageDir::new("two");
    let (a, b) = (dir.file("a.img"), dir.file("b.img"));
    raw_image(&a, 64);
    ext4_image(&dir, &b, 32, &[("hello.txt", "hello from the host\n")])?;
    let (mut r, mut at) = debian_shell(&["--disk", &format!("path={a}"), "--disk", &format!("path={b}")])?;
    let t0 = std::time::Instant::now();
    // xvda: a file system made by the guest, 8 MiB written, checked before and after a remount.
    let out = guest_ok(
        &mut r,
        &mut at,
        "mkdir -p /a /b && mke2fs -q /dev/xvda && mount /dev/xvda /a && dd if=/dev/urandom of=/a/blob bs=1M count=8 2>/dev/null && sha256sum /a/blob && umount /a && mount /dev/xvda /a && sha256sum /a/blob && umount /a",
    )?;
    let shas = sha_words(&out);
    if shas.len() != 2 || shas[0] != shas[1] {
        return Err(format!("the blob did not read back the same: {shas:?}\n{}", r.transcript()).into());
    }
    // xvdb: the host's ext4, read and written by the guest.
    let out = guest_ok(
        &mut r,
        &mut at,
        "mount /dev/xvdb /b && cat /b/hello.txt && echo written-by-the-guest > /b/guest.txt && umount /b",
    )?;
    expect_contains(&out, "hello from the host", "the guest's cat of xvdb")?;
    let io_time = t0.elapsed();
    let err = guest_poweroff(r)?;
    fsck_clean(&a)?;
    fsck_clean(&b)?;
    let blob = dir.file("blob");
    std::fs::write(&blob, debugfs_cat(&a, "/blob")?).unwrap();
    let host_sha = sha256_hex(&blob, None)?;
    if host_sha != shas[0] {
        return Err(format!("the host reads /blob as {host_sha}, the guest wrote {}", shas[0]).into());
    }
    let guest_txt = debugfs_cat(&b, "/guest.txt")?;
    if guest_txt != b"written-by-the-guest\n" {
        return Err(format!("guest.txt on the host: {:?}", text(&guest_txt)).into());
    }
    for l in err.lines().filter(|l| l.contains("block") || l.contains("xvd")) {
        eprintln!("# disks: {l}");
    }
    eprintln!(
        "# disks: mkfs, 8 MiB write, remount, read back on xvda and xvdb took {:.1} s",
        io_time.as_secs_f64()
    );
    Ok(())
}

fn debian_qcow2_overlay_reads_its_backing_file_and_keeps_writes_to_itself() -> Result<(), Failed> {
    let dir = ImageDir::new("qcow2");
    let (base, top) = (dir.file("base.raw"), dir.file("top.qcow2"));
    ext4_image(&dir, &base, 32, &[("hello.txt", "hello from the backing file\n")])?;
    host_tool("qemu-img", &["create", "-q", "-f", "qcow2", "-F", "raw", "-b", &base, &top])?;
    let base_sha = sha256_hex(&base, None)?;
    let (mut r, mut at) = debian_shell(&["--disk", &format!("path={top}")])?;
    let out = guest_ok(
        &mut r,
        &mut at,
        "mkdir -p /q && mount /dev/xvda /q && cat /q/hello.txt && echo written-to-the-overlay > /q/new.txt && dd if=/dev/urandom of=/q/blob bs=64k count=32 2>/dev/null && sha256sum /q/blob && umount /q",
    )?;
    expect_contains(&out, "hello from the backing file", "the guest's cat of the overlay")?;
    let shas = sha_words(&out);
    guest_poweroff(r)?;
    if sha256_hex(&base, None)? != base_sha {
        return Err("the backing file changed".into());
    }
    host_tool("qemu-img", &["check", "-q", &top])?;
    let flat = dir.file("flat.raw");
    host_tool("qemu-img", &["convert", "-O", "raw", &top, &flat])?;
    fsck_clean(&flat)?;
    if debugfs_cat(&flat, "/new.txt")? != b"written-to-the-overlay\n" {
        return Err("new.txt is not in the overlay".into());
    }
    let blob = dir.file("blob");
    std::fs::write(&blob, debugfs_cat(&flat, "/blob")?).unwrap();
    if shas.first() != Some(&sha256_hex(&blob, None)?) {
        return Err(format!("the overlay's /blob differs from what the guest wrote ({shas:?})").into());
    }
    Ok(())
}

fn debian_read_only_disk_refuses_writes() -> Result<(), Failed> {
    let dir = ImageDir::new("ro");
    let img = dir.file("ro.img");
    ext4_image(&dir, &img, 16, &[("hello.txt", "read me only\n")])?;
    let before = sha256_hex(&img, None)?;
    let (mut r, mut at) = debian_shell(&["--disk", &format!("path={img},readonly=on")])?;
    let ro = guest_ok(&mut r, &mut at, "cat /sys/block/xvda/ro")?;
    if !ro.lines().any(|l| l.trim() == "1") {
        return Err(format!("/sys/block/xvda/ro is not 1:\n{ro}").into());
    }
    let (out, code) =
        guest_sh(&mut r, &mut at, "dd if=/dev/zero of=/dev/xvda bs=4096 count=1 oflag=direct conv=fsync")?;
    if code == 0 {
        return Err(format!("a write to the read-only disk succeeded:\n{out}").into());
    }
    let out = guest_ok(
        &mut r,
        &mut at,
        "mkdir -p /r && mount -o ro /dev/xvda /r && cat /r/hello.txt && umount /r",
    )?;
    expect_contains(&out, "read me only", "the read-only mount")?;
    guest_poweroff(r)?;
    if sha256_hex(&img, None)? != before {
        return Err("the read-only image changed".into());
    }
    Ok(())
}

fn debian_synced_writes_survive_sigkill_of_xenvmm() -> Result<(), Failed> {
    let dir = ImageDir::new("kill");
    let img = dir.file("kill.img");
    raw_image(&img, 32);
    let (mut r, mut at) = debian_shell(&["--disk", &format!("path={img}")])?;
    // 1 MiB of random data at 640 KiB, written and flushed (conv=fsync: a flush request),
    // then xenvmm is killed without any chance to flush anything itself.
    let out = guest_ok(
        &mut r,
        &mut at,
        "dd if=/dev/urandom of=/tmp/pat bs=64k count=16 2>/dev/null && sha256sum /tmp/pat && dd if=/tmp/pat of=/dev/xvda bs=64k seek=10 conv=fsync 2>/dev/null",
    )?;
    let sha = sha_words(&out).into_iter().next().ok_or_else(|| format!("no checksum in {out:?}"))?;
    r.signal(libc::SIGKILL);
    let _ = r.child.wait();
    let on_disk = sha256_hex(&img, Some((640 << 10, 1 << 20)))?;
    if on_disk != sha {
        return Err(
            format!("after SIGKILL the image holds {on_disk}, the guest wrote and synced {sha}").into()
        );
    }
    Ok(())
}
