//! Host tests of the lazily loaded LDT on the mock guest of
//! [`shim_with_guest`](crate::testutil::shim_with_guest): page i of `GUEST_VA` is frame
//! 16 + i, writable except page 31 (frame 47), which is read-only.

use super::*;
use crate::hypercall::Args;
use crate::mm::check::check_invariants;
use crate::mm::ops::update_va_mapping;
use crate::testutil::{shim_with_guest, MockMachine, GUEST_VA};
use crate::traps::TrapEntry;
use xen_abi::xen::*;
use xen_abi::Errno;

const GP_HANDLER: u64 = 0xffff_ffff_8100_0013;
const PF_HANDLER: u64 = 0xffff_ffff_8100_0014;
/// The read-only page and its frame.
const RO_PAGE: u64 = GUEST_VA + 31 * 4096;
const RO_MFN: u64 = 47;
/// A flat data segment as a guest kernel writes it (DPL 0: stored with DPL 3).
const DATA: u64 = 0x00cf_9300_0000_ffff;
const DATA_DPL3: u64 = 0x00cf_f300_0000_ffff;

fn shim() -> Shim<MockMachine> {
    let mut s = shim_with_guest();
    s.vcpu.traps.table[13] = TrapEntry { flags: 0, cs: FLAT_KERNEL_CS, address: GP_HANDLER };
    s.vcpu.traps.table[14] = TrapEntry { flags: 0, cs: FLAT_KERNEL_CS, address: PF_HANDLER };
    s
}

fn ok(s: &Shim<MockMachine>) {
    check_invariants(s, s.m.frames()).unwrap();
}

fn words(s: &Shim<MockMachine>) -> Vec<u64> {
    (0..s.m.frames()).map(|m| s.frame(m).canonical()).collect()
}

fn set_ldt(s: &mut Shim<MockMachine>, base: u64, ents: u64) -> Result<(), Errno> {
    s.mmuext_one(&MmuextOp { cmd: MMUEXT_SET_LDT, _pad: 0, arg1: base, arg2: ents })
}

/// The guest loads LDT selector `sel` and the CPU raises #GP(`sel` & ~3).
fn gp(s: &mut Shim<MockMachine>, sel: u16) -> (Outcome, GuestRegs) {
    let mut r = GuestRegs {
        vector: 13,
        error_code: u64::from(sel & !3),
        rip: GUEST_VA + 0x100,
        cs: u64::from(FLAT_KERNEL_CS),
        rflags: 0x246,
        rsp: GUEST_VA + 0x8008,
        ss: u64::from(FLAT_KERNEL_SS),
        ..Default::default()
    };
    let o = s.guest_exception(&mut r, 0);
    (o, r)
}

/// The error code and (for #PF) CR2 the guest handler was given.
fn delivered(s: &Shim<MockMachine>, r: &GuestRegs) -> (u64, u64) {
    let ec = s.m.read_u64(crate::mm::translate(&s.m, s.cr3(), r.rsp + 16, false).unwrap()).unwrap();
    (ec, s.m.read_u64(s.vcpu.vcpu_info + 16).unwrap())
}

fn put(s: &mut Shim<MockMachine>, mfn: u64, i: u64, d: u64) {
    s.m.write_u64((mfn << 12) + 8 * i, d).unwrap();
}

#[test]
fn first_use_maps_the_page_and_the_instruction_reruns() {
    let mut s = shim();
    put(&mut s, RO_MFN, 1, DATA);
    assert_eq!(set_ldt(&mut s, RO_PAGE, 16), Ok(()));
    assert_eq!((s.m.loaded_ldt_ents(), s.frame(RO_MFN).current_type()), (0, PageType::None), "lazy");
    ok(&s);

    let (o, r) = gp(&mut s, 0x0f);
    assert_eq!((o, r.rip), (Outcome::Resume, GUEST_VA + 0x100), "the instruction re-runs");
    assert_eq!(s.frame(RO_MFN).current_type(), PageType::SegDesc);
    assert_eq!(s.m.read_u64((RO_MFN << 12) + 8).unwrap(), DATA_DPL3, "fixed up in the frame");
    assert_eq!((s.m.read_ldt(1), s.m.loaded_ldt_ents()), (DATA_DPL3, 16));
    ok(&s);

    // The page is mapped: a #GP on it now is the guest's (a null descriptor, say).
    let (o, r) = gp(&mut s, 0x17);
    assert_eq!((o, r.rip), (Outcome::Resume, GP_HANDLER));
    assert_eq!(delivered(&s, &r).0, 0x14);
    ok(&s);
}

