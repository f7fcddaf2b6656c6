//! `emul`: the privileged instructions a PV kernel runs natively, all emulated by the
//! hypervisor (xen-pv-contract.md §3.10, §3.11): forced and native CPUID, MSRs, control
//! registers, xsetbv, wbinvd, port I/O under PHYSDEVOP_set_iopl and PHYSDEVOP_set_iobitmap
//! (Xen's `guest_io_okay`), and what the hypervisor refuses: once the trap table is set, each
//! refusal must arrive as #GP(0) (or #UD) at the refused instruction, with nothing changed.
//! Until then (the first MSR checks) nothing may fault: the domain would die.
#![no_std]
#![no_main]

use core::arch::asm;
use xenvmm_test_guests::emul::*;
use xenvmm_test_guests::traps::{self, TrapFrame};
use xenvmm_test_guests::xen_abi::errno::Errno;
use xenvmm_test_guests::xen_abi::physdev::{PHYSDEVOP_SET_IOBITMAP, PHYSDEVOP_SET_IOPL};
use xenvmm_test_guests::xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};
use xenvmm_test_guests::xen_abi::xen::{StartInfo, FLAT_KERNEL_CS, HYPERVISOR_VIRT_START};
use xenvmm_test_guests::{println, sched, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

const XEN_SIGNATURE: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x4d];
const XEN_MSR_PAT: u64 = 0x0000_0501_0007_0406;
const MSR_EFER: u32 = 0xc000_0080;
const MSR_GS_BASE: u32 = 0xc000_0101;
const MSR_IA32_CR_PAT: u32 = 0x277;
const CR4_OSXSAVE: u64 = 1 << 18;
const OSXSAVE: u32 = 1 << 27;
const XSAVE: u32 = 1 << 26;
/// An address nothing of this kernel lives at (below the hypervisor hole, canonical).
const UNMAPPED: u64 = 0x0000_1000_0000_0000;
/// The kernel's CS as a bounce frame reports it (RPL 0).
const RPL0_KERNEL_CS: u64 = FLAT_KERNEL_CS as u64 & !3;

fn neg(e: Errno) -> i64 {
    -i64::from(e.0)
}

fn bit(r: u32, n: u32) -> bool {
    r & (1 << n) != 0
}

fn guest_main(_si: &'static StartInfo) -> ! {
    println!("emul: privileged instructions under the PV shim");
    let mut c = Checks::new("emul");
    check_xen_leaves(&mut c);
    check_feature_masking(&mut c);
    check_msrs(&mut c);
    // From here on a refused instruction is a #GP for our handler, not the end of the domain.
    c.eq("set_trap_table", traps::install(), 0);
    check_msr_refusals(&mut c);
    check_control_registers(&mut c);
    check_port_io(&mut c);
    check_io_bitmap(&mut c);
    let failed = c.summary();
    sched::shutdown(if failed == 0 { SHUTDOWN_POWEROFF } else { SHUTDOWN_CRASH })
}

fn check_xen_leaves(c: &mut Checks) {
    let base = forced_cpuid(0x4000_0000, 0);
    c.eq(
        "forced cpuid 0x40000000 has the XenVMMXenVMM signature",
        [base[1], base[2], base[3]],
        XEN_SIGNATURE,
    );
    c.check(
        "forced cpuid 0x40000000 reports leaves up to 0x40000005",
        base[0] >= 0x4000_0005,
        format_args!("{:#x}", base[0]),
    );
    c.eq("forced cpuid 0x40000001 is Xen 4.17", forced_cpuid(0x4000_0001, 0)[0], 0x0004_0011);
    let l2 = forced_cpuid(0x4000_0002, 0);
    c.check(
        "forced cpuid 0x40000002: one hypercall page, MMU_PT_UPDATE_PRESERVE_AD",
        l2[0] == 1 && l2[2] & 1 == 1,
        format_args!("{l2:#x?}"),
    );
    let width = forced_cpuid(0x4000_0005, 0)[1];
    c.check(
        "forced cpuid 0x40000005: machine-address width within 13..=44 bits",
        (13..=44).contains(&width),
        format_args!("{width}"),
    );
    let tsc = forced_cpuid(0x4000_0003, 0);
    c.check("forced cpuid 0x40000003 reports the TSC kHz", tsc[2] > 0, format_args!("{tsc:#x?}"));
    // Linux's hypervisor_cpuid_base scan: exactly one signature, and never KVM's.
    let (mut xen, mut kvm) = (0, 0);
    for leaf in (0x4000_0000u32..0x4001_0000).step_by(0x100) {
        let r = forced_cpuid(leaf, 0);
        let sig = [r[1], r[2], r[3]];
        xen += u32::from(sig == XEN_SIGNATURE);
        kvm += u32::from(sig == KVM_SIGNATURE);
    }
    c.eq("the hypervisor range holds one Xen signature and no KVM one", (xen, kvm), (1, 0));
}

