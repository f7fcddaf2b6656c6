//! One fuzz case for `HYPERVISOR_grant_table_op`: arbitrary bytes become guest argument
//! pages (op structs, frame lists, the grant entries themselves) and a sequence of
//! `(cmd, pointer, count)` calls, continued as the guest would re-execute them. Nothing may
//! panic, the table never outgrows its maximum, and the MMU invariants of [`check`](crate::mm::check) hold after every call. Shared by the
//! libFuzzer target (`tests/fuzz/fuzz_targets/gnttab_op.rs`) and a host test.

use super::grant_table_op;
use crate::hypercall::Args;
use crate::mm::check::check_invariants;
use crate::shim::Shim;
use crate::testutil::{shim_with_guest_boot, MockMachine, GUEST_VA};
use xen_abi::hostcall::MfnRange;

/// RAM is frames 0..48 of the mock, the grant table frames 48..56.
const GRANT_MFN: u64 = 48;
const MAX_FRAMES: u64 = 8;
/// Guest pages the fuzzer fills: argument structs and lists (all writable but the last).
const ARG_PAGES: u64 = 8;
/// Pointers the calls use: inside the argument pages, at their edges, unmapped, in the hole.
fn pointer(sel: u8, off: u16) -> u64 {
    let base = GUEST_VA + 0x8000;
    match sel % 8 {
        0..=3 => base + u64::from(off) % (ARG_PAGES * 4096),
        4 => GUEST_VA + 31 * 0x1000 - u64::from(off % 64),
        5 => GUEST_VA + 40 * 0x1000,
        6 => 0xffff_8000_0000_0000 + u64::from(off),
        _ => u64::from(off) << 36,
    }
}

/// Runs `data` as grant-table operations; panics only on a broken invariant.
pub fn run_case(data: &[u8]) {
    let mut s: Shim<MockMachine> = shim_with_guest_boot(|b| {
        b.ram[0] = MfnRange { first_mfn: 0, nr_frames: GRANT_MFN };
        b.grant_frames = MfnRange { first_mfn: GRANT_MFN, nr_frames: MAX_FRAMES };
        b.domid = 1;
    });
    let (calls, pages) = data.split_at(data.len().min(96));
    // The argument pages (guest data frames 24..32) and the first grant frame.
    let _ = s.copy_to_guest(GUEST_VA + 0x8000, &pages[..pages.len().min((ARG_PAGES * 4096) as usize)]);
    if let Some(rest) = pages.get((ARG_PAGES * 4096) as usize..) {
        let _ = crate::machine::Machine::write_phys(&mut s.m, GRANT_MFN << 12, &rest[..rest.len().min(4096)]);
    }
    for (step, c) in calls.chunks(6).enumerate() {
        let b = |i: usize| c.get(i).copied().unwrap_or(0);
        let cmd = u64::from(b(0) % 14) | if b(1) & 0x80 != 0 { u64::from(b(1)) << 12 } else { 0 };
        let uop = pointer(b(2), u16::from_le_bytes([b(3), b(4)]));
        let count = match b(5) >> 5 {
            0 => 0,
            1..=4 => u64::from(b(5) & 7),
            5 => 70,
            6 => 0x8000_0000,
            _ => u64::from(b(5)) << 33,
        };
        let mut args = Args([cmd, uop, count, 0, 0, 0]);
        for _ in 0..8 {
            let _ = grant_table_op(&mut s, args);
            match s.take_continuation() {
                Some((_, a)) => args = Args(a),
                None => break,
            }
        }
        assert!(u64::from(s.gnttab.nr_frames()) <= MAX_FRAMES, "step {step}: table too large");
        if let Err(e) = check_invariants(&s, 64) {
            panic!("after step {step} ({cmd:#x}, {uop:#x}, {count}): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_grant_op_sequences_keep_the_invariants() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..300 {
            let mut data = vec![0u8; 96 + 4096];
            for b in data.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            super::run_case(&data);
        }
    }
}
