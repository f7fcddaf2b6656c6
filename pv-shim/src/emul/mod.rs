//! Emulation behind #GP and #UD (Xen `pv/emul-priv-op.c`, `pv/emul-inv-op.c`): the forced
//! CPUID prefix, MSRs, control registers, port I/O, xsetbv, wbinvd, clts, rdtsc under CR4.TSD.
//!
//! # Theory
//!
//! The guest kernel runs at CPL3 with hardware IOPL 0, so every privileged instruction it
//! executes natively faults. Xen (and this shim) decodes the faulting instruction, checks that
//! the *virtual* privilege allows it, and performs it on virtual state:
//!
//! ```text
//!  #UD ─► emulate_ud: the 7 bytes `0f 0b 'x' 'e' 'n' 0f a2` at rip? ─► PV CPUID policy
//!  #GP ─► emulate_gp: fetch ≤ 15 bytes at rip ─► yaxpeax decode ─► [`decode::Op`]
//!           │                                  (anything else: NotEmulated, the guest
//!           │                                   gets its own #GP back)
//!           ├─ rdmsr / wrmsr ───────── msr.rs   (Xen's domU MSR policy, §3.10)
//!           ├─ mov cr / clts / xsetbv ─ cr.rs    (virtual CR0.TS, CR2, CR3, CR4, XCR0)
//!           ├─ in / out / ins / outs ── io.rs    (virtual IOPL; domU port semantics)
//!           └─ wbinvd, cli/sti, rdtsc(p) here
//! ```
//!
//! Privilege: both guest modes run at CPL3, so hardware cannot tell them apart. What Xen's
//! `x86_emulate` calls `mode_ring0()` is "guest kernel mode" here: rdmsr, wrmsr, mov cr,
//! clts, wbinvd and xsetbv from guest *user* mode raise #GP(0), exactly as on bare metal. Port
//! I/O and cli/sti follow Xen's `iopl_ok` (the virtual IOPL set by PHYSDEVOP_set_iopl), rdtsc
//! follows the virtual CR4.TSD.
//!
//! Every input is hostile: instruction bytes are fetched once through the guest's page tables
//! (fewer than 15 when the next page is unmapped), decoded by a decoder that never panics, and
//! everything after that works on the decoded copy with checked arithmetic.

mod cr;
mod decode;
mod io;
mod msr;

pub use cr::{fpu_taskswitch, valid_xcr0};
pub use decode::{decode, DecodeFail, Decoded, Op, PortSrc, StrSeg, MAX_INSN_LEN};
pub use msr::{MSR_EFER, MSR_IA32_CR_PAT, XEN_MSR_PAT};

use crate::guest::GuestRegs;
use crate::machine::Machine;
use crate::shim::Shim;
use xen_abi::hostcall::EmulKind;

/// What the trap path does after the emulator looked at a #GP or #UD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulated {
    /// Done: registers updated, rip advanced past the instruction (or, for a `rep ins/outs`
    /// cut short, left on it so the next #GP continues the repetition).
    Done,
    /// Not an instruction we emulate here: deliver the original exception to the guest.
    NotEmulated,
    /// Deliver this exception instead (e.g. #GP(0) for a refused wrmsr, #DB after an emulated
    /// instruction under RFLAGS.TF: rip is already past the instruction then).
    Raise { vector: u8, error_code: Option<u32> },
    /// Deliver a page fault at `addr` (an instruction or string-operand access that hit an
    /// unmapped page). `error_code` is Xen's: P=0, W for writes; the bounce path sets U from
    /// the guest mode as Xen's `pv_inject_event` does, and writes `addr` to the guest's CR2.
    PageFault { addr: u64, error_code: u32 },
}

impl Emulated {
    const GP0: Emulated = Emulated::Raise { vector: X86_EXC_GP, error_code: Some(0) };
    const UD: Emulated = Emulated::Raise { vector: X86_EXC_UD, error_code: None };
}

pub const X86_EXC_DB: u8 = 1;
pub const X86_EXC_UD: u8 = 6;
pub const X86_EXC_GP: u8 = 13;
pub const X86_EXC_PF: u8 = 14;

/// `PFEC_write_access`.
pub const PFEC_WRITE_ACCESS: u32 = 1 << 1;

