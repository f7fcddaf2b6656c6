//! The PV CPUID policy (xen-pv-contract.md §3.11): what the guest sees, both through native
//! `cpuid` (answered by KVM from this table) and through the forced-emulation prefix (the shim
//! executes `cpuid` itself and adds only the PV OSXSAVE rule, `pv-shim/src/emul`).
//!
//! It starts from `KVM_GET_SUPPORTED_CPUID` and follows Xen's PV max policy (the features
//! marked 'A' in `cpufeatureset.h`) plus what Linux clears for a domU (`xen_init_capabilities`,
//! `xen_cpuid`):
//!
//! | Leaf | Policy |
//! |---|---|
//! | 1 ECX | hide DTES64, MONITOR, DS_CPL, VMX, SMX, EIST, TM2, SDBG, xTPR, PDCM, PCID, DCA, X2APIC, TSC_DEADLINE; OSXSAVE clear (KVM tracks the real CR4); set HYPERVISOR |
//! | 1 EDX | hide VME, PSE, MCE, MTRR, PGE, MCA, PSE36, PSN, DS, ACPI, TM, PBE |
//! | 5, 6, 0xa | zero (no MWAIT, no power management, vPMU off) |
//! | 7.0 EBX | hide FSGSBASE, TSC_ADJUST, SGX, SMEP, INVPCID, PQM, MPX, PQE, SMAP, PT |
//! | 7.0 ECX | hide UMIP, PKU, OSPKE, WAITPKG, CET_SS, LA57, KEYLOCKER, SGX_LC, PKS |
//! | 7.0 EDX | hide HYBRID, PCONFIG, ARCH_LBR, CET_IBT, CORE_CAPABILITIES |
//! | 7.1 EAX | hide FRED, LKGS, LAM |
//! | 0xd.0 | XCR0 mask without PKRU |
//! | 0xd.1 | hide XSAVES and XFD; no supervisor (XSS) states |
//! | 0xd.n | zero for PKRU and the supervisor states (PT, PASID, CET, HDC, HWP, arch LBR) |
//! | 0x12, 0x14, 0x19 | zero (SGX, PT, Key Locker) |
//! | 0x4000_0000..0x4fff_ffff | KVM's leaves removed; Xen's 0x4000_0000..=0x4000_0005 instead |
//! | 0x8000_0001 ECX | hide SVM, IBS, SKINIT, WDT, LWP, TOPOEXT, PERFCTR_CORE/NB/LLC, DBEXT, MWAITX |
//! | 0x8000_0001 EDX | hide PAGE1GB |
//! | 0x8000_000a, 0x8000_001e, 0x8000_001f, 0x8000_0020 | zero (SVM, TOPOEXT, SEV, PQoS) |
//!
//! MCE/MCA are hidden although Xen offers them: the shim has no virtual machine-check
//! architecture (Xen's vMCE MSRs) and never delivers a machine check.
//!
//! Xen's leaves (`cpuid_hypervisor_leaves`, `arch-x86/cpuid.h`):
//!
//! | Leaf | Value |
//! |---|---|
//! | 0x4000_0000 | eax = 0x4000_0005, "XenVMMXenVMM" |
//! | 0x4000_0001 | eax = 0x0004_0011 (Xen 4.17) |
//! | 0x4000_0002 | eax = 1 hypercall page, ebx = 0x4000_0000 MSR base, ecx = MMU_PT_UPDATE_PRESERVE_AD |
//! | 0x4000_0003.0 | eax = host TSC reliable / RDTSCP flags, ebx = tsc_mode 0, ecx = guest TSC kHz |
//! | 0x4000_0003.1 | ecx:edx = the TSC → ns scale (mul, shift); offset 0 |
//! | 0x4000_0003.2 | eax = host TSC kHz |
//! | 0x4000_0004 | zeros (HVM only) |
//! | 0x4000_0005 | ebx = machine-address width, at most 44 bits (more makes Linux ask for grant v2) |

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// The Xen version the guest sees (`XENVER_version` agrees).
pub const XEN_VERSION: u32 = 0x0004_0011;
/// "XenVMMXenVMM" in ebx, ecx, edx.
pub const XEN_SIGNATURE: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];
pub const XEN_CPUID_BASE: u32 = 0x4000_0000;
/// `XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD`.
const XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD: u32 = 1 << 0;
/// `XEN_CPUID_TSC_*` flags of leaf 3 sub-leaf 0 (`arch-x86/cpuid.h`).
const XEN_CPUID_TSC_STABLE: u32 = 1 << 1;
const XEN_CPUID_TSC_RDTSCP: u32 = 1 << 2;
/// Linux asks for grant-table v2 above this machine-address width.
const MAX_MACHINE_ADDRESS_BITS: u32 = 44;