#[test]
fn a_selector_past_the_entries_or_with_no_ldt_is_the_guests_gp() {
    let mut s = shim();
    let before = words(&s);
    let (o, r) = gp(&mut s, 0x07);
    assert_eq!((o, r.rip, delivered(&s, &r).0), (Outcome::Resume, GP_HANDLER, 4), "no LDT");
    assert_eq!(set_ldt(&mut s, RO_PAGE, 4), Ok(()));
    let (o, r) = gp(&mut s, 4 * 8 + 7);
    assert_eq!((o, r.rip, delivered(&s, &r).0), (Outcome::Resume, GP_HANDLER, 0x24), "index 4 of 4");
    assert_eq!((words(&s), s.m.loaded_ldt_ents()), (before.clone(), 0), "nothing mapped");
    ok(&s);
}

#[test]
fn a_page_that_cannot_be_validated_is_the_guests_page_fault() {
    let mut s = shim();
    // Page 0 (frame 16) is mapped writable: it cannot take the descriptor type.
    let before = words(&s);
    assert_eq!(set_ldt(&mut s, GUEST_VA, 600), Ok(()));
    let (o, r) = gp(&mut s, 3 * 8 + 7);
    assert_eq!((o, r.rip), (Outcome::Resume, PF_HANDLER));
    assert_eq!(delivered(&s, &r), (0, GUEST_VA + 24), "#PF, supervisor read, at the descriptor");
    assert_eq!((words(&s), s.m.loaded_ldt_ents()), (before.clone(), 0));
    ok(&s);

    // A refused descriptor (a TSS) in the page: the same.
    put(&mut s, RO_MFN, 5, 0x0000_8900_0000_0067);
    assert_eq!(set_ldt(&mut s, RO_PAGE, 8), Ok(()));
    let (_, r) = gp(&mut s, 0x0f);
    assert_eq!((r.rip, delivered(&s, &r).1), (PF_HANDLER, RO_PAGE + 8));
    assert_eq!((words(&s), s.m.loaded_ldt_ents()), (before.clone(), 0));

    // Not mapped at all (past the guest's 32 pages).
    assert_eq!(set_ldt(&mut s, GUEST_VA + 40 * 4096, 8), Ok(()));
    let (_, r) = gp(&mut s, 0x0f);
    assert_eq!((r.rip, delivered(&s, &r).1), (PF_HANDLER, GUEST_VA + 40 * 4096 + 8));
    assert_eq!(words(&s), before);
    ok(&s);
}

#[test]
fn pages_map_one_at_a_time_and_a_new_ldt_releases_them_all() {
    let mut s = shim();
    // Pages 30 and 31 read-only: a two-page LDT.
    assert_eq!(
        update_va_mapping(&mut s, Args([RO_PAGE - 4096, 46 << 12 | 0x65, UVMF_INVLPG, 0, 0, 0])),
        Ok(0)
    );
    put(&mut s, 46, 2, DATA);
    put(&mut s, 47, 3, DATA);
    let before = words(&s);
    assert_eq!(set_ldt(&mut s, RO_PAGE - 4096, 1024), Ok(()));
    assert_eq!(gp(&mut s, (512 + 3) * 8 + 7).0, Outcome::Resume);
    assert_eq!((s.vcpu.ldt_shadow.mapped, s.m.loaded_ldt_ents()), (0b10, 1024), "only page 1");
    assert_eq!((s.m.read_ldt(512 + 3), s.m.read_ldt(2)), (DATA_DPL3, 0));
    ok(&s);
    assert_eq!(gp(&mut s, 2 * 8 + 7).0, Outcome::Resume);
    assert_eq!((s.vcpu.ldt_shadow.mapped, s.m.read_ldt(2)), (0b11, DATA_DPL3));
    ok(&s);

    // The same LDT again changes nothing.
    assert_eq!(set_ldt(&mut s, RO_PAGE - 4096, 1024), Ok(()));
    assert_eq!(s.vcpu.ldt_shadow.mapped, 0b11);
    // Another entry count drops every page.
    assert_eq!(set_ldt(&mut s, RO_PAGE - 4096, 1000), Ok(()));
    assert_eq!((s.vcpu.ldt_shadow.mapped, s.m.loaded_ldt_ents()), (0, 0));
    assert_eq!(words(&s), before, "every reference released");
    assert!((0..1024).all(|i| s.m.read_ldt(i) == 0), "the copy cleared");
    ok(&s);

    // SET_LDT(0, 0) after a use: the same, and the frames can be mapped writable again.
    assert_eq!(gp(&mut s, 2 * 8 + 7).0, Outcome::Resume);
    assert_eq!(
        update_va_mapping(&mut s, Args([GUEST_VA + 5 * 4096, 46 << 12 | 0x67, UVMF_INVLPG, 0, 0, 0])),
        Err(Errno::EINVAL),
        "an LDT page is never mapped writable"
    );
    assert_eq!(set_ldt(&mut s, 0, 0), Ok(()));
    assert_eq!(words(&s), before);
    assert_eq!(
        update_va_mapping(&mut s, Args([GUEST_VA + 5 * 4096, 46 << 12 | 0x67, UVMF_INVLPG, 0, 0, 0])),
        Ok(0)
    );
    ok(&s);
}

