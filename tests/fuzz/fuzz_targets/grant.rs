//! Drives the backends' grant-table view (`devices::grant`) with a hostile guest: a sequence of
//! maps, unmaps and guest rewrites of entries, some of them racing the backend's
//! compare-exchange. It must never panic, and:
//! - every mapped frame is the domain's RAM, and was the entry's frame when its first pin was
//!   taken with the `{flags, domid}` word the backend swapped in;
//! - a successful first pin swapped in a word granting domain 0 a whole page
//!   (`GTF_permit_access` without `GTF_sub_page`) with `GTF_reading` set, and for a writer
//!   `GTF_writing` set and `GTF_readonly` clear;
//! - pin counts equal the grants held, and unmapping everything leaves nothing active.
#![no_main]

use std::cell::{Cell, RefCell};

use devices::grant::{Grant, GrantTable, SharedWords};
use libfuzzer_sys::fuzz_target;
use xen_abi::grant_table::*;
use xen_abi::hostcall::MfnRange;

/// One grant frame at machine frame 0x10 (512 entries); RAM is frames 0x100..0x108.
const TABLE: MfnRange = MfnRange { first_mfn: 0x10, nr_frames: 1 };
const RAM: MfnRange = MfnRange { first_mfn: 0x100, nr_frames: 8 };
/// Entries the fuzzer touches (a few, so that maps and unmaps meet), plus one out of range.
const NR_REFS: u32 = 8;

struct Guest {
    words: RefCell<Vec<u32>>,
    /// Guest rewrites of the word to apply at the next compare-exchanges, in order.
    races: RefCell<Vec<u32>>,
    /// The last word a compare-exchange stored, per entry.
    swapped_in: RefCell<Vec<Option<u32>>>,
}

impl Guest {
    fn index(gpa: u64) -> Option<usize> {
        let base = TABLE.first_mfn << 12;
        let off = gpa.checked_sub(base)?;
        (off < 4096 && off % 4 == 0).then_some((off / 4) as usize)
    }
}

impl SharedWords for Guest {
    fn load(&self, gpa: u64) -> Option<u32> {
        self.words.borrow().get(Self::index(gpa)?).copied()
    }

    fn compare_exchange(&self, gpa: u64, old: u32, new: u32) -> Option<u32> {
        let i = Self::index(gpa)?;
        let mut words = self.words.borrow_mut();
        if let Some(v) = self.races.borrow_mut().pop() {
            words[i] = v;
        }
        let found = words[i];
        if found == old {
            words[i] = new;
            self.swapped_in.borrow_mut()[i / 2] = Some(new);
        }
        Some(found)
    }

    fn fetch_and(&self, gpa: u64, mask: u32) -> Option<u32> {
        let i = Self::index(gpa)?;
        let mut words = self.words.borrow_mut();
        let old = words[i];
        words[i] &= mask;
        Some(old)
    }
}

fuzz_target!(|data: &[u8]| {
    let guest = Guest {
        words: RefCell::new(vec![0; 1024]),
        races: RefCell::new(Vec::new()),
        swapped_in: RefCell::new(vec![None; 512]),
    };
    let mut table = GrantTable::new(TABLE, &[RAM]);
    let mut held: Vec<Grant> = Vec::new();
    let steps = Cell::new(0u32);
    for chunk in data.chunks(8) {
        if steps.get() > 256 || chunk.len() < 2 {
            break;
        }
        steps.set(steps.get() + 1);
        let gref = if chunk[1] & 0x80 != 0 { 512 + u32::from(chunk[1]) } else { u32::from(chunk[1]) % NR_REFS };
        let word = |k: usize| chunk.get(k..k + 4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
        match chunk[0] % 5 {
            // The guest writes {flags, domid}, biased towards grants to domain 0.
            0 => {
                let mut w = word(2);
                if chunk[0] & 0x80 != 0 {
                    w &= 0x0000_ffff;
                }
                if let Some(slot) = guest.words.borrow_mut().get_mut(2 * (gref as usize % 512)) {
                    *slot = w;
                }
            }
            // The guest writes the frame, biased towards RAM.
            1 => {
                let f = word(2);
                let f = if chunk[0] & 0x80 != 0 { 0x100 + f % 12 } else { f };
                guest.words.borrow_mut()[2 * (gref as usize % 512) + 1] = f;
            }
            // The guest will race the next compare-exchanges.
            2 => {
                let n = (chunk[0] >> 3) % 6;
                for k in 0..n {
                    guest.races.borrow_mut().push(word(2).rotate_left(u32::from(k)));
                }
            }
            // The backend maps.
            3 => {
                let readonly = chunk[0] & 0x40 != 0;
                let pinned_before = table.pins(gref) != (0, 0);
                let writers_before = table.pins(gref).1;
                guest.swapped_in.borrow_mut().iter_mut().for_each(|s| *s = None);
                match table.map(&guest, gref, 0, readonly) {
                    Ok(g) => {
                        assert!(gref < 512);
                        assert!(RAM.contains(g.mfn), "mapped frame {:#x} is not RAM", g.mfn);
                        assert_eq!(g.readonly, readonly);
                        if !pinned_before || (!readonly && writers_before == 0) {
                            let w = guest.swapped_in.borrow()[gref as usize].expect("a word was swapped in");
                            let (flags, domid) = (w as u16, (w >> 16) as u16);
                            assert_ne!(flags & GTF_READING, 0);
                            if !pinned_before {
                                assert_eq!(flags & (GTF_TYPE_MASK | GTF_SUB_PAGE), GTF_PERMIT_ACCESS);
                                assert_eq!(domid, 0);
                            }
                            if !readonly {
                                assert_ne!(flags & GTF_WRITING, 0);
                                assert_eq!(flags & GTF_READONLY, 0);
                            }
                        } else {
                            assert!(guest.swapped_in.borrow().iter().all(Option::is_none), "pinned: no swap");
                        }
                        held.push(g);
                    }
                    Err(e) => {
                        assert_eq!(table.pins(gref).0 + table.pins(gref).1 > 0, pinned_before, "{e}");
                    }
                }
            }
            // The backend unmaps one of its grants.
            _ => {
                if !held.is_empty() {
                    let g = held.swap_remove(usize::from(chunk[1]) % held.len());
                    table.unmap(&guest, g).expect("unmapping a held grant");
                }
            }
        }
        guest.races.borrow_mut().clear();
        for r in 0..NR_REFS {
            let readers = held.iter().filter(|g| g.gref == r && g.readonly).count() as u32;
            let writers = held.iter().filter(|g| g.gref == r && !g.readonly).count() as u32;
            assert_eq!(table.pins(r), (readers, writers));
        }
    }
    for g in held.drain(..) {
        table.unmap(&guest, g).expect("unmapping a held grant");
    }
    assert_eq!(table.nr_active(), 0);
});
