//! The PV MMU hypercalls (xen-pv-contract.md §4.3–4.5): `mmu_update`, `update_va_mapping`
//! (and `_otherdomain`), `mmuext_op`, over the type machine of [`super::types`].
//!
//! Batches stop at the first failure and report how many requests completed through the
//! optional `done` pointer; every `BATCH` requests the hypercall continues itself with the
//! rest and `MMU_UPDATE_PREEMPTED` in the count, as Xen does at its preemption checks, and the
//! `done` count accumulates across the pieces.

use super::frames::PageType;
use super::{PADDR_MASK, PAGE_SIZE};
use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm;
use crate::shim::Shim;
use xen_abi::hypercall::{HYPERVISOR_MMUEXT_OP, HYPERVISOR_MMU_UPDATE};
use xen_abi::xen::*;
use xen_abi::Errno;

/// Requests handled before a batch continues itself.
pub const BATCH: u64 = 64;
/// Xen's `MMU_UPDATE_PREEMPTED`: set in the count of a continued batch.
pub const MMU_UPDATE_PREEMPTED: u64 = 1 << 31;
/// `DOMID_IO`.
const DOMID_IO: u16 = 0x7ff1;

impl<M: Machine> Shim<M> {
    /// Xen's `get_pg_owner` and XSM check for a domU: `Ok` for `DOMID_SELF` only. Naming
    /// itself by number is -ESRCH (Xen refuses it too), domain 0 and `DOMID_IO` exist but are
    /// not this domain's to manage (-EPERM), anything else does not exist (-ESRCH).
    fn pg_owner(&self, foreigndom: u16) -> Result<(), Errno> {
        match foreigndom {
            DOMID_SELF => Ok(()),
            0 | DOMID_IO => Err(Errno::EPERM),
            _ => Err(Errno::ESRCH),
        }
    }

    /// The machine frame of the L1 table that maps `va` in the current guest tables.
    fn l1_of(&self, va: u64) -> Option<u64> {
        if !mm::guest_range_ok(va, 1) {
            return None;
        }
        let mut table = self.cr3() & PADDR_MASK;
        for level in (2..=4).rev() {
            let e = self.m.read_u64(table + 8 * mm::table_index(va, level) as u64).ok()?;
            if e & mm::_PAGE_PRESENT == 0 || e & mm::_PAGE_PSE != 0 {
                return None;
            }
            table = e & PADDR_MASK;
        }
        Some(table >> 12)
    }

    /// `MMU_NORMAL_PT_UPDATE` / `MMU_PT_UPDATE_PRESERVE_AD` / `MMU_PT_UPDATE_NO_TRANSLATE`
    /// (the same as normal for a PV domain): the entry at machine address `ptr`.
    pub(crate) fn pt_update(&mut self, ptr: u64, val: u64, preserve_ad: bool) -> Result<(), Errno> {
        let mfn = ptr >> 12;
        let index = ((ptr & (PAGE_SIZE - 1)) / 8) as usize;
        self.get_page(mfn)?;
        let r = match self.frame(mfn).current_type() {
            t @ (PageType::L1 | PageType::L2 | PageType::L3 | PageType::L4) => {
                let level = t.level().unwrap_or(1);
                self.mod_entry(mfn, level, index, val, preserve_ad)
            }
            PageType::SegDesc => Err(Errno::EINVAL),
            PageType::None | PageType::Writable => match self.get_page_type(mfn, PageType::Writable) {
                Ok(()) => {
                    let r = self.m.write_u64(ptr & !7, val).map_err(|_| Errno::EINVAL);
                    self.put_page_type(mfn);
                    r
                }
                Err(e) => Err(e),
            },
        };
        self.put_page(mfn);
        r
    }

