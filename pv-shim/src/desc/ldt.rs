//! The guest's LDT (xen-pv-contract.md §3.2, §4.4 `MMUEXT_SET_LDT`; XEN
//! `pv/descriptor-tables.c` `pv_destroy_ldt`, `pv/mm.c` `pv_map_ldt_shadow_page`, `traps.c`
//! `handle_ldt_mapping_fault`).
//!
//! `MMUEXT_SET_LDT` only records the guest linear address and entry count (`Vcpu::ldt`). Xen
//! then loads LDTR with a per-vCPU LDT area whose pages are not mapped, and maps one guest
//! page there (under a `SegDesc` type reference) when the CPU first faults on it. The shim
//! does the same page by page, but **copies** each page into its LDT buffer, as it does for
//! the GDT (see [`crate::desc`]):
//!
//! ```text
//!  LDTR null ──(#GP(sel|TI), index < ents)──► map page index/512: translate through the
//!      ▲                                      kernel tables, get SegDesc type, copy the 512
//!      │                                      descriptors, LDTR = 0xe050 (limit ents*8-1),
//!      │                                      re-run the instruction
//!      └── pv_destroy_ldt: SET_LDT to another (base, ents), NEW_BASEPTR to another L4, an
//!          L1 entry mapping a SegDesc frame removed: release every page, LDTR null
//! ```
//!
//! Once LDTR is loaded, pages not mapped yet are zero in the buffer, so their selectors
//! raise #GP(selector) again and are mapped the same way; a selector at or past `ents` is
//! past the limit and its #GP goes to the guest. A page that cannot be mapped (not mapped
//! in the kernel tables, not the domain's, or not a valid descriptor page — e.g. mapped
//! writable somewhere) is Xen's failed shadow mapping: the guest gets a #PF at the
//! descriptor's linear address.
//!
//! The copy stays exact for the reason the GDT's does: a mapped page holds a `SegDesc` type
//! reference, so it cannot be mapped writable, and `update_descriptor` writes the copy too.

use super::DESCS_PER_FRAME;
use crate::guest::GuestRegs;
use crate::machine::Machine;
use crate::mm::{self, frames::PageType, PAGE_SIZE};
use crate::shim::{Outcome, Shim};

/// Entries a guest LDT may have (`MMUEXT_SET_LDT`).
pub const MAX_LDT_ENTRIES: u32 = 8192;
/// Pages of the largest LDT.
pub const LDT_PAGES: usize = MAX_LDT_ENTRIES as usize / DESCS_PER_FRAME;

/// The LDT pages a vCPU has mapped (Xen's shadow LDT mappings and `shadow_ldt_mapcnt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LdtShadow {
    /// The machine frame copied into page `p` of the buffer, valid where `mapped` bit `p`
    /// is set; each holds one general and one `SegDesc` type reference.
    pub frames: [u64; LDT_PAGES],
    pub mapped: u16,
}

impl LdtShadow {
    /// The mapped pages: (page of the LDT, machine frame).
    pub fn pages(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.frames.iter().enumerate().filter(|(p, _)| self.mapped & (1 << p) != 0).map(|(p, &f)| (p, f))
    }
}

impl<M: Machine> Shim<M> {
    /// Xen's `pv_destroy_ldt`: releases every mapped LDT page, clears their copies and loads
    /// a null LDTR. Returns whether anything was mapped.
    pub fn destroy_ldt(&mut self) -> bool {
        let sh = self.vcpu.ldt_shadow;
        if sh.mapped == 0 {
            return false;
        }
        self.vcpu.ldt_shadow = LdtShadow::default();
        self.m.load_ldt(0);
        for (p, mfn) in sh.pages() {
            self.m.write_ldt(p * DESCS_PER_FRAME, &[0; DESCS_PER_FRAME]);
            self.put_page_and_type(mfn);
        }
        true
    }

    /// Xen's `pv_map_ldt_shadow_page` for LDT page `page`: the frame mapped at that page of
    /// the LDT in the guest kernel's tables, with a `SegDesc` type reference, copied into
    /// the buffer; LDTR loaded if it was not. `false` if it cannot be.
    fn map_ldt_page(&mut self, page: usize) -> bool {
        let (base, ents) = self.vcpu.ldt;
        if page >= LDT_PAGES || (page * DESCS_PER_FRAME) as u32 >= ents {
            return false;
        }
        let va = base + (page as u64) * PAGE_SIZE;
        let Ok(maddr) = mm::translate(&self.m, self.vcpu.guest_table, va, false) else { return false };
        let mfn = maddr >> 12;
        if self.get_page_and_type(mfn, PageType::SegDesc).is_err() {
            return false;
        }
        let descs = super::read_frame(&self.m, mfn);
        self.m.write_ldt(page * DESCS_PER_FRAME, &descs);
        let sh = &mut self.vcpu.ldt_shadow;
        let first = sh.mapped == 0;
        sh.frames[page] = mfn;
        sh.mapped |= 1 << page;
        if first {
            self.m.load_ldt(ents);
        }
        true
    }

    /// A #GP whose error code names an LDT selector (`ec`: TI set, neither EXT nor IDT):
    /// Xen's `handle_ldt_mapping_fault`. `None` when the fault is the guest's own (past
    /// `ents`, or on a page already mapped): the caller delivers the #GP. Otherwise the page
    /// was mapped and the instruction re-runs, or could not be and the guest gets the #PF
    /// Xen gives it at the descriptor's linear address.
    pub(crate) fn ldt_fault(&mut self, regs: &mut GuestRegs, ec: u64) -> Option<Outcome> {
        let index = (ec & 0xffff) >> 3;
        let (base, ents) = self.vcpu.ldt;
        if index >= u64::from(ents) {
            return None;
        }
        let page = index as usize / DESCS_PER_FRAME;
        if self.vcpu.ldt_shadow.mapped & (1 << page) != 0 {
            return None;
        }
        let linear = base.wrapping_add(index * 8);
        if !mm::guest_range_ok(linear, 8) {
            // Xen: an access that would be non-canonical gets #GP(offset | TI), which is the
            // selector's own error code.
            return None;
        }
        if self.map_ldt_page(page) {
            return Some(Outcome::Resume);
        }
        // The implicit LDT read is a supervisor read of a not-present page; the user bit is
        // set from the guest mode on delivery.
        Some(self.inject_exception(regs, 14, Some(0), linear))
    }

    /// Keeps the LDT copy in step with a descriptor `update_descriptor` stored at entry
    /// `index` of frame `mfn`.
    pub(crate) fn ldt_store(&mut self, mfn: u64, index: usize, d: u64) {
        let sh = self.vcpu.ldt_shadow;
        for (p, _) in sh.pages().filter(|&(_, f)| f == mfn) {
            self.m.write_ldt(p * DESCS_PER_FRAME + index, &[d]);
        }
    }
}

#[cfg(test)]
mod tests;
