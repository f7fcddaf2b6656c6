//! `HYPERVISOR_memory_op` (xen-pv-contract.md §4.9; Xen `common/memory.c` `do_memory_op`,
//! `arch/x86/mm.c` `arch_memory_op`, `arch/x86/x86_64/mm.c` `subarch_memory_op`) for one 64-bit
//! PV domU.
//!
//! **Reservation (ballooning).** The domain's RAM is fixed at boot (`BootInfo::ram`); Xen's
//! `tot_pages` is that RAM minus the frames the domain gave back, and `max_pages` is the RAM
//! it booted with (no growth beyond it). Giving a frame back
//! (`XENMEM_decrease_reservation`) sets its frame-table `released` bit, so it is no longer
//! [`owned`](Shim::owned) (it cannot be mapped, typed or named by `MMU_MACHPHYS_UPDATE`),
//! points its M2P entry nowhere (`~0`), and hands its memory back to the host:
//!
//! ```text
//!  decrease_reservation ─► frames released in the frame table, coalesced into MfnRanges
//!                          └► HC_RELEASE_FRAMES (≤ RELEASE_RANGES_MAX ranges per exit; at most
//!                             one per 512 extents when the frames are contiguous)
//!                               └► VMM: madvise(MADV_DONTNEED): the frames read as zeros
//!  populate_physmap / increase_reservation ─► released frames handed out again (bit cleared,
//!                          no exit: the host faults the memory back in on first touch)
//! ```
//!
//! Frames come back zero-filled: the VMM promises zeros when it answers 0, and the shim zeroes
//! the frames itself on any other answer, so nothing here depends on how the host backs them.
//!
//! Only a frame with no references at all may be released: no mapping, no type, no pin (the
//! registered `vcpu_info` frame holds a reference too). Xen instead takes the frame out of the domain's reservation at
//! once and frees it when its last reference goes (unpinning it first); a guest that releases
//! a frame it still maps keeps using it until then. We refuse such a frame (the extent fails,
//! as Xen's `guest_remove_page` failures do), because the host must never drop memory the
//! guest can still reach.
//!
//! Batches follow Xen's contract: the answer is the number of extents done; a malformed
//! argument answers the start extent; every [`MEMOP_BATCH`] extents the hypercall continues
//! itself with the count so far in the bits of `cmd` above [`MEMOP_CMD_MASK`].

use super::frames::PageType;
use super::PAGE_SIZE;
use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm;
use crate::shim::Shim;
use xen_abi::hostcall::{MfnRange, HC_RELEASE_FRAMES, RELEASE_RANGES_MAX};
use xen_abi::hypercall::HYPERVISOR_MEMORY_OP;
use xen_abi::memory::*;
use xen_abi::xen::{SharedInfo, DOMID_SELF, MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START};
use xen_abi::Errno;
use zerocopy::IntoBytes;

/// Xen's `MEMOP_EXTENT_SHIFT`: the start extent of a continued batch sits above the command.
pub const MEMOP_EXTENT_SHIFT: u32 = 6;
/// Extents handled before a reservation batch continues itself (Linux's balloon driver asks
/// for at most one page of frame numbers, 512, per call).
pub const MEMOP_BATCH: u64 = 512;
/// Xen's `memop-max-order` for a domU (`CONFIG_DOMU_MAX_ORDER`): larger extents are refused.
pub const DOMU_MAX_ORDER: u32 = 9;
/// An M2P entry that maps nowhere.
pub const INVALID_M2P_ENTRY: u64 = u64::MAX;
/// Xen's domain 0 (here: the VMM).
const DOMID_0: u16 = 0;

/// The domain's reservation: what `XENMEM_current_reservation` counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reservation {
    /// Frames of RAM the domain booted with (`max_pages`).
    pub ram_frames: u64,
    /// Frames given back and not handed out again.
    pub released: u64,
    /// No frame below this one is released: where the search for one starts.
    pub hint: u64,
}

impl Reservation {
    pub fn from_boot(b: &xen_abi::hostcall::BootInfo) -> Reservation {
        let n = (b.nr_ram_ranges as usize).min(b.ram.len());
        let ram_frames = b.ram[..n].iter().fold(0u64, |a, r| a.saturating_add(r.nr_frames));
        Reservation { ram_frames, released: 0, hint: u64::MAX }
    }

    /// Xen's `tot_pages`.
    pub fn current(&self) -> u64 {
        self.ram_frames.saturating_sub(self.released)
    }
}

