//! Control registers and XCR0 (Xen `read_cr`/`write_cr` in `pv/emul-priv-op.c`,
//! `pv_fixup_guest_cr4`/`pv_make_cr4` in `pv/domain.c`, `handle_xsetbv` in `xstate.c`).
//!
//! The guest sees a virtual CR0.TS, its CR2 in `vcpu_info.arch.cr2`, CR3 = its kernel L4, and a
//! virtual CR4 made of the bits it controls (TSD, DE, OSXSAVE — within the CPUID policy)
//! plus a few the shim sets (PAE, MCE, OSFXSR, OSXMMEXCPT). TSD, DE and OSXSAVE are mirrored
//! into the real CR4 so that rdtsc faults, debug extensions work, and xsetbv/xsave run.
//! FSGSBASE is never granted: the shim keeps the FS/GS bases under its own control.

use super::{gpr, instruction_done, set_gpr, Emulated};
use crate::guest::GuestRegs;
use crate::machine::Machine;
use crate::shim::Shim;
use xen_abi::hostcall::EmulKind;

pub const X86_CR0_TS: u64 = 1 << 3;
pub const X86_CR4_TSD: u64 = 1 << 2;
pub const X86_CR4_DE: u64 = 1 << 3;
pub const X86_CR4_PAE: u64 = 1 << 5;
pub const X86_CR4_MCE: u64 = 1 << 6;
pub const X86_CR4_OSFXSR: u64 = 1 << 9;
pub const X86_CR4_OSXMMEXCPT: u64 = 1 << 10;
pub const X86_CR4_FSGSBASE: u64 = 1 << 16;
pub const X86_CR4_OSXSAVE: u64 = 1 << 18;

/// Xen's `PV_CR4_GUEST_MASK`: the bits a PV guest chooses (FSGSBASE is never granted here).
const PV_CR4_GUEST_MASK: u64 = X86_CR4_TSD | X86_CR4_DE | X86_CR4_OSXSAVE;
/// Xen's `PV_CR4_GUEST_VISIBLE_MASK`: hardware settings the guest may see.
const PV_CR4_GUEST_VISIBLE_MASK: u64 = X86_CR4_PAE | X86_CR4_MCE | X86_CR4_OSFXSR | X86_CR4_OSXMMEXCPT;

/// XCR0 state components (`X86_XCR0_*`).
const XCR0_FP: u64 = 1 << 0;
const XCR0_SSE: u64 = 1 << 1;
const XCR0_YMM: u64 = 1 << 2;
const XCR0_BNDREGS: u64 = 1 << 3;
const XCR0_BNDCSR: u64 = 1 << 4;
const XCR0_OPMASK: u64 = 1 << 5;
const XCR0_ZMM: u64 = 1 << 6;
const XCR0_HI_ZMM: u64 = 1 << 7;
const XCR0_TILE_CFG: u64 = 1 << 17;
const XCR0_TILE_DATA: u64 = 1 << 18;

/// Xen's `do_fpu_taskswitch`: sets or clears the virtual CR0.TS and the real one with it, so
/// the guest's next FPU use raises #NM while its TS is set.
pub fn fpu_taskswitch<M: Machine>(s: &mut Shim<M>, set: bool) {
    s.vcpu.virt_ts = set;
    s.m.set_cr0_ts(set);
}

/// Xen's `valid_xcr0`: the architectural dependencies between XCR0 bits.
pub fn valid_xcr0(xcr0: u64) -> bool {
    if xcr0 & XCR0_FP == 0 {
        return false;
    }
    if xcr0 & XCR0_YMM != 0 && xcr0 & XCR0_SSE == 0 {
        return false;
    }
    let avx512 = XCR0_OPMASK | XCR0_ZMM | XCR0_HI_ZMM;
    if xcr0 & avx512 != 0 && (xcr0 & XCR0_YMM == 0 || xcr0 & avx512 != avx512) {
        return false;
    }
    if (xcr0 & XCR0_BNDREGS == 0) != (xcr0 & XCR0_BNDCSR == 0) {
        return false;
    }
    (xcr0 & XCR0_TILE_CFG == 0) == (xcr0 & XCR0_TILE_DATA == 0)
}

impl<M: Machine> Shim<M> {
    /// The CR4 the guest reads: its own bits plus the visible hardware ones.
    pub fn guest_cr4(&self) -> u64 {
        (self.vcpu.virt_cr4 & PV_CR4_GUEST_MASK) | (self.m.read_cr4() & PV_CR4_GUEST_VISIBLE_MASK)
    }