const X86_EFLAGS_TF: u64 = 1 << 8;
const X86_EFLAGS_DF: u64 = 1 << 10;
const X86_EFLAGS_RF: u64 = 1 << 16;
/// DR6.BS (single step) and the DR6 bits that always read as one.
const DR_STEP: u64 = 1 << 14;
const DR_STATUS_RESERVED_ONE: u64 = 0xffff_0ff0;

/// Per-vCPU emulator state (Xen keeps `cmos_idx` and `pci_cf8` per domain; with one vCPU so
/// far they live here).
#[derive(Clone, Debug, Default)]
pub struct EmulState {
    /// `MSR_TSC_AUX` as the guest last wrote it (also loaded into the real MSR).
    pub tsc_aux: u32,
    /// `MSR_SPEC_CTRL` as the guest last wrote it (also loaded into the real MSR).
    pub spec_ctrl: u64,
    /// Latched RTC index (port 0x70) of Xen's `rtc_guest_write`.
    pub cmos_idx: u8,
    /// Latched PCI CONFIG_ADDRESS (dword port 0xcf8).
    pub pci_cf8: u32,
    /// The CPU vendor of the CPUID policy, read once.
    vendor: Option<Vendor>,
}

/// The CPU vendor the policy reports (leaf 0), which selects vendor-specific MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
    Hygon,
    Other,
}

impl<M: Machine> Shim<M> {
    /// The policy's vendor, from CPUID leaf 0 (cached).
    pub(crate) fn cpu_vendor(&mut self) -> Vendor {
        if let Some(v) = self.vcpu.emul.vendor {
            return v;
        }
        let [_, ebx, ecx, edx] = self.m.cpuid(0, 0);
        let v = match (ebx, edx, ecx) {
            (0x756e_6547, 0x4965_6e69, 0x6c65_746e) => Vendor::Intel, // "GenuineIntel"
            (0x6874_7541, 0x6974_6e65, 0x444d_4163) => Vendor::Amd,   // "AuthenticAMD"
            (0x6f67_7948, 0x6e65_476e, 0x656e_6975) => Vendor::Hygon, // "HygonGenuine"
            _ => Vendor::Other,
        };
        self.vcpu.emul.vendor = Some(v);
        v
    }

    fn count(&mut self, k: EmulKind) {
        if let Some(c) = self.m.stats().emulated.get_mut(k as usize) {
            *c += 1;
        }
    }
}

/// The forced-emulation prefix: `ud2; .ascii "xen"; cpuid` (XEN_EMULATE_PREFIX + cpuid).
pub const FORCED_CPUID: [u8; 7] = [0x0f, 0x0b, b'x', b'e', b'n', 0x0f, 0xa2];

/// CPUID.1:ECX.XSAVE and .OSXSAVE.
const CPUID1_ECX_XSAVE: u32 = 1 << 26;
const CPUID1_ECX_OSXSAVE: u32 = 1 << 27;

/// Copies up to `buf.len()` bytes of guest memory at `va` through the current page tables and
/// returns how many were readable: the copy stops at the first page that is not mapped.
pub fn fetch<M: Machine>(s: &Shim<M>, va: u64, buf: &mut [u8]) -> usize {
    let mut done = 0usize;
    while done < buf.len() {
        let cur = va.wrapping_add(done as u64);
        let in_page = (crate::mm::PAGE_SIZE - (cur & (crate::mm::PAGE_SIZE - 1))) as usize;
        let n = in_page.min(buf.len() - done);
        if crate::mm::copy_from_guest(&s.m, s.cr3(), cur, &mut buf[done..done + n]).is_err() {
            break;
        }
        done += n;
    }
    done
}

