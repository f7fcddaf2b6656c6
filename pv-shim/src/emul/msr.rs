//! rdmsr/wrmsr for a 64-bit PV domU (Xen `read_msr`/`write_msr` in `pv/emul-priv-op.c`,
//! `guest_rdmsr`/`guest_wrmsr` in `msr.c`, xen-pv-contract.md §3.10).
//!
//! | MSR | read | write |
//! |---|---|---|
//! | FS_BASE, GS_BASE, SHADOW_GS_BASE | the live bases | canonical values only |
//! | EFER | SCE\|LME\|LMA\|NXE | only that same value |
//! | CR_PAT | Xen's 0x0000050100070406 | #GP |
//! | APIC_BASE | 0xfee00000 \| enable \| BSP (vCPU 0) | #GP |
//! | IA32_TSC | rdtsc | #GP |
//! | TSC_AUX (with RDTSCP/RDPID) | last write | 32-bit values |
//! | MISC_ENABLE | real value, PERF/MONITOR cleared, BTS/PEBS-unavail + xTPR-disable set | ignored |
//! | UCODE_REV (Intel, AMD) | real revision | Intel: only 0 |
//! | SPEC_CTRL (with IBRSB or AMD_IBRS) | last write | IBRS/STIBP/SSBD as enumerated |
//! | PRED_CMD, FLUSH_CMD (as enumerated) | #GP | 0 or the one command bit |
//! | ARCH_CAPABILITIES (as enumerated) | real value | #GP |
//! | PLATFORM_INFO, MISC_FEATURES_ENABLES | 0 (no CPUID faulting) | #GP / only 0 |
//! | PERF_CAPABILITIES | 0 | #GP |
//! | vPMU counters of the vendor (vPMU off) | 0 | ignored |
//! | AMD P-state/FID-VID, NB_CFG, MMIO_CONF_BASE | 0 | ignored |
//! | MPERF/APERF, Intel THERM_CONTROL/ENERGY_PERF_BIAS | #GP | ignored |
//! | anything else | #GP(0) | #GP(0) |
//!
//! "Faking RDMSR": until the guest registered a #GP handler, a read that would #GP returns 0
//! instead (outside 0x4000xxxx), so a kernel probing MSRs before its traps exist survives.
//! Xen also requires the MSR to exist on the host; the shim never hands a guest-chosen MSR
//! number to hardware, so it cannot probe and fakes every such read.

use super::{instruction_done, Emulated, Vendor};
use crate::guest::GuestRegs;
use crate::machine::{Machine, MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_TSC_AUX};
use crate::shim::Shim;
use xen_abi::hostcall::EmulKind;

pub const MSR_IA32_TSC: u32 = 0x10;
pub const MSR_APIC_BASE: u32 = 0x1b;
pub const MSR_SPEC_CTRL: u32 = 0x48;
pub const MSR_PRED_CMD: u32 = 0x49;
pub const MSR_IA32_UCODE_REV: u32 = 0x8b;
pub const MSR_INTEL_PLATFORM_INFO: u32 = 0xce;
pub const MSR_IA32_MPERF: u32 = 0xe7;
pub const MSR_IA32_APERF: u32 = 0xe8;
pub const MSR_ARCH_CAPABILITIES: u32 = 0x10a;
pub const MSR_FLUSH_CMD: u32 = 0x10b;
pub const MSR_INTEL_MISC_FEATURES_ENABLES: u32 = 0x140;
pub const MSR_IA32_THERM_CONTROL: u32 = 0x19a;
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
pub const MSR_IA32_ENERGY_PERF_BIAS: u32 = 0x1b0;
pub const MSR_IA32_CR_PAT: u32 = 0x277;
pub const MSR_IA32_PERF_CAPABILITIES: u32 = 0x345;
pub const MSR_EFER: u32 = 0xc000_0080;
pub const MSR_K8_HWCR: u32 = 0xc001_0015;
pub const MSR_AMD64_NB_CFG: u32 = 0xc001_001f;
pub const MSR_K7_FID_VID_CTL: u32 = 0xc001_0041;
pub const MSR_K7_FID_VID_STATUS: u32 = 0xc001_0042;
pub const MSR_FAM10H_MMIO_CONF_BASE: u32 = 0xc001_0058;
pub const MSR_K8_PSTATE_LIMIT: u32 = 0xc001_0061;
pub const MSR_K8_PSTATE7: u32 = 0xc001_006b;