    /// Xen's `pv_fixup_guest_cr4`: the guest-controlled bits of `cr4` the policy allows.
    fn fixup_guest_cr4(&self, cr4: u64) -> u64 {
        let [_, _, ecx1, edx1] = self.m.cpuid(1, 0);
        let mut allowed = 0;
        if edx1 & (1 << 4) != 0 {
            allowed |= X86_CR4_TSD;
        }
        if edx1 & (1 << 2) != 0 {
            allowed |= X86_CR4_DE;
        }
        if ecx1 & super::CPUID1_ECX_XSAVE != 0 {
            allowed |= X86_CR4_OSXSAVE;
        }
        cr4 & allowed & PV_CR4_GUEST_MASK
    }

    /// Xen's `pv_make_cr4`: loads the guest's choices into the real CR4.
    fn load_guest_cr4(&mut self) {
        let old = self.m.read_cr4();
        let new = (old & !(PV_CR4_GUEST_MASK | X86_CR4_FSGSBASE)) | (self.vcpu.virt_cr4 & PV_CR4_GUEST_MASK);
        if new != old {
            self.m.write_cr4(new);
        }
    }
}

/// `mov %crN, %gpr` from guest kernel mode.
pub(super) fn read_cr<M: Machine>(
    s: &mut Shim<M>,
    regs: &mut GuestRegs,
    cr: u8,
    reg: u8,
    len: u64,
) -> Emulated {
    let v = match cr {
        0 => (s.m.read_cr0() & !X86_CR0_TS) | if s.vcpu.virt_ts { X86_CR0_TS } else { 0 },
        2 => {
            let at = s.vcpu.vcpu_info + core::mem::offset_of!(xen_abi::xen::VcpuInfo, arch) as u64;
            s.m.read_u64(at).unwrap_or(0)
        }
        // A PV guest's CR3 holds the machine frame of its kernel L4 (`xen_pfn_to_cr3`).
        3 => s.vcpu.guest_table,
        4 => s.guest_cr4(),
        _ => return Emulated::NotEmulated,
    };
    set_gpr(regs, reg, v);
    s.count(EmulKind::ReadCr);
    instruction_done(s, regs, len)
}

/// `mov %gpr, %crN` from guest kernel mode.
pub(super) fn write_cr<M: Machine>(
    s: &mut Shim<M>,
    regs: &mut GuestRegs,
    cr: u8,
    reg: u8,
    len: u64,
) -> Emulated {
    let v = gpr(regs, reg);
    match cr {
        0 => {
            // Only TS may change ("Attempt to change unmodifiable CR0 flags" in Xen).
            if (v ^ s.m.read_cr0()) & !X86_CR0_TS != 0 {
                return Emulated::NotEmulated;
            }
            fpu_taskswitch(s, v & X86_CR0_TS != 0);
        }
        2 => s.set_guest_cr2(v),
        // Xen's `new_guest_cr3`: the frame (`xen_cr3_to_pfn`) becomes the kernel L4, validated
        // if it is not one already; a frame that does not validate is a #GP(0).
        3 => {
            if s.new_baseptr(v >> 12).is_err() {
                return Emulated::GP0;
            }
        }
        4 => {
            s.vcpu.virt_cr4 = s.fixup_guest_cr4(v);
            s.load_guest_cr4();
        }
        _ => return Emulated::NotEmulated,
    }
    s.count(EmulKind::WriteCr);
    instruction_done(s, regs, len)
}

/// `xsetbv` from guest kernel mode with the virtual CR4.OSXSAVE set (x86_emulate +
/// `x86emul_write_xcr` + `handle_xsetbv`): only XCR0, only values the policy's CPUID leaf 0xd
/// allows and the architecture accepts; anything else is #GP(0), never a #GP in the shim.
pub(super) fn xsetbv<M: Machine>(s: &mut Shim<M>, regs: &mut GuestRegs, len: u64) -> Emulated {
    if regs.rcx as u32 != 0 {
        return Emulated::GP0;
    }
    let v = (regs.rax & 0xffff_ffff) | (regs.rdx << 32);
    let [eax, _, _, edx] = s.m.cpuid(0xd, 0);
    let max = u64::from(eax) | (u64::from(edx) << 32);
    if v & !max != 0 || !valid_xcr0(v) {
        return Emulated::GP0;
    }
    // The real CR4.OSXSAVE mirrors the virtual one, which the caller checked.
    if s.m.read_cr4() & X86_CR4_OSXSAVE == 0 || s.m.xsetbv(0, v).is_err() {
        return Emulated::GP0;
    }
    // Tell KVM too, so that the value survives VM exits where KVM did not see the xsetbv.
    s.hostcall(xen_abi::hostcall::HC_SET_XCR0, [v, 0, 0, 0, 0], &[]);
    s.count(EmulKind::Xsetbv);
    instruction_done(s, regs, len)
}
