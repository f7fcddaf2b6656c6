//! Grant tables, version 1 (Xen `common/grant_table.c`): `HYPERVISOR_grant_table_op` for a
//! PV domU, and the domain's table frames as the shim hands them out.
//!
//! # Theory
//!
//! The VMM reserves the domain's largest possible table ([`BootInfo::grant_frames`], Xen's
//! `max_grant_frames`) zeroed, outside its RAM. Like Xen, the table starts with one frame
//! (`INITIAL_NR_GRANT_FRAMES`) and grows when `GNTTABOP_setup_table` asks for more; the frames
//! handed out so far are guest-mappable (writable) without being the domain's RAM, so they
//! are never typed or counted, like shared_info (`Shim::special_mappable`).
//!
//! ```text
//!  BootInfo::grant_frames: [ f0 | f1 | ... | f(n-1) | ............ | f63 ]
//!                            └── nr_frames: setup_table'd, mappable ─┘└ zero, not yet ─┘
//! ```
//!
//! Who reads the entries: the host backends (domain 0), which check each grant themselves and
//! set `GTF_reading`/`GTF_writing` while they use it (`devices::grant`). Seen from the guest
//! there are two domains, itself and domain 0; domain 0 grants it nothing, so mapping,
//! copying from or transferring to domain 0 fails the way Xen fails an entry that grants
//! nothing (domain 0's table is taken to be Xen's initial one frame of invalid entries).
//! Version 2 is not offered: `set_version(2)` answers as Xen built with `gnttab=max-ver:1`.
//!
//! Guest statuses follow Xen: most failures are a `GNTST_*` in the op's `status` field while
//! the hypercall returns 0; an unreadable argument is `-EFAULT`, a bad count `-EINVAL`.

mod copy;
#[cfg(any(test, feature = "testutil"))]
pub mod fuzz;
#[cfg(test)]
mod tests;

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm;
use crate::shim::Shim;
use core::mem::{offset_of, size_of};
use xen_abi::grant_table::*;
use xen_abi::hostcall::{BootInfo, MfnRange};
use xen_abi::hypercall::HYPERVISOR_GRANT_TABLE_OP;
use xen_abi::xen::{DomId, DOMID_SELF};
use xen_abi::Errno;
use zerocopy::{FromBytes, IntoBytes};

/// Xen's `INITIAL_NR_GRANT_FRAMES`: the table a domain starts with.
pub const INITIAL_NR_GRANT_FRAMES: u32 = 1;
/// Ops of one batch handled before the hypercall continues itself (Xen's preemption check).
pub const BATCH: u32 = 64;
/// The bits of `cmd` that carry a continuation argument (`GNTTABOP_CONTINUATION_ARG_SHIFT`).
const CONTINUATION_ARG_SHIFT: u32 = 12;
const CMD_MASK: u32 = (1 << CONTINUATION_ARG_SHIFT) - 1;
/// Entries of domain 0's table as the guest sees it: one frame, nothing granted to anyone.
const DOM0_NR_ENTRIES: u32 = INITIAL_NR_GRANT_FRAMES * GRANT_ENTRIES_PER_FRAME_V1;

/// The domain's grant table (Xen's `struct grant_table`, v1 only, no maptrack: the domain
/// never maps another domain's grants).
#[derive(Clone, Copy, Debug)]
pub struct GrantTable {
    frames: MfnRange,
    nr_frames: u32,
}

impl GrantTable {
    pub fn new(b: &BootInfo) -> GrantTable {
        let frames = b.grant_frames;
        let max = frames.nr_frames.min(u64::from(u32::MAX / GRANT_ENTRIES_PER_FRAME_V1)) as u32;
        GrantTable { frames, nr_frames: INITIAL_NR_GRANT_FRAMES.min(max) }
    }

    /// Xen's `max_grant_frames`.
    pub fn max_frames(&self) -> u32 {
        self.frames.nr_frames.min(u64::from(u32::MAX / GRANT_ENTRIES_PER_FRAME_V1)) as u32
    }

    /// Frames in use (Xen's `nr_grant_frames`).
    pub fn nr_frames(&self) -> u32 {
        self.nr_frames
    }

    /// Entries in use (`nr_grant_entries` for v1).
    pub fn nr_entries(&self) -> u32 {
        self.nr_frames * GRANT_ENTRIES_PER_FRAME_V1
    }

