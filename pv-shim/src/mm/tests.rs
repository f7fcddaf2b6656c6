//! Host tests of the PV MMU on the mock machine.
//!
//! The mock guest (`shim_with_guest`): L4..L1 in frames 1..=4 mapping `GUEST_VA + i*4K` to
//! frame 16 + i (i < 32; page 31 read-only), frames 48..=63 free. Requests are staged in
//! guest memory at `REQ` (data frame 46).

use super::check::check_invariants;
use super::frames::PageType;
use super::ops::{mmu_update, mmuext_op, update_va_mapping, BATCH, MMU_UPDATE_PREEMPTED};
use super::*;
use crate::hypercall::Args;
use crate::shim::Shim;
use crate::testutil::{shim_with_guest, MockMachine, GUEST_VA};
use xen_abi::xen::*;
use zerocopy::IntoBytes;

const REQ: u64 = GUEST_VA + 0x1e000;
const DONE: u64 = GUEST_VA + 0x1d000;
const FOREIGN: u64 = 0x9999;

fn mmu_batch(s: &mut Shim<MockMachine>, reqs: &[(u64, u64)]) -> (Result<u64, Errno>, u32) {
    let v: Vec<MmuUpdate> = reqs.iter().map(|&(ptr, val)| MmuUpdate { ptr, val }).collect();
    s.copy_to_guest(REQ, v.as_bytes()).unwrap();
    s.copy_to_guest(DONE, &0xffff_ffffu32.to_le_bytes()).unwrap();
    let r = mmu_update(s, Args([REQ, reqs.len() as u64, DONE, u64::from(DOMID_SELF), 0, 0]));
    (r, done(s))
}

fn done(s: &Shim<MockMachine>) -> u32 {
    let mut b = [0u8; 4];
    copy_from_guest(&s.m, s.cr3(), DONE, &mut b).unwrap();
    u32::from_le_bytes(b)
}

fn mmu(s: &mut Shim<MockMachine>, ptr: u64, val: u64) -> Result<u64, Errno> {
    mmu_batch(s, &[(ptr, val)]).0
}

fn ext(s: &mut Shim<MockMachine>, cmd: u32, arg1: u64) -> Result<u64, Errno> {
    let op = MmuextOp { cmd, _pad: 0, arg1, arg2: 0 };
    s.copy_to_guest(REQ, op.as_bytes()).unwrap();
    mmuext_op(s, Args([REQ, 1, 0, u64::from(DOMID_SELF), 0, 0]))
}

fn uvm(s: &mut Shim<MockMachine>, page: u64, pte: u64) -> Result<u64, Errno> {
    update_va_mapping(s, Args([GUEST_VA + page * 4096, pte, UVMF_INVLPG, 0, 0, 0]))
}

fn ok(s: &Shim<MockMachine>) {
    check_invariants(s, s.m.frames()).unwrap();
}

fn words(s: &Shim<MockMachine>) -> Vec<u64> {
    (0..s.m.frames()).map(|m| s.frame(m).canonical()).collect()
}

/// Writes an L1 into free frame `table` mapping `entries` (frame, flags) at slots 0...
fn write_l1(s: &mut Shim<MockMachine>, table: u64, entries: &[(u64, u64)]) {
    for (i, &(f, fl)) in entries.iter().enumerate() {
        s.m.write_u64((table << 12) + 8 * i as u64, (f << 12) | fl).unwrap();
    }
}