/// The PAT Xen programs and reports (`XEN_MSR_PAT`): WB, WT, UC-, UC, WC, WP, UC, UC.
pub const XEN_MSR_PAT: u64 = 0x0000_0501_0007_0406;

/// EFER as the shim runs the vCPU (SCE, LME, LMA, NXE); Xen reports the host's known bits.
const GUEST_EFER: u64 = 1 | (1 << 8) | (1 << 10) | (1 << 11);

const APIC_DEFAULT_PHYS_BASE: u64 = 0xfee0_0000;
const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_ENABLE: u64 = 1 << 11;

const MISC_ENABLE_PERF_AVAIL: u64 = 1 << 7;
const MISC_ENABLE_BTS_UNAVAIL: u64 = 1 << 11;
const MISC_ENABLE_PEBS_UNAVAIL: u64 = 1 << 12;
const MISC_ENABLE_MONITOR_ENABLE: u64 = 1 << 18;
const MISC_ENABLE_XTPR_DISABLE: u64 = 1 << 23;

const SPEC_CTRL_IBRS: u64 = 1 << 0;
const SPEC_CTRL_STIBP: u64 = 1 << 1;
const SPEC_CTRL_SSBD: u64 = 1 << 2;

/// The CPUID bits (of the PV policy) that decide whether an MSR exists.
#[derive(Clone, Copy, Debug, Default)]
struct MsrFeatures {
    ibrsb: bool,
    stibp: bool,
    ssbd: bool,
    l1d_flush: bool,
    arch_caps: bool,
    ibpb: bool,
    rdtscp: bool,
    rdpid: bool,
}

impl MsrFeatures {
    fn read<M: Machine>(s: &Shim<M>) -> MsrFeatures {
        let [_, _, ecx7, edx7] = s.m.cpuid(7, 0);
        let [_, _, _, edx81] = s.m.cpuid(0x8000_0001, 0);
        let [_, ebx88, _, _] = s.m.cpuid(0x8000_0008, 0);
        // Intel enumerates SPEC_CTRL in leaf 7, AMD in 0x8000_0008 (AMD_IBRS/STIBP/SSBD).
        MsrFeatures {
            ibrsb: edx7 & (1 << 26) != 0 || ebx88 & (1 << 14) != 0,
            stibp: edx7 & (1 << 27) != 0 || ebx88 & (1 << 15) != 0,
            ssbd: edx7 & (1 << 31) != 0 || ebx88 & (1 << 24) != 0,
            l1d_flush: edx7 & (1 << 28) != 0,
            arch_caps: edx7 & (1 << 29) != 0,
            ibpb: ebx88 & (1 << 12) != 0,
            rdtscp: edx81 & (1 << 27) != 0,
            rdpid: ecx7 & (1 << 22) != 0,
        }
    }
}

/// The vPMU counters of `vendor` (Intel P6/core counters, AMD K7/family-15h counters): with
/// Xen's default `vpmu=off` they read as 0 and ignore writes.
fn is_vpmu_msr(vendor: Vendor, msr: u32) -> bool {
    match vendor {
        Vendor::Intel => matches!(msr, 0xc1..=0xc8 | 0x186..=0x189 | 0x309..=0x30b | 0x38d..=0x390),
        Vendor::Amd | Vendor::Hygon => matches!(msr, 0xc001_0000..=0xc001_0007 | 0xc001_0200..=0xc001_020b),
        Vendor::Other => false,
    }
}

