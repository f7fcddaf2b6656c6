//! Host tests of the #GP/#UD emulator on the mock machine.

use super::*;
use crate::shim::Shim;
use crate::testutil::{shim_with_guest, MockMachine, GUEST_VA};
use xen_abi::hostcall::EmulKind;

const CS_KERNEL: u64 = 0xe033;
/// Guest page 32 (GUEST_VA + 32 pages) is the first unmapped one; page 31 is read-only.
const UNMAPPED: u64 = GUEST_VA + 32 * 4096;
const RO_PAGE: u64 = GUEST_VA + 31 * 4096;

const XSAVE: u32 = 1 << 26;

/// A guest whose CPUID policy is an Intel CPU with TSC, DE, XSAVE (x87|SSE|AVX), RDTSCP.
fn guest() -> Shim<MockMachine> {
    let mut s = shim_with_guest();
    let c = &mut s.m.cpuid;
    c.insert((0, 0), [0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]);
    c.insert((1, 0), [0x000a_0655, 0, XSAVE | (1 << 31), (1 << 4) | (1 << 2)]);
    c.insert((7, 0), [0, 0, 0, (1 << 26) | (1 << 27)]);
    c.insert((0xd, 0), [0x7, 0, 0, 0]);
    c.insert((0x8000_0001, 0), [0, 0, 0, 1 << 27]);
    s
}

fn amd(s: &mut Shim<MockMachine>) {
    s.m.cpuid.insert((0, 0), [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65]);
    s.vcpu.emul = EmulState::default();
}

/// Writes `code` at `va` in guest memory (through the machine: read-only pages too).
fn put(s: &mut Shim<MockMachine>, va: u64, code: &[u8]) {
    for (i, b) in code.iter().enumerate() {
        let ma = crate::mm::translate(&s.m, s.cr3(), va + i as u64, false).unwrap();
        s.m.mem[ma as usize] = *b;
    }
}

fn regs_at(rip: u64) -> GuestRegs {
    GuestRegs { rip, cs: CS_KERNEL, rflags: 0x202, vector: 13, ..Default::default() }
}

/// Runs `code` placed at GUEST_VA as a #GP with `regs` tweaked by `f`.
fn gp(s: &mut Shim<MockMachine>, code: &[u8], f: impl FnOnce(&mut GuestRegs)) -> (Emulated, GuestRegs) {
    put(s, GUEST_VA, code);
    let mut r = regs_at(GUEST_VA);
    f(&mut r);
    let e = emulate_gp(s, &mut r);
    (e, r)
}

fn emulated(s: &mut Shim<MockMachine>, k: EmulKind) -> u64 {
    s.m.stats.emulated[k as usize]
}

const GP0: Emulated = Emulated::Raise { vector: 13, error_code: Some(0) };

const RDMSR: &[u8] = &[0x0f, 0x32];
const WRMSR: &[u8] = &[0x0f, 0x30];

// ---- forced CPUID (#UD) ----

#[test]
fn forced_cpuid_runs_the_policy_and_skips_seven_bytes() {
    let mut s = guest();
    s.m.cpuid.insert((0x4000_0000, 0), [0x4000_0005, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e]);
    put(&mut s, GUEST_VA, &FORCED_CPUID);
    let mut r = regs_at(GUEST_VA);
    r.rax = 0x4000_0000;
    r.rcx = 0xdead_0000_0000_0000;
    assert_eq!(emulate_ud(&mut s, &mut r), Emulated::Done);
    assert_eq!((r.rax, r.rbx, r.rcx, r.rdx), (0x4000_0005, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e));
    assert_eq!(r.rip, GUEST_VA + 7);
    assert_eq!(emulated(&mut s, EmulKind::ForcedCpuid), 1);
}

#[test]
fn forced_cpuid_leaks_osxsave_to_the_kernel_only() {
    let mut s = guest();
    put(&mut s, GUEST_VA, &FORCED_CPUID);
    let mut r = regs_at(GUEST_VA);
    r.rax = 1;
    assert_eq!(emulate_ud(&mut s, &mut r), Emulated::Done);
    assert_ne!(r.rcx as u32 & CPUID1_ECX_OSXSAVE, 0, "kernel sees the leaked OSXSAVE");
    assert_ne!(r.rcx as u32 & (1 << 31), 0);

    s.vcpu.kernel_mode = false;
    s.vcpu.guest_table_user = s.vcpu.guest_table;
    let mut r = regs_at(GUEST_VA);
    r.rax = 1;
    assert_eq!(emulate_ud(&mut s, &mut r), Emulated::Done);
    assert_eq!(r.rcx as u32 & CPUID1_ECX_OSXSAVE, 0, "user mode sees the architectural bit");
    s.vcpu.virt_cr4 = cr::X86_CR4_OSXSAVE;
    let mut r = regs_at(GUEST_VA);
    r.rax = 1;
    emulate_ud(&mut s, &mut r);
    assert_ne!(r.rcx as u32 & CPUID1_ECX_OSXSAVE, 0);
}

#[test]
fn forced_cpuid_hides_osxsave_without_xsave() {
    let mut s = guest();
    s.m.cpuid.insert((1, 0), [0, 0, CPUID1_ECX_OSXSAVE, 0]);
    put(&mut s, GUEST_VA, &FORCED_CPUID);
    let mut r = regs_at(GUEST_VA);
    r.rax = 1;
    emulate_ud(&mut s, &mut r);
    assert_eq!(r.rcx as u32 & CPUID1_ECX_OSXSAVE, 0);
}

