//! The privileged instructions a PV kernel executes natively and the hypervisor emulates
//! (xen-pv-contract.md §3.10, §3.11): each helper is one instruction that faults at CPL3.
#![allow(unsafe_code)]

use core::arch::asm;

use xen_abi::hypercall::HYPERVISOR_PHYSDEV_OP;
use xen_abi::physdev::{PhysdevSetIobitmap, PhysdevSetIopl, PHYSDEVOP_SET_IOBITMAP, PHYSDEVOP_SET_IOPL};

use crate::hypercall;

/// `ud2; .ascii "xen"; cpuid`: Xen's forced-emulation CPUID (Linux's `xen_cpuid`).
pub fn forced_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u64, u32, u32);
    // SAFETY: the hypervisor emulates the sequence as `cpuid` (registers only). rbx, which
    // LLVM reserves, is saved in a scratch register and swapped back.
    unsafe {
        asm!(
            "mov {t}, rbx",
            ".byte 0x0f, 0x0b, 0x78, 0x65, 0x6e",
            "cpuid",
            "xchg {t}, rbx",
            t = out(reg) b,
            inout("eax") leaf => a,
            inout("ecx") sub => c,
            out("edx") d,
            options(nomem, nostack),
        );
    }
    [a, b as u32, c, d]
}

/// Native `cpuid` (answered by KVM from the VMM's table, no Xen involvement).
pub fn native_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: faults at CPL3; the hypervisor emulates it or the domain dies (no trap table).
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
/// The value must be one the program survives (e.g. the GS base it does not use).
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the caller vouches for the effect; the instruction itself is emulated.
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack)) };
}

pub fn read_cr0() -> u64 {
    let v;
    // SAFETY: a read, emulated.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack)) };
    v
}

/// Sets CR0.TS, reads CR0 back and clears TS with `clts`, without any FPU use in between
/// (the guest is soft-float anyway). Returns (CR0 with TS set, CR0 after clts).
pub fn cr0_ts_round_trip() -> (u64, u64) {
    let (with_ts, after): (u64, u64);
    // SAFETY: only CR0.TS changes, and it is clear again when the block ends.
    unsafe {
        asm!(
            "mov {a}, cr0",
            "or {a}, 8",
            "mov cr0, {a}",
            "mov {a}, cr0",
            "clts",
            "mov {b}, cr0",
            a = out(reg) with_ts,
            b = out(reg) after,
            options(nostack),
        );
    }
    (with_ts, after)
}

pub fn read_cr4() -> u64 {
    let v;
    // SAFETY: a read, emulated.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack)) };
    v
}

/// Writes CR4 (the hypervisor keeps only the bits the guest controls).
pub fn write_cr4(v: u64) {
    // SAFETY: a PV guest controls only TSD, DE and OSXSAVE; the test sets OSXSAVE.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack)) };
}

/// `xsetbv`.
///
/// # Safety
/// CR4.OSXSAVE must be set, or the instruction raises #UD.
pub unsafe fn xsetbv(index: u32, v: u64) {
    // SAFETY: the caller set CR4.OSXSAVE; the hypervisor validates the value.
    unsafe {
        asm!("xsetbv", in("ecx") index, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nomem, nostack))
    };
}

/// `xgetbv` (not privileged).
///
/// # Safety
/// CR4.OSXSAVE must be set.
pub unsafe fn xgetbv(index: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller set CR4.OSXSAVE.
    unsafe { asm!("xgetbv", in("ecx") index, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

pub fn wbinvd() {
    // SAFETY: a cache flush, which a domU's hypervisor ignores.
    unsafe { asm!("wbinvd", options(nostack)) };
}

/// `in %dx, %al`.
///
/// # Safety
/// The virtual IOPL must allow port I/O, or the instruction raises #GP.
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller raised the IOPL.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

/// `out %al, %dx`.
///
/// # Safety
/// As [`inb`].
pub unsafe fn outb(port: u16, v: u8) {
    // SAFETY: the caller raised the IOPL.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) };
}

/// `HYPERVISOR_physdev_op(cmd, arg)` with any address, for -EFAULT checks: safe because
/// callers pass addresses nothing of this program lives at.
pub fn physdev_op_raw(cmd: u64, arg: u64) -> i64 {
    // SAFETY: see above.
    unsafe { hypercall::hypercall3(HYPERVISOR_PHYSDEV_OP, cmd, arg, 0) }
}

/// `HYPERVISOR_physdev_op(PHYSDEVOP_set_iopl, &{iopl})`.
pub fn physdev_set_iopl(iopl: u32) -> i64 {
    let arg = PhysdevSetIopl { iopl };
    // SAFETY: the sub-op reads `struct physdev_set_iopl`, alive for the call.
    unsafe { hypercall::hypercall3(HYPERVISOR_PHYSDEV_OP, PHYSDEVOP_SET_IOPL, &arg as *const _ as u64, 0) }
}

/// `HYPERVISOR_physdev_op(PHYSDEVOP_set_iobitmap, &{bitmap, nr_ports})`. The hypervisor keeps
/// the address and reads the bitmap at every port access not covered by the IOPL, so it must
/// stay readable (or be an address nothing lives at, which denies every port).
pub fn physdev_set_iobitmap(bitmap: u64, nr_ports: u32) -> i64 {
    let arg = PhysdevSetIobitmap { bitmap, nr_ports, _pad: 0 };
    // SAFETY: the sub-op only reads the argument struct, alive for the call; the bitmap
    // itself is only ever read.
    unsafe {
        hypercall::hypercall3(HYPERVISOR_PHYSDEV_OP, PHYSDEVOP_SET_IOBITMAP, &arg as *const _ as u64, 0)
    }
}
