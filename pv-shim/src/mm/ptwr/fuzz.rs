//! One fuzz case for writable page tables: arbitrary bytes become a few #PFs, each with
//! random instruction bytes, register state (pointers into a read-only mapping of the live L1
//! and candidate entries), error code, guest mode and VM assist, delivered through the trap
//! path of the mock guest of [`shim_with_guest`](crate::testutil::shim_with_guest). After
//! every fault the invariants of [`check`](crate::mm::check) must hold, a fault that went to
//! the guest must have changed no entry and no count, and an emulated one at most one entry;
//! after restoring the original entries every count must be back at its baseline. Shared by
//! the libFuzzer target (`tests/fuzz/fuzz_targets/ptwr.rs`) and a host test that sweeps
//! random inputs.

use crate::guest::GuestRegs;
use crate::machine::Machine;
use crate::mm::check::check_invariants;
use crate::shim::{Outcome, Shim};
use crate::testutil::{shim_with_guest, MockMachine, GUEST_VA};
use crate::traps::TrapEntry;
use xen_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, VMASST_TYPE_WRITABLE_PAGETABLES};

const FRAMES: u64 = 64;
const L1_MFN: u64 = 4;
/// The live L1, mapped read-only by its own entry 31.
const L1_VA: u64 = GUEST_VA + 31 * 4096;
/// Code in page 1 (frame 17), the kernel stack in page 8.
const CODE_MFN: u64 = 17;
const CODE_VA: u64 = GUEST_VA + 0x1000;
const HANDLER: u64 = 0xffff_ffff_8100_0000;
/// Frames the candidate entries point at: free ones, data, the tables, outside RAM.
const POOL: [u64; 16] = [48, 49, 50, 20, 21, 22, 30, 47, 1, 2, 3, 4, 16, 17, 0x9999, 0];
/// Error codes: mostly a kernel write to a present page.
const ERROR_CODES: [u64; 8] = [7, 7, 7, 7, 5, 6, 0xf, 0x17];

fn check(s: &Shim<MockMachine>, what: &str) {
    if let Err(e) = check_invariants(s, FRAMES) {
        panic!("after {what}: {e}");
    }
}

fn l1(s: &Shim<MockMachine>) -> Vec<u64> {
    (0..512).map(|i| s.m.read_u64((L1_MFN << 12) + 8 * i).unwrap()).collect()
}

/// A candidate entry from one byte of input and one of flags.
fn pte(sel: u8, flags: u8) -> u64 {
    let mut e = (POOL[usize::from(sel & 15)] << 12) | u64::from(flags & 0x67);
    if sel & 0x10 != 0 {
        e |= 1 << 63;
    }
    if sel & 0x60 == 0x60 {
        e |= 0x80 | 0x10; // PSE, PCD: refused in an L1
    }
    if sel & 0x60 == 0x40 {
        e |= 0x100; // global
    }
    e
}