/// Xen's `guest_misc_enable`.
fn guest_misc_enable(v: u64) -> u64 {
    (v & !(MISC_ENABLE_PERF_AVAIL | MISC_ENABLE_MONITOR_ENABLE))
        | MISC_ENABLE_BTS_UNAVAIL
        | MISC_ENABLE_PEBS_UNAVAIL
        | MISC_ENABLE_XTPR_DISABLE
}

/// The CPU family of the policy (CPUID.1:EAX).
fn family<M: Machine>(s: &Shim<M>) -> u32 {
    let eax = s.m.cpuid(1, 0)[0];
    let base = (eax >> 8) & 0xf;
    if base == 0xf {
        base + ((eax >> 20) & 0xff)
    } else {
        base
    }
}

fn is_amd_pstate(msr: u32) -> bool {
    matches!(msr, MSR_K7_FID_VID_CTL | MSR_K7_FID_VID_STATUS | MSR_K8_PSTATE_LIMIT..=MSR_K8_PSTATE7)
}

/// The value of `msr` for the guest, or `None` for #GP.
fn read_msr<M: Machine>(s: &mut Shim<M>, msr: u32) -> Option<u64> {
    let vendor = s.cpu_vendor();
    let v = match msr {
        MSR_FS_BASE => s.m.read_msr(MSR_FS_BASE),
        MSR_GS_BASE => s.m.read_msr(MSR_GS_BASE),
        // In guest kernel mode the inactive base is the user one (Xen's `gs_base_user`).
        MSR_KERNEL_GS_BASE => s.m.read_msr(MSR_KERNEL_GS_BASE),
        MSR_EFER => GUEST_EFER,
        MSR_IA32_CR_PAT => XEN_MSR_PAT,
        MSR_APIC_BASE => {
            let bsp = if s.vcpu.id == 0 { APIC_BASE_BSP } else { 0 };
            APIC_DEFAULT_PHYS_BASE | APIC_BASE_ENABLE | bsp
        }
        MSR_IA32_TSC => s.m.rdtsc(),
        MSR_TSC_AUX => {
            let f = MsrFeatures::read(s);
            if !f.rdtscp && !f.rdpid {
                return None;
            }
            u64::from(s.vcpu.emul.tsc_aux)
        }
        MSR_IA32_MISC_ENABLE => guest_misc_enable(s.m.read_msr(MSR_IA32_MISC_ENABLE)),
        MSR_IA32_UCODE_REV if matches!(vendor, Vendor::Intel | Vendor::Amd) => {
            s.m.read_msr(MSR_IA32_UCODE_REV)
        }
        MSR_SPEC_CTRL if MsrFeatures::read(s).ibrsb => s.vcpu.emul.spec_ctrl,
        MSR_ARCH_CAPABILITIES if MsrFeatures::read(s).arch_caps => s.m.read_msr(MSR_ARCH_CAPABILITIES),
        MSR_INTEL_PLATFORM_INFO | MSR_INTEL_MISC_FEATURES_ENABLES => 0,
        MSR_IA32_PERF_CAPABILITIES => 0,
        m if is_amd_pstate(m) && vendor == Vendor::Amd => 0,
        MSR_FAM10H_MMIO_CONF_BASE if vendor == Vendor::Amd && (0x10..0x17).contains(&family(s)) => 0,
        MSR_AMD64_NB_CFG => 0,
        m if is_vpmu_msr(vendor, m) => 0,
        _ => return None,
    };
    Some(v)
}

