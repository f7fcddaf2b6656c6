//! One fuzz case for `memory_op`: arbitrary bytes become a sequence of memory_op calls (any
//! command, with guest-controlled argument and extent-list bytes staged in guest memory)
//! mixed with `update_va_mapping`s that unmap and remap data pages, against the mock guest of
//! [`shim_with_guest`]. After every call the MMU invariants must hold (a released frame that
//! something still referenced would break the counts), the reservation must match the
//! frame table, and a continued batch is run to its end as the guest would. Shared by the
//! libFuzzer target (`tests/fuzz/fuzz_targets/memop.rs`) and a host test.

use super::memory_op;
use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm::check::check_invariants;
use crate::mm::ops::update_va_mapping;
use crate::testutil::{shim_with_guest, GUEST_VA};
use xen_abi::xen::UVMF_INVLPG;

const FRAMES: u64 = 64;
const ARG: u64 = GUEST_VA + 0x1c000;
const LIST: u64 = GUEST_VA + 0x1d000;

/// Runs `data` as memory operations; panics only on a broken invariant. Returns how many
/// frames were released and populated.
pub fn run_case(data: &[u8]) -> (u64, u64) {
    let mut s = shim_with_guest();
    let mut rest = data;
    for _ in 0..32 {
        let Some((&kind, tail)) = rest.split_first() else { break };
        let take = tail.len().min(48);
        let (body, tail) = tail.split_at(take);
        rest = tail;
        let word = |i: usize| {
            let mut b = [0u8; 8];
            for (k, x) in b.iter_mut().enumerate() {
                *x = body.get(8 * i + k).copied().unwrap_or(0);
            }
            u64::from_le_bytes(b)
        };
        if kind & 0x80 != 0 {
            // Unmap or remap a data page (frames 16..=47 at pages 0..=31).
            let page = word(0) % 32;
            let pte = if kind & 1 == 0 { 0 } else { ((16 + word(1) % 48) << 12) | 0x23 };
            let _ = update_va_mapping(&mut s, Args([GUEST_VA + page * 4096, pte, UVMF_INVLPG, 0, 0, 0]));
        } else {
            // Argument bytes at ARG; the list holds small frame numbers near the guest's.
            let op = u64::from(kind & 0x3f);
            if matches!(op, 0 | 1 | 6) && word(0) & 1 == 0 {
                // A well-formed reservation over the staged list, so that frames move.
                let r = xen_abi::memory::XenMemoryReservation {
                    extent_start: LIST,
                    nr_extents: word(0) >> 1 & 7,
                    extent_order: (word(1) % 4) as u32,
                    mem_flags: if word(1) & 0x100 != 0 { (word(1) >> 16) as u32 } else { 0 },
                    domid: if word(1) & 0x200 != 0 { 1 } else { xen_abi::xen::DOMID_SELF },
                    _pad: [0; 6],
                };
                let _ = s.copy_to_guest(ARG, zerocopy::IntoBytes::as_bytes(&r));
            } else {
                let _ = s.copy_to_guest(ARG, &body[..body.len().min(40)]);
            }
            for i in 0..8u64 {
                // Mostly free frames (48..=63), some anything.
                let v = word(i as usize % 6).rotate_left(7 * i as u32);
                let f = if v & 1 == 0 { 48 + (v >> 1) % 16 } else { (v >> 1) % (FRAMES + 4) };
                let _ = s.copy_to_guest(LIST + 8 * i, &f.to_le_bytes());
            }
            let mut cmd = op | ((word(5) & 0x3) << 6);
            let arg = if kind & 0x40 != 0 { ARG } else { word(4) };
            let mut steps = 0;
            loop {
                let _ = memory_op(&mut s, Args([cmd, arg, 0, 0, 0, 0]));
                match s.take_continuation() {
                    Some((_, a)) if steps < 64 => {
                        cmd = a[0];
                        steps += 1;
                    }
                    _ => break,
                }
            }
        }
        if let Err(e) = check_invariants(&s, FRAMES) {
            panic!("after op {kind:#x}: {e}");
        }
        let released = (0..FRAMES).filter(|&f| s.frame(f).released()).count() as u64;
        assert_eq!(released, s.mem.released, "released bits vs count");
        assert_eq!(s.mem.current() + released, FRAMES);
        for f in (0..FRAMES).filter(|&f| s.frame(f).released()) {
            assert_eq!(s.m.frame_info(f) >> 8, 0, "released frame {f} holds references");
        }
    }
    (s.m.stats.frames_released, s.m.stats.frames_populated)
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_memory_op_sequences_keep_the_invariants() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let (mut released, mut populated) = (0, 0);
        for _ in 0..300 {
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut data = Vec::new();
            for _ in 0..12 {
                // Mostly the reservation commands with staged arguments.
                let r = next();
                data.push(match r % 4 {
                    0 => r as u8 >> 1,
                    1 => 0x80 | (r >> 8) as u8,
                    _ => 0x40 | [0, 1, 1, 6, 6][(r >> 8) as usize % 5],
                });
                data.extend((0..6).flat_map(|_| next().to_le_bytes()));
            }
            let (r, p) = super::run_case(&data);
            released += r;
            populated += p;
        }
        assert!(released > 100 && populated > 20, "the sweep moves frames both ways: {released} {populated}");
    }
}