#[test]
fn boot_validates_pins_and_counts_the_initial_tables() {
    let s = shim_with_guest();
    ok(&s);
    let l4 = s.frame(1);
    assert_eq!((l4.current_type(), l4.type_count(), l4.count(), l4.pinned()), (PageType::L4, 2, 2, true));
    assert_eq!(s.frame(4).current_type(), PageType::L1);
    let data = s.frame(16);
    assert_eq!((data.current_type(), data.type_count(), data.count()), (PageType::Writable, 1, 1));
    let ro = s.frame(47);
    assert_eq!((ro.current_type(), ro.count()), (PageType::None, 1), "page 31 is mapped read-only");
    let e = s.m.read_u64(4 << 12).unwrap();
    assert_eq!(e & (_PAGE_USER | _PAGE_GUEST_KERNEL), _PAGE_USER | _PAGE_GUEST_KERNEL);
    let l4e = s.m.read_u64((1 << 12) + 8 * table_index(GUEST_VA, 4) as u64).unwrap();
    assert_eq!(l4e & (_PAGE_USER | _PAGE_ACCESSED), _PAGE_USER | _PAGE_ACCESSED);
}

#[test]
fn boot_refuses_tables_that_map_themselves_writable() {
    let mut m = MockMachine::new(64);
    let idx = |v: u64, l: u32| table_index(v, l) as u64;
    m.write_u64((1 << 12) + 8 * idx(GUEST_VA, 4), (2 << 12) | 0x67).unwrap();
    m.write_u64((2 << 12) + 8 * idx(GUEST_VA, 3), (3 << 12) | 0x67).unwrap();
    m.write_u64((3 << 12) + 8 * idx(GUEST_VA, 2), (4 << 12) | 0x67).unwrap();
    m.write_u64(4 << 12, (3 << 12) | 0x23).unwrap(); // the L2 mapped writable
    let mut b = crate::testutil::boot_info(64);
    b.guest_l4_mfn = 1;
    let mut s = Shim::new(m, b).unwrap();
    assert_eq!(s.boot_domain(&[0; 16]).err(), Some(crate::shim::BootError::InitialTables(Errno::EINVAL)));
    assert_eq!(words(&s), vec![0; 64], "nothing left referenced");
}

#[test]
fn no_writable_mapping_of_a_table_frame() {
    let mut s = shim_with_guest();
    let before = words(&s);
    // Page 5 (frame 21) remapped to the live L1 (frame 4), writable: refused, nothing changed.
    assert_eq!(uvm(&mut s, 5, (4 << 12) | 0x67), Err(Errno::EINVAL));
    assert_eq!(words(&s), before);
    assert_eq!(s.m.read_u64((4 << 12) + 8 * 5).unwrap() & PADDR_MASK, 21 << 12);
    // Read-only is fine, and counted.
    assert_eq!(uvm(&mut s, 5, (4 << 12) | 0x65), Ok(0));
    assert_eq!(s.frame(4).count(), 2);
    assert_eq!(s.frame(21).count(), 0, "the old mapping's reference is gone");
    assert_eq!(s.frame(21).current_type(), PageType::None);
    ok(&s);
}

#[test]
fn only_own_ram_shared_info_and_the_read_only_m2p_may_be_mapped() {
    let mut s = shim_with_guest();
    s.boot.m2p = xen_abi::hostcall::MfnRange { first_mfn: 0x1000, nr_frames: 2 };
    let before = words(&s);
    assert_eq!(uvm(&mut s, 5, (FOREIGN << 12) | 0x65), Err(Errno::EINVAL), "shim memory");
    assert_eq!(uvm(&mut s, 5, (0x1000 << 12) | 0x67), Err(Errno::EINVAL), "M2P writable");
    assert_eq!(uvm(&mut s, 5, (5 << 12) | 0x67 | 0x10), Err(Errno::EINVAL), "PCD for a domU");
    assert_eq!(words(&s), before);
    assert_eq!(uvm(&mut s, 5, (0x1000 << 12) | 0x65), Ok(0), "M2P read-only");
    ok(&s);
}