#[test]
fn ud_matches_the_prefix_byte_for_byte() {
    for i in 0..FORCED_CPUID.len() {
        let mut s = guest();
        let mut code = FORCED_CPUID;
        code[i] ^= 0x20;
        put(&mut s, GUEST_VA, &code);
        let mut r = regs_at(GUEST_VA);
        let before = r;
        assert_eq!(emulate_ud(&mut s, &mut r), Emulated::NotEmulated, "byte {i} changed");
        assert_eq!(r, before, "registers untouched");
    }
    let mut s = guest();
    put(&mut s, GUEST_VA, &[0x0f, 0x0b, 0x90, 0x90, 0x90, 0x90, 0x90]);
    let mut r = regs_at(GUEST_VA);
    assert_eq!(emulate_ud(&mut s, &mut r), Emulated::NotEmulated, "a BUG() ud2");
    assert_eq!(s.m.stats.emulated, [0; 16]);
}

#[test]
fn ud_prefix_running_into_an_unmapped_page_is_a_page_fault() {
    let mut s = guest();
    put(&mut s, UNMAPPED - 3, &FORCED_CPUID[..3]);
    let mut r = regs_at(UNMAPPED - 3);
    assert_eq!(emulate_ud(&mut s, &mut r), Emulated::PageFault { addr: UNMAPPED, error_code: 0 });
    let mut s = guest();
    put(&mut s, UNMAPPED - 6, &FORCED_CPUID[..6]);
    let mut r = regs_at(UNMAPPED - 6);
    assert_eq!(emulate_ud(&mut s, &mut r), Emulated::PageFault { addr: UNMAPPED, error_code: 0 });
    assert_eq!(r.rip, UNMAPPED - 6);
}

#[test]
fn forced_cpuid_at_the_end_of_a_mapped_page_works() {
    let mut s = guest();
    put(&mut s, UNMAPPED - 7, &FORCED_CPUID);
    let mut r = regs_at(UNMAPPED - 7);
    assert_eq!(emulate_ud(&mut s, &mut r), Emulated::Done);
    assert_eq!(r.rip, UNMAPPED);
}

// ---- fetch and decode ----

#[test]
fn non_privileged_and_unknown_instructions_are_not_emulated() {
    for code in [
        &[0xf4][..],               // hlt
        &[0x0f, 0x21, 0xc0],       // mov %dr0, %rax (set_debugreg is the PV way)
        &[0x0f, 0x01, 0xf8],       // swapgs
        &[0x0f, 0xa2],             // cpuid (never faults: no CPUID faulting)
        &[0x44, 0x0f, 0x20, 0xc0], // mov %cr8, %rax
        &[0xf0, 0x0f, 0x20, 0xc0], // lock mov cr0 (AMD's cr8 alias)
        &[0x0f, 0xff, 0xff],       // ud0 garbage
        &[0x90],
    ] {
        let mut s = guest();
        let (e, r) = gp(&mut s, code, |_| {});
        assert_eq!(e, Emulated::NotEmulated, "{code:02x?}");
        assert_eq!(r.rip, GUEST_VA);
    }
}

#[test]
fn gp_with_a_selector_error_code_is_not_emulated() {
    let mut s = guest();
    let (e, _) = gp(&mut s, RDMSR, |r| r.error_code = 0x80 * 8 + 2);
    assert_eq!(e, Emulated::NotEmulated);
}

#[test]
fn compat_mode_code_is_not_decoded_as_64_bit() {
    let mut s = guest();
    let (e, _) = gp(&mut s, RDMSR, |r| r.cs = 0xe023);
    assert_eq!(e, Emulated::NotEmulated);
}

#[test]
fn instruction_cut_by_an_unmapped_page_is_a_page_fault_at_the_gap() {
    let mut s = guest();
    put(&mut s, UNMAPPED - 1, &[0x0f]);
    let mut r = regs_at(UNMAPPED - 1);
    r.rcx = 0x277;
    assert_eq!(emulate_gp(&mut s, &mut r), Emulated::PageFault { addr: UNMAPPED, error_code: 0 });
    let mut r = regs_at(UNMAPPED);
    assert_eq!(emulate_gp(&mut s, &mut r), Emulated::PageFault { addr: UNMAPPED, error_code: 0 });
    // A complete instruction right before the gap decodes without the missing bytes.
    put(&mut s, UNMAPPED - 2, RDMSR);
    let mut r = regs_at(UNMAPPED - 2);
    r.rcx = 0x277;
    assert_eq!(emulate_gp(&mut s, &mut r), Emulated::Done);
    assert_eq!(r.rip, UNMAPPED);
}