const EAX: usize = 0;
const EBX: usize = 1;
const ECX: usize = 2;
const EDX: usize = 3;

/// Bits hidden from a leaf: (leaf, sub-leaf or None for all, register, mask).
const HIDE: &[(u32, Option<u32>, usize, u32)] = &[
    // 1.ECX: DTES64 2, MONITOR 3, DS_CPL 4, VMX 5, SMX 6, EIST 7, TM2 8, SDBG 11, xTPR 14,
    // PDCM 15, PCID 17, DCA 18, X2APIC 21, TSC_DEADLINE 24, OSXSAVE 27.
    (1, None, ECX, bits(&[2, 3, 4, 5, 6, 7, 8, 11, 14, 15, 17, 18, 21, 24, 27])),
    // 1.EDX: VME 1, PSE 3, MCE 7, MTRR 12, PGE 13, MCA 14, PSE36 17, PSN 18, DS 21, ACPI 22,
    // TM 29, PBE 31.
    (1, None, EDX, bits(&[1, 3, 7, 12, 13, 14, 17, 18, 21, 22, 29, 31])),
    // 7.0.EBX: FSGSBASE 0, TSC_ADJUST 1, SGX 2, SMEP 7, INVPCID 10, PQM 12, MPX 14, PQE 15,
    // SMAP 20, PT 25.
    (7, Some(0), EBX, bits(&[0, 1, 2, 7, 10, 12, 14, 15, 20, 25])),
    // 7.0.ECX: UMIP 2, PKU 3, OSPKE 4, WAITPKG 5, CET_SS 7, LA57 16, KL 23, SGX_LC 30, PKS 31.
    (7, Some(0), ECX, bits(&[2, 3, 4, 5, 7, 16, 23, 30, 31])),
    // 7.0.EDX: HYBRID 15, PCONFIG 18, ARCH_LBR 19, CET_IBT 20, CORE_CAPABILITIES 30.
    (7, Some(0), EDX, bits(&[15, 18, 19, 20, 30])),
    // 7.1.EAX: FRED 17, LKGS 18, LAM 26.
    (7, Some(1), EAX, bits(&[17, 18, 26])),
    // 0xd.0.EAX: PKRU 9.
    (0xd, Some(0), EAX, bits(&[9])),
    // 0xd.1.EAX: XSAVES 3, XFD 4; ECX/EDX: the XSS (supervisor) mask.
    (0xd, Some(1), EAX, bits(&[3, 4])),
    (0xd, Some(1), ECX, !0),
    (0xd, Some(1), EDX, !0),
    // 0x8000_0001.ECX: SVM 2, IBS 10, SKINIT 12, WDT 13, LWP 15, TOPOEXT 22, PERFCTR_CORE 23,
    // PERFCTR_NB 24, DBEXT 26, PERFCTR_LLC 28, MWAITX 29.
    (0x8000_0001, None, ECX, bits(&[2, 10, 12, 13, 15, 22, 23, 24, 26, 28, 29])),
    // 0x8000_0001.EDX: PAGE1GB 26.
    (0x8000_0001, None, EDX, bits(&[26])),
];

/// Leaves zeroed whole.
const ZERO_LEAVES: &[u32] =
    &[5, 6, 0xa, 0x12, 0x14, 0x19, 0x8000_000a, 0x8000_001e, 0x8000_001f, 0x8000_0020];

