use super::*;
use std::cell::RefCell;
use vm_memory::{Address, Bytes, GuestMemoryMmap};

/// Machine layout of the tests: RAM frames 0x100..0x140, the grant table at 0x10..0x12.
const TABLE: MfnRange = MfnRange { first_mfn: 0x10, nr_frames: 2 };
const RAM: MfnRange = MfnRange { first_mfn: 0x100, nr_frames: 0x40 };
const BACKEND: u16 = 0;
const FRAME: u32 = 0x123;

fn memory() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0x10 << 12), 2 << 12)]).unwrap()
}

fn table() -> GrantTable {
    GrantTable::new(TABLE, &[RAM])
}

fn entry_gpa(gref: u32) -> GuestAddress {
    GuestAddress((0x10 << 12) + 8 * u64::from(gref))
}

fn put(mem: &GuestMemoryMmap<()>, gref: u32, flags: u16, domid: u16, frame: u32) {
    let at = entry_gpa(gref);
    mem.write_obj(flags, at).unwrap();
    mem.write_obj(domid, at.unchecked_add(2)).unwrap();
    mem.write_obj(frame, at.unchecked_add(4)).unwrap();
}

fn flags(mem: &GuestMemoryMmap<()>, gref: u32) -> u16 {
    mem.read_obj(entry_gpa(gref)).unwrap()
}

