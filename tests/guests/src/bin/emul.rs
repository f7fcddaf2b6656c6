//! `emul`: the privileged instructions a PV kernel runs natively, all emulated by the
//! hypervisor (xen-pv-contract.md §3.10, §3.11): forced and native CPUID, MSRs, control
//! registers, xsetbv, wbinvd and, once PHYSDEVOP_set_iopl exists, port I/O. No trap table is
//! registered, so an instruction the hypervisor refuses kills the domain.
#![no_std]
#![no_main]

use xenvmm_test_guests::emul::*;
use xenvmm_test_guests::xen_abi::errno::Errno;
use xenvmm_test_guests::xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};
use xenvmm_test_guests::xen_abi::xen::StartInfo;
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

fn bit(r: u32, n: u32) -> bool {
    r & (1 << n) != 0
}

fn guest_main(_si: &'static StartInfo) -> ! {
    println!("emul: privileged instructions under the PV shim");
    let mut c = Checks::new("emul");
    check_xen_leaves(&mut c);
    check_feature_masking(&mut c);
    check_msrs(&mut c);
    check_control_registers(&mut c);
    check_port_io(&mut c);
    // TODO(lead): once `traps::install()`/`traps::catch()` land, check that an unknown MSR
    // read, a non-canonical GS base and a bad XCR0 each deliver #GP(0) to the guest.
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
}

fn check_port_io(c: &mut Checks) {
    let rc = physdev_set_iopl(1);
    if rc == -i64::from(Errno::ENOSYS.0) {
        println!("# skip port I/O: PHYSDEVOP_set_iopl returned -ENOSYS");
        return;
    }
    if !c.eq("PHYSDEVOP_set_iopl(1) succeeds", rc, 0) {
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
    physdev_set_iopl(0);
}