/// Sub-leaves of 0xd describing state components the guest may not enable: PT 8, PKRU 9,
/// PASID 10, CET 11-12, HDC 13, HWP 16, arch LBR 15.
const ZERO_XSTATE: &[u32] = &[8, 9, 10, 11, 12, 13, 15, 16];

const fn bits(list: &[u32]) -> u32 {
    let mut m = 0u32;
    let mut i = 0;
    while i < list.len() {
        m |= 1 << list[i];
        i += 1;
    }
    m
}

/// Xen's `set_time_scale`: the (mul_frac, shift) that turn TSC ticks into nanoseconds:
/// `ns = ((ticks << shift) * mul_frac) >> 32` (a negative shift shifts right).
pub fn tsc_to_ns_scale(tsc_khz: u32) -> (u32, i8) {
    const NS_PER_SEC: u64 = 1_000_000_000;
    let mut tps = u64::from(tsc_khz.max(1)) * 1000;
    let mut shift: i8 = 0;
    while tps > NS_PER_SEC * 2 {
        tps >>= 1;
        shift -= 1;
    }
    while tps <= NS_PER_SEC {
        tps <<= 1;
        shift += 1;
    }
    (((NS_PER_SEC << 32) / tps) as u32, shift)
}

/// Finds `(leaf, sub)` in `supported`: sub-leaves only count for indexed leaves.
fn find(supported: &[kvm_cpuid_entry2], leaf: u32, sub: u32) -> Option<&kvm_cpuid_entry2> {
    supported
        .iter()
        .find(|e| e.function == leaf && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == sub))
}

fn regs(e: &mut kvm_cpuid_entry2) -> [&mut u32; 4] {
    [&mut e.eax, &mut e.ebx, &mut e.ecx, &mut e.edx]
}

/// The Xen leaves for a vCPU whose TSC runs at `tsc_khz`, in a domain whose highest machine
/// address is `max_maddr`.
fn xen_leaves(supported: &[kvm_cpuid_entry2], tsc_khz: u32, max_maddr: u64) -> Vec<kvm_cpuid_entry2> {
    let leaf = |function: u32, index: u32, [eax, ebx, ecx, edx]: [u32; 4]| kvm_cpuid_entry2 {
        function,
        index,
        flags: if function == XEN_CPUID_BASE + 3 { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 },
        eax,
        ebx,
        ecx,
        edx,
        padding: [0; 3],
    };
    let [sig_b, sig_c, sig_d] = XEN_SIGNATURE;
    let invariant_tsc = find(supported, 0x8000_0007, 0).is_some_and(|e| e.edx & (1 << 8) != 0);
    let rdtscp = find(supported, 0x8000_0001, 0).is_some_and(|e| e.edx & (1 << 27) != 0);
    let tsc_flags =
        if invariant_tsc { XEN_CPUID_TSC_STABLE } else { 0 } | if rdtscp { XEN_CPUID_TSC_RDTSCP } else { 0 };
    let (mul, shift) = tsc_to_ns_scale(tsc_khz);
    let max_mfn = max_maddr.saturating_sub(1) >> 12;
    let width = (64 - max_mfn.leading_zeros() + 12).min(MAX_MACHINE_ADDRESS_BITS);
    let b = XEN_CPUID_BASE;
    vec![
        leaf(b, 0, [b + 5, sig_b, sig_c, sig_d]),
        leaf(b + 1, 0, [XEN_VERSION, 0, 0, 0]),
        leaf(b + 2, 0, [1, XEN_CPUID_BASE, XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD, 0]),
        leaf(b + 3, 0, [tsc_flags, 0, tsc_khz, 0]),
        leaf(b + 3, 1, [0, 0, mul, shift as u8 as u32]),
        leaf(b + 3, 2, [tsc_khz, 0, 0, 0]),
        leaf(b + 4, 0, [0; 4]),
        leaf(b + 5, 0, [0, width, 0, 0]),
    ]
}