/// Released frames waiting for one [`HC_RELEASE_FRAMES`], consecutive frames merged.
struct ReleaseBatch {
    ranges: [MfnRange; RELEASE_RANGES_MAX],
    n: usize,
}

impl ReleaseBatch {
    fn new() -> ReleaseBatch {
        ReleaseBatch { ranges: [MfnRange::default(); RELEASE_RANGES_MAX], n: 0 }
    }

    /// Adds `mfn`; false when it needs a new range and there is no room (flush first).
    fn add(&mut self, mfn: u64) -> bool {
        if let Some(last) = self.n.checked_sub(1).map(|i| &mut self.ranges[i]) {
            if last.first_mfn + last.nr_frames == mfn {
                last.nr_frames += 1;
                return true;
            }
        }
        if self.n == RELEASE_RANGES_MAX {
            return false;
        }
        self.ranges[self.n] = MfnRange { first_mfn: mfn, nr_frames: 1 };
        self.n += 1;
        true
    }
}

impl<M: Machine> Shim<M> {
    /// Xen's `rcu_lock_domain_by_any_id` plus the XSM check a domU passes only for itself:
    /// domain 0 exists but is not ours to ask about (-EPERM), any other id does not exist.
    fn memop_domain(&self, domid: u16) -> Result<(), Errno> {
        if domid == DOMID_SELF || domid == self.boot.domid {
            Ok(())
        } else if domid == DOMID_0 {
            Err(Errno::EPERM)
        } else {
            Err(Errno::ESRCH)
        }
    }

    fn set_m2p(&mut self, mfn: u64, pfn: u64) {
        let m2p = self.boot.m2p;
        if mfn < m2p.nr_frames.saturating_mul(PAGE_SIZE / 8) {
            let _ = self.m.write_u64((m2p.first_mfn << 12) + 8 * mfn, pfn);
        }
    }

    /// Xen's `guest_remove_page` for a PV domain: gives frame `mfn` back if the domain owns it
    /// and nothing references it.
    fn release_frame(&mut self, mfn: u64, batch: &mut ReleaseBatch) -> Result<(), Errno> {
        if !self.own.is_ram(mfn) {
            return Err(Errno::EINVAL);
        }
        let f = self.frame(mfn);
        if f.released() {
            return Err(Errno::ENXIO);
        }
        // A registered vcpu_info frame holds a writable reference, so the counts cover it.
        if f.count() != 0 || f.type_count() != 0 || f.pinned() {
            return Err(Errno::EBUSY);
        }
        if !batch.add(mfn) {
            self.flush_released(batch);
            batch.add(mfn);
        }
        self.m.set_frame_info(mfn, f.with_type(PageType::None, 0).with_released(true).0);
        self.set_m2p(mfn, INVALID_M2P_ENTRY);
        self.mem.released += 1;
        self.mem.hint = self.mem.hint.min(mfn);
        self.m.stats().frames_released += 1;
        Ok(())
    }

    /// Hands the batch's frames to the host; zeroes them here if the host did not.
    fn flush_released(&mut self, batch: &mut ReleaseBatch) {
        if batch.n == 0 {
            return;
        }
        let ranges = &batch.ranges[..batch.n];
        // The guest flushed its own TLB after unmapping (Linux does, before the hypercall);
        // flush here too, so that no stale translation reaches memory the host drops.
        self.m.flush_tlb();
        self.m.stats().release_hostcalls += 1;
        let r = self.hostcall(HC_RELEASE_FRAMES, [batch.n as u64, 0, 0, 0, 0], ranges.as_bytes());
        if r != 0 {
            for r in ranges {
                for mfn in r.first_mfn..r.first_mfn + r.nr_frames {
                    let _ = self.m.write_phys(mfn << 12, &[0u8; PAGE_SIZE as usize]);
                }
            }
        }
        batch.n = 0;
    }

