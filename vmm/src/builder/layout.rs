//! The initial PFN layout of a PV domain, computed exactly as libxc does
//! (`xg_dom_core.c:xc_dom_build_image`, `xg_dom_x86.c`; xen-pv-contract.md §2.4).
//!
//! PFNs are handed out from 0 upwards while a virtual cursor advances from VIRT_BASE in
//! lock-step, so inside the initial mapping `VA = VIRT_BASE + PFN * 4096`:
//!
//! ```text
//!  PFN 0                                                              nr_pages
//!  | pad | kernel | [mapped initrd] | [P2M] | si | xs | con | L4 L3 L2 L1.. | stack | pad |
//!  |<------------------------ initial mapping (VIRT_BASE ..) ------------------------->|
//!                                       ... | [unmapped initrd] | [P2M + its L3 L2 L1..] | free |
//! ```
//!
//! `[P2M]` sits inside the mapping only when the kernel has no usable INIT_P2M; otherwise the
//! P2M comes last, mapped at INIT_P2M by its own page tables (L4 slot shared).
//!
//! This module is pure arithmetic: nothing here touches guest memory, so it is tested
//! directly against the worked example of the contract.

use super::elfnotes::XenElfInfo;
use super::BuilderError;

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Page-table levels of x86-64 (L1..L4) and bits resolved per level.
pub const LEVELS: usize = 4;
const LEVEL_SHIFT: u32 = 9;
/// libxc masks VAs to 48 bits before computing table ranges (`VIRT_BITS_X86_64`).
pub const VADDR_MASK: u64 = (1 << 48) - 1;
/// Slack libxc maps after the boot stack for the kernel's early allocator.
const SLACK_PAGES: u64 = (512 * 1024) / PAGE_SIZE;
/// The initial mapping ends on a 4 MiB boundary.
const MAPPING_ALIGN_MASK: u64 = (4 << 20) - 1;
/// Linux copies exactly one L2 of the initial mapping (xen-pv-contract.md §2.5).
const ONE_L2: u64 = 1 << 30;
/// The 64-bit PV hypervisor hole (L4 slots 256..=271): no guest mapping may go there.
const HYPERVISOR_VIRT_START: u64 = xen_abi::xen::HYPERVISOR_VIRT_START;
const HYPERVISOR_VIRT_END: u64 = xen_abi::xen::HYPERVISOR_VIRT_END;

/// A run of PFNs, and where it is mapped (if it is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub pfn: u64,
    pub pages: u64,
    /// VA of the first page, when the segment is mapped.
    pub va: Option<u64>,
}

/// The page tables of one mapping, per level (libxc `struct xc_dom_x86_mapping_lvl`). Ranges
/// are 48-bit masked VAs, `to` inclusive; `pgtables` tables of that level cover `from..=to`
/// and live at `pfn..pfn + pgtables`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Level {
    pub from: u64,
    pub to: u64,
    pub pfn: u64,
    pub pgtables: u64,
}

/// One virtual mapping built by the builder: the initial mapping, or the P2M mapping.
/// `area.pfn` is the PFN mapped at `area.from`; `area.pgtables` the table pages of all levels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    pub area: Level,
    /// Index 0 = L1 ... 3 = L4.
    pub lvls: [Level; LEVELS],
}

impl Mapping {
    /// PFNs of this mapping's own page tables (read-only in every L1 that maps them).
    pub fn pgtable_pfns(&self) -> std::ops::Range<u64> {
        let first = self.lvls[LEVELS - 1].pfn;
        first..first + self.area.pgtables
    }
}

/// Where everything of the initial domain image goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub nr_pages: u64,
    pub virt_base: u64,
    /// Padding from VIRT_BASE to the kernel (PFN 0 upwards).
    pub padding: Segment,
    pub kernel: Segment,
    /// The initrd: mapped after the kernel, or unmapped after the initial mapping.
    pub initrd: Option<Segment>,
    /// The P2M list pages (without the P2M mapping's page tables).
    pub p2m: Segment,
    /// P2M list plus its own page tables, when INIT_P2M is used (`first_p2m_pfn`...).
    pub p2m_segment: Option<Segment>,
    pub start_info_pfn: u64,
    pub xenstore_pfn: u64,
    pub console_pfn: u64,
    /// The initial mapping's page tables: L4, L3, L2s, L1s.
    pub pgtables: Segment,
    pub bootstack_pfn: u64,
    /// End (exclusive) of the initial mapping.
    pub virt_pgtab_end: u64,
    /// `maps[0]` = initial mapping, `maps[1]` = P2M mapping (with INIT_P2M).
    pub maps: Vec<Mapping>,
    /// One past the last PFN the layout uses.
    pub pfn_alloc_end: u64,
}