#[test]
fn decoder_reports_lengths_and_operands() {
    assert_eq!(decode(&[0x41, 0x0f, 0x20, 0xd8]), Ok(Decoded { op: Op::ReadCr { cr: 3, gpr: 8 }, len: 4 }));
    assert_eq!(decode(&[0x0f, 0x22, 0xe7]), Ok(Decoded { op: Op::WriteCr { cr: 4, gpr: 7 }, len: 3 }));
    assert_eq!(
        decode(&[0x66, 0xe5, 0x80]),
        Ok(Decoded { op: Op::In { port: PortSrc::Imm(0x80), size: 2 }, len: 3 })
    );
    assert_eq!(decode(&[0xee]), Ok(Decoded { op: Op::Out { port: PortSrc::Dx, size: 1 }, len: 1 }));
    assert_eq!(
        decode(&[0x67, 0xf3, 0x6d]),
        Ok(Decoded { op: Op::Ins { size: 4, rep: true, addr32: true }, len: 3 })
    );
    assert_eq!(
        decode(&[0x65, 0x66, 0x6f]),
        Ok(Decoded { op: Op::Outs { size: 2, rep: false, addr32: false, seg: StrSeg::Gs }, len: 3 })
    );
    assert_eq!(decode(&[0x0f, 0x01, 0xd1]), Ok(Decoded { op: Op::Xsetbv { bad_prefix: false }, len: 3 }));
    assert_eq!(decode(&[0x0f]), Err(DecodeFail::Truncated));
    assert_eq!(decode(&[]), Err(DecodeFail::Truncated));
    assert_eq!(decode(&[0x66; 15]), Err(DecodeFail::Other));
}

// ---- MSRs ----

#[test]
fn rdmsr_pat_efer_and_apic_base_are_xens_values() {
    let mut s = guest();
    for (msr, want) in [(0x277u64, 0x0000_0501_0007_0406u64), (0xc000_0080, 0xd01), (0x1b, 0xfee0_0900)] {
        let (e, r) = gp(&mut s, RDMSR, |r| r.rcx = msr);
        assert_eq!(e, Emulated::Done, "msr {msr:#x}");
        assert_eq!((r.rdx << 32) | r.rax, want, "msr {msr:#x}");
        assert_eq!(r.rip, GUEST_VA + 2);
    }
    assert_eq!(emulated(&mut s, EmulKind::Rdmsr), 3);
}

#[test]
fn rdmsr_misc_enable_hides_perf_and_monitor() {
    let mut s = guest();
    s.m.msrs.insert(0x1a0, (1 << 7) | (1 << 18) | 1);
    let (e, r) = gp(&mut s, RDMSR, |r| r.rcx = 0x1a0);
    assert_eq!(e, Emulated::Done);
    assert_eq!(r.rax, 1 | (1 << 11) | (1 << 12) | (1 << 23));
}

#[test]
fn unknown_msr_reads_fake_zero_until_a_gp_handler_exists() {
    let mut s = guest();
    let (e, r) = gp(&mut s, RDMSR, |r| {
        r.rcx = 0x1234;
        r.rax = 7;
        r.rdx = 7;
    });
    assert_eq!(e, Emulated::Done);
    assert_eq!((r.rax, r.rdx), (0, 0));
    // Never for Xen's own range.
    let (e, _) = gp(&mut s, RDMSR, |r| r.rcx = 0x4000_0000);
    assert_eq!(e, GP0);
    s.vcpu.traps.table[13].address = GUEST_VA;
    let (e, r) = gp(&mut s, RDMSR, |r| r.rcx = 0x1234);
    assert_eq!(e, GP0);
    assert_eq!(r.rip, GUEST_VA);
    let (e, _) = gp(&mut s, WRMSR, |r| r.rcx = 0x1234);
    assert_eq!(e, GP0, "writes are never faked");
}

#[test]
fn gs_base_round_trips_and_refuses_non_canonical_values() {
    let mut s = guest();
    let (e, _) = gp(&mut s, WRMSR, |r| {
        r.rcx = 0xc000_0101;
        r.rdx = 0xffff_8880;
        r.rax = 0x1234_5000;
    });
    assert_eq!(e, Emulated::Done);
    assert_eq!(s.m.msrs[&crate::machine::MSR_GS_BASE], 0xffff_8880_1234_5000);
    let (_, r) = gp(&mut s, RDMSR, |r| r.rcx = 0xc000_0101);
    assert_eq!((r.rdx, r.rax), (0xffff_8880, 0x1234_5000));
    let (e, _) = gp(&mut s, WRMSR, |r| {
        r.rcx = 0xc000_0102;
        r.rdx = 0x0001_0000;
    });
    assert_eq!(e, GP0);
    assert!(!s.m.msrs.contains_key(&crate::machine::MSR_KERNEL_GS_BASE));
}

#[test]
fn wrmsr_refuses_pat_apic_base_and_changed_efer() {
    let mut s = guest();
    s.vcpu.traps.table[13].address = GUEST_VA;
    let (e, _) = gp(&mut s, WRMSR, |r| {
        r.rcx = 0xc000_0080;
        r.rax = 0xd01;
    });
    assert_eq!(e, Emulated::Done, "rewriting EFER unchanged is allowed");
    for (msr, v) in
        [(0xc000_0080u64, 0x501u64), (0x277, 0x0000_0501_0007_0406), (0x1b, 0xfee0_0900), (0x10, 0)]
    {
        let (e, _) = gp(&mut s, WRMSR, |r| {
            r.rcx = msr;
            r.rax = v & 0xffff_ffff;
            r.rdx = v >> 32;
        });
        assert_eq!(e, GP0, "msr {msr:#x}");
    }
}