    /// Finds `2^order` consecutive released frames, aligned to their size, below frame
    /// `limit`, and hands them back to the domain. Returns the first.
    fn take_released(&mut self, order: u32, limit: u64) -> Option<u64> {
        let n = 1u64 << order;
        if self.mem.released < n {
            return None;
        }
        let nr = (self.boot.nr_ram_ranges as usize).min(self.boot.ram.len());
        let ram = self.boot.ram;
        let hint = self.mem.hint;
        let mut first_seen = None;
        for r in &ram[..nr] {
            let end = r.first_mfn.saturating_add(r.nr_frames).min(limit);
            let mut mfn = r.first_mfn.max(hint).next_multiple_of(n);
            'run: while mfn.saturating_add(n) <= end {
                for j in 0..n {
                    if !self.frame(mfn + j).released() {
                        mfn = (mfn + j + 1).next_multiple_of(n);
                        continue 'run;
                    }
                    first_seen.get_or_insert(mfn + j);
                }
                for j in 0..n {
                    let f = self.frame(mfn + j);
                    self.m.set_frame_info(mfn + j, f.with_released(false).0);
                }
                self.mem.released -= n;
                self.m.stats().frames_populated += n;
                if order == 0 {
                    // Nothing below a frame found by a first-fit single-frame search is left.
                    self.mem.hint = mfn + 1;
                }
                return Some(mfn);
            }
        }
        // Only a search of all of RAM proves where released frames begin.
        if limit == u64::MAX {
            self.mem.hint = first_seen.unwrap_or(u64::MAX);
        }
        None
    }
}

/// The argument of the three reservation commands, checked as `do_memory_op` checks it.
struct Memop {
    list: u64,
    nr_extents: u64,
    order: u32,
    /// One past the highest frame the extents may use (`XENMEMF_address_bits`).
    limit: u64,
    populate_on_demand: bool,
}

fn memop_args<M: Machine>(s: &Shim<M>, arg: u64, start: u64) -> Option<Memop> {
    let r: XenMemoryReservation = mm::read_guest(&s.m, s.cr3(), arg).ok()?;
    // Too many extents to encode a continuation, or nothing left.
    if r.nr_extents > u64::from(u32::MAX >> MEMOP_EXTENT_SHIFT) || start >= r.nr_extents {
        return None;
    }
    s.memop_domain(r.domid).ok()?;
    let bits = r.mem_flags & 0xff;
    let mut limit = u64::MAX;
    // Xen's `construct_memop_from_reservation`: a limit below the top of memory restricts the
    // allocation; a limit of a page or less cannot be met.
    let top_bits = 64 - s.boot.max_mfn.saturating_sub(1).leading_zeros() + 12;
    if bits != 0 && bits < top_bits {
        if bits <= 12 {
            return None;
        }
        limit = 1u64 << (bits - 12);
    }
    // No vNUMA: a virtual node names nothing, a physical node is only a preference.
    Some(Memop {
        list: r.extent_start,
        nr_extents: r.nr_extents,
        order: r.extent_order,
        limit,
        populate_on_demand: r.mem_flags & XENMEMF_POPULATE_ON_DEMAND != 0,
    })
}

/// `XENMEM_increase_reservation` (0), `_decrease_reservation` (1), `_populate_physmap` (6).
fn reservation<M: Machine>(s: &mut Shim<M>, op: u64, arg: u64, start: u64) -> Result<u64, Errno> {
    let Some(a) = memop_args(s, arg, start) else { return Ok(start) };
    let list_ok = mm::guest_range_ok(a.list.wrapping_add(8 * start), 8 * (a.nr_extents - start));
    // Populate-on-demand extents may be as large as the heap allows (Xen's MAX_ORDER).
    let max_order = if op == XENMEM_POPULATE_PHYSMAP && a.populate_on_demand { 20 } else { DOMU_MAX_ORDER };
    // increase_reservation may leave out the list (the guest learns nothing of the frames).
    let needs_list = !(op == XENMEM_INCREASE_RESERVATION && a.list == 0);
    if a.order > max_order || (needs_list && !list_ok) {
        return Ok(start);
    }
    let cr3 = s.cr3();
    let mut batch = ReleaseBatch::new();
    let mut i = start;
    while i < a.nr_extents {
        if i - start == MEMOP_BATCH {
            s.flush_released(&mut batch);
            s.continue_hypercall(HYPERVISOR_MEMORY_OP, [op | (i << MEMOP_EXTENT_SHIFT), arg, 0, 0, 0, 0]);
            return Ok(i);
        }
        let slot = a.list.wrapping_add(8 * i);
        let done = match op {
            XENMEM_DECREASE_RESERVATION => {
                let Ok(gmfn) = mm::read_guest::<M, u64>(&s.m, cr3, slot) else { break };
                // A PV domain names its frames by MFN. Frames of an extent released before a
                // failure stay released, as in Xen.
                (0..1u64 << a.order).all(|j| s.release_frame(gmfn.wrapping_add(j), &mut batch).is_ok())
            }
            XENMEM_INCREASE_RESERVATION => match s.take_released(a.order, a.limit) {
                Some(mfn) => a.list == 0 || s.copy_to_guest(slot, &mfn.to_le_bytes()).is_ok(),
                None => false,
            },
            _ => {
                let Ok(gpfn) = mm::read_guest::<M, u64>(&s.m, cr3, slot) else { break };
                // Populate-on-demand is for HVM domains, and never on oneself.
                if a.populate_on_demand {
                    break;
                }
                match s.take_released(a.order, a.limit) {
                    Some(mfn) => {
                        for j in 0..1u64 << a.order {
                            s.set_m2p(mfn + j, gpfn.wrapping_add(j));
                        }
                        s.copy_to_guest(slot, &mfn.to_le_bytes()).is_ok()
                    }
                    None => false,
                }
            }
        };
        if !done {
            break;
        }
        i += 1;
    }
    s.flush_released(&mut batch);
    Ok(i)
}

