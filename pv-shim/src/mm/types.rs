//! The page-type machine (Xen `mm.c`: `get_page`, `get_page_type`, `alloc_lN_table`,
//! `get_page_from_lNe`, `mod_lN_entry`, and their `put_` halves) over the [frame
//! table](super::frames).
//!
//! Taking a page-table type validates the frame: every present entry must be allowed and
//! takes a reference on what it points at — an L1 entry a general reference on the mapped
//! frame (and a `Writable` type reference if it maps it writable), an upper entry a reference
//! and the next-lower table type on the table below. A failure part-way releases everything
//! taken so far. Dropping the last type reference releases what the entries hold, so counts
//! always return to their baseline. A frame that is a page table (or descriptor table) can
//! never also be `Writable`, hence never writable-mapped: the shim's safety rests on that.
//!
//! Entries are adjusted as 64-bit Xen adjusts them (xen-pv-contract.md §3.1): `_PAGE_USER`
//! forced on (a kernel L1 mapping is tagged `_PAGE_GUEST_KERNEL`), `_PAGE_ACCESSED` on L4
//! entries. L4 slots 256..=271 are the shim's: never validated, overwritten with the shim's
//! own entries, and refused to updates.

use super::frames::{FrameInfo, PageType};
use super::{
    _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_GLOBAL, _PAGE_GUEST_KERNEL, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER,
    PADDR_MASK,
};
use crate::machine::Machine;
use crate::shim::Shim;
use xen_abi::xen::{HYPERVISOR_L4_FIRST, HYPERVISOR_L4_LAST};
use xen_abi::Errno;

/// L1 entry bits a domU without I/O memory may set (Xen's `L1_DISALLOW_MASK` with the cache
/// attributes): P, RW, US, A, D, G, AVL 9-11, AVL-high 52-61, NX.
pub const L1_ALLOWED: u64 = 0x1 | 0x2 | 0x4 | 0x20 | 0x40 | 0x100 | 0xe00 | (0x3ff << 52) | (1 << 63);
/// L2-L4 entry bits (Xen's `base_disallow_mask`): as L1 without G; never PSE.
pub const UPPER_ALLOWED: u64 = 0x1 | 0x2 | 0x4 | 0x20 | 0x40 | 0xe00 | (0x3ff << 52) | (1 << 63);

/// True for the L4 slots the shim owns.
pub fn is_hole_slot(index: usize) -> bool {
    (HYPERVISOR_L4_FIRST..=HYPERVISOR_L4_LAST).contains(&index)
}

impl<M: Machine> Shim<M> {
    pub fn frame(&self, mfn: u64) -> FrameInfo {
        FrameInfo(self.m.frame_info(mfn))
    }

    fn set_frame(&mut self, mfn: u64, f: FrameInfo) {
        self.m.set_frame_info(mfn, f.0);
    }

    /// A full TLB flush (CR4.PGE is off: everything of the guest goes).
    pub fn flush_tlb(&mut self) {
        self.m.flush_tlb();
        self.tlb_stale = false;
    }

    /// Loads CR3, which flushes the TLB as [`Self::flush_tlb`] does.
    pub fn load_cr3(&mut self, cr3: u64) {
        self.m.load_cr3(cr3);
        self.tlb_stale = false;
    }

    /// The domain owns `mfn`: its RAM, not given back.
    pub fn owned(&self, mfn: u64) -> bool {
        self.own.is_ram(mfn) && !self.frame(mfn).released()
    }

    /// Frames the domain may map without owning them (no reference counted; they are never
    /// typed): shared_info and the grant-table frames handed out so far (writable), and the
    /// M2P frames read-only.
    fn special_mappable(&self, mfn: u64, writable: bool) -> bool {
        if mfn == self.own.shared_info_mfn() || self.gnttab.is_mappable(mfn) {
            return true;
        }
        let m2p = self.boot.m2p;
        !writable && m2p.contains(mfn)
    }

    /// Xen's `get_page`: a general reference on a frame the domain owns.
    pub fn get_page(&mut self, mfn: u64) -> Result<(), Errno> {
        if !self.owned(mfn) {
            return Err(Errno::EINVAL);
        }
        let f = self.frame(mfn);
        if f.count_full() {
            return Err(Errno::EINVAL);
        }
        self.set_frame(mfn, f.with_count(f.count() + 1));
        Ok(())
    }

    pub fn put_page(&mut self, mfn: u64) {
        let f = self.frame(mfn);
        debug_assert!(f.count() > 0, "put_page on mfn {mfn:#x} with no reference");
        self.set_frame(mfn, f.with_count(f.count().saturating_sub(1)));
    }

