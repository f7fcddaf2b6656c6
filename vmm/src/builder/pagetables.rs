//! Contents of the initial page tables (libxc `setup_pgtables_pv`; xen-pv-contract.md §2.5).
//!
//! Every mapping of the [`Layout`] has, per level, a contiguous run of table pages. An entry
//! of a level-`l` table points at the level-`l-1` table (or, in an L1, the data page) that
//! covers its slice of VA space, in any mapping; entries hold machine addresses
//! (`mfn << 12 | flags`) because a PV guest sees real frame numbers.
//!
//! Flags are libxc's: `P|RW|US|A|D` (0x67) above L1, `P|RW|A` (0x23) in L1s, and `P|A`
//! (0x21) for L1 entries mapping a page-table page of either mapping (the guest must not
//! write its page tables directly). `_PAGE_USER` is *not* forced into L1s and no hypervisor
//! L4 slots are installed: the shim does both when it validates and pins the L4.

use super::layout::{Layout, Level, LEVELS, PAGE_SHIFT};
use super::BuilderError;

pub const _PAGE_PRESENT: u64 = 0x001;
pub const _PAGE_RW: u64 = 0x002;
pub const _PAGE_USER: u64 = 0x004;
pub const _PAGE_ACCESSED: u64 = 0x020;
pub const _PAGE_DIRTY: u64 = 0x040;

/// Flags of L2..L4 entries.
pub const UPPER_PROT: u64 = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY;
/// Flags of L1 entries mapping ordinary pages.
pub const L1_PROT: u64 = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED;
/// Flags of L1 entries mapping page-table pages.
pub const L1_PROT_RO: u64 = _PAGE_PRESENT | _PAGE_ACCESSED;

const ENTRIES: usize = 512;

/// A run of page-table pages: `entries.len() / 512` pages starting at `pfn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRun {
    pub pfn: u64,
    pub entries: Vec<u64>,
}

/// libxc's `get_pg_prot`.
fn prot(layout: &Layout, level: usize, pfn: u64) -> u64 {
    if level > 0 {
        return UPPER_PROT;
    }
    if layout.maps.iter().any(|m| m.pgtable_pfns().contains(&pfn)) {
        L1_PROT_RO
    } else {
        L1_PROT
    }
}

/// Builds every table page of every mapping of `layout`; `mfn_of` translates PFN -> MFN.
pub fn build(layout: &Layout, mfn_of: impl Fn(u64) -> Option<u64>) -> Result<Vec<TableRun>, BuilderError> {
    let mut runs = Vec::new();
    for l in (0..LEVELS).rev() {
        let shift = PAGE_SHIFT + l as u32 * 9;
        for m1 in &layout.maps {
            let table = m1.lvls[l];
            if table.pgtables == 0 {
                continue;
            }
            let len = usize::try_from(table.pgtables)
                .ok()
                .and_then(|n| n.checked_mul(ENTRIES))
                .ok_or(BuilderError::Internal("page-table run too large"))?;
            let mut entries = vec![0u64; len];
            for m2 in &layout.maps {
                let child: Level = if l > 0 { m2.lvls[l - 1] } else { m2.area };
                if l > 0 && child.pgtables == 0 {
                    continue;
                }
                if child.from >= table.to || child.to <= table.from {
                    continue;
                }
                let lo = table.from.max(child.from);
                let hi = table.to.min(child.to);
                let p_s = (lo - table.from) >> shift;
                let p_e = (hi - table.from) >> shift;
                // Entry p_s maps the child table (or page) covering `lo`; the rest follow.
                let first_pfn = ((lo - child.from) >> shift) + child.pfn;
                for (p, pfn) in (p_s..=p_e).zip(first_pfn..) {
                    let mfn = mfn_of(pfn).ok_or(BuilderError::MissingMachineFrame { pfn })?;
                    let slot = usize::try_from(p)
                        .ok()
                        .and_then(|p| entries.get_mut(p))
                        .ok_or(BuilderError::Internal("page-table index out of range"))?;
                    *slot = (mfn << PAGE_SHIFT) | prot(layout, l, pfn);
                }
            }
            runs.push(TableRun { pfn: table.pfn, entries });
        }
    }
    Ok(runs)
}
