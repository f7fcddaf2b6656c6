//! One fuzz case for the PV MMU: arbitrary bytes become a sequence of `mmu_update`,
//! `mmuext_op`, `update_va_mapping`, `set_gdt` and `update_descriptor` calls against the mock guest of
//! [`shim_with_guest`](crate::testutil::shim_with_guest); after every call the invariants of
//! [`check`](super::check) must hold, and after undoing everything (unpin all, original base
//! pointers and entries) every count must be back at its baseline. Shared by the libFuzzer
//! target (`tests/fuzz/fuzz_targets/mmu.rs`) and a host test that sweeps random inputs.

use super::check::check_invariants;
use super::ops::{mmu_update, mmuext_op, update_va_mapping};
use crate::desc::{set_gdt, update_descriptor};
use crate::hypercall::Args;
use crate::machine::Machine;
use crate::shim::Shim;
use crate::testutil::{shim_with_guest, MockMachine, GUEST_VA};
use xen_abi::xen::*;
use zerocopy::IntoBytes;

/// Frames of the mock: 1..=4 are the live L4..L1, 16..=47 data mapped at GUEST_VA, 48..=63
/// free. Requests are staged in the data page at this guest address.
const FRAMES: u64 = 64;
const REQ_VA: u64 = GUEST_VA + 0x1e000;
/// The frames the fuzzer builds tables from (free ones and a few data and live ones).
const POOL: [u64; 16] = [48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 1, 2, 3, 4, 20, 0x9999];

/// Through the hypercall (the request staged in guest memory, which the sequence may have
/// unmapped: then nothing happens).
fn mmu(s: &mut Shim<MockMachine>, ptr: u64, val: u64) -> Result<u64, xen_abi::Errno> {
    let req = MmuUpdate { ptr, val };
    s.copy_to_guest(REQ_VA, req.as_bytes())?;
    mmu_update(s, Args([REQ_VA, 1, 0, u64::from(DOMID_SELF), 0, 0]))
}

fn ext(s: &mut Shim<MockMachine>, cmd: u32, arg1: u64) -> Result<u64, xen_abi::Errno> {
    let op = MmuextOp { cmd, _pad: 0, arg1, arg2: 0 };
    s.copy_to_guest(REQ_VA, op.as_bytes())?;
    mmuext_op(s, Args([REQ_VA, 1, 0, u64::from(DOMID_SELF), 0, 0]))
}

/// Directly, for the undo phase.
fn ext_now(s: &mut Shim<MockMachine>, cmd: u32, arg1: u64) -> bool {
    s.mmuext_one(&MmuextOp { cmd, _pad: 0, arg1, arg2: 0 }).is_ok()
}

fn check(s: &Shim<MockMachine>, what: &str) {
    if let Err(e) = check_invariants(s, FRAMES) {
        panic!("after {what}: {e}");
    }
}