#[test]
fn maps_a_writable_grant_and_marks_it_in_use_until_unmapped() {
    let mem = memory();
    let mut t = table();
    put(&mem, 8, GTF_PERMIT_ACCESS, BACKEND, FRAME);
    let g = t.map(&GuestWords(&mem), 8, BACKEND, false).unwrap();
    assert_eq!(g, Grant { gref: 8, mfn: 0x123, readonly: false });
    assert_eq!(g.gpa(), GuestAddress(0x123 << 12));
    assert_eq!(flags(&mem, 8), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    t.unmap(&GuestWords(&mem), g).unwrap();
    assert_eq!(flags(&mem, 8), GTF_PERMIT_ACCESS);
    assert_eq!(t.nr_active(), 0);
}

#[test]
fn maps_a_read_only_grant_for_reading_only() {
    let mem = memory();
    let mut t = table();
    put(&mem, 9, GTF_PERMIT_ACCESS | GTF_READONLY, BACKEND, FRAME);
    assert_eq!(t.map(&GuestWords(&mem), 9, BACKEND, false), Err(GrantError::ReadOnly { gref: 9 }));
    assert_eq!(flags(&mem, 9), GTF_PERMIT_ACCESS | GTF_READONLY, "a refused map sets nothing");
    let g = t.map(&GuestWords(&mem), 9, BACKEND, true).unwrap();
    assert_eq!(flags(&mem, 9), GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING);
    t.unmap(&GuestWords(&mem), g).unwrap();
    assert_eq!(flags(&mem, 9), GTF_PERMIT_ACCESS | GTF_READONLY);
}

#[test]
fn refuses_entries_that_do_not_grant_the_backend_a_whole_page() {
    let mem = memory();
    let mut t = table();
    let cases = [
        (GTF_INVALID, BACKEND),
        (GTF_ACCEPT_TRANSFER, BACKEND),
        (GTF_TRANSITIVE, BACKEND),
        (GTF_PERMIT_ACCESS | GTF_SUB_PAGE, BACKEND),
        (GTF_PERMIT_ACCESS, 1),
        (GTF_PERMIT_ACCESS, 0x7ff0),
    ];
    for (i, (f, d)) in cases.into_iter().enumerate() {
        put(&mem, 10, f, d, FRAME);
        let r = t.map(&GuestWords(&mem), 10, BACKEND, true);
        assert!(matches!(r, Err(GrantError::NotGranted { gref: 10, .. })), "case {i}: {r:?}");
        assert_eq!(r.unwrap_err().status(), GNTST_GENERAL_ERROR);
        assert_eq!(flags(&mem, 10), f, "case {i}: untouched");
    }
    assert_eq!(t.nr_active(), 0);
}

#[test]
fn refuses_grant_refs_beyond_the_table() {
    let mem = memory();
    let mut t = table();
    for gref in [1024, 1025, u32::MAX] {
        let r = t.map(&GuestWords(&mem), gref, BACKEND, true);
        assert_eq!(r, Err(GrantError::BadRef { gref }));
        assert_eq!(GrantError::BadRef { gref }.status(), GNTST_BAD_GNTREF);
    }
    put(&mem, 1023, GTF_PERMIT_ACCESS, BACKEND, FRAME);
    let g = t.map(&GuestWords(&mem), 1023, BACKEND, true).unwrap();
    t.unmap(&GuestWords(&mem), g).unwrap();
}

#[test]
fn refuses_frames_that_are_not_the_domains_ram_and_clears_what_it_set() {
    let mem = memory();
    let mut t = table();
    for frame in [0, 0xff, 0x140, 0x10, 0x11, u32::MAX] {
        put(&mem, 12, GTF_PERMIT_ACCESS, BACKEND, frame);
        let r = t.map(&GuestWords(&mem), 12, BACKEND, false);
        assert_eq!(r, Err(GrantError::BadFrame { gref: 12, frame }));
        assert_eq!(GrantError::BadFrame { gref: 12, frame }.status(), GNTST_BAD_PAGE);
        assert_eq!(flags(&mem, 12), GTF_PERMIT_ACCESS, "frame {frame:#x}: flags restored");
    }
    assert_eq!(t.nr_active(), 0);
}

#[test]
fn a_grant_table_inside_ram_never_maps_its_own_frames() {
    let mem = memory();
    let mut t = GrantTable::new(TABLE, &[MfnRange { first_mfn: 0, nr_frames: 0x200 }]);
    put(&mem, 13, GTF_PERMIT_ACCESS, BACKEND, 0x11);
    assert!(matches!(t.map(&GuestWords(&mem), 13, BACKEND, true), Err(GrantError::BadFrame { .. })));
}

#[test]
fn pins_count_and_later_pins_keep_the_first_frame() {
    let mem = memory();
    let mut t = table();
    let w = GuestWords(&mem);
    put(&mem, 14, GTF_PERMIT_ACCESS, BACKEND, FRAME);
    let r1 = t.map(&w, 14, BACKEND, true).unwrap();
    assert_eq!(flags(&mem, 14), GTF_PERMIT_ACCESS | GTF_READING);
    // The guest changes the frame (and even the domid) while pinned: pins use the recorded one.
    put(&mem, 14, GTF_PERMIT_ACCESS | GTF_READING, 5, 0x130);
    let r2 = t.map(&w, 14, BACKEND, true).unwrap();
    assert_eq!(r2.mfn, u64::from(FRAME));
    // The first writer still checks GTF_readonly and sets GTF_writing.
    let w1 = t.map(&w, 14, BACKEND, false).unwrap();
    assert_eq!((w1.mfn, flags(&mem, 14)), (u64::from(FRAME), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING));
    assert_eq!(t.pins(14), (2, 1));
    t.unmap(&w, w1).unwrap();
    assert_eq!(flags(&mem, 14), GTF_PERMIT_ACCESS | GTF_READING, "last writer gone");
    t.unmap(&w, r1).unwrap();
    assert_eq!(flags(&mem, 14), GTF_PERMIT_ACCESS | GTF_READING);
    t.unmap(&w, r2).unwrap();
    assert_eq!(flags(&mem, 14), GTF_PERMIT_ACCESS, "last pin gone");
    assert_eq!(t.pins(14), (0, 0));
}

#[test]
fn a_pinned_grant_made_read_only_refuses_a_new_writer() {
    let mem = memory();
    let mut t = table();
    let w = GuestWords(&mem);
    put(&mem, 15, GTF_PERMIT_ACCESS, BACKEND, FRAME);
    let r = t.map(&w, 15, BACKEND, true).unwrap();
    put(&mem, 15, GTF_PERMIT_ACCESS | GTF_READING | GTF_READONLY, BACKEND, FRAME);
    assert_eq!(t.map(&w, 15, BACKEND, false), Err(GrantError::ReadOnly { gref: 15 }));
    t.unmap(&w, r).unwrap();
}

#[test]
fn another_domain_cannot_share_a_pinned_grant() {
    let mem = memory();
    let mut t = table();
    let w = GuestWords(&mem);
    put(&mem, 16, GTF_PERMIT_ACCESS, BACKEND, FRAME);
    let r = t.map(&w, 16, BACKEND, true).unwrap();
    assert_eq!(t.map(&w, 16, 3, true), Err(GrantError::PinnedByOther { gref: 16, domid: BACKEND }));
    t.unmap(&w, r).unwrap();
}

#[test]
fn pin_counts_stop_before_overflowing() {
    let mem = memory();
    let mut t = table();
    let w = GuestWords(&mem);
    put(&mem, 17, GTF_PERMIT_ACCESS, BACKEND, FRAME);
    let mut held: Vec<Grant> = (0..MAX_PINS).map(|_| t.map(&w, 17, BACKEND, true).unwrap()).collect();
    assert_eq!(t.map(&w, 17, BACKEND, true), Err(GrantError::PinOverflow { gref: 17 }));
    for g in held.drain(..) {
        t.unmap(&w, g).unwrap();
    }
    assert_eq!(flags(&mem, 17), GTF_PERMIT_ACCESS);
}

#[test]
fn unmapping_what_is_not_mapped_is_refused() {
    let mem = memory();
    let mut t = table();
    let w = GuestWords(&mem);
    let forged = Grant { gref: 18, mfn: u64::from(FRAME), readonly: true };
    assert_eq!(t.unmap(&w, forged).unwrap_err().status(), GNTST_BAD_HANDLE);
    put(&mem, 18, GTF_PERMIT_ACCESS, BACKEND, FRAME);
    let r = t.map(&w, 18, BACKEND, true).unwrap();
    let writable = Grant { gref: 18, mfn: u64::from(FRAME), readonly: false };
    assert!(matches!(t.unmap(&w, writable), Err(GrantError::NotMapped { .. })), "no writer pinned");
    let other = Grant { gref: 18, mfn: 0x124, readonly: true };
    assert!(matches!(t.unmap(&w, other), Err(GrantError::NotMapped { .. })), "another frame");
    assert_eq!(t.pins(18), (1, 0));
    t.unmap(&w, r).unwrap();
}

#[test]
fn the_guest_revoking_while_mapped_loses_only_its_own_bits() {
    // A guest that ignores GTF_reading and clears the entry: the backend keeps the frame it
    // checked, and unmapping only clears bits (nothing is set back).
    let mem = memory();
    let mut t = table();
    let w = GuestWords(&mem);
    put(&mem, 19, GTF_PERMIT_ACCESS, BACKEND, FRAME);
    let g = t.map(&w, 19, BACKEND, false).unwrap();
    put(&mem, 19, 0, 0, 0);
    t.unmap(&w, g).unwrap();
    assert_eq!(flags(&mem, 19), 0);
}

/// Words in a map, with a guest that rewrites the entry before each compare-exchange.
struct Racing {
    words: RefCell<BTreeMap<u64, u32>>,
    meddle: RefCell<Box<dyn FnMut(u32) -> Option<u32>>>,
    cmpxchgs: RefCell<u32>,
}

impl SharedWords for Racing {
    fn load(&self, gpa: u64) -> Option<u32> {
        self.words.borrow().get(&gpa).copied()
    }

    fn compare_exchange(&self, gpa: u64, old: u32, new: u32) -> Option<u32> {
        *self.cmpxchgs.borrow_mut() += 1;
        let mut words = self.words.borrow_mut();
        let w = words.get_mut(&gpa)?;
        if let Some(v) = (self.meddle.borrow_mut())(*w) {
            *w = v;
        }
        let found = *w;
        if found == old {
            *w = new;
        }
        Some(found)
    }

    fn fetch_and(&self, gpa: u64, mask: u32) -> Option<u32> {
        let mut words = self.words.borrow_mut();
        let w = words.get_mut(&gpa)?;
        let old = *w;
        *w &= mask;
        Some(old)
    }
}

fn racing(flags: u16, meddle: impl FnMut(u32) -> Option<u32> + 'static) -> Racing {
    let at = 0x10 << 12;
    let words = BTreeMap::from([(at, u32::from(flags)), (at + 4, FRAME)]);
    Racing { words: RefCell::new(words), meddle: RefCell::new(Box::new(meddle)), cmpxchgs: RefCell::new(0) }
}

#[test]
fn a_guest_flipping_the_entry_forever_makes_the_map_fail_after_five_tries() {
    let mem = racing(GTF_PERMIT_ACCESS, |w| Some(w ^ u32::from(GTF_PWT)));
    let mut t = table();
    assert_eq!(t.map(&mem, 0, BACKEND, true), Err(GrantError::Unstable { gref: 0 }));
    assert_eq!(*mem.cmpxchgs.borrow(), CMPXCHG_RETRIES);
    assert_eq!(t.nr_active(), 0);
}

#[test]
fn a_changed_entry_is_checked_again_before_the_retry() {
    // First compare-exchange: the guest makes the entry read-only; the writer must then fail.
    let mut first = true;
    let mem = racing(GTF_PERMIT_ACCESS, move |w| {
        let r = first.then_some(w | u32::from(GTF_READONLY));
        first = false;
        r
    });
    let mut t = table();
    assert_eq!(t.map(&mem, 0, BACKEND, false), Err(GrantError::ReadOnly { gref: 0 }));
    // A harmless change (a cache bit) is retried and succeeds.
    let mut first = true;
    let mem = racing(GTF_PERMIT_ACCESS, move |w| {
        let r = first.then_some(w | u32::from(GTF_PCD));
        first = false;
        r
    });
    let g = t.map(&mem, 0, BACKEND, false).unwrap();
    assert_eq!(*mem.cmpxchgs.borrow(), 2);
    assert_eq!(
        mem.load(0x10 << 12),
        Some(u32::from(GTF_PERMIT_ACCESS | GTF_PCD | GTF_READING | GTF_WRITING))
    );
    t.unmap(&mem, g).unwrap();
    assert_eq!(mem.load(0x10 << 12), Some(u32::from(GTF_PERMIT_ACCESS | GTF_PCD)));
}

#[test]
fn unreadable_table_words_are_a_memory_error() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10 << 12), 4096)]).unwrap();
    let mut t = table();
    // Entry 512 lives in the second frame, which this memory does not have.
    assert_eq!(t.map(&GuestWords(&mem), 512, BACKEND, true), Err(GrantError::Memory { gpa: 0x11 << 12 }));
}