#[test]
fn pin_and_unpin_hold_and_release_references() {
    let mut s = shim_with_guest();
    let before = words(&s);
    write_l1(&mut s, 50, &[(51, 0x67), (52, 0x65)]);
    assert_eq!(ext(&mut s, MMUEXT_PIN_L1_TABLE, 50), Ok(0));
    assert_eq!((s.frame(50).current_type(), s.frame(50).pinned()), (PageType::L1, true));
    assert_eq!(s.frame(51).current_type(), PageType::Writable);
    assert_eq!(ext(&mut s, MMUEXT_PIN_L1_TABLE, 50), Err(Errno::EINVAL), "already pinned");
    assert_eq!(ext(&mut s, MMUEXT_PIN_L2_TABLE, 50), Err(Errno::EINVAL), "another type");
    assert_eq!(uvm(&mut s, 6, (50 << 12) | 0x67), Err(Errno::EINVAL), "writable mapping of a pinned L1");
    ok(&s);
    assert_eq!(ext(&mut s, MMUEXT_UNPIN_TABLE, 50), Ok(0));
    assert_eq!(ext(&mut s, MMUEXT_UNPIN_TABLE, 50), Err(Errno::EINVAL), "not pinned");
    assert_eq!(ext(&mut s, MMUEXT_UNPIN_TABLE, FOREIGN), Err(Errno::EINVAL));
    assert_eq!(words(&s), before, "every count back to its baseline");
}

#[test]
fn a_failed_validation_releases_what_it_took() {
    let mut s = shim_with_guest();
    let before = words(&s);
    write_l1(&mut s, 50, &[(51, 0x67), (52, 0x67), (FOREIGN, 0x65)]);
    assert_eq!(ext(&mut s, MMUEXT_PIN_L1_TABLE, 50), Err(Errno::EINVAL));
    assert_eq!(words(&s), before);
    // A table that maps itself writable.
    write_l1(&mut s, 53, &[(53, 0x67)]);
    assert_eq!(ext(&mut s, MMUEXT_PIN_L1_TABLE, 53), Err(Errno::EINVAL));
    // An L2 whose L1 maps the L2 writable.
    write_l1(&mut s, 54, &[(55, 0x67)]);
    write_l1(&mut s, 55, &[(54, 0x67)]);
    assert_eq!(ext(&mut s, MMUEXT_PIN_L2_TABLE, 54), Err(Errno::EINVAL));
    // Superpages and linear (same-level) entries.
    write_l1(&mut s, 56, &[(57, 0xe7)]);
    assert_eq!(ext(&mut s, MMUEXT_PIN_L2_TABLE, 56), Err(Errno::EINVAL));
    write_l1(&mut s, 58, &[(58, 0x65)]);
    assert_eq!(ext(&mut s, MMUEXT_PIN_L2_TABLE, 58), Err(Errno::EINVAL));
    assert_eq!(words(&s), before);
    ok(&s);
}

#[test]
fn the_hypervisor_slots_are_the_shims() {
    let mut s = shim_with_guest();
    let before = words(&s);
    let slot = (1 << 12) + 8 * 256;
    let old = s.m.read_u64(slot).unwrap();
    assert_eq!(mmu(&mut s, slot, (50 << 12) | 0x67), Err(Errno::EINVAL));
    assert_eq!((s.m.read_u64(slot).unwrap(), words(&s)), (old, before));
    // A new L4 gets the shim's entries whatever the guest left there.
    s.hole = [0x1234_5067; 16];
    s.m.write_u64((50 << 12) + 8 * 260, 0xdead_0067).unwrap();
    assert_eq!(ext(&mut s, MMUEXT_PIN_L4_TABLE, 50), Ok(0));
    assert_eq!(s.m.read_u64((50 << 12) + 8 * 260).unwrap(), 0x1234_5067);
    assert_eq!(s.frame(0xdead).count(), 0);
}

#[test]
fn the_current_base_stays_a_table_after_unpinning() {
    let mut s = shim_with_guest();
    assert_eq!(ext(&mut s, MMUEXT_UNPIN_TABLE, 1), Ok(0), "Xen lets the boot L4 be unpinned");
    assert_eq!((s.frame(1).current_type(), s.frame(1).type_count()), (PageType::L4, 1));
    assert_eq!(uvm(&mut s, 5, (1 << 12) | 0x67), Err(Errno::EINVAL), "still not writable-mappable");
    ok(&s);
}