    /// `MMU_MACHPHYS_UPDATE`: `m2p[mfn] = pfn` for a frame the domain owns.
    fn machphys_update(&mut self, mfn: u64, pfn: u64) -> Result<(), Errno> {
        self.get_page(mfn)?;
        let at = (self.boot.m2p.first_mfn << 12) + 8 * mfn;
        let r = if mfn < self.boot.m2p.nr_frames * 512 {
            self.m.write_u64(at, pfn).map_err(|_| Errno::EINVAL)
        } else {
            Err(Errno::EINVAL)
        };
        self.put_page(mfn);
        r
    }

    /// Reads a vCPU bitmap at guest `ptr` (the `vcpumask` of the `_MULTI` flushes): whether
    /// it names vCPU 0, the only one.
    fn vcpumask_has_self(&self, ptr: u64) -> Result<bool, Errno> {
        let mut b = [0u8; 8];
        mm::copy_from_guest(&self.m, self.cr3(), ptr, &mut b)?;
        Ok(b[0] & 1 != 0)
    }

    /// `MMUEXT_NEW_BASEPTR` (Xen's `new_guest_cr3`): validates `mfn` as an L4 if it is not
    /// one already, makes it the kernel table, reloads CR3 (a full flush) and releases the old.
    pub fn new_baseptr(&mut self, mfn: u64) -> Result<(), Errno> {
        let old = self.vcpu.guest_table >> 12;
        if old == mfn {
            self.load_cr3(self.cr3());
            return Ok(());
        }
        self.get_page_and_type(mfn, PageType::L4)?;
        // Xen's new_guest_cr3: the LDT pages were found through the old tables.
        self.destroy_ldt();
        self.vcpu.guest_table = mfn << 12;
        self.load_cr3(self.cr3());
        if old != 0 {
            self.put_page_and_type(old);
        }
        Ok(())
    }

    /// `MMUEXT_NEW_USER_BASEPTR`: the L4 used in guest user mode; 0 removes it.
    fn new_user_baseptr(&mut self, mfn: u64) -> Result<(), Errno> {
        let old = self.vcpu.guest_table_user >> 12;
        if old == mfn {
            return Ok(());
        }
        if mfn != 0 {
            self.get_page_and_type(mfn, PageType::L4)?;
        }
        self.vcpu.guest_table_user = mfn << 12;
        if !self.vcpu.kernel_mode {
            self.load_cr3(self.cr3());
        }
        if old != 0 {
            self.put_page_and_type(old);
        }
        Ok(())
    }

    pub(crate) fn mmuext_one(&mut self, op: &MmuextOp) -> Result<(), Errno> {
        match op.cmd {
            MMUEXT_PIN_L1_TABLE..=MMUEXT_PIN_L4_TABLE => {
                let level = op.cmd - MMUEXT_PIN_L1_TABLE + 1;
                self.pin_table(op.arg1, PageType::table(level))
            }
            MMUEXT_UNPIN_TABLE => self.unpin_table(op.arg1),
            MMUEXT_NEW_BASEPTR => self.new_baseptr(op.arg1),
            MMUEXT_NEW_USER_BASEPTR => self.new_user_baseptr(op.arg1),
            MMUEXT_TLB_FLUSH_LOCAL | MMUEXT_TLB_FLUSH_ALL => {
                self.flush_tlb();
                Ok(())
            }
            MMUEXT_INVLPG_LOCAL => {
                self.m.invlpg(op.arg1);
                Ok(())
            }
            MMUEXT_INVLPG_ALL => {
                if mm::guest_range_ok(op.arg1, 1) {
                    self.m.invlpg(op.arg1);
                }
                Ok(())
            }
            MMUEXT_TLB_FLUSH_MULTI | MMUEXT_INVLPG_MULTI => {
                let me = self.vcpumask_has_self(op.arg2).map_err(|_| Errno::EINVAL)?;
                if me {
                    if op.cmd == MMUEXT_TLB_FLUSH_MULTI {
                        self.flush_tlb();
                    } else if mm::guest_range_ok(op.arg1, 1) {
                        self.m.invlpg(op.arg1);
                    }
                }
                Ok(())
            }
            // A domU has no cache-flush permission.
            MMUEXT_FLUSH_CACHE => Err(Errno::EACCES),
            MMUEXT_FLUSH_CACHE_GLOBAL => Err(Errno::EINVAL),
            MMUEXT_SET_LDT => self.set_ldt(op.arg1, op.arg2 as u32),
            MMUEXT_CLEAR_PAGE => {
                let mfn = op.arg1;
                self.get_page_and_type(mfn, PageType::Writable)?;
                let r = self.m.write_phys(mfn << 12, &[0u8; PAGE_SIZE as usize]).map_err(|_| Errno::EINVAL);
                self.put_page_and_type(mfn);
                r
            }
            MMUEXT_COPY_PAGE => {
                let (dst, src) = (op.arg1, op.arg2);
                self.get_page(src)?;
                if let Err(e) = self.get_page_and_type(dst, PageType::Writable) {
                    self.put_page(src);
                    return Err(e);
                }
                let mut buf = [0u8; PAGE_SIZE as usize];
                let r = self
                    .m
                    .read_phys(src << 12, &mut buf)
                    .and_then(|()| self.m.write_phys(dst << 12, &buf))
                    .map_err(|_| Errno::EINVAL);
                self.put_page_and_type(dst);
                self.put_page(src);
                r
            }
            MMUEXT_MARK_SUPER | MMUEXT_UNMARK_SUPER => Err(Errno::EOPNOTSUPP),
            _ => Err(Errno::ENOSYS),
        }
    }