#[test]
fn ucode_rev_accepts_only_zero_on_intel() {
    let mut s = guest();
    s.m.msrs.insert(0x8b, 0x42_0000_0000);
    let (e, _) = gp(&mut s, WRMSR, |r| r.rcx = 0x8b);
    assert_eq!(e, Emulated::Done);
    let (_, r) = gp(&mut s, RDMSR, |r| r.rcx = 0x8b);
    assert_eq!(r.rdx, 0x42);
    let (e, _) = gp(&mut s, WRMSR, |r| {
        r.rcx = 0x8b;
        r.rax = 1;
    });
    assert_eq!(e, GP0);
    amd(&mut s);
    let (e, _) = gp(&mut s, WRMSR, |r| r.rcx = 0x8b);
    assert_eq!(e, GP0);
}

#[test]
fn spec_ctrl_accepts_only_enumerated_bits() {
    let mut s = guest();
    s.vcpu.traps.table[13].address = GUEST_VA;
    let (e, _) = gp(&mut s, WRMSR, |r| {
        r.rcx = 0x48;
        r.rax = 3;
    });
    assert_eq!(e, Emulated::Done);
    assert_eq!(s.m.msrs[&0x48], 3);
    let (_, r) = gp(&mut s, RDMSR, |r| r.rcx = 0x48);
    assert_eq!(r.rax, 3);
    let (e, _) = gp(&mut s, WRMSR, |r| {
        r.rcx = 0x48;
        r.rax = 4; // SSBD, not enumerated
    });
    assert_eq!(e, GP0);
    s.m.cpuid.insert((7, 0), [0; 4]);
    let (e, _) = gp(&mut s, RDMSR, |r| r.rcx = 0x48);
    assert_eq!(e, GP0);
    // AMD enumerates the MSR and SSBD in leaf 0x8000_0008.
    s.m.cpuid.insert((0x8000_0008, 0), [0, (1 << 14) | (1 << 24), 0, 0]);
    let (e, _) = gp(&mut s, WRMSR, |r| {
        r.rcx = 0x48;
        r.rax = 5;
    });
    assert_eq!(e, Emulated::Done);
    let (e, _) = gp(&mut s, WRMSR, |r| {
        r.rcx = 0x48;
        r.rax = 2; // STIBP, not enumerated
    });
    assert_eq!(e, GP0);
}

#[test]
fn tsc_aux_takes_32_bit_values_when_rdtscp_exists() {
    let mut s = guest();
    s.vcpu.traps.table[13].address = GUEST_VA;
    let (e, _) = gp(&mut s, WRMSR, |r| {
        r.rcx = 0xc000_0103;
        r.rax = 5;
    });
    assert_eq!(e, Emulated::Done);
    assert_eq!((s.vcpu.emul.tsc_aux, s.m.msrs[&crate::machine::MSR_TSC_AUX]), (5, 5));
    let (e, _) = gp(&mut s, WRMSR, |r| {
        r.rcx = 0xc000_0103;
        r.rdx = 1;
    });
    assert_eq!(e, GP0);
    s.m.cpuid.insert((0x8000_0001, 0), [0; 4]);
    let (e, _) = gp(&mut s, RDMSR, |r| r.rcx = 0xc000_0103);
    assert_eq!(e, GP0);
}

#[test]
fn vendor_msrs_follow_the_policy_vendor() {
    let mut s = guest();
    s.vcpu.traps.table[13].address = GUEST_VA;
    // Intel PMU counter: reads 0, writes ignored (vPMU off). AMD P-state: #GP on Intel.
    let (e, r) = gp(&mut s, RDMSR, |r| {
        r.rcx = 0xc1;
        r.rax = 9;
    });
    assert_eq!((e, r.rax), (Emulated::Done, 0));
    let (e, _) = gp(&mut s, RDMSR, |r| r.rcx = 0xc001_0064);
    assert_eq!(e, GP0);
    amd(&mut s);
    let (e, _) = gp(&mut s, RDMSR, |r| r.rcx = 0xc001_0064);
    assert_eq!(e, Emulated::Done);
    let (e, _) = gp(&mut s, WRMSR, |r| r.rcx = 0xc001_0015);
    assert_eq!(e, Emulated::Done, "HWCR writes are ignored on AMD");
    let (e, _) = gp(&mut s, RDMSR, |r| r.rcx = 0xc1);
    assert_eq!(e, GP0);
}

#[test]
fn msr_access_from_guest_user_mode_is_gp() {
    let mut s = guest();
    s.vcpu.kernel_mode = false;
    s.vcpu.guest_table_user = s.vcpu.guest_table;
    for code in [RDMSR, WRMSR, &[0x0f, 0x20, 0xc0], &[0x0f, 0x22, 0xe0], &[0x0f, 0x06], &[0x0f, 0x09]] {
        let (e, r) = gp(&mut s, code, |r| {
            r.rcx = 0xc000_0101;
            r.cs = 0xe02b;
        });
        assert_eq!(e, GP0, "{code:02x?}");
        assert_eq!(r.rip, GUEST_VA);
    }
    assert!(s.m.msrs.is_empty());
    assert_eq!(s.m.stats.emulated, [0; 16]);
}

// ---- control registers ----

