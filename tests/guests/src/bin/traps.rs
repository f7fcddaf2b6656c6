//! `traps`: the virtual IDT and bounce frames (xen-pv-contract.md §3.5, §3.8, §3.9, §4.2,
//! §4.6, §4.13): set_trap_table validation, exception and software-interrupt frames field by
//! field, #PF's CR2 and error code, iret back to the kernel, the failsafe callback, lazy FPU,
//! segment bases, debug registers, vm_assist and multicall results per entry.
#![no_std]
#![no_main]
#![allow(unsafe_code)]

use core::arch::asm;
use xenvmm_test_guests::hypercall::hypercall6;
use xenvmm_test_guests::shared::map_shared_info;
use xenvmm_test_guests::traps::{self, Action, TrapFrame};
use xenvmm_test_guests::xen_abi::hypercall::*;
use xenvmm_test_guests::xen_abi::xen::*;
use xenvmm_test_guests::xen_abi::Errno;
use xenvmm_test_guests::{sched, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

const RPL0_KERNEL_CS: u64 = FLAT_KERNEL_CS as u64 & !3;
const IF: u64 = 1 << 9;

fn neg(e: Errno) -> i64 {
    -i64::from(e.0)
}

fn hc(nr: u64, a1: u64, a2: u64) -> i64 {
    // SAFETY: every call below passes pointers to our own memory or none.
    unsafe { hypercall6(nr, a1, a2, 0, 0, 0, 0) }
}

static mut FS_TARGET: u64 = 0x5eed_f00d;
/// Written by the asm blocks below before they trap: a handler that escapes skips the
/// compiler's stores of asm outputs.
static mut AT: u64 = 0;
static mut RSP: u64 = 0;

fn at_rsp() -> (u64, u64) {
    // SAFETY: single vCPU; plain reads.
    unsafe { (AT, RSP) }
}
static mut SOFTINT_SEEN: u32 = 0;

fn softint_seen() -> u32 {
    // SAFETY: single vCPU; a plain read.
    unsafe { SOFTINT_SEEN }
}

/// `int 0x82` or `int 0x90` (a #GP from the hypervisor, caught by the caller).
fn trap_insn(v: u8) {
    // SAFETY: the #GP is delivered to our handler, which escapes out of `catch`.
    unsafe {
        match v {
            0x82 => asm!("int 0x82"),
            _ => asm!("int 0x90"),
        }
    }
}

/// One SSE instruction (raises #NM while the virtual CR0.TS is set).
fn fpu_use() {
    // SAFETY: touches only xmm0, which nothing else uses.
    unsafe { asm!("xorps xmm0, xmm0", out("xmm0") _) };
}

fn softint_handler(f: &TrapFrame, _rax: &mut u64) -> Action {
    // SAFETY: single vCPU.
    unsafe { SOFTINT_SEEN = f.vector };
    Action::Iret
}

/// int3 with known rcx/r11; returns (frame, rsp before the int3, rip after it).
fn int3_frame() -> (Option<TrapFrame>, u64, u64) {
    let f = traps::catch(|| {
        // SAFETY: int3 is caught by our #BP handler, which escapes out of `catch`.
        unsafe {
            asm!("lea rax, [rip + 2f]", "mov [rip + {at}], rax", "mov [rip + {rsp}], rsp",
                "mov rcx, 0x1111", "mov r11, 0x2222", "int3", "2:",
                at = sym AT, rsp = sym RSP, out("rax") _, out("rcx") _, out("r11") _)
        };
    });
    let (after, rsp) = at_rsp();
    (f, rsp, after)
}

fn guest_main(si: &'static StartInfo) -> ! {
    let mut c = Checks::new("traps");
    let sh = map_shared_info(si);

    // ---- set_trap_table validation ----
    c.eq(
        "set_trap_table with an unmapped table is -EFAULT",
        hc(HYPERVISOR_SET_TRAP_TABLE, 0x10, 0),
        neg(Errno::EFAULT),
    );
    let bad = [
        traps::entry(0x81, 1),
        TrapInfo { vector: 0x82, flags: 0, cs: 0, _pad: 0, address: 0x0000_8000_0000_0000 },
        TrapInfo::default(),
    ];
    c.eq(
        "set_trap_table with a non-canonical handler is -EINVAL",
        traps::set_trap_table(&bad),
        neg(Errno::EINVAL),
    );
    c.eq("set_trap_table with our handlers succeeds", traps::install(), 0);
    c.eq("set_trap_table(NULL) clears the table", hc(HYPERVISOR_SET_TRAP_TABLE, 0, 0), 0);
    c.eq("set_trap_table again", traps::install(), 0);

    // ---- #BP frame, field by field (events masked at boot) ----
    let (f, rsp, after) = int3_frame();
    match f {
        Some(f) => {
            c.eq("int3: vector 3", f.vector, 3);
            c.eq("int3: rcx slot", f.rcx, 0x1111);
            c.eq("int3: r11 slot", f.r11, 0x2222);
            c.eq("int3: no error code", f.error_code, None);
            c.eq("int3: rip after the instruction", f.rip, after);
            c.eq("int3: kernel CS with RPL 0, saved mask 1 in bits 32-39", f.cs, RPL0_KERNEL_CS | (1 << 32));
            c.eq("int3: rflags.IF = !mask = 0", f.rflags & IF, 0);
            c.eq("int3: interrupted rsp", f.rsp, rsp);
            c.eq("int3: kernel SS", f.ss, u64::from(FLAT_KERNEL_SS));
            c.eq("int3: frame 7 words below the 16-aligned stack", f.frame_at, (rsp & !15) - 56);
        }
        None => {
            c.check("int3 is delivered", false, format_args!("no trap"));
        }
    }

    // ---- unmasked: IF set in the frame, mask bits 0; TI_SET_IF masks on delivery ----
    sh.set_upcall_mask(0);
    let (f, _, _) = int3_frame();
    c.eq("unmasked int3: rflags.IF = 1", f.map(|f| f.rflags & IF), Some(IF));
    c.eq("unmasked int3: saved mask 0", f.map(|f| f.cs >> 32), Some(0));
    c.eq("trap gate (no TI_SET_IF) leaves events unmasked", sh.upcall_mask(), 0);
    traps::set_trap_table(&[traps::entry(3, TI_SET_IF), TrapInfo::default()]);
    let _ = int3_frame();
    c.eq("interrupt gate (TI_SET_IF) masks events on delivery", sh.upcall_mask(), 1);
    traps::set_trap_table(&[traps::entry(3, 0), TrapInfo::default()]);

    // ---- #UD: a fault, rip at the instruction ----
    let f = traps::catch(|| {
        // SAFETY: caught by our #UD handler.
        unsafe { asm!("lea rax, [rip + 2f]", "mov [rip + {at}], rax", "2: ud2", at = sym AT, out("rax") _) };
    });
    let (at, _) = at_rsp();
    c.eq("ud2: vector 6 at the instruction", f.map(|f| (f.vector, f.rip, f.error_code)), Some((6, at, None)));

    // ---- #PF: error code with U clear in kernel mode, CR2 in vcpu_info ----
    let f = traps::catch(|| {
        // SAFETY: 0x1000 is not mapped; caught by our #PF handler.
        unsafe { asm!("mov [rip + {rsp}], rsp", "mov rax, qword ptr [0x1000]", rsp = sym RSP, out("rax") _) };
    });
    let (_, rsp) = at_rsp();
    c.eq(
        "#PF: vector 14, error code 0 (kernel read, not present)",
        f.map(|f| (f.vector, f.error_code)),
        Some((14, Some(0))),
    );
    c.eq("#PF: CR2 in vcpu_info.arch.cr2", sh.cr2(), 0x1000);
    c.eq("#PF: frame 8 words below the aligned stack", f.map(|f| f.frame_at), Some((rsp & !15) - 64));

    // ---- software interrupts: DPL decides ----
    traps::set_handler(0x81, Some(softint_handler));
    // SAFETY: int 0x81 has a DPL-1 entry: delivered and returned from with iret.
    unsafe { asm!("int 0x81") };
    c.eq("int 0x81 (DPL 1) from the kernel is delivered and iret returns", softint_seen(), 0x81);
    let f = traps::catch(|| trap_insn(0x82));
    c.eq(
        "int 0x82 (DPL 0) is #GP(0x82*8+2)",
        f.map(|f| (f.vector, f.error_code)),
        Some((13, Some(0x82 * 8 + 2))),
    );
    let f = traps::catch(|| trap_insn(0x90));
    c.eq(
        "int 0x90 (no entry) is #GP(0x90*8+2)",
        f.map(|f| (f.vector, f.error_code)),
        Some((13, Some(0x90 * 8 + 2))),
    );

    // ---- lazy FPU ----
    c.eq("fpu_taskswitch(1)", hc(HYPERVISOR_FPU_TASKSWITCH, 1, 0), 0);
    let f = traps::catch(fpu_use);
    c.eq("FPU use after fpu_taskswitch(1) raises #NM", f.map(|f| f.vector), Some(7));
    let f = traps::catch(fpu_use);
    c.eq("the #NM cleared the virtual TS", f.map(|f| f.vector), None);

    // ---- segment bases, stack_switch ----
    let target = core::ptr::addr_of!(FS_TARGET) as u64;
    c.eq("set_segment_base(FS)", hc(HYPERVISOR_SET_SEGMENT_BASE, u64::from(SEGBASE_FS), target), 0);
    let v: u64;
    // SAFETY: FS now points at FS_TARGET, a readable static.
    unsafe { asm!("mov {}, qword ptr fs:[0]", out(reg) v) };
    c.eq("fs:[0] reads through the new base", v, 0x5eed_f00d);
    c.eq(
        "set_segment_base non-canonical is -EINVAL",
        hc(HYPERVISOR_SET_SEGMENT_BASE, u64::from(SEGBASE_GS_USER), 1 << 63),
        neg(Errno::EINVAL),
    );
    c.eq(
        "set_segment_base bad selector kind is -EINVAL",
        hc(HYPERVISOR_SET_SEGMENT_BASE, 9, 0),
        neg(Errno::EINVAL),
    );
    c.eq(
        "set_segment_base(GS_USER_SEL) always succeeds",
        hc(HYPERVISOR_SET_SEGMENT_BASE, u64::from(SEGBASE_GS_USER_SEL), 0x1234),
        0,
    );
    c.eq("stack_switch", hc(HYPERVISOR_STACK_SWITCH, 0x18, 0xffff_ffff_8100_0000), 0);

    // ---- debug registers ----
    c.eq(
        "set_debugreg(0, hypervisor address) is -EPERM",
        hc(HYPERVISOR_SET_DEBUGREG, 0, HYPERVISOR_VIRT_START),
        neg(Errno::EPERM),
    );
    c.eq("set_debugreg(0, guest address)", hc(HYPERVISOR_SET_DEBUGREG, 0, 0x1234_5678), 0);
    c.eq("get_debugreg(0)", hc(HYPERVISOR_GET_DEBUGREG, 0, 0), 0x1234_5678);
    c.eq("set_debugreg(7, GD) is -EPERM", hc(HYPERVISOR_SET_DEBUGREG, 7, 1 << 13), neg(Errno::EPERM));
    c.eq(
        "set_debugreg(7, upper bits) is -EINVAL",
        hc(HYPERVISOR_SET_DEBUGREG, 7, 1 << 32),
        neg(Errno::EINVAL),
    );
    c.eq("get_debugreg(8) is -ENODEV", hc(HYPERVISOR_GET_DEBUGREG, 8, 0), neg(Errno::ENODEV));
    c.eq("get_debugreg(7) reads the default", hc(HYPERVISOR_GET_DEBUGREG, 7, 0), 0x400);

    // ---- vm_assist ----
    c.eq("vm_assist(enable, writable_pagetables)", hc(HYPERVISOR_VM_ASSIST, 0, 2), 0);
    c.eq("vm_assist(enable, 6) is -EINVAL", hc(HYPERVISOR_VM_ASSIST, 0, 6), neg(Errno::EINVAL));
    c.eq("vm_assist(7, 2) is -ENOSYS", hc(HYPERVISOR_VM_ASSIST, 7, 2), neg(Errno::ENOSYS));

    // ---- multicall: results per entry ----
    let mut mc = [MulticallEntry::default(); 3];
    mc[0].op = HYPERVISOR_XEN_VERSION;
    mc[1].op = 60;
    mc[2].op = HYPERVISOR_SET_SEGMENT_BASE;
    mc[2].args = [u64::from(SEGBASE_FS), 1 << 63, 0, 0, 0, 0];
    let r = hc(HYPERVISOR_MULTICALL, mc.as_mut_ptr() as u64, 3);
    c.eq("multicall returns 0", r, 0);
    let res = [mc[0].result as i64, mc[1].result as i64, mc[2].result as i64];
    c.eq("multicall results per entry", res, [0x0004_0011, neg(Errno::ENOSYS), neg(Errno::EINVAL)]);
    let mut nested = [MulticallEntry::default(); 1];
    nested[0].op = HYPERVISOR_MULTICALL;
    hc(HYPERVISOR_MULTICALL, nested.as_mut_ptr() as u64, 1);
    c.eq("a nested multicall entry is -EINVAL", nested[0].result as i64, neg(Errno::EINVAL));
    c.eq("multicall of an unmapped list is -EFAULT", hc(HYPERVISOR_MULTICALL, 0x10, 1), neg(Errno::EFAULT));

    // ---- failsafe: iret to a CS the CPU refuses ----
    let (s, fs) = traps::install_callbacks(0, 0);
    c.eq("register syscall and failsafe callbacks", (s, fs), (0, 0));
    let f = traps::catch(|| {
        // SAFETY: builds an iret_context whose CS (0xe038: kernel, so no mode switch; loaded
        // as 0xe03b) names no code segment; the failsafe
        // callback escapes out of `catch`.
        unsafe {
            asm!(
                "lea rcx, [rip + 2f]",
                "mov [rip + {at}], rcx",
                "mov rax, rsp",
                "push 0xe02b", "push rax", "push 0x202", "push 0xe038", "push rcx",
                "push 0", "push rcx", "push r11", "push rax",
                "mov eax, 23",
                "syscall",
                "2:",
                at = sym AT, out("rax") _, out("rcx") _, out("r11") _,
            )
        };
    });
    let (back, _) = at_rsp();
    c.eq("bad iret frame: failsafe callback", f.map(|f| f.vector), Some(traps::VEC_FAILSAFE));
    c.eq(
        "failsafe frame: rip and cs of the refused frame",
        f.map(|f| (f.rip, f.cs & 0xffff)),
        Some((back, 0xe038)),
    );
    c.check(
        "failsafe frame carries the data selectors",
        f.and_then(|f| f.selectors).is_some(),
        format_args!("none"),
    );

    if c.summary() != 0 {
        sched::shutdown(xenvmm_test_guests::xen_abi::sched::SHUTDOWN_CRASH);
    }
    sched::shutdown(xenvmm_test_guests::xen_abi::sched::SHUTDOWN_POWEROFF)
}