fn check_feature_masking(c: &mut Checks) {
    let l1 = forced_cpuid(1, 0);
    let hidden1 = [
        (2, 5, "VMX"),
        (2, 17, "PCID"),
        (2, 21, "X2APIC"),
        (2, 24, "TSC_DEADLINE"),
        (3, 12, "MTRR"),
        (3, 13, "PGE"),
    ];
    for (reg, b, name) in hidden1 {
        c.check(name, !bit(l1[reg], b), format_args!("leaf 1 reg {reg} = {:#x}", l1[reg]));
    }
    c.check("HYPERVISOR bit set", bit(l1[2], 31), format_args!("ecx {:#x}", l1[2]));
    let xsave = l1[2] & XSAVE != 0;
    c.check(
        "forced cpuid reports OSXSAVE to the kernel iff XSAVE",
        (l1[2] & OSXSAVE != 0) == xsave,
        format_args!("ecx {:#x}", l1[2]),
    );
    let l7 = forced_cpuid(7, 0);
    let hidden7 = [
        (1, 0, "FSGSBASE"),
        (1, 7, "SMEP"),
        (1, 10, "INVPCID"),
        (1, 20, "SMAP"),
        (2, 2, "UMIP"),
        (2, 3, "PKU"),
        (2, 16, "LA57"),
    ];
    for (reg, b, name) in hidden7 {
        c.check(name, !bit(l7[reg], b), format_args!("leaf 7 reg {reg} = {:#x}", l7[reg]));
    }
    let e1 = forced_cpuid(0x8000_0001, 0);
    c.check("SVM and PAGE1GB hidden", !bit(e1[2], 2) && !bit(e1[3], 26), format_args!("{e1:#x?}"));
    if xsave {
        c.check(
            "XSAVES hidden",
            !bit(forced_cpuid(0xd, 1)[0], 3),
            format_args!("{:#x?}", forced_cpuid(0xd, 1)),
        );
    }
    let native = native_cpuid(1, 0);
    let strip = |r: [u32; 4]| [r[0], r[1], r[2] & !OSXSAVE, r[3]];
    c.eq("native cpuid leaf 1 agrees with the forced one (modulo OSXSAVE)", strip(native), strip(l1));
    c.check(
        "native cpuid has no OSXSAVE while CR4.OSXSAVE is clear",
        native[2] & OSXSAVE == 0,
        format_args!("{native:#x?}"),
    );
}

fn check_msrs(c: &mut Checks) {
    c.eq("rdmsr IA32_CR_PAT is Xen's PAT", rdmsr(MSR_IA32_CR_PAT), XEN_MSR_PAT);
    let efer = rdmsr(MSR_EFER);
    let want = 1 | (1 << 8) | (1 << 10) | (1 << 11);
    c.check("rdmsr EFER has SCE, LME, LMA, NXE", efer & want == want, format_args!("{efer:#x}"));
    let old = rdmsr(MSR_GS_BASE);
    let v = 0xffff_8880_dead_b000;
    // SAFETY: this program never uses GS; the old base is restored below.
    unsafe { wrmsr(MSR_GS_BASE, v) };
    c.eq("wrmsr/rdmsr GS_BASE round trip", rdmsr(MSR_GS_BASE), v);
    // SAFETY: as above.
    unsafe { wrmsr(MSR_GS_BASE, old) };
    c.eq("rdmsr APIC_BASE: enabled BSP at 0xfee00000", rdmsr(0x1b), 0xfee0_0900);
    let misc = rdmsr(0x1a0);
    let set = (1 << 11) | (1 << 12) | (1 << 23);
    c.check(
        "rdmsr MISC_ENABLE: BTS/PEBS unavailable, xTPR disabled, no PERF/MONITOR",
        misc & set == set && misc & ((1 << 7) | (1 << 18)) == 0,
        format_args!("{misc:#x}"),
    );
    println!("# microcode revision {:#x}", rdmsr(0x8b) >> 32);
    if forced_cpuid(0x8000_0001, 0)[3] & (1 << 27) != 0 {
        // SAFETY: TSC_AUX only feeds rdtscp, which this program does not use.
        unsafe { wrmsr(0xc000_0103, 7) };
        c.eq("wrmsr/rdmsr TSC_AUX round trip", rdmsr(0xc000_0103), 7);
    }
    if forced_cpuid(7, 0)[3] & (1 << 26) != 0 || forced_cpuid(0x8000_0008, 0)[1] & (1 << 14) != 0 {
        // SAFETY: IBRS only restricts speculation; it is cleared again.
        unsafe { wrmsr(0x48, 1) };
        let v = rdmsr(0x48);
        // SAFETY: as above.
        unsafe { wrmsr(0x48, 0) };
        c.eq("wrmsr/rdmsr SPEC_CTRL.IBRS round trip", v, 1);
    }
    // Before a #GP handler exists Xen fakes reads of MSRs it refuses: 0, not a crash.
    c.eq("rdmsr of an unknown MSR before a #GP handler reads 0", rdmsr(0x0000_1234), 0);
}