impl Layout {
    /// `start_info.nr_pt_frames`: page tables of the initial mapping.
    pub fn nr_pt_frames(&self) -> u64 {
        self.maps[0].area.pgtables
    }

    /// VA of `pfn` inside the initial mapping.
    pub fn va_of(&self, pfn: u64) -> u64 {
        self.virt_base.wrapping_add(pfn << PAGE_SHIFT)
    }
}

/// Why a layout attempt failed: plain lack of pages (the caller reports how much is needed)
/// or anything else.
enum LayoutFail {
    OutOfPages,
    Other(BuilderError),
}

impl From<BuilderError> for LayoutFail {
    fn from(e: BuilderError) -> Self {
        LayoutFail::Other(e)
    }
}

fn addr_err(msg: String) -> LayoutFail {
    LayoutFail::Other(BuilderError::BadKernelAddresses(msg))
}

/// libxc's allocator state (`pfn_alloc_end`, `virt_alloc_end`, `total_pages`).
struct Alloc {
    total: u64,
    p2m_size: u64,
    pfn_end: u64,
    virt_end: u64,
    maps: Vec<Mapping>,
}

impl Alloc {
    /// `xc_dom_chk_alloc_pages` + the cursor advance.
    fn take(&mut self, pages: u64) -> Result<u64, LayoutFail> {
        if pages > self.total || self.pfn_end > self.total || pages > self.total - self.pfn_end {
            return Err(LayoutFail::OutOfPages);
        }
        let pfn = self.pfn_end;
        let bytes = pages.checked_mul(PAGE_SIZE).ok_or(LayoutFail::OutOfPages)?;
        self.virt_end = self
            .virt_end
            .checked_add(bytes)
            .ok_or_else(|| addr_err("the initial mapping runs past the top of the address space".into()))?;
        self.pfn_end += pages;
        Ok(pfn)
    }

    /// `xc_dom_alloc_pad`: advance the cursor to `boundary`.
    fn pad_to(&mut self, boundary: u64) -> Result<Segment, LayoutFail> {
        if boundary & (PAGE_SIZE - 1) != 0 {
            return Err(addr_err(format!("segment boundary {boundary:#x} is not page aligned")));
        }
        if boundary < self.virt_end {
            return Err(addr_err(format!(
                "segment boundary {boundary:#x} is below the allocation cursor {:#x}",
                self.virt_end
            )));
        }
        let va = self.virt_end;
        let pages = (boundary - self.virt_end) / PAGE_SIZE;
        let pfn = self.take(pages)?;
        Ok(Segment { pfn, pages, va: Some(va) })
    }

    /// `xc_dom_alloc_segment` with start 0: `bytes` rounded up to pages at the cursor.
    fn segment(&mut self, bytes: u64) -> Result<Segment, LayoutFail> {
        let pages = bytes.div_ceil(PAGE_SIZE);
        let va = self.virt_end;
        let pfn = self.take(pages)?;
        Ok(Segment { pfn, pages, va: Some(va) })
    }

    /// libxc's `count_pgtables`: the page tables needed to map `[from, to]` (inclusive) with
    /// PFNs starting at `pfn`, sharing any table an earlier mapping already provides. The
    /// tables would be placed at the allocation cursor, top level first.
    fn count_pgtables(&self, from: u64, to: u64, pfn: u64) -> Result<Mapping, LayoutFail> {
        if self.maps.len() >= 2 {
            return Err(LayoutFail::Other(BuilderError::Internal("too many mappings")));
        }
        let span =
            to.checked_sub(from).ok_or_else(|| addr_err(format!("empty mapping {from:#x}..{to:#x}")))?;
        let pfn_last = pfn.checked_add(span >> PAGE_SHIFT).ok_or(LayoutFail::OutOfPages)?;
        if pfn_last >= self.p2m_size {
            return Err(LayoutFail::OutOfPages);
        }
        for m in &self.maps {
            if from & VADDR_MASK < m.area.to && to & VADDR_MASK > m.area.from {
                return Err(addr_err(format!("mapping {from:#x}..{to:#x} overlaps the initial mapping")));
            }
        }
        let mut map = Mapping::default();
        map.area.from = from & VADDR_MASK;
        map.area.to = to & VADDR_MASK;
        for l in (0..LEVELS).rev() {
            map.lvls[l].pfn = self.pfn_end + map.area.pgtables;
            if l == LEVELS - 1 {
                // One L4, owned by the first mapping.
                if self.maps.is_empty() {
                    map.lvls[l] = Level { from: 0, to: VADDR_MASK, pfn: map.lvls[l].pfn, pgtables: 1 };
                    map.area.pgtables += 1;
                }
                continue;
            }
            let bits = PAGE_SHIFT + (l as u32 + 1) * LEVEL_SHIFT;
            let mask = (1u64 << bits) - 1;
            let mut lv = Level { from: map.area.from & !mask, to: map.area.to | mask, ..map.lvls[l] };
            for cmp in self.maps.iter().map(|m| m.lvls[l]) {
                if cmp.from == cmp.to {
                    continue;
                }
                if lv.from >= cmp.from && lv.to <= cmp.to {
                    // Entirely provided by the earlier mapping's tables.
                    lv.from = 0;
                    lv.to = 0;
                    break;
                }
                if lv.from < cmp.from && lv.to > cmp.to {
                    // libxc asserts this cannot happen; refuse rather than abort.
                    return Err(addr_err("the P2M mapping would enclose the initial mapping".into()));
                }
                if lv.from >= cmp.from && lv.from <= cmp.to {
                    lv.from = cmp.to + 1;
                }
                if lv.to >= cmp.from && lv.to <= cmp.to {
                    lv.to = cmp.from.saturating_sub(1);
                }
            }
            if lv.from < lv.to {
                lv.pgtables = ((lv.to - lv.from) >> bits) + 1;
            }
            map.area.pgtables += lv.pgtables;
            map.lvls[l] = lv;
        }
        Ok(map)
    }
}

