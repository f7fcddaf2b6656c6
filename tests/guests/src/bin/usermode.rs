//! `usermode`: guest kernel and user modes (xen-pv-contract.md §3.2, §3.5–3.7, §4.2): a user
//! L4 installed with `MMUEXT_NEW_USER_BASEPTR`, entry to user mode with the iret hypercall,
//! user SYSCALL delivered to the syscall callback with Xen's frame on the `stack_switch`
//! stack, iret back to user mode with and without `VGCF_in_syscall`, user page faults with
//! the U bit and CR2, software interrupts by gate DPL, privileged instructions refused in user
//! mode, forced CPUID from user mode, and the user/kernel GS bases swapped on every switch.
#![no_std]
#![no_main]
#![allow(unsafe_code)]

use core::arch::{asm, global_asm};
use core::ptr::{addr_of, addr_of_mut};
use xenvmm_test_guests::hypercall::hypercall6;
use xenvmm_test_guests::shared::map_shared_info;
use xenvmm_test_guests::traps::{self, Action, TrapFrame, VEC_SYSCALL};
use xenvmm_test_guests::user::{self, CODE_VA, DATA_VA, STACK_TOP};
use xenvmm_test_guests::xen_abi::callback::{CALLBACKF_MASK_EVENTS, CALLBACKTYPE_SYSCALL};
use xenvmm_test_guests::xen_abi::hypercall::HYPERVISOR_SET_SEGMENT_BASE;
use xenvmm_test_guests::xen_abi::xen::*;
use xenvmm_test_guests::{sched, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

// The user code page. Each entry point ends in a trap or SYSCALL that the kernel side
// catches; `rax` picks what the syscall handler does (see `on_syscall`).
global_asm!(
    r#"
    .section .text.user_page, "ax"
    .balign 4096
    .globl user_page
user_page:

    // A: SYSCALL, iret (flags 0) back here, record rcx/r11, SYSCALL, iret with
    //    VGCF_in_syscall, record rcx/r11, SYSCALL (escapes).
    .globl user_a, user_a1, user_a2, user_a3
user_a:
    mov eax, 0x10
    syscall
user_a1:
    mov [rsp - 8], rcx
    mov [rsp - 16], r11
    syscall
user_a2:
    mov [rsp - 24], rcx
    mov [rsp - 32], r11
    syscall
user_a3:
    ud2

    // B: read the kernel address in rdi: not mapped in the user tables.
    .globl user_b
user_b:
    mov rax, [rdi]
    ud2

    // C: int 0x80 (DPL 3 gate), D: int 0x81 (DPL 1 gate).
    .globl user_c, user_c1, user_d
user_c:
    int 0x80
user_c1:
    ud2
user_d:
    int 0x81
    ud2

    // E: cli, F: rdmsr: privileged in user mode.
    .globl user_e, user_f
user_e:
    cli
    ud2
user_f:
    xor ecx, ecx
    rdmsr
    ud2

    // G: forced CPUID from user mode; record ebx, then SYSCALL.
    .globl user_g
user_g:
    mov eax, 0x40000000
    xor ecx, ecx
    ud2
    .ascii "xen"
    cpuid
    mov [rsp - 8], rbx
    mov eax, 0x30
    syscall
    ud2

    // H: the user GS base: record gs:[0], then SYSCALL.
    .globl user_h
user_h:
    mov rax, gs:[0]
    mov [rsp - 8], rax
    mov eax, 0x40
    syscall
    ud2

    // I: SYSCALL with no syscall callback registered.
    .globl user_i
user_i:
    syscall
    ud2

    .balign 4096
    .text
"#
);

unsafe extern "C" {
    static user_page: u8;
    static user_a: u8;
    static user_a1: u8;
    static user_a2: u8;
    static user_a3: u8;
    static user_b: u8;
    static user_c: u8;
    static user_c1: u8;
    static user_d: u8;
    static user_e: u8;
    static user_f: u8;
    static user_g: u8;
    static user_h: u8;
    static user_i: u8;
}

fn page() -> u64 {
    addr_of!(user_page) as u64
}

/// The user address of a label in the code page.
fn uva(label: *const u8) -> u64 {
    user::code_va(page(), label as u64)
}

/// Syscall frames seen by `on_syscall`, and the upcall mask inside the handler.
static mut FRAMES: [Option<TrapFrame>; 4] = [None; 4];
static mut MASK_IN_HANDLER: u8 = 0xff;
static mut SHARED: Option<xenvmm_test_guests::shared::Shared> = None;
static KGS_TARGET: u64 = 0x6b65_726e;

/// The syscall callback: 0x10 and 0x11 come back with new rcx/r11 slots and iret (0x10 with
/// flags 0, 0x11 with VGCF_in_syscall); anything else escapes.
fn on_syscall(f: &TrapFrame, rax: &mut u64) -> Action {
    // SAFETY: single vCPU; the frame is on our kernel stack at `frame_at` (rcx, r11 first).
    unsafe {
        let n = match *rax {
            0x10 => 0,
            0x11 => 1,
            _ => 2,
        };
        (*addr_of_mut!(FRAMES))[n] = Some(*f);
        if let Some(sh) = *addr_of!(SHARED) {
            *addr_of_mut!(MASK_IN_HANDLER) = sh.upcall_mask();
        }
        let slots = f.frame_at as *mut u64;
        match *rax {
            0x10 | 0x11 => {
                slots.write(0x1111);
                slots.add(1).write(0x2222);
                *rax += 1;
                if n == 0 {
                    Action::Iret
                } else {
                    Action::IretInSyscall
                }
            }
            _ => Action::Escape,
        }
    }
}

fn frame(n: usize) -> Option<TrapFrame> {
    // SAFETY: single vCPU; a plain copy.
    unsafe { (*addr_of!(FRAMES))[n] }
}

/// Runs user code at `rip` (with `rdi`) until something escapes back to the kernel.
fn run_user(rip: u64, rdi: u64) -> (Option<TrapFrame>, i64) {
    let mut rc = 0;
    let f = traps::catch(|| rc = user::enter(rip, STACK_TOP, 0, rdi, 0));
    (f, rc)
}

fn gs0() -> u64 {
    let v: u64;
    // SAFETY: the kernel GS base points at KGS_TARGET.
    unsafe { asm!("mov {}, qword ptr gs:[0]", out(reg) v) };
    v
}

fn guest_main(si: &'static StartInfo) -> ! {
    let mut c = Checks::new("usermode");
    let sh = map_shared_info(si);
    // SAFETY: single vCPU; set before any handler runs.
    unsafe { *addr_of_mut!(SHARED) = Some(sh) };
    c.eq("set_trap_table", traps::install(), 0);
    c.eq("syscall callback (mask events)", traps::install_callbacks(CALLBACKF_MASK_EVENTS, 0), (0, 0));
    traps::set_handler(VEC_SYSCALL, Some(on_syscall));

    let us = match user::build(si, page()) {
        Ok(us) => us,
        Err(e) => {
            c.check("user address space built", false, format_args!("{e:?}"));
            sched::shutdown(xenvmm_test_guests::xen_abi::sched::SHUTDOWN_CRASH);
        }
    };
    c.check("user address space built", true, format_args!("user L4 mfn {:#x}", us.l4_mfn));
    let kstack_top = us.kernel_sp & !15;
    let kgs = addr_of!(KGS_TARGET) as u64;
    c.eq("set_segment_base(GS_KERNEL)", hc_segbase(SEGBASE_GS_KERNEL, kgs), 0);
    c.eq("set_segment_base(GS_USER)", hc_segbase(SEGBASE_GS_USER, DATA_VA), 0);

    // ---- A: SYSCALL → callback → iret to user, twice ----
    sh.set_upcall_mask(1);
    let (f, rc) = run_user(uva(addr_of!(user_a)), 0);
    c.eq("iret hypercall into user mode does not return", rc, 0);
    match frame(0) {
        Some(f0) => {
            c.eq("user SYSCALL reaches the syscall callback", f0.vector, VEC_SYSCALL);
            c.eq("frame rip: after the SYSCALL", f0.rip, uva(addr_of!(user_a1)));
            c.eq("frame rcx slot: the user's rcx (return rip)", f0.rcx, uva(addr_of!(user_a1)));
            c.eq("frame r11 slot: the user's rflags", f0.r11 & 0x200, 0x200);
            c.eq("frame cs: user CS with RPL 3", f0.cs & 0xffff, u64::from(FLAT_RING3_CS64));
            c.eq("frame cs bits 32..: saved mask 0 (iret set IF)", f0.cs >> 32, 0);
            c.eq("frame rflags: IF set, IOPL 0", f0.rflags & 0x3200, 0x200);
            c.eq("frame rsp: the user stack", f0.rsp, STACK_TOP);
            c.eq("frame ss: user SS", f0.ss, u64::from(FLAT_RING3_SS64));
            c.eq("frame on the stack_switch stack, 16-byte aligned", f0.frame_at, kstack_top - 56);
        }
        None => {
            c.check("user SYSCALL reaches the syscall callback", false, format_args!("no frame"));
        }
    }
    // SAFETY: single vCPU; a plain read.
    c.eq("CALLBACKF_mask_events: events masked in the callback", unsafe { MASK_IN_HANDLER }, 1);
    c.eq("iret restored rax: second SYSCALL came from user mode with rax+1", frame(1).is_some(), true);
    c.eq("second frame rip", frame(1).map(|f| f.rip), Some(uva(addr_of!(user_a2))));
    c.eq("iret (flags 0) restores rcx from the context", user::read_data(STACK_TOP - 8), 0x1111);
    c.eq("iret (flags 0) restores r11 from the context", user::read_data(STACK_TOP - 16), 0x2222);
    c.eq(
        "iret with VGCF_in_syscall: rcx is the return rip, not the context's",
        user::read_data(STACK_TOP - 24),
        uva(addr_of!(user_a2)),
    );
    let r11 = user::read_data(STACK_TOP - 32);
    c.check(
        "iret with VGCF_in_syscall: r11 is the user rflags",
        r11 != 0x2222 && r11 & 0x202 == 0x202,
        format_args!("r11 {r11:#x}"),
    );
    c.eq(
        "third SYSCALL (rax 0x12) escaped",
        f.map(|f| (f.vector, f.rip)),
        Some((VEC_SYSCALL, uva(addr_of!(user_a3)))),
    );
    c.eq("back in kernel mode: the kernel GS base is back", gs0(), 0x6b65_726e);

    // ---- B: user read of a kernel address: #PF with U, CR2 ----
    let target = addr_of!(KGS_TARGET) as u64;
    let (f, _) = run_user(uva(addr_of!(user_b)), target);
    c.eq(
        "user read of a kernel address: #PF, error code U|read|not-present",
        f.map(|f| (f.vector, f.error_code)),
        Some((14, Some(4))),
    );
    c.eq(
        "#PF from user: rip at the instruction, cs RPL 3",
        f.map(|f| (f.rip, f.cs & 3)),
        Some((uva(addr_of!(user_b)), 3)),
    );
    c.eq("#PF from user: CR2 in vcpu_info", sh.cr2(), target);
    c.eq("#PF from user: frame on the stack_switch stack", f.map(|f| f.frame_at), Some(kstack_top - 64));

    // ---- C, D: software interrupts from user mode ----
    let (f, _) = run_user(uva(addr_of!(user_c)), 0);
    c.eq(
        "int 0x80 (DPL 3) from user mode is delivered, rip after it",
        f.map(|f| (f.vector, f.rip, f.cs & 3)),
        Some((0x80, uva(addr_of!(user_c1)), 3)),
    );
    let (f, _) = run_user(uva(addr_of!(user_d)), 0);
    c.eq(
        "int 0x81 (DPL 1) from user mode is #GP(0x81*8+2) at the instruction",
        f.map(|f| (f.vector, f.error_code, f.rip)),
        Some((13, Some(0x81 * 8 + 2), uva(addr_of!(user_d)))),
    );

    // ---- E, F: privileged instructions from user mode ----
    let (f, _) = run_user(uva(addr_of!(user_e)), 0);
    c.eq(
        "cli from user mode is #GP(0)",
        f.map(|f| (f.vector, f.error_code, f.rip)),
        Some((13, Some(0), uva(addr_of!(user_e)))),
    );
    let (f, _) = run_user(uva(addr_of!(user_f)), 0);
    c.eq("rdmsr from user mode is #GP(0)", f.map(|f| (f.vector, f.error_code)), Some((13, Some(0))));

    // ---- G: forced CPUID works in user mode ----
    let (f, _) = run_user(uva(addr_of!(user_g)), 0);
    c.eq("forced CPUID from user mode: SYSCALL after it", f.map(|f| f.vector), Some(VEC_SYSCALL));
    c.eq("forced CPUID leaf 0x40000000 ebx = \"XenV\"", user::read_data(STACK_TOP - 8) as u32, 0x566e_6558);

    // ---- H: user GS base in user mode, kernel GS base in kernel mode ----
    // SAFETY: DATA_VA's first word, written through the kernel's mapping of it.
    unsafe { (user::data_kernel_va(DATA_VA) as *mut u64).write_volatile(0x7573_6572) };
    let (f, _) = run_user(uva(addr_of!(user_h)), 0);
    c.eq("user mode SYSCALL after reading gs:[0]", f.map(|f| f.vector), Some(VEC_SYSCALL));
    c.eq("gs:[0] in user mode reads through the user GS base", user::read_data(STACK_TOP - 8), 0x7573_6572);
    c.eq("gs:[0] in kernel mode reads through the kernel GS base", gs0(), 0x6b65_726e);

    // ---- I: no syscall callback: #UD at the SYSCALL ----
    c.eq(
        "unregister the syscall callback (address 0)",
        traps::register_callback(CALLBACKTYPE_SYSCALL, 0, 0),
        0,
    );
    let (f, _) = run_user(uva(addr_of!(user_i)), 0);
    c.eq(
        "user SYSCALL with no callback: #UD at the instruction",
        f.map(|f| (f.vector, f.rip)),
        Some((6, uva(addr_of!(user_i)))),
    );

    // ---- the user L4 can be dropped ----
    c.eq("MMUEXT_NEW_USER_BASEPTR(0)", user::mmuext1(MMUEXT_NEW_USER_BASEPTR, 0), 0);
    c.eq("the code page maps at CODE_VA", uva(addr_of!(user_page)), CODE_VA);

    if c.summary() != 0 {
        sched::shutdown(xenvmm_test_guests::xen_abi::sched::SHUTDOWN_CRASH);
    }
    sched::shutdown(xenvmm_test_guests::xen_abi::sched::SHUTDOWN_POWEROFF)
}

fn hc_segbase(which: u32, base: u64) -> i64 {
    // SAFETY: no pointer arguments.
    unsafe { hypercall6(HYPERVISOR_SET_SEGMENT_BASE, u64::from(which), base, 0, 0, 0, 0) }
}