/// A #UD from the guest: Xen's `emulate_forced_invalid_op`. Only the exact 7-byte forced
/// CPUID sequence is emulated (Linux uses plain `ud2` for BUG/WARN); it works in guest user
/// mode too, as in Xen (CPUID faulting is not offered).
pub fn emulate_ud<M: Machine>(s: &mut Shim<M>, regs: &mut GuestRegs) -> Emulated {
    let rip = regs.rip;
    // Xen copies the 5-byte signature, then the 2-byte instruction; an unreadable byte in
    // either copy is a #PF at that byte, even before the bytes are compared.
    let mut b = [0u8; 7];
    let got = fetch(s, rip, &mut b[..5]);
    if got < 5 {
        return Emulated::PageFault { addr: rip.wrapping_add(got as u64), error_code: 0 };
    }
    if b[..5] != FORCED_CPUID[..5] {
        return Emulated::NotEmulated;
    }
    let got = fetch(s, rip.wrapping_add(5), &mut b[5..]);
    if got < 2 {
        return Emulated::PageFault { addr: rip.wrapping_add(5 + got as u64), error_code: 0 };
    }
    if b[5..] != FORCED_CPUID[5..] {
        return Emulated::NotEmulated;
    }
    let [a, bx, c, d] = guest_cpuid(s, regs.rax as u32, regs.rcx as u32, true);
    regs.rax = a.into();
    regs.rbx = bx.into();
    regs.rcx = c.into();
    regs.rdx = d.into();
    s.count(EmulKind::ForcedCpuid);
    instruction_done(s, regs, FORCED_CPUID.len() as u64)
}

/// The PV CPUID view (Xen's `guest_cpuid`): the VMM's policy as KVM answers it, with
/// OSXSAVE made PV-style. Xen reports OSXSAVE when the virtual CR4 has it, and also — the
/// "leaked OSXSAVE" that Linux's `xen_check_xsave` relies on — to the guest kernel's
/// enlightened (#UD) CPUID whenever the policy has XSAVE.
pub fn guest_cpuid<M: Machine>(s: &Shim<M>, leaf: u32, sub: u32, enlightened: bool) -> [u32; 4] {
    let mut r = s.m.cpuid(leaf, sub);
    if leaf == 1 {
        let virt = s.vcpu.virt_cr4 & cr::X86_CR4_OSXSAVE != 0;
        let leaked = enlightened && s.vcpu.kernel_mode && r[2] & CPUID1_ECX_XSAVE != 0;
        r[2] &= !CPUID1_ECX_OSXSAVE;
        if virt || leaked {
            r[2] |= CPUID1_ECX_OSXSAVE;
        }
    }
    r
}

/// Xen's `pv_emul_instruction_done`: advance rip, clear RF, and raise the single-step #DB a
/// guest running with TF expects after the instruction.
pub(crate) fn instruction_done<M: Machine>(s: &mut Shim<M>, regs: &mut GuestRegs, len: u64) -> Emulated {
    regs.rip = regs.rip.wrapping_add(len);
    regs.rflags &= !X86_EFLAGS_RF;
    if regs.rflags & X86_EFLAGS_TF != 0 {
        s.vcpu.dr[6] |= DR_STEP | DR_STATUS_RESERVED_ONE;
        return Emulated::Raise { vector: X86_EXC_DB, error_code: None };
    }
    Emulated::Done
}

/// True when the frame's code segment is a 64-bit one. Without the guest's descriptor tables
/// (not tracked yet) only Xen's flat 32-bit selector is known to be compatibility mode.
fn long_mode_code(regs: &GuestRegs) -> bool {
    regs.cs as u16 != xen_abi::xen::FLAT_RING3_CS32
}