    /// The machine frame of table frame `i`.
    pub fn frame_mfn(&self, i: u32) -> u64 {
        self.frames.first_mfn + u64::from(i)
    }

    /// True for a frame of the table the domain has been given: it may map it (writable).
    pub fn is_mappable(&self, mfn: u64) -> bool {
        self.frames.contains(mfn) && mfn - self.frames.first_mfn < u64::from(self.nr_frames)
    }

    /// Machine address of entry `gref`, if it is in use.
    pub fn entry_maddr(&self, gref: GrantRef) -> Option<u64> {
        if gref >= self.nr_entries() {
            return None;
        }
        let frame = self.frame_mfn(gref / GRANT_ENTRIES_PER_FRAME_V1);
        Some((frame << 12) + u64::from(gref % GRANT_ENTRIES_PER_FRAME_V1) * GRANT_ENTRY_V1_SIZE)
    }
}

/// A domain a grant op names, as the guest sees the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dom {
    /// This domain (`DOMID_SELF` or its own id, where Xen accepts either).
    Current,
    /// The VMM.
    Dom0,
}

impl<M: Machine> Shim<M> {
    /// Xen's `rcu_lock_domain_by_any_id`: `DOMID_SELF` or an existing domain's id.
    pub(crate) fn grant_dom_any(&self, dom: DomId) -> Option<Dom> {
        match dom {
            DOMID_SELF => Some(Dom::Current),
            d if d == self.boot.domid => Some(Dom::Current),
            0 => Some(Dom::Dom0),
            _ => None,
        }
    }

    /// Xen's `rcu_lock_domain_by_id`: existing domains by number only.
    pub(crate) fn grant_dom_by_id(&self, dom: DomId) -> Option<Dom> {
        match dom {
            DOMID_SELF => None,
            d => self.grant_dom_any(d),
        }
    }

    /// Reads entry `gref` of the domain's table.
    pub(crate) fn grant_entry(&self, gref: GrantRef) -> Option<(u64, GrantEntryV1)> {
        let at = self.gnttab.entry_maddr(gref)?;
        let mut e = GrantEntryV1::default();
        self.m.read_phys(at, e.as_mut_bytes()).ok()?;
        Some((at, e))
    }

    /// Grows the table to `nr` frames, zeroing the new ones (Xen's `gnttab_grow_table`).
    fn grow_grant_table(&mut self, nr: u32) -> Result<(), Errno> {
        let zero = [0u8; 4096];
        for i in self.gnttab.nr_frames..nr {
            self.m.write_phys(self.gnttab.frame_mfn(i) << 12, &zero)?;
        }
        self.gnttab.nr_frames = self.gnttab.nr_frames.max(nr);
        Ok(())
    }

    /// Writes the `status` field (at `off` in the op at `uop`) back to the guest.
    pub(crate) fn put_grant_status(&mut self, uop: u64, off: usize, status: i16) -> Result<(), Errno> {
        self.copy_to_guest(uop + off as u64, &status.to_le_bytes()).map_err(|_| Errno::EFAULT)
    }
}

/// Reads one argument struct from the guest.
fn read_op<M: Machine, T: FromBytes + IntoBytes>(s: &Shim<M>, va: u64) -> Result<T, Errno> {
    mm::read_guest(&s.m, s.cr3(), va).map_err(|_| Errno::EFAULT)
}