fn check_control_registers(c: &mut Checks) {
    let cr0 = read_cr0();
    c.check(
        "mov from cr0: PE, PG set, TS clear",
        cr0 & 0x8000_0001 == 0x8000_0001 && cr0 & 8 == 0,
        format_args!("{cr0:#x}"),
    );
    let (with_ts, after) = cr0_ts_round_trip();
    c.check(
        "mov to cr0 sets TS, clts clears it",
        with_ts & 8 != 0 && after & 8 == 0,
        format_args!("{with_ts:#x} {after:#x}"),
    );
    let cr4 = read_cr4();
    c.check("mov from cr4 shows PAE", cr4 & (1 << 5) != 0, format_args!("{cr4:#x}"));
    wbinvd();
    c.check("wbinvd returns", true, format_args!(""));
    if forced_cpuid(1, 0)[2] & XSAVE == 0 {
        println!("# skip xsetbv: no XSAVE in the policy");
        return;
    }
    expect_fault(c, "xsetbv while CR4.OSXSAVE is clear: #UD", 6, None, || xsetbv_probe(0, 3));
    write_cr4(cr4 | CR4_OSXSAVE | (1 << 7) | (1 << 16));
    let cr4b = read_cr4();
    c.eq("mov to cr4 keeps OSXSAVE, drops PGE and FSGSBASE", cr4b, cr4 | CR4_OSXSAVE);
    let native = native_cpuid(1, 0);
    c.check(
        "native cpuid shows OSXSAVE once CR4.OSXSAVE is set",
        native[2] & OSXSAVE != 0,
        format_args!("{native:#x?}"),
    );
    // SAFETY: CR4.OSXSAVE is set (checked just above through the hypervisor's view).
    let xcr0 = unsafe {
        xsetbv(0, 3);
        xgetbv(0)
    };
    c.eq("xsetbv of x87|SSE is loaded", xcr0, 3);
    // That check's console_io was a VM exit; KVM reloads its own copy of XCR0 on entry, which
    // the shim keeps in step (the nested test host's QEMU lets the xsetbv through unseen).
    // SAFETY: as above.
    c.eq("XCR0 survives a VM exit", unsafe { xgetbv(0) }, 3);
    // XCR0 without x87, AVX without SSE, bit 63 (never a state of CPUID leaf 0xd), and XCR1.
    for (name, index, v) in [
        ("xsetbv without x87: #GP(0), XCR0 not loaded", 0, 2),
        ("xsetbv of AVX without SSE: #GP(0), XCR0 not loaded", 0, 1 | 4),
        ("xsetbv of a state the policy lacks: #GP(0), XCR0 not loaded", 0, 3 | (1 << 63)),
        ("xsetbv of XCR1: #GP(0), XCR0 not loaded", 1, 7),
    ] {
        let frame = traps::catch(|| xsetbv_probe(index, v));
        // SAFETY: CR4.OSXSAVE is still set.
        let xcr0 = unsafe { xgetbv(0) };
        let ok = is_fault_at(&frame, 13, Some(0)) && xcr0 != v;
        c.check(name, ok, format_args!("instruction at {:#x}, frame {frame:x?}, XCR0 {xcr0:#x}", at()));
    }
}