/// Runs `data` as MMU operations; panics only on a broken invariant.
pub fn run_case(data: &[u8]) {
    let mut s = shim_with_guest();
    check(&s, "boot");
    let baseline: Vec<u64> = (0..FRAMES).map(|m| s.frame(m).canonical()).collect();
    let tables: Vec<(u64, Vec<u64>)> = (1..=4u64)
        .map(|t| (t, (0..512).map(|i| s.m.read_u64((t << 12) + 8 * i).unwrap()).collect()))
        .collect();

    for (step, op) in data.chunks(4).take(64).enumerate() {
        let b = |i: usize| op.get(i).copied().unwrap_or(0);
        let frame = POOL[usize::from(b(1) & 15)];
        let target = POOL[usize::from(b(2) & 15)];
        let slot = match b(3) >> 5 {
            0 => 0,
            1 => 1,
            2 => 256, // an L4 hole slot
            3 => 511,
            _ => u64::from(b(3) & 31),
        };
        // Flags: P RW US A D, sometimes a forbidden bit (PCD, PSE) or NX.
        let flags = u64::from(b(3) & 0x07)
            | 0x60
            | if b(0) & 0x80 != 0 { 0x10 } else { 0 }
            | if b(0) & 0x40 != 0 { 0x80 } else { 0 }
            | if b(2) & 0x80 != 0 { 1 << 63 } else { 0 };
        let _ = match b(0) & 15 {
            0..=3 => mmu(&mut s, (frame << 12) + 8 * slot, (target << 12) | flags),
            4 if b(2) & 1 != 0 => {
                mmu(&mut s, (frame << 12) | MMU_PT_UPDATE_PRESERVE_AD, (target << 12) | flags)
            }
            4 => mmu(&mut s, (frame << 12) + 8 * slot, 0),
            14 if b(2) & 1 != 0 => {
                // SET_LDT over one or two guest pages (mapped writable or not, whatever they hold).
                let page = u64::from(b(1)) % 32;
                let op = MmuextOp {
                    cmd: MMUEXT_SET_LDT,
                    _pad: 0,
                    arg1: GUEST_VA + page * 4096,
                    arg2: u64::from(b(3)) * 4,
                };
                s.mmuext_one(&op).map(|()| 0)
            }
            14 => {
                // The guest uses an LDT selector: the lazy load (or the fault it delivers).
                let mut regs = crate::guest::GuestRegs { vector: 13, ..Default::default() };
                let ec = (u64::from(b(1)) << 3) | 4;
                let _ = s.ldt_fault(&mut regs, ec);
                Ok(0)
            }
            5..=7 => ext(&mut s, MMUEXT_PIN_L1_TABLE + u32::from(b(2) & 3), frame),
            8 => ext(&mut s, MMUEXT_UNPIN_TABLE, frame),
            9 => ext(&mut s, MMUEXT_NEW_BASEPTR, if b(2) & 1 != 0 { 1 } else { frame }),
            10 => ext(&mut s, MMUEXT_NEW_USER_BASEPTR, if b(2) & 1 != 0 { 0 } else { frame }),
            11 | 12 => {
                // Any page but the staging one (30); 32.. have no L1 entry yet.
                let page = u64::from(b(1)) % 40;
                let va = GUEST_VA + if page == 30 { 31 } else { page } * 4096;
                update_va_mapping(&mut s, Args([va, (target << 12) | flags, 2, 0, 0, 0]))
            }
            13 => ext(&mut s, MMUEXT_CLEAR_PAGE, frame),
            15 if b(2) & 1 == 0 => {
                // A GDT of one or two pool frames (any of them, whatever they hold).
                let two = b(2) & 2 != 0;
                let frames = [frame, target];
                let n = if two { 2 } else { 1 };
                s.copy_to_guest(REQ_VA, frames[..n].as_bytes())
                    .and_then(|()| set_gdt(&mut s, Args([REQ_VA, 512 * n as u64, 0, 0, 0, 0])))
            }
            15 => {
                // One descriptor built from the input bytes, into any pool frame.
                let d = u64::from_le_bytes([b(1), b(3), 0xff, 0xff, 0, b(3) | 0x80, b(2), 0]);
                update_descriptor(&mut s, Args([(frame << 12) + 8 * slot, d, 0, 0, 0, 0]))
            }
            _ => Ok(0),
        };
        check(&s, &format!("step {step} {op:02x?}"));
    }

    // Undo everything, in an order that releases references top-down; repeat while
    // something still refuses (a table referenced from a table not yet restored).
    for _ in 0..6 {
        let mut clean = true;
        for m in 0..FRAMES {
            if m != 1 && s.frame(m).pinned() {
                clean &= ext_now(&mut s, MMUEXT_UNPIN_TABLE, m);
            }
        }
        if !s.frame(1).pinned() {
            clean &= ext_now(&mut s, MMUEXT_PIN_L4_TABLE, 1);
        }
        clean &= ext_now(&mut s, MMUEXT_NEW_BASEPTR, 1);
        clean &= ext_now(&mut s, MMUEXT_NEW_USER_BASEPTR, 0);
        clean &= s.set_gdt(&[], 0).is_ok();
        clean &= s.mmuext_one(&MmuextOp { cmd: MMUEXT_SET_LDT, _pad: 0, arg1: 0, arg2: 0 }).is_ok();
        for (t, orig) in &tables {
            for (i, &e) in orig.iter().enumerate() {
                if *t == 1 && (256..272).contains(&i) {
                    continue; // the L4's hypervisor slots
                }
                let at = (t << 12) + 8 * i as u64;
                if s.m.read_u64(at).unwrap() != e {
                    clean &= s.pt_update(at, e, false).is_ok();
                }
            }
        }
        check(&s, "undo");
        if clean {
            break;
        }
    }
    let mut why = String::new();
    for m in 0..FRAMES {
        let f = s.frame(m);
        if f.canonical() != baseline[m as usize] {
            why += &format!(
                "mfn {m:#x}: {f:?} type {:?} tc {} c {} pinned {}\n",
                f.current_type(),
                f.type_count(),
                f.count(),
                f.pinned()
            );
        }
        if let Some(level) = f.current_type().level() {
            for i in 0..512u64 {
                let e = s.m.read_u64((m << 12) + 8 * i).unwrap();
                let t = (e & super::PADDR_MASK) >> 12;
                if e & 1 != 0 && t < FRAMES && baseline[t as usize] != s.frame(t).canonical() {
                    why += &format!("  L{level} {m:#x}[{i}] -> {t:#x} ({e:#x})\n");
                }
            }
        }
    }
    why += &format!("bases {:#x} {:#x}\n", s.vcpu.guest_table, s.vcpu.guest_table_user);
    for (m, &want) in baseline.iter().enumerate() {
        let got = s.frame(m as u64).canonical();
        assert_eq!(
            got, want,
            "mfn {m:#x}: frame word {got:#x}, baseline {want:#x} (input {data:02x?})\n{why}"
        );
    }
}