/// `HYPERVISOR_memory_op(cmd, arg)`.
pub fn memory_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let (cmd, arg) = (a.0[0], a.0[1]);
    let op = cmd & MEMOP_CMD_MASK;
    let start = cmd >> MEMOP_EXTENT_SHIFT;
    let cr3 = s.cr3();
    match op {
        XENMEM_INCREASE_RESERVATION | XENMEM_DECREASE_RESERVATION | XENMEM_POPULATE_PHYSMAP => {
            reservation(s, op, arg, start)
        }
        XENMEM_MAXIMUM_RAM_PAGE => {
            if start != 0 {
                return Err(Errno::EINVAL);
            }
            Ok(s.boot.max_mfn)
        }
        XENMEM_CURRENT_RESERVATION | XENMEM_MAXIMUM_RESERVATION | XENMEM_MAXIMUM_GPFN => {
            if start != 0 {
                return Err(Errno::EINVAL);
            }
            let domid: u16 = mm::read_guest(&s.m, cr3, arg)?;
            s.memop_domain(domid)?;
            Ok(match op {
                XENMEM_CURRENT_RESERVATION => s.mem.current(),
                XENMEM_MAXIMUM_RESERVATION => s.mem.ram_frames,
                _ => {
                    // A PV domain states its P2M size in shared_info (`arch.max_pfn`, a count).
                    let at = (s.boot.shared_info_mfn << 12)
                        + core::mem::offset_of!(SharedInfo, arch) as u64
                        + core::mem::offset_of!(xen_abi::xen::ArchSharedInfo, max_pfn) as u64;
                    s.m.read_u64(at).unwrap_or(0).max(1) - 1
                }
            })
        }
        XENMEM_MACHPHYS_MFN_LIST => machphys_mfn_list(s, arg),
        XENMEM_MACHPHYS_MAPPING => {
            // Every MFN there is has an M2P entry mapped (`BootInfo::m2p` covers `max_mfn`);
            // Xen reports MACH2PHYS_NR_ENTRIES - 1, but nothing above `max_mfn` is mapped here.
            let m = XenMachphysMapping {
                v_start: MACH2PHYS_VIRT_START,
                v_end: MACH2PHYS_VIRT_END,
                max_mfn: s.boot.max_mfn.saturating_sub(1),
            };
            s.copy_to_guest(arg, m.as_bytes()).map(|()| 0)
        }
        XENMEM_MEMORY_MAP => memory_map(s, arg),
        // Dom0 only (XSM_PRIV).
        XENMEM_MACHINE_MEMORY_MAP => Err(Errno::EPERM),
        XENMEM_ADD_TO_PHYSMAP => {
            if start > u64::from(u16::MAX) {
                return Err(Errno::EDOM);
            }
            let x: XenAddToPhysmap = mm::read_guest(&s.m, cr3, arg)?;
            if x.space == XENMAPSPACE_GMFN_FOREIGN {
                return Err(Errno::ENOSYS);
            }
            physmap_domain(s, x.domid)
        }
        XENMEM_ADD_TO_PHYSMAP_BATCH => {
            if start > u64::from(u16::MAX) {
                return Err(Errno::EDOM);
            }
            let x: XenAddToPhysmapBatch = mm::read_guest(&s.m, cr3, arg)?;
            let n = u64::from(x.size);
            if !mm::guest_range_ok(x.idxs, 8 * n)
                || !mm::guest_range_ok(x.gpfns, 8 * n)
                || !mm::guest_range_ok(x.errs, 4 * n)
            {
                return Err(Errno::EFAULT);
            }
            if u32::from(x.space) == XENMAPSPACE_GMFN_RANGE {
                return Err(Errno::EOPNOTSUPP);
            }
            physmap_domain(s, x.domid)
        }
        XENMEM_REMOVE_FROM_PHYSMAP => {
            if start != 0 {
                return Err(Errno::EINVAL);
            }
            let x: XenRemoveFromPhysmap = mm::read_guest(&s.m, cr3, arg)?;
            physmap_domain(s, x.domid)
        }
        XENMEM_SET_POD_TARGET | XENMEM_GET_POD_TARGET => {
            let t: XenPodTarget = mm::read_guest(&s.m, cr3, arg)?;
            s.memop_domain(t.domid)?;
            // Dom0 only (XSM_PRIV).
            Err(Errno::EPERM)
        }
        XENMEM_GET_VNUMAINFO => {
            if start != 0 {
                return Err(Errno::EINVAL);
            }
            let t: XenVnumaTopologyInfo = mm::read_guest(&s.m, cr3, arg)?;
            if t.pad != 0 {
                return Err(Errno::EINVAL);
            }
            s.memop_domain(t.domid)?;
            // The toolstack gave the domain no vNUMA topology.
            Err(Errno::EOPNOTSUPP)
        }
        XENMEM_ACQUIRE_RESOURCE => {
            let r: XenMemAcquireResource = mm::read_guest(&s.m, cr3, arg)?;
            if r.pad != 0 {
                return Err(Errno::EINVAL);
            }
            // Another domain's resources, by number, for its device model only: itself is
            // refused, domain 0 is not ours, DOMID_SELF is not a number.
            if r.domid == s.boot.domid || r.domid == DOMID_0 {
                Err(Errno::EPERM)
            } else {
                Err(Errno::ESRCH)
            }
        }
        // Not implemented (see the report): XENMEM_exchange (swiotlb-xen only),
        // XENMEM_set_memory_map; no compat M2P (no 32-bit PV); the toolstack-only commands
        // (sharing, paging, access, claim) are built out of this "Xen".
        _ => Err(Errno::ENOSYS),
    }
}

