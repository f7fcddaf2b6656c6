//! The VM's physical memory: where the shim, its tables and the domain's RAM live in
//! guest-physical (= Xen machine) space, and the host mapping of all of it.
//!
//! ```text
//!  GPA 0 ─ 1 MiB        unused
//!  1 MiB ─ shim_end      shim region: boot info, hostcall pages, stats, shared_info, shim image,
//!                        shim page tables, M2P array, free frames for the shim
//!  ram_start ─ 3 GiB     domain RAM (PFN 0 onwards)
//!  3 GiB ─ 4 GiB         hole (reserved for the LAPIC/IOAPIC and future MMIO)
//!  4 GiB ─ ...           rest of the domain RAM
//! ```
//! Domain RAM does not start at machine frame 0, so MFN != PFN: every PFN<->MFN translation
//! must go through the P2M, as on real Xen.

pub mod atomic;
#[allow(unsafe_code)]
pub mod huge;
pub mod p2m;
#[allow(unsafe_code)]
pub mod release;

use p2m::P2m;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use xen_abi::hostcall::{MfnRange, MAX_RAM_RANGES};

pub const PAGE_SIZE: u64 = 4096;
pub const SHIM_REGION_START: u64 = 1 << 20;
pub const MMIO_HOLE_START: u64 = 3 << 30;
pub const MMIO_HOLE_END: u64 = 4 << 30;
/// Frames left free for the shim's own use (page tables of its per-vCPU data, later grant
/// and event structures).
pub const SHIM_FREE_FRAMES: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot map {size} MiB of guest memory: {source}")]
    Mmap { size: u64, source: vm_memory::mmap::FromRangesError },
    #[error("cannot map {size} MiB of guest memory: {source}")]
    MapRam { size: u64, source: std::io::Error },
    #[error("{0} MiB of memory does not fit in the machine-address space xenvmm supports")]
    TooLarge(u64),
}

/// A bump allocator over machine frames.
#[derive(Debug)]
pub struct FrameAlloc {
    next: u64,
    end: u64,
}

impl FrameAlloc {
    pub fn new(first: u64, end: u64) -> FrameAlloc {
        FrameAlloc { next: first, end }
    }

    /// `n` contiguous frames; panics if the region was sized too small (a bug in `Layout`).
    pub fn alloc(&mut self, n: u64) -> MfnRange {
        let r = MfnRange { first_mfn: self.next, nr_frames: n };
        self.next += n;
        assert!(self.next <= self.end, "shim region too small: layout bug");
        r
    }

    pub fn remaining(&self) -> MfnRange {
        MfnRange { first_mfn: self.next, nr_frames: self.end - self.next }
    }
}

/// Where everything goes in machine memory.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Frames of the shim region (boot info, tables, M2P, ...).
    pub shim_region: MfnRange,
    /// The domain's RAM, in PFN order.
    pub p2m: P2m,
    /// One past the highest machine frame.
    pub max_mfn: u64,
    /// Frames the M2P array needs (8 bytes per machine frame); the shim's frame table
    /// needs as many.
    pub m2p_frames: u64,
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

impl Layout {
    /// Plans a VM with `ram_bytes` of domain RAM (a multiple of 4 KiB), a shim image of
    /// `shim_image_frames`, and `fixed_frames` more frames of shim data.
    pub fn plan(ram_bytes: u64, shim_image_frames: u64, fixed_frames: u64) -> Result<Layout, MemoryError> {
        let pages = ram_bytes / PAGE_SIZE;
        let mib = ram_bytes >> 20;
        // The shim region's size depends on the M2P, which depends on where RAM ends: iterate.
        let mut m2p_frames = 0u64;
        for _ in 0..8 {
            // The M2P and the frame table: one u64 per machine frame each.
            let shim_frames = fixed_frames
                + shim_image_frames
                + 2 * m2p_frames
                + page_table_frames(m2p_frames, shim_image_frames)
                + SHIM_FREE_FRAMES;
            let shim_start = SHIM_REGION_START / PAGE_SIZE;
            let ram_start = (shim_start + shim_frames).next_multiple_of(512); // 2 MiB aligned
            let ranges = split_ram(ram_start, pages);
            let max_mfn = ranges.last().map(|r| r.first_mfn + r.nr_frames).unwrap_or(ram_start);
            if max_mfn << 12 > xen_abi::hostcall::DIRECTMAP_SIZE {
                return Err(MemoryError::TooLarge(mib));
            }
            let need = div_ceil(max_mfn * 8, PAGE_SIZE);
            if need == m2p_frames {
                return Ok(Layout {
                    shim_region: MfnRange { first_mfn: shim_start, nr_frames: ram_start - shim_start },
                    p2m: P2m::new(ranges),
                    max_mfn,
                    m2p_frames,
                });
            }
            m2p_frames = need;
        }
        Err(MemoryError::TooLarge(mib))
    }