#[test]
fn cr0_reads_the_virtual_ts_and_writes_only_ts() {
    let mut s = guest();
    s.vcpu.virt_ts = true;
    let (e, r) = gp(&mut s, &[0x0f, 0x20, 0xc3], |_| {}); // mov %cr0, %rbx
    assert_eq!(e, Emulated::Done);
    assert_eq!(r.rbx, 0x8005_0033 | 8);
    let (e, _) = gp(&mut s, &[0x0f, 0x22, 0xc3], |r| r.rbx = 0x8005_0033); // clear TS
    assert_eq!(e, Emulated::Done);
    assert!(!s.vcpu.virt_ts);
    assert_eq!(s.m.cr0 & 8, 0);
    let (e, _) = gp(&mut s, &[0x0f, 0x22, 0xc3], |r| r.rbx = 0x8005_0033 | 8);
    assert_eq!(e, Emulated::Done);
    assert!(s.vcpu.virt_ts);
    assert_eq!(s.m.cr0 & 8, 8);
    let (e, _) = gp(&mut s, &[0x0f, 0x22, 0xc3], |r| r.rbx = 0x8005_0033 & !(1 << 16));
    assert_eq!(e, Emulated::NotEmulated, "clearing WP is refused");
    assert_eq!(s.m.cr0, 0x8005_0033 | 8);
}

#[test]
fn clts_clears_virtual_and_real_ts() {
    let mut s = guest();
    s.vcpu.virt_ts = true;
    s.m.cr0 |= 8;
    let (e, r) = gp(&mut s, &[0x0f, 0x06], |_| {});
    assert_eq!((e, r.rip), (Emulated::Done, GUEST_VA + 2));
    assert!(!s.vcpu.virt_ts);
    assert_eq!(s.m.cr0 & 8, 0);
    assert_eq!(emulated(&mut s, EmulKind::Clts), 1);
}

#[test]
fn cr4_is_the_guest_bits_plus_visible_hardware_bits() {
    let mut s = guest();
    let (e, r) = gp(&mut s, &[0x0f, 0x20, 0xe0], |_| {});
    assert_eq!(e, Emulated::Done);
    assert_eq!(r.rax, 0x620, "PAE, OSFXSR, OSXMMEXCPT");
    // PGE, PSE, FSGSBASE, SMEP are not the guest's; OSXSAVE, TSD, DE are.
    let want = 0x620 | cr::X86_CR4_OSXSAVE | cr::X86_CR4_TSD | cr::X86_CR4_DE;
    let (e, _) = gp(&mut s, &[0x0f, 0x22, 0xe0], |r| r.rax = want | 0x80 | 0x10 | (1 << 16) | (1 << 20));
    assert_eq!(e, Emulated::Done);
    assert_eq!(s.m.cr4, want, "OSXSAVE, TSD and DE mirrored into the real CR4");
    let (_, r) = gp(&mut s, &[0x0f, 0x20, 0xe0], |_| {});
    assert_eq!(r.rax, want);
    let (e, _) = gp(&mut s, &[0x0f, 0x22, 0xe0], |r| r.rax = 0);
    assert_eq!(e, Emulated::Done);
    assert_eq!(s.m.cr4, 0x620, "visible hardware bits cannot be cleared");
}

#[test]
fn cr4_osxsave_needs_xsave_in_the_policy() {
    let mut s = guest();
    s.m.cpuid.insert((1, 0), [0; 4]);
    let (e, _) = gp(&mut s, &[0x0f, 0x22, 0xe0], |r| r.rax = cr::X86_CR4_OSXSAVE | cr::X86_CR4_TSD);
    assert_eq!(e, Emulated::Done);
    assert_eq!(s.m.cr4, 0x620);
    assert_eq!(s.vcpu.virt_cr4, 0);
}

#[test]
fn cr2_and_cr3_reads_and_writes() {
    let mut s = guest();
    let (e, _) = gp(&mut s, &[0x0f, 0x22, 0xd1], |r| r.rcx = 0x1234_5678); // mov %rcx, %cr2
    assert_eq!(e, Emulated::Done);
    let at = s.vcpu.vcpu_info + 16;
    assert_eq!(s.m.read_u64(at).unwrap(), 0x1234_5678);
    let (_, r) = gp(&mut s, &[0x0f, 0x20, 0xd2], |_| {}); // mov %cr2, %rdx
    assert_eq!(r.rdx, 0x1234_5678);
    let (e, r) = gp(&mut s, &[0x41, 0x0f, 0x20, 0xdf], |_| {}); // mov %cr3, %r15
    assert_eq!(e, Emulated::Done);
    assert_eq!(r.r15, s.vcpu.guest_table);
    assert_eq!(r.rip, GUEST_VA + 4);
    let (e, _) = gp(&mut s, &[0x0f, 0x22, 0xd8], |r| r.rax = 1 << 12);
    assert_eq!(e, Emulated::Done, "the current L4 again");
    let (e, _) = gp(&mut s, &[0x0f, 0x22, 0xd8], |r| r.rax = 16 << 12);
    assert_eq!(e, GP0, "a writable-mapped frame does not validate as an L4");
    assert_eq!(s.vcpu.guest_table, 1 << 12);
    // A new (empty) L4 validates and becomes the base: its frame is now an L4.
    put(&mut s, GUEST_VA, &[0x0f, 0x22, 0xd8]);
    let mut r = regs_at(GUEST_VA);
    r.rax = 50 << 12;
    assert_eq!(emulate_gp(&mut s, &mut r), Emulated::Done);
    assert_eq!(s.vcpu.guest_table, 50 << 12);
    assert_eq!(s.frame(50).current_type(), crate::mm::frames::PageType::L4);
}