/// `XENMEM_{add_to,remove_from}_physmap{,_batch}` after the argument checks: the domain must
/// exist, and it is not translated (PV), which Xen refuses with -EACCES.
fn physmap_domain<M: Machine>(s: &Shim<M>, domid: u16) -> Result<u64, Errno> {
    match s.memop_domain(domid) {
        Err(Errno::ESRCH) => Err(Errno::ESRCH),
        _ => Err(Errno::EACCES),
    }
}

/// `XENMEM_machphys_mfn_list`: the first MFN of each 2 MiB piece of the M2P, as many as
/// `max_extents` allows; `nr_extents` says how many were written.
fn machphys_mfn_list<M: Machine>(s: &mut Shim<M>, arg: u64) -> Result<u64, Errno> {
    let mut x: XenMachphysMfnList = mm::read_guest(&s.m, s.cr3(), arg)?;
    const FRAMES_PER_EXTENT: u64 = (2 << 20) / PAGE_SIZE;
    let m2p_bytes = s.boot.max_mfn.saturating_mul(8);
    let pieces = m2p_bytes.div_ceil(2 << 20);
    let n = pieces.min(u64::from(x.max_extents));
    for i in 0..n {
        let mfn = s.boot.m2p.first_mfn + i * FRAMES_PER_EXTENT;
        s.copy_to_guest(x.extent_start.wrapping_add(8 * i), &mfn.to_le_bytes())?;
    }
    x.nr_extents = n as u32;
    s.copy_to_guest(arg, x.as_bytes())?;
    Ok(0)
}

/// `XENMEM_memory_map`: the pseudo-physical map a plain libxl domU gets
/// (`xc_domain_set_memmap_limit`: one RAM entry from 0 to `maxmem`, no slack for PV).
fn memory_map<M: Machine>(s: &mut Shim<M>, arg: u64) -> Result<u64, Errno> {
    let mut map: XenMemoryMap = mm::read_guest(&s.m, s.cr3(), arg)?;
    map.nr_entries = map.nr_entries.min(1);
    if map.nr_entries == 1 {
        let mut e = [0u8; E820_ENTRY_SIZE];
        e[8..16].copy_from_slice(&s.mem.ram_frames.saturating_mul(PAGE_SIZE).to_le_bytes());
        e[16..20].copy_from_slice(&E820_RAM.to_le_bytes());
        s.copy_to_guest(map.buffer, &e)?;
    }
    s.copy_to_guest(arg, map.as_bytes())?;
    Ok(0)
}

#[cfg(any(test, feature = "testutil"))]
pub mod fuzz;
#[cfg(test)]
mod tests;