    /// The frames of the shim region, as an allocator.
    pub fn shim_frames(&self) -> FrameAlloc {
        FrameAlloc::new(self.shim_region.first_mfn, self.shim_region.first_mfn + self.shim_region.nr_frames)
    }

    /// Guest-physical regions to back with host memory.
    pub fn regions(&self) -> Vec<(GuestAddress, usize)> {
        let mut v = vec![(
            GuestAddress(0),
            ((self.shim_region.first_mfn + self.shim_region.nr_frames) << 12) as usize,
        )];
        for r in self.p2m.ranges() {
            v.push((GuestAddress(r.first_mfn << 12), (r.nr_frames << 12) as usize));
        }
        // Adjacent regions are merged so that KVM gets as few slots as possible.
        let mut merged: Vec<(GuestAddress, usize)> = Vec::new();
        for (a, len) in v {
            match merged.last_mut() {
                Some((b, l)) if b.0 + *l as u64 == a.0 => *l += len,
                _ => merged.push((a, len)),
            }
        }
        merged
    }

    /// Maps the whole VM in this process for a domain: anonymous zero-filled memory placed
    /// for 2 MiB pages ([`huge`]). Keep the [`huge::RamMapping`] until the VM is gone.
    pub fn map_ram(&self) -> Result<(GuestMemoryMmap, huge::RamMapping), MemoryError> {
        huge::map_guest_ram(&self.regions())
            .map_err(|source| MemoryError::MapRam { size: (self.max_mfn << 12) >> 20, source })
    }

    /// Maps the whole VM in this process (anonymous, zero-filled memory; vm-memory's own
    /// mapping, for tests).
    pub fn create_memory(&self) -> Result<GuestMemoryMmap, MemoryError> {
        GuestMemoryMmap::from_ranges(&self.regions())
            .map_err(|source| MemoryError::Mmap { size: (self.max_mfn << 12) >> 20, source })
    }
}

/// Page-table frames the shim's own mappings need besides the direct map (see `shim_loader`).
fn page_table_frames(m2p_frames: u64, image_frames: u64) -> u64 {
    // L4 + M2P (L3, L2s, L1s) + image (L3, L2, L1s) + direct map (L3, L2s for up to 512 GiB).
    1 + 1
        + div_ceil(m2p_frames, 512 * 512)
        + div_ceil(m2p_frames, 512)
        + 2
        + div_ceil(image_frames, 512)
        + 1
        + 512
}

/// RAM from `first_mfn`, `pages` long, split around the MMIO hole.
fn split_ram(first_mfn: u64, pages: u64) -> Vec<MfnRange> {
    let hole_start = MMIO_HOLE_START >> 12;
    let hole_end = MMIO_HOLE_END >> 12;
    let below = hole_start.saturating_sub(first_mfn).min(pages);
    let mut v = vec![MfnRange { first_mfn, nr_frames: below }];
    if pages > below {
        v.push(MfnRange { first_mfn: hole_end.max(first_mfn), nr_frames: pages - below });
    }
    v.retain(|r| r.nr_frames > 0);
    debug_assert!(v.len() <= MAX_RAM_RANGES);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_vm_is_one_ram_range_above_the_shim() {
        let l = Layout::plan(512 << 20, 64, 8).unwrap();
        assert_eq!(l.p2m.nr_pages(), 131072);
        assert_eq!(l.p2m.ranges().len(), 1);
        let ram = l.p2m.ranges()[0];
        assert_eq!(ram.first_mfn % 512, 0);
        assert!(ram.first_mfn >= l.shim_region.first_mfn + l.shim_region.nr_frames);
        assert_eq!(l.max_mfn, ram.first_mfn + ram.nr_frames);
        assert!(l.m2p_frames * 512 >= l.max_mfn);
        assert_ne!(l.p2m.pfn_to_mfn(0), Some(0), "MFN must differ from PFN");
    }

    #[test]
    fn big_vm_skips_the_mmio_hole() {
        let l = Layout::plan(6 << 30, 64, 8).unwrap();
        let r = l.p2m.ranges();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].first_mfn + r[0].nr_frames, MMIO_HOLE_START >> 12);
        assert_eq!(r[1].first_mfn, MMIO_HOLE_END >> 12);
        assert_eq!(l.p2m.nr_pages(), (6u64 << 30) >> 12);
        assert_eq!(l.regions().len(), 2);
    }
}