// ---- xsetbv ----

fn xsetbv(s: &mut Shim<MockMachine>, ecx: u64, v: u64) -> Emulated {
    gp(s, &[0x0f, 0x01, 0xd1], |r| {
        r.rcx = ecx;
        r.rax = v & 0xffff_ffff;
        r.rdx = v >> 32;
    })
    .0
}

fn with_osxsave(s: &mut Shim<MockMachine>) {
    s.vcpu.virt_cr4 = cr::X86_CR4_OSXSAVE;
    s.m.cr4 |= cr::X86_CR4_OSXSAVE;
}

#[test]
fn xsetbv_loads_a_valid_xcr0() {
    let mut s = guest();
    with_osxsave(&mut s);
    assert_eq!(xsetbv(&mut s, 0, 7), Emulated::Done);
    assert_eq!(s.m.xcr0, 7);
    assert_eq!(emulated(&mut s, EmulKind::Xsetbv), 1);
}

#[test]
fn xsetbv_refuses_bad_xcr0_values() {
    let mut s = guest();
    with_osxsave(&mut s);
    for (ecx, v) in [(0, 0u64), (0, 2), (0, 5), (0, 0xf), (0, 1 << 40), (1, 1), (0x1_0000_0000, 3)] {
        assert_eq!(
            xsetbv(&mut s, ecx, v),
            if ecx == 0x1_0000_0000 { Emulated::Done } else { GP0 },
            "{ecx} {v:#x}"
        );
    }
    // AVX-512 needs all three components and YMM, even where the policy has them.
    s.m.cpuid.insert((0xd, 0), [0xe7, 0, 0, 0]);
    assert_eq!(xsetbv(&mut s, 0, 0x27), GP0);
    assert!(!valid_xcr0(0x67));
    assert!(valid_xcr0(0xe7));
    assert!(!valid_xcr0(0x1 | (1 << 17)));
    assert!(!valid_xcr0(0x9));
}

#[test]
fn xsetbv_without_virtual_osxsave_is_ud_and_from_user_gp() {
    let mut s = guest();
    assert_eq!(xsetbv(&mut s, 0, 3), Emulated::Raise { vector: 6, error_code: None });
    with_osxsave(&mut s);
    s.vcpu.kernel_mode = false;
    s.vcpu.guest_table_user = s.vcpu.guest_table;
    assert_eq!(xsetbv(&mut s, 0, 3), GP0);
    assert_eq!(s.m.xcr0, 1);
}

// ---- port I/O ----

#[test]
fn in_reads_all_ones_with_the_virtual_iopl() {
    let mut s = guest();
    s.vcpu.iopl = 1;
    let (e, r) = gp(&mut s, &[0x66, 0xba, 0xf8, 0x03, 0xec], |_| {}); // mov $0x3f8,%dx; in
    assert_eq!(e, Emulated::NotEmulated, "mov is not port I/O");
    assert_eq!(r.rip, GUEST_VA);
    let (e, r) = gp(&mut s, &[0xec], |r| {
        r.rdx = 0x3f8;
        r.rax = 0x1234_5600;
    });
    assert_eq!(e, Emulated::Done);
    assert_eq!(r.rax, 0x1234_56ff);
    let (_, r) = gp(&mut s, &[0x66, 0xed], |r| {
        r.rdx = 0x3f8;
        r.rax = 0xffff_ffff_0000_0000;
    });
    assert_eq!(r.rax, 0xffff_ffff_0000_ffff);
    let (_, r) = gp(&mut s, &[0xe5, 0x80], |r| r.rax = u64::MAX);
    assert_eq!(r.rax, 0xffff_ffff, "32-bit in zero-extends");
    let (e, _) = gp(&mut s, &[0xe6, 0x80], |_| {});
    assert_eq!(e, Emulated::Done);
    assert_eq!(emulated(&mut s, EmulKind::PortIo), 4);
}

#[test]
fn port_io_without_permission_is_gp() {
    let mut s = guest();
    let (e, r) = gp(&mut s, &[0xec], |r| r.rdx = 0x3f8);
    assert_eq!((e, r.rip), (GP0, GUEST_VA), "kernel mode needs IOPL >= 1");
    s.vm_assist = 1 << xen_abi::xen::VMASST_TYPE_ARCHITECTURAL_IOPL;
    let (e, _) = gp(&mut s, &[0xec], |r| r.rdx = 0x3f8);
    assert_eq!(e, Emulated::Done, "architectural IOPL: the kernel is CPL 0");
    s.vcpu.kernel_mode = false;
    s.vcpu.guest_table_user = s.vcpu.guest_table;
    s.vcpu.iopl = 1;
    let (e, _) = gp(&mut s, &[0xee], |r| r.rdx = 0x80);
    assert_eq!(e, GP0, "user mode needs IOPL 3");
    s.vcpu.iopl = 3;
    let (e, _) = gp(&mut s, &[0xee], |r| r.rdx = 0x80);
    assert_eq!(e, Emulated::Done);
}