/// Performs a guest write of `v` to `msr`; `false` for #GP. Only values the real CPU accepts
/// reach hardware: a #GP in the shim would end the domain.
fn write_msr<M: Machine>(s: &mut Shim<M>, msr: u32, v: u64) -> bool {
    let vendor = s.cpu_vendor();
    match msr {
        MSR_FS_BASE | MSR_GS_BASE | MSR_KERNEL_GS_BASE => {
            if !crate::mm::is_canonical(v) {
                return false;
            }
            s.m.write_msr(msr, v);
        }
        MSR_EFER => return v == GUEST_EFER,
        MSR_TSC_AUX => {
            let f = MsrFeatures::read(s);
            let Ok(aux) = u32::try_from(v) else { return false };
            if !f.rdtscp && !f.rdpid {
                return false;
            }
            s.vcpu.emul.tsc_aux = aux;
            s.m.write_msr(MSR_TSC_AUX, v);
        }
        // Xen ignores any value here ("Domain attempted WRMSR").
        MSR_IA32_MISC_ENABLE => {}
        MSR_IA32_UCODE_REV => return vendor == Vendor::Intel && v == 0,
        MSR_SPEC_CTRL => {
            let f = MsrFeatures::read(s);
            // Xen accepts STIBP even when not enumerated; KVM would #GP on it, so it is only
            // allowed when enumerated here.
            let ok = SPEC_CTRL_IBRS
                | if f.stibp { SPEC_CTRL_STIBP } else { 0 }
                | if f.ssbd { SPEC_CTRL_SSBD } else { 0 };
            if !f.ibrsb || v & !ok != 0 {
                return false;
            }
            s.vcpu.emul.spec_ctrl = v;
            s.m.write_msr(MSR_SPEC_CTRL, v);
        }
        MSR_PRED_CMD => {
            let f = MsrFeatures::read(s);
            if (!f.ibrsb && !f.ibpb) || v & !1 != 0 {
                return false;
            }
            if v != 0 {
                s.m.write_msr(MSR_PRED_CMD, v);
            }
        }
        MSR_FLUSH_CMD => {
            if !MsrFeatures::read(s).l1d_flush || v & !1 != 0 {
                return false;
            }
            if v != 0 {
                s.m.write_msr(MSR_FLUSH_CMD, v);
            }
        }
        MSR_INTEL_MISC_FEATURES_ENABLES => return v == 0,
        m if (is_amd_pstate(m) || m == MSR_K8_HWCR) && matches!(vendor, Vendor::Amd | Vendor::Hygon) => {}
        MSR_AMD64_NB_CFG => {}
        MSR_FAM10H_MMIO_CONF_BASE if vendor == Vendor::Amd && (0x10..0x17).contains(&family(s)) => {}
        MSR_IA32_MPERF | MSR_IA32_APERF if vendor != Vendor::Other => {}
        MSR_IA32_THERM_CONTROL | MSR_IA32_ENERGY_PERF_BIAS if vendor == Vendor::Intel => {}
        m if is_vpmu_msr(vendor, m) => {}
        _ => return false,
    }
    true
}

/// `rdmsr` from guest kernel mode: ecx = MSR, result in edx:eax.
pub(super) fn rdmsr<M: Machine>(s: &mut Shim<M>, regs: &mut GuestRegs, len: u64) -> Emulated {
    let msr = regs.rcx as u32;
    let v = match read_msr(s, msr) {
        Some(v) => v,
        None if s.vcpu.traps.table[super::X86_EXC_GP as usize].address == 0 && msr >> 16 != 0x4000 => 0,
        None => return Emulated::GP0,
    };
    regs.rax = v & 0xffff_ffff;
    regs.rdx = v >> 32;
    s.count(EmulKind::Rdmsr);
    instruction_done(s, regs, len)
}

/// `wrmsr` from guest kernel mode: ecx = MSR, edx:eax = value.
pub(super) fn wrmsr<M: Machine>(s: &mut Shim<M>, regs: &mut GuestRegs, len: u64) -> Emulated {
    let msr = regs.rcx as u32;
    let v = (regs.rax & 0xffff_ffff) | ((regs.rdx & 0xffff_ffff) << 32);
    if !write_msr(s, msr, v) {
        return Emulated::GP0;
    }
    s.count(EmulKind::Wrmsr);
    instruction_done(s, regs, len)
}