/// Builds the PV CPUID table (see the module doc) from KVM's supported CPUID.
pub fn pv_cpuid(supported: &CpuId, tsc_khz: u32, max_maddr: u64) -> CpuId {
    let src = supported.as_slice();
    let mut out: Vec<kvm_cpuid_entry2> =
        src.iter().filter(|e| !(0x4000_0000..=0x4fff_ffff).contains(&e.function)).copied().collect();
    for e in &mut out {
        if ZERO_LEAVES.contains(&e.function) || (e.function == 0xd && ZERO_XSTATE.contains(&e.index)) {
            for r in regs(e) {
                *r = 0;
            }
        }
        for &(leaf, sub, reg, mask) in HIDE {
            if e.function == leaf && sub.is_none_or(|s| s == e.index) {
                *regs(e)[reg] &= !mask;
            }
        }
        if e.function == 1 {
            e.ecx |= 1 << 31; // HYPERVISOR
        }
    }
    out.extend(xen_leaves(src, tsc_khz, max_maddr));
    out.truncate(kvm_bindings::KVM_MAX_CPUID_ENTRIES);
    CpuId::from_entries(&out).expect("at most KVM_MAX_CPUID_ENTRIES entries")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, r: [u32; 4]) -> kvm_cpuid_entry2 {
        let flags = if matches!(function, 7 | 0xd | 4) { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 };
        kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax: r[0],
            ebx: r[1],
            ecx: r[2],
            edx: r[3],
            padding: [0; 3],
        }
    }

    /// A supported table with every bit set, KVM's signature leaves included.
    fn synthetic() -> CpuId {
        let all = [!0u32; 4];
        let mut v = vec![entry(0, 0, [0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69])];
        for (f, i) in
            [(1, 0), (5, 0), (6, 0), (7, 0), (7, 1), (0xa, 0), (0xd, 0), (0xd, 1), (0xd, 2), (0xd, 9)]
        {
            v.push(entry(f, i, all));
        }
        for (f, i) in [(0xd, 11), (0x12, 0), (0x14, 0), (0x8000_0001, 0), (0x8000_0007, 0), (0x8000_001f, 0)]
        {
            v.push(entry(f, i, all));
        }
        v.push(entry(0x4000_0000, 0, [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d]));
        v.push(entry(0x4000_0001, 0, all));
        CpuId::from_entries(&v).unwrap()
    }

    fn get(c: &CpuId, f: u32, i: u32) -> [u32; 4] {
        let e = c.as_slice().iter().find(|e| e.function == f && e.index == i).expect("leaf present");
        [e.eax, e.ebx, e.ecx, e.edx]
    }

    #[test]
    fn every_hidden_bit_is_hidden() {
        let c = pv_cpuid(&synthetic(), 2_000_000, 1 << 30);
        for &(leaf, sub, reg, mask) in HIDE {
            let r = get(&c, leaf, sub.unwrap_or(0));
            assert_eq!(r[reg] & mask, 0, "leaf {leaf:#x}.{sub:?} reg {reg}");
        }
        for leaf in [5, 6, 0xa, 0x12, 0x14, 0x8000_001f] {
            assert_eq!(get(&c, leaf, 0), [0; 4], "leaf {leaf:#x}");
        }
        assert_eq!(get(&c, 0xd, 9), [0; 4], "PKRU state");
        assert_eq!(get(&c, 0xd, 11), [0; 4], "CET state");
    }

    #[test]
    fn named_features_are_hidden_and_kept() {
        let c = pv_cpuid(&synthetic(), 2_000_000, 1 << 30);
        let l1 = get(&c, 1, 0);
        assert_eq!(
            l1[ECX] & (1 << 5 | 1 << 17 | 1 << 21 | 1 << 24 | 1 << 27),
            0,
            "VMX PCID X2APIC TSC_DL OSXSAVE"
        );
        assert_ne!(l1[ECX] & (1 << 26 | 1 << 28 | 1 << 13 | 1 << 23), 0, "XSAVE AVX CX16 POPCNT kept");
        assert_ne!(l1[ECX] & (1 << 31), 0, "HYPERVISOR");
        assert_eq!(l1[EDX] & (1 << 12 | 1 << 13 | 1 << 3), 0, "MTRR PGE PSE");
        assert_eq!(l1[EDX] & (1 << 0 | 1 << 4 | 1 << 6 | 1 << 9 | 1 << 16 | 1 << 26), 0x0401_0251);
        let l7 = get(&c, 7, 0);
        assert_eq!(l7[EBX] & (1 << 0 | 1 << 7 | 1 << 10 | 1 << 20), 0, "FSGSBASE SMEP INVPCID SMAP");
        assert_eq!(l7[ECX] & (1 << 3 | 1 << 16 | 1 << 2), 0, "PKU LA57 UMIP");
        assert_eq!(get(&c, 0xd, 1)[EAX] & (1 << 3), 0, "XSAVES");
        assert_eq!(get(&c, 0x8000_0001, 0)[ECX] & (1 << 2), 0, "SVM");
        assert_eq!(get(&c, 0x8000_0001, 0)[EDX] & (1 << 26), 0, "PAGE1GB");
        assert_ne!(get(&c, 0x8000_0001, 0)[EDX] & (1 << 27 | 1 << 29 | 1 << 20), 0, "RDTSCP LM NX");
    }

    #[test]
    fn xen_signature_replaces_kvms() {
        let c = pv_cpuid(&synthetic(), 2_000_000, 1 << 30);
        assert_eq!(get(&c, 0x4000_0000, 0), [0x4000_0005, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e]);
        assert_eq!(get(&c, 0x4000_0001, 0), [0x0004_0011, 0, 0, 0]);
        assert_eq!(get(&c, 0x4000_0002, 0), [1, 0x4000_0000, 1, 0]);
        let kvm_sig = c.as_slice().iter().any(|e| e.ebx == 0x4b4d_564b);
        assert!(!kvm_sig, "no KVMKVMKVM left");
        let n = c.as_slice().iter().filter(|e| e.function == 0x4000_0000).count();
        assert_eq!(n, 1);
    }

    #[test]
    fn tsc_leaf_reports_the_vcpu_frequency_and_scale() {
        let c = pv_cpuid(&synthetic(), 2_000_000, 1 << 30);
        let [flags, mode, khz, _] = get(&c, 0x4000_0003, 0);
        assert_eq!((flags, mode, khz), (XEN_CPUID_TSC_STABLE | XEN_CPUID_TSC_RDTSCP, 0, 2_000_000));
        let [_, _, mul, shift] = get(&c, 0x4000_0003, 1);
        // 2 GHz: half a nanosecond per tick.
        let ticks = (2_000_000_000u64 << (shift as i8).max(0)) >> (-(shift as i8)).max(0);
        let ns = (ticks * u64::from(mul)) >> 32;
        assert!((999_999_990..=1_000_000_000).contains(&ns), "{ns}");
        assert_eq!(get(&c, 0x4000_0003, 2)[EAX], 2_000_000);
    }

    #[test]
    fn machine_address_width_fits_memory_and_stays_under_grant_v2() {
        let c = pv_cpuid(&synthetic(), 1, 1 << 30);
        assert_eq!(get(&c, 0x4000_0005, 0)[EBX], 30);
        let c = pv_cpuid(&synthetic(), 1, (1 << 30) + 4096);
        assert_eq!(get(&c, 0x4000_0005, 0)[EBX], 31);
        let c = pv_cpuid(&synthetic(), 1, 1 << 50);
        assert_eq!(get(&c, 0x4000_0005, 0)[EBX], 44);
    }

    #[test]
    fn scale_matches_xen_for_common_frequencies() {
        assert_eq!(tsc_to_ns_scale(1_000_000), (0x8000_0000, 1));
        let (mul, shift) = tsc_to_ns_scale(3_000_000);
        assert_eq!(shift, -1);
        assert_eq!(mul, ((1_000_000_000u64 << 32) / 1_500_000_000) as u32);
    }
}