#[test]
fn the_io_bitmap_grants_ports_without_iopl() {
    let mut s = guest();
    // Ports 0x80..0x87 allowed (bits clear) in a bitmap covering 0x100 ports.
    let bitmap = GUEST_VA + 0x800;
    put(&mut s, bitmap + 0x10, &[0x00]);
    put(&mut s, bitmap + 0x11, &[0xff]);
    s.vcpu.iobitmap = (bitmap, 0x100);
    let (e, _) = gp(&mut s, &[0xe6, 0x80], |_| {});
    assert_eq!(e, Emulated::Done, "outb 0x80 allowed by the bitmap");
    let (e, _) = gp(&mut s, &[0xe7, 0x84], |_| {});
    assert_eq!(e, Emulated::Done, "outl 0x84..0x87 allowed");
    let (e, _) = gp(&mut s, &[0xe7, 0x86], |_| {});
    assert_eq!(e, GP0, "outl 0x86..0x89 runs into denied bits");
    let (e, _) = gp(&mut s, &[0xec], |r| r.rdx = 0x100);
    assert_eq!(e, GP0, "beyond the bitmap's port count");
    // An unreadable bitmap byte counts as all ones.
    s.vcpu.iobitmap = (UNMAPPED - 0x10, 0x100);
    let (e, _) = gp(&mut s, &[0xe6, 0x80], |_| {});
    assert_eq!(e, GP0);
    // User mode reads the bitmap through the kernel's tables.
    s.vcpu.iobitmap = (bitmap, 0x100);
    s.vcpu.kernel_mode = false;
    s.vcpu.guest_table_user = s.vcpu.guest_table;
    let (e, _) = gp(&mut s, &[0xe6, 0x81], |_| {});
    assert_eq!(e, Emulated::Done);
}

#[test]
fn rtc_index_and_pci_address_latch_like_xen() {
    let mut s = guest();
    s.vcpu.iopl = 1;
    gp(&mut s, &[0xe6, 0x70], |r| r.rax = 0x8f);
    let (_, r) = gp(&mut s, &[0xe4, 0x70], |_| {});
    assert_eq!(r.rax & 0xff, 0x0f, "NMI-disable bit dropped");
    let (_, r) = gp(&mut s, &[0x66, 0xe5, 0x70], |_| {});
    assert_eq!(r.rax & 0xffff, 0xff0f, "0x71 reads as all-ones");
    gp(&mut s, &[0xef], |r| {
        r.rdx = 0xcf8;
        r.rax = 0x8000_1234;
    });
    let (_, r) = gp(&mut s, &[0xed], |r| r.rdx = 0xcf8);
    assert_eq!(r.rax, 0x8000_1234);
    let (_, r) = gp(&mut s, &[0xed], |r| r.rdx = 0xcfc);
    assert_eq!(r.rax, 0xffff_ffff, "no PCI device is visible");
    let (_, r) = gp(&mut s, &[0xec], |r| r.rdx = 0xcf8);
    assert_eq!(r.rax & 0xff, 0xff, "byte access to 0xcf8 is not the latch");
}

