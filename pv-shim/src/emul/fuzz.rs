//! One fuzz case for the emulator: arbitrary bytes become a vCPU state, instruction bytes at
//! an arbitrary distance from an unmapped page, and a #GP or #UD. Shared by the libFuzzer
//! target (`tests/fuzz/fuzz_targets/emulate.rs`) and a host test that sweeps random inputs.

use super::{emulate_gp, emulate_ud, Emulated};
use crate::guest::GuestRegs;
use crate::testutil::{shim_with_guest, GUEST_VA};

/// Runs `data` through `emulate_gp` or `emulate_ud`; panics only on a broken invariant.
pub fn run_case(data: &[u8]) {
    let mut s = shim_with_guest();
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let word = |i: usize| {
        let mut b = [0u8; 8];
        for (k, v) in b.iter_mut().enumerate() {
            *v = byte(i + k);
        }
        u64::from_le_bytes(b)
    };
    let flags = byte(0);
    let policy = byte(1);
    // The CPUID policy: vendor and a few feature words chosen by the input.
    let vendor = [[0x756e_6547, 0x6c65_746e, 0x4965_6e69], [0x6874_7541, 0x444d_4163, 0x6974_6e65]];
    let [b, c, d] = vendor[usize::from(policy & 1)];
    s.m.cpuid.insert((0, 0), [0xd, b, c, d]);
    s.m.cpuid.insert((1, 0), [word(2) as u32, 0, (word(2) >> 32) as u32, word(10) as u32]);
    s.m.cpuid.insert((7, 0), [0, word(18) as u32, (word(18) >> 32) as u32, word(26) as u32]);
    s.m.cpuid.insert((0xd, 0), [(word(26) >> 32) as u32, 0, 0, 0]);
    s.m.cpuid.insert((0x8000_0001, 0), [0, 0, 0, word(34) as u32]);
    s.m.cpuid.insert((0x8000_0008, 0), [0, (word(34) >> 32) as u32, 0, 0]);
    s.vcpu.kernel_mode = flags & 1 != 0;
    if !s.vcpu.kernel_mode {
        s.vcpu.guest_table_user = s.vcpu.guest_table;
    }
    if flags & 4 != 0 {
        s.vcpu.traps.table[13].address = GUEST_VA;
    }
    s.vcpu.iopl = u32::from((flags >> 3) & 3);
    if flags & 0x20 != 0 {
        s.vm_assist = 1 << xen_abi::xen::VMASST_TYPE_ARCHITECTURAL_IOPL;
    }
    s.vcpu.virt_cr4 = word(42);
    s.vcpu.virt_ts = flags & 0x40 != 0;
    s.m.cr4 = word(50);
    s.m.msrs.insert(crate::machine::MSR_FS_BASE, word(58));
    s.m.msrs.insert(crate::machine::MSR_GS_BASE, word(66));
    let mut regs = GuestRegs {
        rax: word(74),
        rcx: word(82),
        rdx: word(90),
        rsi: word(98),
        rdi: word(106),
        rflags: word(114),
        error_code: u64::from(byte(122) & 0x0f),
        cs: if byte(123) & 1 == 0 { 0xe033 } else { u64::from(byte(123)) << 8 | 3 },
        ..GuestRegs::default()
    };
    // Instruction bytes end `gap` bytes before the first unmapped page (32 pages are mapped).
    let code = data.get(124..).unwrap_or(&[]);
    let code = &code[..code.len().min(32)];
    let gap = u64::from(byte(1) >> 1) % 48;
    let end = GUEST_VA + 32 * 4096;
    let rip = end.saturating_sub(gap).saturating_sub(code.len() as u64).max(GUEST_VA);
    for (i, b) in code.iter().enumerate() {
        if let Ok(ma) = crate::mm::translate(&s.m, s.cr3(), rip + i as u64, false) {
            s.m.mem[ma as usize] = *b;
        }
    }
    regs.rip = rip;
    let before = regs;
    let r = if flags & 2 != 0 { emulate_ud(&mut s, &mut regs) } else { emulate_gp(&mut s, &mut regs) };
    match r {
        Emulated::NotEmulated => assert_eq!(regs, before, "NotEmulated changed registers"),
        Emulated::Done => assert!(regs.rip.wrapping_sub(before.rip) <= 15, "rip moved too far"),
        Emulated::Raise { vector, .. } => assert!(matches!(vector, 1 | 6 | 13)),
        Emulated::PageFault { addr, .. } => assert!(crate::mm::guest_range_ok(addr, 1), "fault at {addr:#x}"),
    }
    if !s.vcpu.kernel_mode && r == Emulated::Done {
        // User mode may only do what IOPL/TSD allow: never change MSRs, CRs or XCR0.
        assert_eq!(s.m.xcr0, 1);
        assert_eq!(s.m.cr4, word(50));
    }
}

#[cfg(test)]
mod tests {
    /// A deterministic sweep of random inputs: a stable-toolchain stand-in for the fuzzer.
    #[test]
    fn random_inputs_never_break_the_emulator() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Real opcode prefixes make random cases hit the emulated instructions often.
        let heads: [&[u8]; 12] = [
            &[0x0f, 0x32],
            &[0x0f, 0x30],
            &[0x0f, 0x20],
            &[0x0f, 0x22],
            &[0xf3, 0x6c],
            &[0xf3, 0x6f],
            &[0xe4],
            &[0x0f, 0x01, 0xd1],
            &[0x0f, 0x0b, b'x', b'e', b'n', 0x0f, 0xa2],
            &[0x67, 0xf3, 0x6d],
            &[0x0f, 0x31],
            &[],
        ];
        for _ in 0..20_000 {
            let mut data = vec![0u8; 124 + 16];
            for b in data.iter_mut() {
                *b = next() as u8;
            }
            let head = heads[(next() % heads.len() as u64) as usize];
            data[124..124 + head.len()].copy_from_slice(head);
            data.truncate(124 + head.len() + (next() % 16) as usize);
            super::run_case(&data);
        }
    }
}