/// A VA range `[start, end)` the guest can own: canonical, outside the hypervisor hole.
fn check_guest_range(what: &str, start: u64, end: u64) -> Result<(), LayoutFail> {
    let canonical = |va: u64| !((1 << 47)..0xffff_8000_0000_0000).contains(&va);
    let last = end.wrapping_sub(1);
    let bad = !canonical(start)
        || !canonical(last)
        || (start < (1 << 47)) != (last < (1 << 47))
        || (start < HYPERVISOR_VIRT_END && last >= HYPERVISOR_VIRT_START);
    if bad {
        return Err(addr_err(format!(
            "the {what} at {start:#x}..{end:#x} is not a valid guest virtual range"
        )));
    }
    Ok(())
}

/// Computes the layout for `info`, `nr_pages` of RAM and an initrd of `initrd_len` bytes.
pub fn compute(info: &XenElfInfo, nr_pages: u64, initrd_len: Option<u64>) -> Result<Layout, BuilderError> {
    match try_compute(info, nr_pages, initrd_len) {
        Ok(l) => Ok(l),
        Err(LayoutFail::Other(e)) => Err(e),
        Err(LayoutFail::OutOfPages) => {
            let needed = min_pages(info, initrd_len, nr_pages)?;
            Err(BuilderError::MemoryTooSmall {
                needed_mib: (needed * PAGE_SIZE).div_ceil(1 << 20),
                have_mib: nr_pages.saturating_mul(PAGE_SIZE) / (1 << 20),
            })
        }
    }
}