    /// Xen's `get_page_type`: one more reference of type `t`. A frame whose type count is zero
    /// takes the new type (validating it first if it is a table); otherwise the type must
    /// match. The caller holds a general reference.
    pub fn get_page_type(&mut self, mfn: u64, t: PageType) -> Result<(), Errno> {
        let f = self.frame(mfn);
        if f.type_count() > 0 {
            if f.page_type() != t || f.validating() || f.type_count_full() {
                return Err(Errno::EINVAL);
            }
            self.set_frame(mfn, f.with_type(t, f.type_count() + 1));
            return Ok(());
        }
        // A frame changing type may still be reachable through stale TLB or paging-structure
        // cache entries of its old use (a writable mapping removed without a flush; a table
        // unhooked and devalidated): flush them first, as Xen does on a type change, unless
        // no type was dropped since the last full flush.
        let last = f.page_type();
        if last != t && last != PageType::None && self.tlb_stale {
            self.flush_tlb();
        }
        if !t.is_protected() {
            self.set_frame(mfn, f.with_type(t, 1));
            return Ok(());
        }
        // Hold the type while validating, so that an entry leading back here is refused.
        self.set_frame(mfn, f.with_type(t, 1).with_validating(true));
        let r = self.validate(mfn, t);
        let f = self.frame(mfn);
        match r {
            Ok(()) => self.set_frame(mfn, f.with_validating(false)),
            Err(_) => self.set_frame(mfn, f.with_type(PageType::None, 0).with_validating(false)),
        }
        r
    }

    /// Drops one reference of the frame's type; the last one of a table releases what its
    /// entries hold.
    pub fn put_page_type(&mut self, mfn: u64) {
        let f = self.frame(mfn);
        let tc = f.type_count();
        debug_assert!(tc > 0, "put_page_type on mfn {mfn:#x} with no type reference");
        if tc == 0 {
            return;
        }
        if tc == 1 && f.page_type().is_protected() {
            // Mark it while its entries are released, as while validating.
            self.set_frame(mfn, f.with_validating(true));
            self.devalidate(mfn, f.page_type());
            let f = self.frame(mfn);
            self.tlb_stale = true;
            self.set_frame(mfn, f.with_type(f.page_type(), 0).with_validating(false));
        } else if tc == 1 {
            self.tlb_stale = true;
            self.set_frame(mfn, f.with_type(f.page_type(), 0));
        } else {
            self.set_frame(mfn, f.with_type(f.page_type(), tc - 1));
        }
    }

    pub fn get_page_and_type(&mut self, mfn: u64, t: PageType) -> Result<(), Errno> {
        self.get_page(mfn)?;
        self.get_page_type(mfn, t).inspect_err(|_| self.put_page(mfn))
    }

    pub fn put_page_and_type(&mut self, mfn: u64) {
        self.put_page_type(mfn);
        self.put_page(mfn);
    }

    /// Validates `mfn` as a table of type `t` (its type is held, count 1).
    fn validate(&mut self, mfn: u64, t: PageType) -> Result<(), Errno> {
        let Some(level) = t.level() else {
            return match t {
                PageType::SegDesc => self.validate_segdesc_page(mfn),
                _ => Err(Errno::EINVAL),
            };
        };
        let base = mfn << 12;
        for i in 0..512usize {
            if level == 4 && is_hole_slot(i) {
                continue;
            }
            let at = base + 8 * i as u64;
            let e = self.m.read_u64(at)?;
            match self.get_entry_ref(level, e) {
                Ok(adjusted) => {
                    if adjusted != e {
                        self.m.write_u64(at, adjusted)?;
                    }
                }
                Err(err) => {
                    for j in (0..i).rev() {
                        if level == 4 && is_hole_slot(j) {
                            continue;
                        }
                        let e = self.m.read_u64(base + 8 * j as u64).unwrap_or(0);
                        self.put_entry_ref(level, e);
                    }
                    return Err(err);
                }
            }
        }
        if level == 4 {
            for (k, e) in self.hole.iter().enumerate() {
                self.m.write_u64(base + 8 * (HYPERVISOR_L4_FIRST + k) as u64, *e)?;
            }
        }
        Ok(())
    }

    /// Releases what the entries of table `mfn` (type `t`) hold.
    fn devalidate(&mut self, mfn: u64, t: PageType) {
        let Some(level) = t.level() else { return };
        let base = mfn << 12;
        for i in 0..512usize {
            if level == 4 && is_hole_slot(i) {
                continue;
            }
            let e = self.m.read_u64(base + 8 * i as u64).unwrap_or(0);
            self.put_entry_ref(level, e);
        }
    }