    /// `MMUEXT_SET_LDT`: a page-aligned guest address and at most 8192 entries. A different
    /// LDT releases the pages of the old one; the new one is loaded lazily, a page at a time,
    /// when a selector first uses it (`desc::ldt`).
    fn set_ldt(&mut self, base: u64, ents: u32) -> Result<(), Errno> {
        let base = if ents != 0 { base } else { 0 };
        if base & (PAGE_SIZE - 1) != 0 || !mm::guest_range_ok(base, 1) || ents > 8192 {
            return Err(Errno::EINVAL);
        }
        if self.vcpu.ldt != (base, ents) {
            self.destroy_ldt();
            self.vcpu.ldt = (base, ents);
            self.flush_tlb();
        }
        Ok(())
    }
}

/// Reads the running done count of a continued batch, and strips the flag from `count`.
fn resume_count<M: Machine>(s: &Shim<M>, count: u64, pdone: u64) -> (u64, u32) {
    if count & MMU_UPDATE_PREEMPTED == 0 {
        return (count, 0);
    }
    let mut done = [0u8; 4];
    if pdone != 0 {
        let _ = mm::copy_from_guest(&s.m, s.cr3(), pdone, &mut done);
    }
    (count & !MMU_UPDATE_PREEMPTED, u32::from_le_bytes(done))
}

/// Runs a batch of `count` requests of `size` bytes at `reqs`: `one` handles one request.
/// Continues itself every [`BATCH`]; reports the accumulated done count at `pdone`.
fn batch<M: Machine, T: zerocopy::FromBytes + zerocopy::IntoBytes>(
    s: &mut Shim<M>,
    nr: u64,
    a: Args,
    mut one: impl FnMut(&mut Shim<M>, &T) -> Result<(), Errno>,
) -> Result<u64, Errno> {
    let (reqs, pdone, foreigndom) = (a.0[0], a.0[2], a.0[3]);
    let (count, done_before) = resume_count(s, a.0[1] & 0xffff_ffff, pdone);
    let size = core::mem::size_of::<T>() as u64;
    if !mm::guest_range_ok(reqs, count.saturating_mul(size)) {
        return Err(Errno::EFAULT);
    }
    // mmuext_op checks the owner up front; mmu_update at its first request.
    if nr == HYPERVISOR_MMUEXT_OP || count > 0 {
        s.pg_owner(foreigndom as u16)?;
    }
    let mut i = 0u64;
    let mut rc = Ok(0);
    while i < count {
        if i == BATCH {
            s.continue_hypercall(
                nr,
                [reqs + i * size, (count - i) | MMU_UPDATE_PREEMPTED, pdone, foreigndom, 0, 0],
            );
            break;
        }
        let mut req = T::new_zeroed();
        if let Err(e) = mm::copy_from_guest(&s.m, s.cr3(), reqs + i * size, req.as_mut_bytes()) {
            rc = Err(e);
            break;
        }
        if let Err(e) = one(s, &req) {
            rc = Err(e);
            break;
        }
        i += 1;
    }
    if pdone != 0 {
        let d = done_before.wrapping_add(i as u32);
        s.copy_to_guest(pdone, &d.to_le_bytes())?;
    }
    rc
}