/// The smallest RAM size for which the layout fits: the layout only grows with RAM through
/// the P2M (8 bytes a page), so success is monotonic and a doubling + bisection finds it.
fn min_pages(info: &XenElfInfo, initrd_len: Option<u64>, from: u64) -> Result<u64, BuilderError> {
    const LIMIT: u64 = 1 << 40; // 4 EiB of RAM: nothing fits => report the limit.
    let fits = |n: u64| -> Result<bool, BuilderError> {
        match try_compute(info, n, initrd_len) {
            Ok(_) => Ok(true),
            Err(LayoutFail::OutOfPages) => Ok(false),
            Err(LayoutFail::Other(e)) => Err(e),
        }
    };
    let mut lo = from.max(1);
    let mut hi = lo.saturating_mul(2).max(1024);
    while !fits(hi)? {
        lo = hi;
        hi = hi.saturating_mul(2);
        if hi >= LIMIT {
            return Ok(LIMIT);
        }
    }
    // Invariant: !fits(lo) (or lo == from, known to fail), fits(hi).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

fn try_compute(info: &XenElfInfo, nr_pages: u64, initrd_len: Option<u64>) -> Result<Layout, LayoutFail> {
    if nr_pages == 0 {
        return Err(LayoutFail::OutOfPages);
    }
    let mut a =
        Alloc { total: nr_pages, p2m_size: nr_pages, pfn_end: 0, virt_end: info.virt_base, maps: Vec::new() };
    let mut layout = Layout { nr_pages, virt_base: info.virt_base, ..Layout::default() };
    let initrd_len = initrd_len.filter(|&l| l > 0);
    let p2m_base = info.p2m_base();
    let p2m_bytes = nr_pages.checked_mul(8).ok_or(LayoutFail::OutOfPages)?.next_multiple_of(PAGE_SIZE);

    // 1. Kernel, after padding from VIRT_BASE up to its start.
    layout.padding = a.pad_to(info.virt_kstart)?;
    layout.kernel = a.segment(info.virt_kend - info.virt_kstart)?;

    // 2. Modules that must be mapped: the initrd when the kernel cannot take it by PFN.
    if let Some(len) = initrd_len.filter(|_| !info.mod_start_pfn) {
        layout.initrd = Some(a.segment(len)?);
    }

    // 3. P2M inside the initial mapping when INIT_P2M is absent or unusable.
    if p2m_base.is_none() {
        layout.p2m = a.segment(p2m_bytes)?;
    }

    // 4. Magic pages.
    layout.start_info_pfn = a.take(1)?;
    layout.xenstore_pfn = a.take(1)?;
    layout.console_pfn = a.take(1)?;

    // 5. Page tables of the initial mapping: iterate until the mapping covers the tables
    //    themselves, the boot stack and the slack, rounded up to 4 MiB.
    let extra = 1 + SLACK_PAGES;
    let mut pages = extra;
    let mut rounds = 0;
    let (map0, try_virt_end) = loop {
        // Each round grows the mapping by >= 4 MiB until it converges or runs out of RAM;
        // the bound only guards against a logic error.
        rounds += 1;
        if rounds > 1_000_000 {
            return Err(LayoutFail::Other(BuilderError::Internal("page-table sizing did not converge")));
        }
        let end = pages
            .checked_mul(PAGE_SIZE)
            .and_then(|b| a.virt_end.checked_add(b))
            .map(|e| e | MAPPING_ALIGN_MASK)
            .ok_or_else(|| addr_err("the initial mapping runs past the top of the address space".into()))?;
        let map = a.count_pgtables(info.virt_base, end, 0)?;
        pages = map.area.pgtables + extra;
        if u128::from(a.virt_end) + u128::from(pages) * u128::from(PAGE_SIZE) <= u128::from(end) + 1 {
            break (map, end);
        }
    };
    a.maps.push(map0);
    // `end | mask` with end < 2^64 - 1; +1 cannot wrap unless the mapping reaches the top.
    let virt_pgtab_end = try_virt_end
        .checked_add(1)
        .ok_or_else(|| addr_err("the initial mapping runs past the top of the address space".into()))?;
    check_guest_range("initial mapping", info.virt_base, virt_pgtab_end)?;
    if virt_pgtab_end - info.virt_base > ONE_L2 - (info.virt_base & (ONE_L2 - 1)) {
        return Err(LayoutFail::Other(BuilderError::InitialMappingTooLarge {
            size_mib: (virt_pgtab_end - info.virt_base) >> 20,
        }));
    }
    layout.virt_pgtab_end = virt_pgtab_end;
    layout.pgtables = a.segment(map0.area.pgtables * PAGE_SIZE)?;

    // 6. Boot stack, 7. padding up to the end of the mapping (the slack).
    layout.bootstack_pfn = a.take(1)?;
    a.pad_to(virt_pgtab_end)?;

    // 8. Unmapped initrd.
    if let Some(len) = initrd_len.filter(|_| info.mod_start_pfn) {
        let pages = len.div_ceil(PAGE_SIZE);
        let pfn = a.take(pages)?;
        layout.initrd = Some(Segment { pfn, pages, va: None });
    }

    // 9. P2M at INIT_P2M, followed by its own page tables (L3, L2, L1s; the L4 is shared).
    if let Some(base) = p2m_base {
        let last = base.checked_add(p2m_bytes - 1).ok_or_else(|| addr_err("INIT_P2M wraps".into()))?;
        check_guest_range("P2M list", base, last.wrapping_add(1))?;
        let mut map = a.count_pgtables(base, last, a.pfn_end)?;
        let p2m_pages = p2m_bytes / PAGE_SIZE;
        map.area.pfn = a.pfn_end;
        for lv in &mut map.lvls {
            lv.pfn += p2m_pages;
        }
        let seg = a.segment(p2m_bytes + map.area.pgtables * PAGE_SIZE)?;
        a.maps.push(map);
        layout.p2m = Segment { pfn: seg.pfn, pages: p2m_pages, va: Some(base) };
        layout.p2m_segment = Some(Segment { va: Some(base), ..seg });
    }

    layout.maps = a.maps;
    layout.pfn_alloc_end = a.pfn_end;
    Ok(layout)
}