    /// Xen's `get_page_from_lNe` plus `adjust_guest_lNe`: checks entry `e` of a level-`level`
    /// table, takes the references it implies, and returns it as it must be stored.
    pub fn get_entry_ref(&mut self, level: u32, e: u64) -> Result<u64, Errno> {
        if e & _PAGE_PRESENT == 0 {
            return Ok(e);
        }
        let mfn = (e & PADDR_MASK) >> 12;
        let rw = e & _PAGE_RW != 0;
        if level == 1 {
            if e & !L1_ALLOWED & !PADDR_MASK != 0 {
                return Err(Errno::EINVAL);
            }
            if self.owned(mfn) {
                self.get_page(mfn)?;
                if rw {
                    self.get_page_type(mfn, PageType::Writable).inspect_err(|_| self.put_page(mfn))?;
                }
            } else if !self.special_mappable(mfn, rw) {
                return Err(Errno::EINVAL);
            }
            let mut e = e;
            if e & _PAGE_USER == 0 {
                e |= _PAGE_USER | _PAGE_GUEST_KERNEL;
            }
            if e & _PAGE_GUEST_KERNEL == 0 {
                e |= _PAGE_GLOBAL;
            }
            return Ok(e);
        }
        if e & !UPPER_ALLOWED & !PADDR_MASK != 0 {
            return Err(Errno::EINVAL);
        }
        self.get_page_and_type(mfn, PageType::table(level - 1))?;
        Ok(if level == 4 { e | _PAGE_USER | _PAGE_ACCESSED } else { e | _PAGE_USER })
    }

    /// Xen's `put_page_from_lNe`: releases what a stored entry held.
    pub fn put_entry_ref(&mut self, level: u32, e: u64) {
        if e & _PAGE_PRESENT == 0 {
            return;
        }
        let mfn = (e & PADDR_MASK) >> 12;
        if !self.own.is_ram(mfn) {
            return; // shared_info, M2P: never counted
        }
        if level == 1 {
            if e & _PAGE_RW != 0 {
                self.put_page_type(mfn);
            } else if self.frame(mfn).current_type() == PageType::SegDesc {
                // Xen's put_page_from_l1e: a mapping of a descriptor page went away, which
                // may be how the LDT found it; drop the whole LDT (it maps again lazily).
                self.destroy_ldt();
            }
            self.put_page(mfn);
        } else {
            self.put_page_and_type(mfn);
        }
    }

    /// Xen's `mod_lN_entry`: replaces entry `index` of the validated level-`level` table
    /// `table_mfn` with `new` (checked, referenced, adjusted), then releases the old entry.
    /// `preserve_ad` keeps the old entry's Accessed/Dirty bits.
    pub fn mod_entry(
        &mut self,
        table_mfn: u64,
        level: u32,
        index: usize,
        new: u64,
        preserve_ad: bool,
    ) -> Result<(), Errno> {
        if level == 4 && is_hole_slot(index) {
            return Err(Errno::EINVAL);
        }
        let at = (table_mfn << 12) + 8 * (index as u64 & 511);
        let old = self.m.read_u64(at)?;
        let mut new = new;
        if preserve_ad && new & _PAGE_PRESENT != 0 {
            new |= old & (_PAGE_ACCESSED | _PAGE_DIRTY);
        }
        let stored = self.get_entry_ref(level, new)?;
        if let Err(e) = self.m.write_u64(at, stored) {
            self.put_entry_ref(level, stored);
            return Err(e);
        }
        self.put_entry_ref(level, old);
        Ok(())
    }

    /// Pins `mfn` as a table of type `t` (`MMUEXT_PIN_Ln_TABLE`): -EINVAL if already pinned.
    pub fn pin_table(&mut self, mfn: u64, t: PageType) -> Result<(), Errno> {
        self.get_page_and_type(mfn, t)?;
        let f = self.frame(mfn);
        if f.pinned() {
            self.put_page_and_type(mfn);
            return Err(Errno::EINVAL);
        }
        self.set_frame(mfn, f.with_pinned(true));
        Ok(())
    }

    /// `MMUEXT_UNPIN_TABLE`: -EINVAL unless `mfn` is a pinned frame of the domain.
    pub fn unpin_table(&mut self, mfn: u64) -> Result<(), Errno> {
        if !self.owned(mfn) {
            return Err(Errno::EINVAL);
        }
        let f = self.frame(mfn);
        if !f.pinned() {
            return Err(Errno::EINVAL);
        }
        self.set_frame(mfn, f.with_pinned(false));
        self.put_page_and_type(mfn);
        Ok(())
    }
}