/// Runs `data` as faulting stores; panics only on a broken invariant. Returns how many
/// stores were emulated and how many faults went to the guest.
pub fn run_case(data: &[u8]) -> (u64, u64) {
    let mut delivered = 0;
    let mut s = shim_with_guest();
    s.vcpu.traps.table[14] = TrapEntry { flags: 0, cs: FLAT_KERNEL_CS, address: HANDLER + 14 };
    s.vcpu.traps.table[1] = TrapEntry { flags: 0, cs: FLAT_KERNEL_CS, address: HANDLER + 1 };
    s.vcpu.kernel_sp = GUEST_VA + 0x9000;
    // User mode runs on the kernel's tables (a user base pointer holds its own reference).
    s.get_page_and_type(1, crate::mm::frames::PageType::L4).unwrap();
    s.vcpu.guest_table_user = s.vcpu.guest_table;
    s.mod_entry(L1_MFN, 1, 31, (L1_MFN << 12) | 0x21, false).unwrap();
    check(&s, "setup");
    let baseline: Vec<u64> = (0..FRAMES).map(|m| s.frame(m).canonical()).collect();
    let orig = l1(&s);

    for (step, c) in data.chunks(32).take(8).enumerate() {
        let b = |i: usize| c.get(i).copied().unwrap_or(0);
        let w = |i: usize| (0..8).fold(0u64, |v, k| v | u64::from(b(i + k)) << (8 * k));
        let ctl = b(0);
        s.vm_assist = if ctl & 0x80 == 0 { 1 << VMASST_TYPE_WRITABLE_PAGETABLES } else { 0 };
        let user = ctl & 0x40 != 0;
        if user {
            if s.vcpu.kernel_mode {
                s.toggle_guest_mode();
            }
        } else if !s.vcpu.kernel_mode {
            s.toggle_guest_mode();
        }
        // Offsets in a page, mostly 8-byte aligned.
        let align = if b(2) & 0x80 != 0 { 0 } else { 7 };
        let off = |lo: u8, hi: u8| (u64::from(lo) | u64::from(hi & 0xf) << 8) & !align;
        let mut code = [0u8; 15];
        for (k, v) in code.iter_mut().enumerate() {
            *v = b(17 + k);
        }
        s.m.write_phys(CODE_MFN << 12, &code).unwrap();
        let rdi = L1_VA + off(b(1), b(2));
        let mut r = GuestRegs {
            rip: CODE_VA,
            cs: if user { 0xe033 } else { u64::from(FLAT_KERNEL_CS) },
            ss: if user { 0xe02b } else { u64::from(FLAT_KERNEL_SS) },
            rsp: GUEST_VA + 0x8008,
            rflags: 0x202 | if ctl & 0x20 != 0 { 0x100 } else { 0 } | u64::from(ctl & 0x1) << 6,
            vector: 14,
            error_code: ERROR_CODES[usize::from(ctl >> 1 & 7)],
            rdi,
            rsi: L1_VA + off(b(3), b(4)),
            rbp: L1_VA - 4096 + off(b(3), b(2)),
            rax: pte(b(5), b(6)),
            rcx: pte(b(7), b(8)),
            rdx: pte(b(9), b(6)) >> (b(10) & 32),
            rbx: pte(b(10), b(8)),
            r8: w(9),
            ..GuestRegs::default()
        };
        // CR2: usually where rdi points, sometimes elsewhere in that page or another page.
        let cr2 = match ctl & 0x18 {
            0x18 => rdi ^ 0x1000,
            0x10 => rdi ^ u64::from(b(4)),
            _ => rdi,
        };
        let (entries, words) = (l1(&s), (0..FRAMES).map(|m| s.frame(m).canonical()).collect::<Vec<_>>());
        let out = s.guest_exception(&mut r, cr2);
        let what = format!("step {step} {c:02x?}");
        check(&s, &what);
        if out == Outcome::Dead {
            break;
        }
        let changed = l1(&s).iter().zip(&entries).filter(|(a, b)| a != b).count();
        if r.rip == HANDLER + 14 {
            delivered += 1;
            assert_eq!(changed, 0, "{what}: a delivered #PF changed the L1");
            let now: Vec<u64> = (0..FRAMES).map(|m| s.frame(m).canonical()).collect();
            assert_eq!(now, words, "{what}: a delivered #PF changed counts");
        } else {
            assert!(changed <= 1, "{what}: one store changed {changed} entries");
        }
    }

    // Put every entry back; each original entry is valid on its own, so this cannot fail.
    for (i, &e) in orig.iter().enumerate() {
        if s.m.read_u64((L1_MFN << 12) + 8 * i as u64).unwrap() != e {
            s.mod_entry(L1_MFN, 1, i, e, false).unwrap_or_else(|err| panic!("restoring entry {i}: {err:?}"));
        }
    }
    check(&s, "restore");
    for (m, &want) in baseline.iter().enumerate() {
        let got = s.frame(m as u64).canonical();
        assert_eq!(got, want, "mfn {m:#x}: frame word {got:#x}, baseline {want:#x} (input {data:02x?})");
    }
    (s.m.stats.emulated[xen_abi::hostcall::EmulKind::PtWrite as usize], delivered)
}

#[cfg(test)]
mod tests {
    use super::run_case;

    #[test]
    fn random_faulting_stores_keep_the_invariants() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = vec![0u8; 256];
        // Stores the decoder accepts, so that random operands reach the entry checks often.
        let seeds: [&[u8]; 10] = [
            &[0x48, 0x89, 0x07],
            &[0x48, 0x87, 0x0e],
            &[0xf0, 0x48, 0x0f, 0xb1, 0x0f],
            &[0xf0, 0x0f, 0xc7, 0x0e],
            &[0xf0, 0x80, 0x27, 0xfd],
            &[0xf0, 0x48, 0x0f, 0xba, 0x37, 0x05],
            &[0x89, 0x07],
            &[0xf0, 0x48, 0x0f, 0xab, 0x07],
            &[0x48, 0x89, 0x5d, 0x10],
            &[0x48, 0xc7, 0x06, 0x63, 0x00, 0x03, 0x00],
        ];
        let (mut emulated, mut delivered) = (0, 0);
        for case in 0..800 {
            for v in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = x as u8;
            }
            if case % 4 != 3 {
                for (k, chunk) in buf.chunks_mut(32).enumerate() {
                    let seed = seeds[(usize::from(chunk[31]) + k) % seeds.len()];
                    chunk[17..17 + seed.len()].copy_from_slice(seed);
                    // Mostly a kernel write fault with the assist on, at rdi.
                    if chunk[30] & 3 != 0 {
                        chunk[0] &= 0x21;
                    }
                }
            }
            let (e, d) = run_case(&buf);
            emulated += e;
            delivered += d;
        }
        // Both outcomes are exercised often (about 6400 faults in all).
        assert!(emulated > 1000 && delivered > 1000, "{emulated} emulated, {delivered} delivered");
    }
}