#[test]
fn new_baseptr_switches_and_releases_the_old_table() {
    let mut s = shim_with_guest();
    // A second L4 sharing the L3: frame 50.
    let i = table_index(GUEST_VA, 4) as u64;
    s.m.write_u64((50 << 12) + 8 * i, (2 << 12) | 0x67).unwrap();
    assert_eq!(ext(&mut s, MMUEXT_NEW_BASEPTR, 50), Ok(0));
    assert_eq!(s.vcpu.guest_table, 50 << 12);
    assert_eq!(*s.m.cr3_loads.last().unwrap(), 50 << 12);
    assert_eq!(s.frame(2).type_count(), 2, "the L3 is shared by both L4s");
    assert_eq!((s.frame(1).type_count(), s.frame(1).pinned()), (1, true), "only the pin holds the old L4");
    assert_eq!(ext(&mut s, MMUEXT_NEW_BASEPTR, FOREIGN), Err(Errno::EINVAL));
    assert_eq!(ext(&mut s, MMUEXT_NEW_BASEPTR, 21), Err(Errno::EINVAL), "a writable-mapped page");
    assert_eq!(ext(&mut s, MMUEXT_NEW_USER_BASEPTR, 1), Ok(0));
    assert_eq!(s.frame(1).type_count(), 2);
    assert_eq!(ext(&mut s, MMUEXT_NEW_USER_BASEPTR, 0), Ok(0));
    assert_eq!(ext(&mut s, MMUEXT_NEW_BASEPTR, 1), Ok(0));
    assert_eq!(s.frame(50).count(), 0, "the second L4 is free again");
    assert_eq!(s.frame(2).type_count(), 1);
    ok(&s);
}

#[test]
fn mmu_update_reports_done_and_stops_at_the_first_failure() {
    let mut s = shim_with_guest();
    let l1 = 4 << 12;
    let (r, d) = mmu_batch(
        &mut s,
        &[
            (l1 + 8 * 40, (50 << 12) | 0x67),
            (l1 + 8 * 41, (FOREIGN << 12) | 0x67),
            (l1 + 8 * 42, (51 << 12) | 0x67),
        ],
    );
    assert_eq!((r, d), (Err(Errno::EINVAL), 1));
    assert_eq!(s.frame(50).current_type(), PageType::Writable);
    assert_eq!(s.m.read_u64(l1 + 8 * 42).unwrap(), 0, "nothing after the failure");
    // An unknown command, and a plain (untyped) page written through mmu_update.
    assert_eq!(mmu(&mut s, (60 << 12) | 7, 0), Err(Errno::ENOSYS));
    assert_eq!(mmu(&mut s, (60 << 12) + 16, 0x1234), Ok(0));
    assert_eq!(s.m.read_u64((60 << 12) + 16).unwrap(), 0x1234);
    assert_eq!(s.frame(60).canonical(), 0);
    assert_eq!(mmu(&mut s, (FOREIGN << 12) + 16, 1), Err(Errno::EINVAL));
    ok(&s);
}

#[test]
fn preserve_ad_keeps_the_hardware_bits() {
    let mut s = shim_with_guest();
    let at = (4 << 12) + 8 * 3;
    let old = s.m.read_u64(at).unwrap();
    s.m.write_u64(at, old | _PAGE_DIRTY | _PAGE_ACCESSED).unwrap();
    assert_eq!(mmu(&mut s, at | MMU_PT_UPDATE_PRESERVE_AD, (19 << 12) | 0x05), Ok(0));
    assert_eq!(s.m.read_u64(at).unwrap() & 0x67, 0x65);
    assert_eq!(s.frame(19).current_type(), PageType::None, "now read-only");
    ok(&s);
}