#[test]
fn rep_insb_fills_memory_and_updates_rdi_rcx() {
    let mut s = guest();
    s.vcpu.iopl = 1;
    let dst = GUEST_VA + 0x1000;
    let (e, r) = gp(&mut s, &[0xf3, 0x6c], |r| {
        r.rdx = 0x3f8;
        r.rdi = dst;
        r.rcx = 10;
    });
    assert_eq!(e, Emulated::Done);
    assert_eq!((r.rdi, r.rcx, r.rip), (dst + 10, 0, GUEST_VA + 2));
    let mut buf = [0u8; 11];
    crate::mm::copy_from_guest(&s.m, s.cr3(), dst, &mut buf).unwrap();
    assert_eq!(buf, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
}

#[test]
fn rep_outsw_backwards_reads_from_memory() {
    let mut s = guest();
    s.vcpu.iopl = 1;
    let src = GUEST_VA + 0x1000;
    put(&mut s, src - 2, &0x7000_0005u32.to_le_bytes());
    let (e, r) = gp(&mut s, &[0xf3, 0x66, 0x6f], |r| {
        r.rdx = 0x70;
        r.rsi = src;
        r.rcx = 2;
        r.rflags |= X86_EFLAGS_DF;
    });
    assert_eq!(e, Emulated::Done);
    assert_eq!((r.rsi, r.rcx), (src - 4, 0));
    // The last word written to 0x70 was 0x0005 (at src - 2): index 5.
    assert_eq!(s.vcpu.emul.cmos_idx, 5);
}

#[test]
fn rep_ins_with_a_huge_count_is_done_in_chunks() {
    let mut s = guest();
    s.vcpu.iopl = 1;
    let (e, r) = gp(&mut s, &[0xf3, 0x6c], |r| {
        r.rdx = 0x3f8;
        r.rdi = GUEST_VA + 0x1000;
        r.rcx = u64::MAX;
    });
    assert_eq!(e, Emulated::Done);
    assert_eq!(r.rip, GUEST_VA, "restarts to continue");
    assert_eq!(r.rcx, u64::MAX - io::REP_CHUNK);
    assert_eq!(r.rdi, GUEST_VA + 0x1000 + io::REP_CHUNK);
}

#[test]
fn rep_ins_with_zero_count_only_advances_rip() {
    let mut s = guest();
    s.vcpu.iopl = 1;
    let (e, r) = gp(&mut s, &[0xf3, 0x6c], |r| r.rdi = 0);
    assert_eq!((e, r.rip, r.rdi), (Emulated::Done, GUEST_VA + 2, 0));
}

#[test]
fn ins_into_read_only_or_unmapped_memory_is_a_page_fault() {
    let mut s = guest();
    s.vcpu.iopl = 1;
    let (e, r) = gp(&mut s, &[0xf3, 0x6c], |r| {
        r.rdi = RO_PAGE - 2;
        r.rcx = 4;
    });
    assert_eq!(e, Emulated::PageFault { addr: RO_PAGE, error_code: PFEC_WRITE_ACCESS });
    assert_eq!((r.rdi, r.rcx, r.rip), (RO_PAGE, 2, GUEST_VA), "progress kept, rip on the insn");
    let (e, _) = gp(&mut s, &[0x6d], |r| r.rdi = UNMAPPED - 2);
    assert_eq!(e, Emulated::PageFault { addr: UNMAPPED - 2, error_code: PFEC_WRITE_ACCESS });
    let (e, _) = gp(&mut s, &[0x6f], |r| r.rsi = UNMAPPED - 2);
    assert_eq!(e, Emulated::PageFault { addr: UNMAPPED, error_code: 0 }, "read straddling");
    let (e, _) = gp(&mut s, &[0x6e], |r| r.rsi = 0x8000_0000_0000);
    assert_eq!(e, GP0, "non-canonical string address");
}

#[test]
fn outs_with_gs_override_uses_the_gs_base() {
    let mut s = guest();
    s.vcpu.iopl = 1;
    s.m.msrs.insert(crate::machine::MSR_GS_BASE, GUEST_VA + 0x2000);
    put(&mut s, GUEST_VA + 0x2010, &[0x33]);
    let (e, _) = gp(&mut s, &[0x65, 0x6e], |r| {
        r.rdx = 0x70;
        r.rsi = 0x10;
    });
    assert_eq!(e, Emulated::Done);
    assert_eq!(s.vcpu.emul.cmos_idx, 0x33);
}

// ---- the rest ----

#[test]
fn cli_sti_are_no_ops_with_iopl_else_gp_stands() {
    let mut s = guest();
    let (e, _) = gp(&mut s, &[0xfa], |_| {});
    assert_eq!(e, Emulated::NotEmulated);
    s.vcpu.iopl = 1;
    let (e, r) = gp(&mut s, &[0xfb], |_| {});
    assert_eq!((e, r.rip, r.rflags), (Emulated::Done, GUEST_VA + 1, 0x202));
}

#[test]
fn wbinvd_is_ignored_for_a_domu() {
    let mut s = guest();
    let (e, r) = gp(&mut s, &[0x0f, 0x09], |_| {});
    assert_eq!((e, r.rip), (Emulated::Done, GUEST_VA + 2));
    assert_eq!(s.m.wbinvds, 0);
    assert_eq!(emulated(&mut s, EmulKind::Wbinvd), 1);
}

#[test]
fn rdtsc_under_tsd_works_for_the_kernel_only() {
    let mut s = guest();
    s.vcpu.virt_cr4 = cr::X86_CR4_TSD;
    s.m.tsc = 0x1_2345_6789;
    let (e, r) = gp(&mut s, &[0x0f, 0x31], |_| {});
    assert_eq!((e, r.rdx, r.rax), (Emulated::Done, 1, 0x2345_6789));
    s.vcpu.emul.tsc_aux = 3;
    let (e, r) = gp(&mut s, &[0x0f, 0x01, 0xf9], |_| {});
    assert_eq!((e, r.rcx, r.rip), (Emulated::Done, 3, GUEST_VA + 3));
    s.vcpu.kernel_mode = false;
    s.vcpu.guest_table_user = s.vcpu.guest_table;
    let (e, _) = gp(&mut s, &[0x0f, 0x31], |_| {});
    assert_eq!(e, GP0);
}

#[test]
fn single_stepping_an_emulated_instruction_raises_db_after_it() {
    let mut s = guest();
    let (e, r) = gp(&mut s, RDMSR, |r| {
        r.rcx = 0x277;
        r.rflags |= X86_EFLAGS_TF | X86_EFLAGS_RF;
    });
    assert_eq!(e, Emulated::Raise { vector: 1, error_code: None });
    assert_eq!(r.rip, GUEST_VA + 2);
    assert_eq!(r.rflags & X86_EFLAGS_RF, 0);
    assert_ne!(s.vcpu.dr[6] & DR_STEP, 0);
}

#[test]
fn emulated_gp_resumes_the_guest_through_guest_exception() {
    let mut s = guest();
    put(&mut s, GUEST_VA, RDMSR);
    let mut r = regs_at(GUEST_VA);
    r.rcx = 0x277;
    assert_eq!(s.guest_exception(&mut r, 0), crate::shim::Outcome::Resume);
    assert_eq!(r.rip, GUEST_VA + 2);
    let mut r = regs_at(GUEST_VA);
    put(&mut s, GUEST_VA, &[0xf4]);
    assert_eq!(s.guest_exception(&mut r, 0), crate::shim::Outcome::Dead);
}