/// A #GP from the guest: Xen's `pv_emulate_privileged_op`.
pub fn emulate_gp<M: Machine>(s: &mut Shim<M>, regs: &mut GuestRegs) -> Emulated {
    // Only #GP(0) comes from a privileged instruction; a selector error code means a
    // segment or `int n` problem, which is not ours to fix.
    if regs.error_code != 0 || !long_mode_code(regs) {
        return Emulated::NotEmulated;
    }
    let mut bytes = [0u8; MAX_INSN_LEN];
    let got = fetch(s, regs.rip, &mut bytes);
    let insn = match decode(&bytes[..got]) {
        Ok(d) => d,
        Err(DecodeFail::Truncated) if got < MAX_INSN_LEN => {
            // Xen's insn_fetch: the instruction runs into an unmapped page.
            return Emulated::PageFault { addr: regs.rip.wrapping_add(got as u64), error_code: 0 };
        }
        Err(_) => return Emulated::NotEmulated,
    };
    let len = u64::from(insn.len);
    let kernel = s.vcpu.kernel_mode;
    match insn.op {
        Op::Rdmsr | Op::Wrmsr | Op::ReadCr { .. } | Op::WriteCr { .. } | Op::Clts | Op::Wbinvd if !kernel => {
            Emulated::GP0
        }
        Op::Xsetbv { bad_prefix } => {
            if bad_prefix || s.vcpu.virt_cr4 & cr::X86_CR4_OSXSAVE == 0 {
                Emulated::UD
            } else if !kernel {
                Emulated::GP0
            } else {
                cr::xsetbv(s, regs, len)
            }
        }
        Op::Rdmsr => msr::rdmsr(s, regs, len),
        Op::Wrmsr => msr::wrmsr(s, regs, len),
        Op::ReadCr { cr, gpr } => cr::read_cr(s, regs, cr, gpr, len),
        Op::WriteCr { cr, gpr } => cr::write_cr(s, regs, cr, gpr, len),
        Op::Clts => {
            fpu_taskswitch(s, false);
            s.count(EmulKind::Clts);
            instruction_done(s, regs, len)
        }
        Op::Wbinvd => {
            // A domU may not flush caches (Xen's `cache_flush_permitted` is false): ignored.
            s.count(EmulKind::Wbinvd);
            instruction_done(s, regs, len)
        }
        Op::In { .. } | Op::Out { .. } | Op::Ins { .. } | Op::Outs { .. } => io::port_io(s, regs, insn),
        Op::Cli | Op::Sti => {
            // Xen's `validate`: a no-op when the virtual IOPL allows it, else the #GP stands.
            if !io::iopl_ok(s) {
                return Emulated::NotEmulated;
            }
            s.count(EmulKind::Other);
            instruction_done(s, regs, len)
        }
        Op::Rdtsc | Op::Rdtscp => rdtsc(s, regs, insn.op == Op::Rdtscp, len),
    }
}

/// rdtsc/rdtscp fault only while the guest set CR4.TSD: the guest kernel may read the TSC,
/// guest user mode gets the #GP(0) bare metal would give it.
fn rdtsc<M: Machine>(s: &mut Shim<M>, regs: &mut GuestRegs, rdtscp: bool, len: u64) -> Emulated {
    if !s.vcpu.kernel_mode && s.vcpu.virt_cr4 & cr::X86_CR4_TSD != 0 {
        return Emulated::GP0;
    }
    if rdtscp {
        let [_, _, _, edx] = s.m.cpuid(0x8000_0001, 0);
        if edx & (1 << 27) == 0 {
            return Emulated::UD;
        }
        regs.rcx = u64::from(s.vcpu.emul.tsc_aux);
    }
    let t = s.m.rdtsc();
    regs.rax = t & 0xffff_ffff;
    regs.rdx = t >> 32;
    s.count(EmulKind::Rdtsc);
    instruction_done(s, regs, len)
}

/// General-purpose register `n` (0 = rax .. 15 = r15, the ModRM/REX numbering).
pub(crate) fn gpr(regs: &GuestRegs, n: u8) -> u64 {
    match n & 15 {
        0 => regs.rax,
        1 => regs.rcx,
        2 => regs.rdx,
        3 => regs.rbx,
        4 => regs.rsp,
        5 => regs.rbp,
        6 => regs.rsi,
        7 => regs.rdi,
        8 => regs.r8,
        9 => regs.r9,
        10 => regs.r10,
        11 => regs.r11,
        12 => regs.r12,
        13 => regs.r13,
        14 => regs.r14,
        _ => regs.r15,
    }
}

pub(crate) fn set_gpr(regs: &mut GuestRegs, n: u8, v: u64) {
    let r = match n & 15 {
        0 => &mut regs.rax,
        1 => &mut regs.rcx,
        2 => &mut regs.rdx,
        3 => &mut regs.rbx,
        4 => &mut regs.rsp,
        5 => &mut regs.rbp,
        6 => &mut regs.rsi,
        7 => &mut regs.rdi,
        8 => &mut regs.r8,
        9 => &mut regs.r9,
        10 => &mut regs.r10,
        11 => &mut regs.r11,
        12 => &mut regs.r12,
        13 => &mut regs.r13,
        14 => &mut regs.r14,
        _ => &mut regs.r15,
    };
    *r = v;
}

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "testutil"))]
pub mod fuzz;