#[test]
fn machphys_update_writes_the_m2p_for_owned_frames_only() {
    let mut m = MockMachine::new(72);
    let idx = |v: u64, l: u32| table_index(v, l) as u64;
    m.write_u64((1 << 12) + 8 * idx(GUEST_VA, 4), (2 << 12) | 0x67).unwrap();
    m.write_u64((2 << 12) + 8 * idx(GUEST_VA, 3), (3 << 12) | 0x67).unwrap();
    m.write_u64((3 << 12) + 8 * idx(GUEST_VA, 2), (4 << 12) | 0x67).unwrap();
    for i in 0..32u64 {
        m.write_u64((4 << 12) + 8 * i, ((16 + i) << 12) | 0x23).unwrap();
    }
    let mut b = crate::testutil::boot_info(64);
    b.guest_l4_mfn = 1;
    b.m2p = xen_abi::hostcall::MfnRange { first_mfn: 70, nr_frames: 1 };
    let mut s = Shim::new(m, b).unwrap();
    s.boot_domain(&[0; 16]).unwrap();
    assert_eq!(mmu(&mut s, (33 << 12) | MMU_MACHPHYS_UPDATE, 0x77), Ok(0));
    assert_eq!(s.m.read_u64((70 << 12) + 8 * 33).unwrap(), 0x77);
    assert_eq!(mmu(&mut s, (66 << 12) | MMU_MACHPHYS_UPDATE, 0x77), Err(Errno::EINVAL), "not the domain's");
}

#[test]
fn long_batches_continue_and_accumulate_done() {
    let mut s = shim_with_guest();
    let n = BATCH + 36;
    let reqs: Vec<(u64, u64)> = (0..n).map(|i| ((60 << 12) + 8 * i, i)).collect();
    let (r, d) = mmu_batch(&mut s, &reqs);
    assert_eq!((r, d), (Ok(0), BATCH as u32));
    let (nr, a) = s.take_continuation().expect("continued");
    assert_eq!((nr, a[1]), (xen_abi::hypercall::HYPERVISOR_MMU_UPDATE, 36 | MMU_UPDATE_PREEMPTED));
    assert_eq!(mmu_update(&mut s, Args(a)), Ok(0));
    assert_eq!(done(&s), n as u32);
    assert_eq!(s.m.read_u64((60 << 12) + 8 * (n - 1)).unwrap(), n - 1);
}

#[test]
fn foreign_owners_and_bad_arguments() {
    let mut s = shim_with_guest();
    let op = MmuextOp { cmd: MMUEXT_TLB_FLUSH_LOCAL, _pad: 0, arg1: 0, arg2: 0 };
    s.copy_to_guest(REQ, op.as_bytes()).unwrap();
    let call = |s: &mut Shim<MockMachine>, dom: u64| mmuext_op(s, Args([REQ, 1, 0, dom, 0, 0]));
    assert_eq!(call(&mut s, 0), Err(Errno::EPERM), "domain 0");
    assert_eq!(call(&mut s, 1), Err(Errno::ESRCH), "itself by number");
    assert_eq!(call(&mut s, 7), Err(Errno::ESRCH));
    assert_eq!(mmuext_op(&mut s, Args([0xffff_8000_0000_0000, 1, 0, 0x7ff0, 0, 0])), Err(Errno::EFAULT));
    assert_eq!(ext(&mut s, MMUEXT_FLUSH_CACHE, 0), Err(Errno::EACCES));
    assert_eq!(ext(&mut s, MMUEXT_MARK_SUPER, 0), Err(Errno::EOPNOTSUPP));
    assert_eq!(ext(&mut s, 99, 0), Err(Errno::ENOSYS));
    assert_eq!(update_va_mapping(&mut s, Args([0x1000, 0, 0, 0, 0, 0])), Err(Errno::EINVAL), "no L1 there");
    assert_eq!(
        update_va_mapping(&mut s, Args([GUEST_VA, (16 << 12) | 0x67, UVMF_INVLPG | 0x10, 0, 0, 0])),
        Err(Errno::EFAULT),
        "the update happens, the vCPU mask cannot be read"
    );
}