#[test]
fn unmapping_an_ldt_page_or_a_new_base_pointer_drops_the_ldt() {
    let mut s = shim();
    put(&mut s, RO_MFN, 1, DATA);
    let before = words(&s);
    assert_eq!(set_ldt(&mut s, RO_PAGE, 8), Ok(()));
    assert_eq!(gp(&mut s, 0x0f).0, Outcome::Resume);
    // Xen's put_page_from_l1e: the read-only mapping goes, the LDT with it.
    assert_eq!(update_va_mapping(&mut s, Args([RO_PAGE, 0, UVMF_INVLPG, 0, 0, 0])), Ok(0));
    assert_eq!((s.vcpu.ldt_shadow.mapped, s.m.loaded_ldt_ents(), s.vcpu.ldt), (0, 0, (RO_PAGE, 8)));
    assert_eq!(s.frame(RO_MFN).current_type(), PageType::None);
    ok(&s);
    // Now the next use finds nothing mapped there.
    let (_, r) = gp(&mut s, 0x0f);
    assert_eq!(r.rip, PF_HANDLER);
    assert_eq!(update_va_mapping(&mut s, Args([RO_PAGE, RO_MFN << 12 | 0x65, UVMF_INVLPG, 0, 0, 0])), Ok(0));
    assert_eq!(words(&s), before);

    // MMUEXT_NEW_BASEPTR to the same table keeps it; to another drops it.
    assert_eq!(gp(&mut s, 0x0f).0, Outcome::Resume);
    let l4 = s.vcpu.guest_table >> 12;
    assert_eq!(s.new_baseptr(l4), Ok(()));
    assert_eq!(s.vcpu.ldt_shadow.mapped, 1);
    // A copy of the L4 in the free frame 48, as a fork would build it.
    for i in 0..512u64 {
        let e = s.m.read_u64((l4 << 12) + 8 * i).unwrap();
        s.m.write_u64((48 << 12) + 8 * i, e).unwrap();
    }
    assert_eq!(s.new_baseptr(48), Ok(()));
    assert_eq!((s.vcpu.ldt_shadow.mapped, s.m.loaded_ldt_ents()), (0, 0));
    assert_eq!(s.frame(RO_MFN).current_type(), PageType::None);
    ok(&s);
}

#[test]
fn update_descriptor_of_a_mapped_ldt_entry_updates_the_copy() {
    let mut s = shim();
    assert_eq!(set_ldt(&mut s, RO_PAGE, 512), Ok(()));
    assert_eq!(gp(&mut s, 0x0f).0, Outcome::Resume);
    let a = Args([(RO_MFN << 12) + 8 * 7, DATA, 0, 0, 0, 0]);
    assert_eq!(super::super::update_descriptor(&mut s, a), Ok(0));
    assert_eq!((s.m.read_u64((RO_MFN << 12) + 56).unwrap(), s.m.read_ldt(7)), (DATA_DPL3, DATA_DPL3));
    // A refused one changes neither.
    let a = Args([(RO_MFN << 12) + 8 * 7, 0x0000_8900_0000_0067, 0, 0, 0, 0]);
    assert_eq!(super::super::update_descriptor(&mut s, a), Err(Errno::EINVAL));
    assert_eq!(s.m.read_ldt(7), DATA_DPL3);
    ok(&s);
}