/// Where the probed instruction starts: the asm stores it before running the instruction, so a
/// handler that escapes out of [`traps::catch`] (skipping the compiler's stores of asm
/// outputs) does not lose it.
static mut AT: u64 = 0;

fn at() -> u64 {
    // SAFETY: single vCPU; a plain read.
    unsafe { core::ptr::addr_of!(AT).read_volatile() }
}

/// `rdmsr` at a recorded address.
fn rdmsr_probe(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: refused MSRs raise #GP, which our handler turns into an escape from `catch`.
    unsafe {
        asm!("lea {t}, [rip + 2f]", "mov [rip + {at}], {t}", "2: rdmsr",
            t = out(reg) _, at = sym AT, in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// `wrmsr` at a recorded address.
///
/// # Safety
/// As [`wrmsr`]: only values the program survives, or values the hypervisor refuses.
unsafe fn wrmsr_probe(msr: u32, v: u64) {
    // SAFETY: the caller vouches for the value; a refusal is a #GP for our handler.
    unsafe {
        asm!("lea {t}, [rip + 2f]", "mov [rip + {at}], {t}", "2: wrmsr",
            t = out(reg) _, at = sym AT, in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32,
            options(nostack))
    };
}

fn xsetbv_probe(index: u32, v: u64) {
    // SAFETY: only refused values are passed (XCR0 is not changed), or CR4.OSXSAVE is clear
    // (#UD); both go to our handler.
    unsafe {
        asm!("lea {t}, [rip + 2f]", "mov [rip + {at}], {t}", "2: xsetbv",
            t = out(reg) _, at = sym AT, in("ecx") index, in("eax") v as u32, in("edx") (v >> 32) as u32,
            options(nostack))
    };
}

/// `in al, 0x80` with rax = `rax` before; returns rax after.
fn inb_80_probe(rax: u64) -> u64 {
    let out: u64;
    // SAFETY: port 0x80 is a domU's nothing-port; without permission, a #GP for our handler.
    unsafe {
        asm!("lea {t}, [rip + 2f]", "mov [rip + {at}], {t}", "2: in al, 0x80",
            t = out(reg) _, at = sym AT, inout("rax") rax => out, options(nostack))
    };
    out
}

/// `in eax, dx` with rax = `rax` before; returns rax after.
fn inl_probe(port: u16, rax: u64) -> u64 {
    let out: u64;
    // SAFETY: as inb_80_probe; the ports used are ones a domU sees as all-ones.
    unsafe {
        asm!("lea {t}, [rip + 2f]", "mov [rip + {at}], {t}", "2: in eax, dx",
            t = out(reg) _, at = sym AT, in("dx") port, inout("rax") rax => out, options(nostack))
    };
    out
}

/// `out dx, al`.
fn outb_probe(port: u16, v: u8) {
    // SAFETY: as inb_80_probe; writes to these ports are dropped for a domU.
    unsafe {
        asm!("lea {t}, [rip + 2f]", "mov [rip + {at}], {t}", "2: out dx, al",
            t = out(reg) _, at = sym AT, in("dx") port, in("al") v, options(nostack))
    };
}

/// `out dx, ax`.
fn outw_probe(port: u16, v: u16) {
    // SAFETY: as outb_probe.
    unsafe {
        asm!("lea {t}, [rip + 2f]", "mov [rip + {at}], {t}", "2: out dx, ax",
            t = out(reg) _, at = sym AT, in("dx") port, in("ax") v, options(nostack))
    };
}

/// `cli`: a no-op for a guest kernel whose virtual IOPL allows it, else #GP.
fn cli_probe() {
    // SAFETY: the hardware IF of a PV guest never changes; the hypervisor emulates or refuses.
    unsafe { asm!("lea {t}, [rip + 2f]", "mov [rip + {at}], {t}", "2: cli", t = out(reg) _, at = sym AT) };
}

/// `frame` is `vector` (with `error_code`) at the probed instruction, delivered to the guest
/// kernel's handler with the kernel's CS.
fn is_fault_at(frame: &Option<TrapFrame>, vector: u32, error_code: Option<u64>) -> bool {
    frame.is_some_and(|f| {
        f.vector == vector && f.error_code == error_code && f.rip == at() && f.cs & 0xffff == RPL0_KERNEL_CS
    })
}

/// Runs `f`, which must fault with `vector` (and `error_code`) at the probed instruction.
fn expect_fault(c: &mut Checks, name: &str, vector: u32, error_code: Option<u64>, f: impl FnOnce()) -> bool {
    let frame = traps::catch(f);
    let ok = is_fault_at(&frame, vector, error_code);
    c.check(name, ok, format_args!("instruction at {:#x}, frame {frame:x?}", at()))
}

fn expect_gp0(c: &mut Checks, name: &str, f: impl FnOnce()) -> bool {
    expect_fault(c, name, 13, Some(0), f)
}

/// Runs `f`, which must not fault.
fn expect_no_fault(c: &mut Checks, name: &str, f: impl FnOnce()) -> bool {
    let frame = traps::catch(f);
    c.check(name, frame.is_none(), format_args!("{frame:x?}"))
}

fn check_msr_refusals(c: &mut Checks) {
    let mut pat = 0;
    expect_no_fault(c, "with a #GP handler, rdmsr IA32_CR_PAT is still emulated", || {
        pat = rdmsr_probe(MSR_IA32_CR_PAT)
    });
    c.eq("...and reads Xen's PAT", pat, XEN_MSR_PAT);
    expect_gp0(c, "with a #GP handler, rdmsr of an unknown MSR is #GP(0) at the instruction", || {
        rdmsr_probe(0x0000_1234);
    });
    expect_gp0(c, "rdmsr of Xen's MSR range (0x40000000) is #GP(0)", || {
        rdmsr_probe(0x4000_0000);
    });
    expect_gp0(c, "wrmsr of an unknown MSR is #GP(0)", || {
        // SAFETY: refused.
        unsafe { wrmsr_probe(0x0000_1234, 0) }
    });
    expect_gp0(c, "wrmsr IA32_CR_PAT is #GP(0)", || {
        // SAFETY: refused (Xen's PAT is fixed), and the value is Xen's PAT anyway.
        unsafe { wrmsr_probe(MSR_IA32_CR_PAT, XEN_MSR_PAT) }
    });
    let efer = rdmsr(MSR_EFER);
    expect_gp0(c, "wrmsr EFER without NXE is #GP(0)", || {
        // SAFETY: refused: EFER only takes the value it has.
        unsafe { wrmsr_probe(MSR_EFER, efer & !(1 << 11)) }
    });
    c.eq("...and EFER is unchanged", rdmsr(MSR_EFER), efer);
    let gs = rdmsr(MSR_GS_BASE);
    expect_gp0(c, "wrmsr GS_BASE with a non-canonical base is #GP(0)", || {
        // SAFETY: refused; this program never uses GS anyway.
        unsafe { wrmsr_probe(MSR_GS_BASE, 0x0000_8000_0000_0000) }
    });
    c.eq("...and GS_BASE is unchanged", rdmsr(MSR_GS_BASE), gs);
    let mut same = 0;
    expect_no_fault(c, "wrmsr EFER with its own value is accepted", || {
        // SAFETY: writes EFER's current value.
        unsafe { wrmsr_probe(MSR_EFER, efer) };
        same = rdmsr_probe(MSR_EFER);
    });
    c.eq("...and EFER reads the same", same, efer);
}

fn check_port_io(c: &mut Checks) {
    // The virtual IOPL starts at 0: the guest kernel (CPL 1 for Xen) has no port access.
    expect_gp0(c, "in al, 0x80 without IOPL: #GP(0)", || {
        inb_80_probe(0);
    });
    expect_gp0(c, "out dx, al without IOPL: #GP(0)", || outb_probe(0x80, 0));
    expect_gp0(c, "cli without IOPL: #GP(0)", cli_probe);
    c.eq("PHYSDEVOP_set_iopl(4): -EINVAL", physdev_set_iopl(4), neg(Errno::EINVAL));
    c.eq(
        "PHYSDEVOP_set_iopl from an unmapped argument: -EFAULT",
        physdev_op_raw(PHYSDEVOP_SET_IOPL, UNMAPPED),
        neg(Errno::EFAULT),
    );
    expect_gp0(c, "...and neither changed the IOPL", || {
        inb_80_probe(0);
    });
    if !c.eq("PHYSDEVOP_set_iopl(1) succeeds", physdev_set_iopl(1), 0) {
        return;
    }
    // SAFETY: the virtual IOPL is 1 now, which covers guest kernel mode.
    let (serial, idx) = unsafe {
        let serial = inb(0x3f8);
        outb(0x70, 0x8d);
        (serial, inb(0x70))
    };
    c.eq("in from port 0x3f8 reads 0xff", serial, 0xff);
    c.eq("the RTC index port latches the index without the NMI bit", idx, 0x0d);
    let (mut al, mut eax) = (0, 0);
    expect_no_fault(c, "with IOPL 1: in al, 0x80 and in eax, dx are emulated", || {
        al = inb_80_probe(0x1122_3344_5566_7700);
        eax = inl_probe(0x80, 0xdead_beef_0000_0000);
    });
    c.eq("in al, 0x80 reads all ones into al only", al, 0x1122_3344_5566_77ff);
    c.eq("in eax, dx reads all ones and zero-extends rax", eax, 0xffff_ffff);
    expect_no_fault(c, "with IOPL 1: out and cli are allowed", || {
        outb_probe(0x80, 0);
        cli_probe();
    });
    c.eq("PHYSDEVOP_set_iopl(0)", physdev_set_iopl(0), 0);
    expect_gp0(c, "back at IOPL 0: in al, 0x80 is #GP(0) again", || {
        inb_80_probe(0);
    });
}

/// An I/O bitmap for 0x100 ports where only port 0x80 is allowed (a clear bit allows).
static IOBITMAP: [u8; 0x20] = {
    let mut b = [0xff; 0x20];
    b[0x80 / 8] = !1;
    b
};

fn check_io_bitmap(c: &mut Checks) {
    let bitmap = IOBITMAP.as_ptr() as u64;
    if !c.eq("PHYSDEVOP_set_iobitmap allowing only port 0x80", physdev_set_iobitmap(bitmap, 0x100), 0) {
        return;
    }
    let mut v = 0;
    expect_no_fault(c, "IOPL 0 with the bitmap: out to port 0x80 is allowed", || {
        outb_probe(0x80, 0);
        v = inb_80_probe(0);
    });
    c.eq("...and in from it reads all ones", v, 0xff);
    expect_gp0(c, "out to port 0x81 (denied bit): #GP(0)", || outb_probe(0x81, 0));
    expect_gp0(c, "a 2-byte out at 0x80 reaching the denied 0x81: #GP(0)", || outw_probe(0x80, 0));
    c.eq("set_iobitmap covering ports below 0x80 only", physdev_set_iobitmap(bitmap, 0x80), 0);
    expect_gp0(c, "a port at the bitmap's limit: #GP(0)", || outb_probe(0x80, 0));
    c.eq("set_iobitmap covering port 0x80 exactly", physdev_set_iobitmap(bitmap, 0x81), 0);
    expect_no_fault(c, "...allows it", || outb_probe(0x80, 0));
    c.eq(
        "set_iobitmap in the hypervisor hole: -EINVAL",
        physdev_set_iobitmap(HYPERVISOR_VIRT_START, 0x100),
        neg(Errno::EINVAL),
    );
    c.eq(
        "set_iobitmap at a non-canonical address: -EINVAL",
        physdev_set_iobitmap(0x0000_8000_0000_0000, 0x100),
        neg(Errno::EINVAL),
    );
    c.eq("set_iobitmap of 65537 ports: -EINVAL", physdev_set_iobitmap(0, 65537), neg(Errno::EINVAL));
    c.eq(
        "set_iobitmap from an unmapped argument: -EFAULT",
        physdev_op_raw(PHYSDEVOP_SET_IOBITMAP, UNMAPPED),
        neg(Errno::EFAULT),
    );
    expect_no_fault(c, "...none of which replaced the bitmap allowing port 0x80", || outb_probe(0x80, 0));
    c.eq("set_iobitmap at an unmapped address is accepted", physdev_set_iobitmap(UNMAPPED, 0x100), 0);
    expect_gp0(c, "an unreadable bitmap denies every port: #GP(0)", || outb_probe(0x80, 0));
    physdev_set_iopl(1);
    expect_no_fault(c, "the IOPL overrides a bitmap that denies the port", || outb_probe(0x81, 0));
    physdev_set_iopl(0);
    c.eq("set_iobitmap(NULL, 0)", physdev_set_iobitmap(0, 0), 0);
    expect_gp0(c, "no bitmap and IOPL 0: #GP(0)", || outb_probe(0x80, 0));
}
