//! `bench`: what the PV CPU costs a guest, in TSC cycles (median of many): a null hypercall
//! (`xen_version(XENVER_version)`), a kernel `int3` and a kernel #PF bounced to a handler and
//! back with `HYPERVISOR_iret`, an `EVTCHNOP_send` to self with its upcall, and a
//! user→kernel→user round trip (user SYSCALL → syscall callback → `HYPERVISOR_iret` with
//! `VGCF_in_syscall`, as Linux returns from a system call). The handlers are minimal assembly,
//! as Linux's entry code is. Then `iters=N` (command line, default 10000) more of each but
//! `int3`, untimed, so that the VMM's exit counters can show none of them leaves the VM: run
//! it with two values of N and compare the KVM exit counts (`vmm/tests/kvm.rs` does).
//!
//! Figures are printed as `# bench: ...` lines; they are not pass/fail.
#![no_std]
#![no_main]
#![allow(unsafe_code)]

use core::arch::{asm, global_asm};
use core::ptr::addr_of;
use xenvmm_test_guests::evtchn;
use xenvmm_test_guests::shared::map_shared_info;
use xenvmm_test_guests::start_info::{cmd_line, cmdline_param};
use xenvmm_test_guests::traps;
use xenvmm_test_guests::user::{self, DATA_VA, STACK_TOP};
use xenvmm_test_guests::xen_abi::callback::{CALLBACKTYPE_EVENT, CALLBACKTYPE_SYSCALL};
use xenvmm_test_guests::xen_abi::event::{EvtchnSend, EVTCHNOP_SEND};
use xenvmm_test_guests::xen_abi::hypercall::{
    HYPERVISOR_EVENT_CHANNEL_OP, HYPERVISOR_IRET, HYPERVISOR_MMUEXT_OP, HYPERVISOR_XEN_VERSION,
};
use xenvmm_test_guests::xen_abi::xen::{
    MmuextOp, SharedInfo, StartInfo, TrapInfo, DOMID_SELF, FLAT_KERNEL_CS, MMUEXT_TLB_FLUSH_LOCAL,
    VGCF_IN_SYSCALL,
};
use xenvmm_test_guests::{println, sched, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

/// Timed samples per figure (odd: one median).
const SAMPLES: usize = 2001;
const _: () = assert!(SAMPLES * 8 + 4096 <= (STACK_TOP - DATA_VA) as usize);

global_asm!(
    r#"
    // The syscall callback: straight back to user mode, as Linux's fast system call return
    // does (frame: rcx r11 rip cs rflags rsp ss → iret_context: rax r11 rcx flags rip ...).
    .text
    .globl bench_syscall_cb
bench_syscall_cb:
    pop rcx
    pop r11
    push {in_syscall}
    push rcx
    push r11
    push rax
    mov eax, {iret}
    syscall
    ud2

    // int3 handler: straight back with the iret hypercall (flags 0), no mode switch.
    .globl bench_int3_cb
bench_int3_cb:
    pop rcx
    pop r11
    push 0
    push rcx
    push r11
    push rax
    mov eax, {iret}
    syscall
    ud2

    // #PF handler: resume at bench_pf_resume (drops rcx, r11, error code; iret flags 0).
    .globl bench_pf_cb
bench_pf_cb:
    add rsp, 24
    lea rcx, [rip + bench_pf_resume]
    mov [rsp], rcx
    push 0
    push rcx
    push r11
    push rax
    mov eax, {iret}
    syscall
    ud2

    // One kernel read of an unmapped page, resumed by bench_pf_cb.
    .globl bench_pf_once
bench_pf_once:
    mov rax, qword ptr [0x1000]
bench_pf_resume:
    ret

    // Event callback: acknowledge everything (vcpu_info pending byte and selector, the first
    // pending word), then iret (flags 0), which unmasks events again from the frame's IF.
    .globl bench_ev_cb
bench_ev_cb:
    mov rcx, [rip + {si}]
    mov byte ptr [rcx], 0
    mov qword ptr [rcx + 8], 0
    mov qword ptr [rcx + {pending}], 0
    pop rcx
    pop r11
    push 0
    push rcx
    push r11
    push rax
    mov eax, {iret}
    syscall
    ud2

    .section .text.bench_user, "ax"
    .balign 4096
    .globl bench_user_page
bench_user_page:
    // rdi = count, rsi = sample buffer: time each SYSCALL round trip.
    .globl bench_user_timed
bench_user_timed:
    lfence
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r8, rax
    syscall
    lfence
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, r8
    mov [rsi], rax
    add rsi, 8
    dec rdi
    jnz bench_user_timed
    ud2

    // rdi = count: SYSCALL round trips, untimed.
    .globl bench_user_loop
bench_user_loop:
    syscall
    dec rdi
    jnz bench_user_loop
    ud2

    .balign 4096
    .text
"#,
    in_syscall = const VGCF_IN_SYSCALL,
    si = sym BENCH_SI,
    pending = const core::mem::offset_of!(SharedInfo, evtchn_pending),
    iret = const HYPERVISOR_IRET,
);

unsafe extern "C" {
    static bench_syscall_cb: u8;
    static bench_int3_cb: u8;
    static bench_pf_cb: u8;
    static bench_ev_cb: u8;
    fn bench_pf_once();
    static bench_user_page: u8;
    static bench_user_timed: u8;
    static bench_user_loop: u8;
}

/// Cycles of one null hypercall between two serialised TSC reads (`with_call` false: the
/// reads alone).
fn timed_hypercall(with_call: bool) -> u64 {
    let d: u64;
    // SAFETY: xen_version(XENVER_version, NULL) takes no pointer; registers are declared.
    unsafe {
        if with_call {
            asm!(
                "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "mov r8, rax",
                "mov eax, {nr}", "xor edi, edi", "xor esi, esi", "syscall",
                "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "sub rax, r8",
                nr = const HYPERVISOR_XEN_VERSION,
                out("rax") d, out("rdx") _, out("r8") _, out("rdi") _, out("rsi") _,
                out("rcx") _, out("r11") _,
            );
        } else {
            asm!(
                "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "mov r8, rax",
                "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "sub rax, r8",
                out("rax") d, out("rdx") _, out("r8") _,
            );
        }
    }
    d
}

/// Cycles of one `int3` bounced to `bench_int3_cb` and back.
fn timed_int3() -> u64 {
    let d: u64;
    // SAFETY: the int3 handler returns here with rax, rcx, r11 restored from its frame.
    unsafe {
        asm!(
            "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "mov r8, rax",
            "int3",
            "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "sub rax, r8",
            out("rax") d, out("rdx") _, out("r8") _, out("rcx") _, out("r11") _,
        );
    }
    d
}

/// The shared_info mapping, for `bench_ev_cb`.
static mut BENCH_SI: u64 = 0;

/// Cycles of one kernel #PF bounced to `bench_pf_cb` and resumed.
fn timed_page_fault() -> u64 {
    let d: u64;
    // SAFETY: bench_pf_once faults and is resumed at its `ret` by bench_pf_cb; it clobbers
    // rax, rcx, r11 only.
    unsafe {
        asm!(
            "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "mov r8, rax",
            "call {f}",
            "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "sub rax, r8",
            f = sym bench_pf_once,
            out("rax") d, out("rdx") _, out("r8") _, out("rcx") _, out("r11") _,
        );
    }
    d
}

/// Cycles of one EVTCHNOP_send to `port`, whose upcall `bench_ev_cb` takes on the way back.
fn timed_send(arg: &EvtchnSend) -> u64 {
    let d: u64;
    // SAFETY: `arg` is readable; the upcall returns here with rax, rcx, r11 restored.
    unsafe {
        asm!(
            "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "mov r8, rax",
            "mov eax, {nr}", "syscall",
            "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "sub rax, r8",
            nr = const HYPERVISOR_EVENT_CHANNEL_OP,
            in("rdi") EVTCHNOP_SEND, in("rsi") arg as *const EvtchnSend,
            out("rax") d, out("rdx") _, out("r8") _, out("rcx") _, out("r11") _,
        );
    }
    d
}

/// Cycles of one `mmuext_op(MMUEXT_TLB_FLUSH_LOCAL)`: a hypercall that reloads CR3, the
/// cost a guest mode switch pays twice per round trip.
fn timed_tlb_flush(op: &MmuextOp) -> u64 {
    let d: u64;
    // SAFETY: `op` is readable; no done-count pointer.
    unsafe {
        asm!(
            "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "mov r8, rax",
            "mov eax, {nr}", "syscall",
            "lfence", "rdtsc", "shl rdx, 32", "or rax, rdx", "sub rax, r8",
            nr = const HYPERVISOR_MMUEXT_OP,
            in("rdi") op as *const MmuextOp, in("rsi") 1u64, in("rdx") 0u64, in("r10") u64::from(DOMID_SELF),
            out("rax") d, lateout("rdx") _, out("r8") _, out("rcx") _, out("r11") _,
        );
    }
    d
}

fn null_hypercalls(n: u64) {
    for _ in 0..n {
        // SAFETY: as in timed_hypercall.
        unsafe {
            asm!("syscall", inout("rax") HYPERVISOR_XEN_VERSION => _, in("rdi") 0u64, in("rsi") 0u64,
                 out("rcx") _, out("r11") _)
        };
    }
}

/// Median, 10th and 90th percentile.
fn summary(s: &mut [u64]) -> (u64, u64, u64) {
    s.sort_unstable();
    let n = s.len();
    (s[n / 2], s[n / 10], s[n * 9 / 10])
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 12 {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0')))
}

/// Runs user code at `label` with `rdi` until its final ud2 comes back as #UD.
fn run_user(page: u64, label: *const u8, rdi: u64, rsi: u64) -> bool {
    let rip = user::code_va(page, label as u64);
    let f = traps::catch(|| {
        user::enter(rip, STACK_TOP, 0, rdi, rsi);
    });
    f.map(|f| f.vector) == Some(6)
}

fn guest_main(si: &'static StartInfo) -> ! {
    let mut c = Checks::new("bench");
    let iters = cmdline_param(cmd_line(si), "iters").and_then(parse_u64).unwrap_or(10_000).max(1);
    c.eq("set_trap_table", traps::install(), 0);
    let page = addr_of!(bench_user_page) as u64;
    if let Err(e) = user::build(si, page) {
        c.check("user address space built", false, format_args!("{e:?}"));
        sched::shutdown(xenvmm_test_guests::xen_abi::sched::SHUTDOWN_CRASH);
    }
    c.eq(
        "the fast syscall callback is registered",
        traps::register_callback(CALLBACKTYPE_SYSCALL, 0, addr_of!(bench_syscall_cb) as u64),
        0,
    );

    // ---- timed ----
    let mut s = [0u64; SAMPLES];
    for x in s.iter_mut() {
        *x = timed_hypercall(false);
    }
    let (tsc, _, _) = summary(&mut s);
    for x in s.iter_mut() {
        *x = timed_hypercall(true);
    }
    let (hc, hc10, hc90) = summary(&mut s);
    let flush = MmuextOp { cmd: MMUEXT_TLB_FLUSH_LOCAL, _pad: 0, arg1: 0, arg2: 0 };
    for x in s.iter_mut() {
        *x = timed_tlb_flush(&flush);
    }
    let (fl, fl10, fl90) = summary(&mut s);
    let int3 = TrapInfo {
        vector: 3,
        flags: 3,
        cs: FLAT_KERNEL_CS,
        _pad: 0,
        address: addr_of!(bench_int3_cb) as u64,
    };
    c.eq("int3 gate to the fast handler", traps::set_trap_table(&[int3, TrapInfo::default()]), 0);
    for x in s.iter_mut() {
        *x = timed_int3();
    }
    let (bp, bp10, bp90) = summary(&mut s);
    let pf =
        TrapInfo { vector: 14, flags: 0, cs: FLAT_KERNEL_CS, _pad: 0, address: addr_of!(bench_pf_cb) as u64 };
    c.eq("#PF gate to the fast handler", traps::set_trap_table(&[pf, TrapInfo::default()]), 0);
    for x in s.iter_mut() {
        *x = timed_page_fault();
    }
    let (pfm, pf10, pf90) = summary(&mut s);
    c.eq("set_trap_table", traps::install(), 0);

    let sh = map_shared_info(si);
    // SAFETY: single vCPU; set before any upcall.
    unsafe { BENCH_SI = sh.as_ptr() as u64 };
    let port = evtchn::bind_ipi(0);
    c.check("bind_ipi for the upcall loop", port.is_ok(), format_args!("{port:?}"));
    let send = EvtchnSend { port: port.unwrap_or(0) };
    c.eq("event callback", traps::register_callback(CALLBACKTYPE_EVENT, 0, addr_of!(bench_ev_cb) as u64), 0);
    sh.set_upcall_mask(0);
    for x in s.iter_mut() {
        *x = timed_send(&send);
    }
    let (ev, ev10, ev90) = summary(&mut s);
    c.check(
        "user round trips ran",
        run_user(page, addr_of!(bench_user_timed), SAMPLES as u64, DATA_VA),
        format_args!("no #UD at the end of the timed loop"),
    );
    let mut rt = [0u64; SAMPLES];
    for (i, x) in rt.iter_mut().enumerate() {
        *x = user::read_data(DATA_VA + 8 * i as u64);
    }
    let (u, u10, u90) = summary(&mut rt);
    println!("# bench: TSC read pair (overhead included below): median {} cycles", tsc);
    println!(
        "# bench: null hypercall: median {} cycles (p10 {}, p90 {}; {} samples)",
        hc, hc10, hc90, SAMPLES
    );
    println!(
        "# bench: mmuext_op(TLB_FLUSH_LOCAL) (one CR3 reload): median {} cycles (p10 {}, p90 {}; {} samples)",
        fl, fl10, fl90, SAMPLES
    );
    println!(
        "# bench: kernel int3 -> handler -> iret -> kernel: median {} cycles (p10 {}, p90 {}; {} samples)",
        bp, bp10, bp90, SAMPLES
    );
    println!(
        "# bench: kernel #PF -> handler -> iret -> kernel: median {} cycles (p10 {}, p90 {}; {} samples)",
        pfm, pf10, pf90, SAMPLES
    );
    println!(
        "# bench: EVTCHNOP_send to self + upcall -> callback -> iret: median {} cycles (p10 {}, p90 {}; {} samples)",
        ev, ev10, ev90, SAMPLES
    );
    println!(
        "# bench: user SYSCALL -> callback -> iret (VGCF_in_syscall) -> user: median {} cycles (p10 {}, p90 {}; {} samples)",
        u, u10, u90, SAMPLES
    );

    // ---- untimed loops for the exit counters ----
    null_hypercalls(iters);
    for _ in 0..iters {
        timed_send(&send);
    }
    traps::set_trap_table(&[pf, TrapInfo::default()]);
    for _ in 0..iters {
        timed_page_fault();
    }
    c.eq("set_trap_table", traps::install(), 0);
    c.check(
        "untimed user round trips ran",
        run_user(page, addr_of!(bench_user_loop), iters, 0),
        format_args!("no #UD at the end of the loop"),
    );
    println!(
        "# bench: iters {} null hypercalls, event upcalls, page faults and user round trips done",
        iters
    );

    if c.summary() != 0 {
        sched::shutdown(xenvmm_test_guests::xen_abi::sched::SHUTDOWN_CRASH);
    }
    sched::shutdown(xenvmm_test_guests::xen_abi::sched::SHUTDOWN_POWEROFF)
}