/// `HYPERVISOR_mmu_update(reqs, count, done, foreigndom)`.
pub fn mmu_update<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    // The upper 16 bits of foreigndom name the page-table owner (plus one): only this domain.
    let pt_dom = (a.0[3] >> 16) & 0xffff;
    let count = a.0[1] & 0xffff_ffff & !MMU_UPDATE_PREEMPTED;
    if !mm::guest_range_ok(a.0[0], count.saturating_mul(16)) {
        return Err(Errno::EFAULT);
    }
    if pt_dom != 0 && pt_dom - 1 != u64::from(s.boot.domid) {
        return Err(if pt_dom == 1 { Errno::EPERM } else { Errno::ESRCH });
    }
    let a = Args([a.0[0], a.0[1], a.0[2], a.0[3] & 0xffff, a.0[4], a.0[5]]);
    batch(s, HYPERVISOR_MMU_UPDATE, a, |s, req: &MmuUpdate| {
        let cmd = req.ptr & 7;
        let ptr = req.ptr & !7;
        match cmd {
            MMU_NORMAL_PT_UPDATE | MMU_PT_UPDATE_NO_TRANSLATE => s.pt_update(ptr, req.val, false),
            MMU_PT_UPDATE_PRESERVE_AD => s.pt_update(ptr, req.val, true),
            MMU_MACHPHYS_UPDATE => s.machphys_update(ptr >> 12, req.val),
            _ => Err(Errno::ENOSYS),
        }
    })
}

/// `HYPERVISOR_mmuext_op(ops, count, done, foreigndom)`.
pub fn mmuext_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    batch(s, HYPERVISOR_MMUEXT_OP, a, |s, op: &MmuextOp| s.mmuext_one(op))
}

/// `HYPERVISOR_update_va_mapping(va, pte, flags)`: the L1 entry mapping `va` in the current
/// tables, then the flush `flags` ask for (`UVMF_LOCAL`, `UVMF_ALL`, or a vCPU bitmap
/// pointer for `UVMF_MULTI`).
pub fn update_va_mapping<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let (va, pte, flags) = (a.0[0], a.0[1], a.0[2]);
    let l1 = s.l1_of(va).ok_or(Errno::EINVAL)?;
    if !s.owned(l1) || s.frame(l1).current_type() != PageType::L1 {
        return Err(Errno::EINVAL);
    }
    s.mod_entry(l1, 1, mm::table_index(va, 1), pte, false)?;
    let kind = flags & UVMF_FLUSHTYPE_MASK;
    if kind == UVMF_NONE {
        return Ok(0);
    }
    let me = match flags & !UVMF_FLUSHTYPE_MASK {
        UVMF_LOCAL | UVMF_ALL => true,
        ptr => s.vcpumask_has_self(ptr)?,
    };
    match kind {
        UVMF_TLB_FLUSH if me => s.flush_tlb(),
        UVMF_INVLPG if me => s.m.invlpg(va),
        _ => {}
    }
    Ok(0)
}

/// `HYPERVISOR_update_va_mapping_otherdomain(va, pte, flags, domid)`: only this domain's
/// own tables, as `DOMID_SELF`.
pub fn update_va_mapping_otherdomain<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    s.pg_owner(a.0[3] as u16)?;
    update_va_mapping(s, a)
}