/// `HYPERVISOR_grant_table_op(cmd, uop, count)`.
pub fn grant_table_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let (cmd, uop, count) = (a.0[0] as u32, a.0[1], a.0[2] as u32);
    if (count as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    let opaque = cmd & !CMD_MASK;
    let cmd = cmd & CMD_MASK;
    if cmd != GNTTABOP_CACHE_FLUSH && opaque != 0 {
        return Err(Errno::EINVAL);
    }
    match cmd {
        GNTTABOP_SETUP_TABLE => setup_table(s, uop, count),
        GNTTABOP_QUERY_SIZE => query_size(s, uop, count),
        GNTTABOP_SET_VERSION => set_version(s, uop),
        GNTTABOP_GET_VERSION => get_version(s, uop),
        GNTTABOP_GET_STATUS_FRAMES => get_status_frames(s, uop, count),
        GNTTABOP_MAP_GRANT_REF => batch::<M, GnttabMapGrantRef>(s, cmd, uop, count, |s, va, op| {
            let st = s.map_grant_ref(op);
            s.put_grant_status(va, offset_of!(GnttabMapGrantRef, status), st)
        }),
        GNTTABOP_UNMAP_GRANT_REF => batch::<M, GnttabUnmapGrantRef>(s, cmd, uop, count, |s, va, _| {
            // Nothing is ever mapped, so no handle exists (Xen: handle >= maptrack_limit).
            s.put_grant_status(va, offset_of!(GnttabUnmapGrantRef, status), GNTST_BAD_HANDLE)
        }),
        GNTTABOP_UNMAP_AND_REPLACE => batch::<M, GnttabUnmapAndReplace>(s, cmd, uop, count, |s, va, _| {
            s.put_grant_status(va, offset_of!(GnttabUnmapAndReplace, status), GNTST_BAD_HANDLE)
        }),
        GNTTABOP_TRANSFER => batch::<M, GnttabTransfer>(s, cmd, uop, count, |s, va, op| {
            let st = s.transfer(op);
            s.put_grant_status(va, offset_of!(GnttabTransfer, status), st)
        }),
        GNTTABOP_COPY => batch::<M, GnttabCopy>(s, cmd, uop, count, |s, va, op| {
            let st = s.grant_copy(op);
            s.put_grant_status(va, offset_of!(GnttabCopy, status), st)
        }),
        GNTTABOP_SWAP_GRANT_REF => batch::<M, GnttabSwapGrantRef>(s, cmd, uop, count, |s, va, op| {
            let st = s.swap_grant_ref(op.ref_a, op.ref_b);
            s.put_grant_status(va, offset_of!(GnttabSwapGrantRef, status), st)
        }),
        GNTTABOP_CACHE_FLUSH => {
            let cur_ref = opaque >> CONTINUATION_ARG_SHIFT;
            batch::<M, GnttabCacheFlush>(s, cmd | opaque, uop, count, |s, _, op| s.cache_flush(op, cur_ref))
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Runs `count` ops of type `T` at `uop`: `one` handles an op (its guest address and copy) and
/// writes its status back. Stops at the first error (the ops before it are done, as in Xen);
/// after [`BATCH`] ops the hypercall continues itself with the rest.
fn batch<M: Machine, T: FromBytes + IntoBytes>(
    s: &mut Shim<M>,
    cmd: u32,
    uop: u64,
    count: u32,
    mut one: impl FnMut(&mut Shim<M>, u64, &T) -> Result<(), Errno>,
) -> Result<u64, Errno> {
    let size = size_of::<T>() as u64;
    if !mm::guest_range_ok(uop, u64::from(count) * size) {
        return Err(Errno::EFAULT);
    }
    for i in 0..count {
        if i == BATCH {
            s.continue_hypercall(
                HYPERVISOR_GRANT_TABLE_OP,
                [u64::from(cmd), uop + u64::from(i) * size, u64::from(count - i), 0, 0, 0],
            );
            return Ok(0);
        }
        let va = uop + u64::from(i) * size;
        let op: T = read_op(s, va)?;
        one(s, va, &op)?;
    }
    Ok(0)
}

/// `GNTTABOP_setup_table`: grows the table to `nr_frames` and writes the frames' MFNs to
/// `frame_list`.
fn setup_table<M: Machine>(s: &mut Shim<M>, uop: u64, count: u32) -> Result<u64, Errno> {
    if count != 1 {
        return Err(Errno::EINVAL);
    }
    let mut op: GnttabSetupTable = read_op(s, uop)?;
    if !mm::guest_range_ok(op.frame_list, u64::from(op.nr_frames) * 8) {
        return Err(Errno::EFAULT);
    }
    op.status = match s.grant_dom_any(op.dom) {
        None => GNTST_BAD_DOMAIN,
        // XSM_TARGET: a domU may not set up another domain's table.
        Some(Dom::Dom0) => GNTST_PERMISSION_DENIED,
        Some(Dom::Current) if op.nr_frames > s.gnttab.max_frames() => GNTST_GENERAL_ERROR,
        Some(Dom::Current) => match s.grow_grant_table(op.nr_frames) {
            Err(_) => GNTST_GENERAL_ERROR,
            Ok(()) => {
                let mut st = GNTST_OKAY;
                for i in 0..op.nr_frames {
                    let mfn = s.gnttab.frame_mfn(i);
                    if s.copy_to_guest(op.frame_list + 8 * u64::from(i), &mfn.to_le_bytes()).is_err() {
                        st = GNTST_BAD_VIRT_ADDR;
                    }
                }
                st
            }
        },
    };
    s.put_grant_status(uop, offset_of!(GnttabSetupTable, status), op.status)?;
    Ok(0)
}

/// `GNTTABOP_query_size`: the table's current and largest size, written back whole.
fn query_size<M: Machine>(s: &mut Shim<M>, uop: u64, count: u32) -> Result<u64, Errno> {
    if count != 1 {
        return Err(Errno::EINVAL);
    }
    let mut op: GnttabQuerySize = read_op(s, uop)?;
    match s.grant_dom_any(op.dom) {
        None => op.status = GNTST_BAD_DOMAIN,
        Some(Dom::Dom0) => op.status = GNTST_PERMISSION_DENIED,
        Some(Dom::Current) => {
            op.nr_frames = s.gnttab.nr_frames();
            op.max_nr_frames = s.gnttab.max_frames();
            op.status = GNTST_OKAY;
        }
    }
    s.copy_to_guest(uop, op.as_bytes()).map_err(|_| Errno::EFAULT)?;
    Ok(0)
}

/// `GNTTABOP_set_version`: only version 1 exists here; the current version is written back.
fn set_version<M: Machine>(s: &mut Shim<M>, uop: u64) -> Result<u64, Errno> {
    let mut op: GnttabSetVersion = read_op(s, uop)?;
    let r = match op.version {
        1 => Ok(0),
        // As Xen with `gnttab=max-ver:1`: "behave as before set_version was introduced".
        2 => Err(Errno::ENOSYS),
        _ => Err(Errno::EINVAL),
    };
    op.version = 1;
    s.copy_to_guest(uop, op.as_bytes()).map_err(|_| Errno::EFAULT)?;
    r
}

/// `GNTTABOP_get_version`: errors are errnos here, not statuses.
fn get_version<M: Machine>(s: &mut Shim<M>, uop: u64) -> Result<u64, Errno> {
    let op: GnttabGetVersion = read_op(s, uop)?;
    match s.grant_dom_any(op.dom) {
        None => Err(Errno::ESRCH),
        Some(Dom::Dom0) => Err(Errno::EPERM),
        Some(Dom::Current) => {
            let at = uop + offset_of!(GnttabGetVersion, version) as u64;
            s.copy_to_guest(at, &1u32.to_le_bytes()).map_err(|_| Errno::EFAULT)?;
            Ok(0)
        }
    }
}

/// `GNTTABOP_get_status_frames`: a v1 table has no status frames, so any request for some is
/// `GNTST_general_error`.
fn get_status_frames<M: Machine>(s: &mut Shim<M>, uop: u64, count: u32) -> Result<u64, Errno> {
    if count != 1 {
        return Err(Errno::EINVAL);
    }
    let op: GnttabGetStatusFrames = read_op(s, uop)?;
    let status = match s.grant_dom_any(op.dom) {
        None => GNTST_BAD_DOMAIN,
        Some(Dom::Dom0) => GNTST_PERMISSION_DENIED,
        Some(Dom::Current) if op.nr_frames > 0 => GNTST_GENERAL_ERROR,
        Some(Dom::Current) => GNTST_OKAY,
    };
    s.put_grant_status(uop, offset_of!(GnttabGetStatusFrames, status), status)?;
    Ok(0)
}

impl<M: Machine> Shim<M> {
    /// `GNTTABOP_map_grant_ref` for a domain with nobody to map from: domain 0 grants it
    /// nothing, and mapping its own grants is not supported (refused as an XSM policy would).
    fn map_grant_ref(&mut self, op: &GnttabMapGrantRef) -> i16 {
        if op.flags & (GNTMAP_DEVICE_MAP | GNTMAP_HOST_MAP) == 0 {
            return GNTST_BAD_GNTREF;
        }
        match self.grant_dom_by_id(op.dom) {
            None => GNTST_BAD_DOMAIN,
            Some(Dom::Current) => GNTST_PERMISSION_DENIED,
            Some(Dom::Dom0) if op.r#ref >= DOM0_NR_ENTRIES => GNTST_BAD_GNTREF,
            // The entry does not grant this domain access (Xen's `_set_status_v1`).
            Some(Dom::Dom0) => GNTST_GENERAL_ERROR,
        }
    }

    /// `GNTTABOP_swap_grant_ref`: swaps two entries of the domain's own table; an entry a
    /// backend is using (`GTF_reading`/`GTF_writing`, the pin Xen checks) is `GNTST_eagain`.
    fn swap_grant_ref(&mut self, a: GrantRef, b: GrantRef) -> i16 {
        let (Some((at_a, ea)), Some((at_b, eb))) = (self.grant_entry(a), self.grant_entry(b)) else {
            return GNTST_BAD_GNTREF;
        };
        if a == b {
            return GNTST_OKAY;
        }
        if ea.flags & (GTF_READING | GTF_WRITING) != 0 || eb.flags & (GTF_READING | GTF_WRITING) != 0 {
            return GNTST_EAGAIN;
        }
        if self.m.write_phys(at_a, eb.as_bytes()).is_err() || self.m.write_phys(at_b, ea.as_bytes()).is_err()
        {
            return GNTST_GENERAL_ERROR;
        }
        GNTST_OKAY
    }

    /// `GNTTABOP_cache_flush` (x86, Xen 4.17): argument checks, then a flush of a frame the
    /// domain owns (machine memory is coherent under KVM: nothing to do); invalidating alone is
    /// `-EOPNOTSUPP` on x86.
    fn cache_flush(&mut self, op: &GnttabCacheFlush, cur_ref: u32) -> Result<(), Errno> {
        let (off, len) = (u32::from(op.offset), u32::from(op.length));
        if off >= 4096
            || len > 4096
            || off + len > 4096
            || op.op & !(GNTTAB_CACHE_INVAL | GNTTAB_CACHE_CLEAN) != 0
        {
            return Err(Errno::EINVAL);
        }
        if len == 0 || op.op == 0 {
            return if cur_ref == 0 { Ok(()) } else { Err(Errno::EILSEQ) };
        }
        let mfn = op.a >> 12;
        if mfn >= self.boot.max_mfn {
            return Err(Errno::EINVAL);
        }
        let own = self.owned(mfn) || mfn == self.own.shared_info_mfn() || self.gnttab.is_mappable(mfn);
        if !own {
            return Err(Errno::EPERM);
        }
        if op.op == GNTTAB_CACHE_INVAL {
            return Err(Errno::EOPNOTSUPP);
        }
        Ok(())
    }

    /// `GNTTABOP_transfer`: gives frame `op.mfn` away. As in Xen the frame leaves the domain
    /// first (`steal_page`) and is lost unless the error is `GNTST_bad_page`; only a transfer
    /// into an entry of its own table that accepts it (`GTF_accept_transfer`, domid = itself)
    /// hands it back.
    fn transfer(&mut self, op: &GnttabTransfer) -> i16 {
        let mfn = op.mfn;
        if mfn >= self.boot.max_mfn {
            return GNTST_BAD_PAGE;
        }
        // steal_page: the domain's own frame with no reference but its allocation.
        if !self.owned(mfn) || self.frame(mfn).count() != 0 {
            return GNTST_BAD_PAGE;
        }
        let f = self.frame(mfn);
        self.m.set_frame_info(mfn, f.with_released(true).0);
        match self.grant_dom_by_id(op.domid) {
            None => GNTST_BAD_DOMAIN,
            // Domain 0 never accepts a transfer.
            Some(Dom::Dom0) => GNTST_GENERAL_ERROR,
            Some(Dom::Current) => self.transfer_to_self(mfn, op.r#ref),
        }
    }

    fn transfer_to_self(&mut self, mfn: u64, gref: GrantRef) -> i16 {
        let Some((at, mut e)) = self.grant_entry(gref) else {
            return GNTST_GENERAL_ERROR;
        };
        if e.flags != GTF_ACCEPT_TRANSFER || e.domid != self.boot.domid {
            return GNTST_GENERAL_ERROR;
        }
        // Back to the domain: the entry's frame is the PFN the guest wants it at.
        let f = self.frame(mfn);
        self.m.set_frame_info(mfn, f.with_released(false).0);
        let m2p = self.boot.m2p;
        if mfn < m2p.nr_frames * 512 {
            let _ = self.m.write_u64((m2p.first_mfn << 12) + 8 * mfn, u64::from(e.frame));
        }
        e.frame = mfn as u32;
        e.flags |= GTF_TRANSFER_COMMITTED | GTF_TRANSFER_COMPLETED;
        if self.m.write_phys(at, e.as_bytes()).is_err() {
            return GNTST_GENERAL_ERROR;
        }
        GNTST_OKAY
    }
}