#[test]
fn clear_and_copy_page_need_writable_frames() {
    let mut s = shim_with_guest();
    s.m.write_u64(61 << 12, 0xabcd).unwrap();
    let op = MmuextOp { cmd: MMUEXT_COPY_PAGE, _pad: 0, arg1: 62, arg2: 61 };
    s.copy_to_guest(REQ, op.as_bytes()).unwrap();
    assert_eq!(mmuext_op(&mut s, Args([REQ, 1, 0, 0x7ff0, 0, 0])), Ok(0));
    assert_eq!(s.m.read_u64(62 << 12).unwrap(), 0xabcd);
    assert_eq!(ext(&mut s, MMUEXT_CLEAR_PAGE, 62), Ok(0));
    assert_eq!(s.m.read_u64(62 << 12).unwrap(), 0);
    assert_eq!(ext(&mut s, MMUEXT_CLEAR_PAGE, 4), Err(Errno::EINVAL), "a page table");
    ok(&s);
}

#[test]
fn random_operation_sequences_keep_the_invariants() {
    // xorshift: deterministic inputs for the fuzz case (the fuzz target explores more).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        let data: Vec<u8> = (0..256)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        super::fuzz::run_case(&data);
    }
}

#[test]
fn a_type_change_after_a_dropped_mapping_flushes_stale_tlb_entries_first() {
    let mut s = shim_with_guest();
    // Page 5 maps frame 21 writable; the guest makes it read-only without a flush: the TLB
    // may still hold the writable translation, so pinning 21 as a table must flush first.
    assert_eq!(
        update_va_mapping(&mut s, Args([GUEST_VA + 5 * 4096, (21 << 12) | 0x65, UVMF_NONE, 0, 0, 0])),
        Ok(0)
    );
    let flushes = s.m.tlb_flushes;
    assert_eq!(ext(&mut s, MMUEXT_PIN_L1_TABLE, 21), Ok(0));
    assert_eq!(s.m.tlb_flushes, flushes + 1, "flushed before the frame became a table");
    // Same again after an explicit flush: no second flush needed.
    assert_eq!(ext(&mut s, MMUEXT_UNPIN_TABLE, 21), Ok(0));
    assert_eq!(
        update_va_mapping(&mut s, Args([GUEST_VA + 6 * 4096, (22 << 12) | 0x65, UVMF_NONE, 0, 0, 0])),
        Ok(0)
    );
    assert_eq!(ext(&mut s, MMUEXT_TLB_FLUSH_LOCAL, 0), Ok(0));
    let flushes = s.m.tlb_flushes;
    assert_eq!(ext(&mut s, MMUEXT_PIN_L1_TABLE, 22), Ok(0));
    assert_eq!(s.m.tlb_flushes, flushes, "nothing stale since the guest's own flush");
    // A devalidated table becoming writable: flushed too (stale paging-structure caches).
    assert_eq!(ext(&mut s, MMUEXT_UNPIN_TABLE, 22), Ok(0));
    let flushes = s.m.tlb_flushes;
    assert_eq!(uvm(&mut s, 6, (22 << 12) | 0x67), Ok(0));
    assert_eq!(s.m.tlb_flushes, flushes + 1);
    ok(&s);
}

#[test]
fn a_registered_vcpu_info_frame_can_never_become_a_table() {
    let mut s = shim_with_guest();
    // Frame 50: not mapped anywhere. Registered as vcpu_info, it is held writable.
    assert_eq!(s.register_vcpu_info(50, 64), Ok(()));
    assert_eq!(s.frame(50).current_type(), PageType::Writable);
    assert_eq!(ext(&mut s, MMUEXT_PIN_L1_TABLE, 50), Err(Errno::EINVAL));
    ok(&s);
}
