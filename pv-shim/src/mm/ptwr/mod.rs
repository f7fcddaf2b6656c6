//! Writable page tables (xen-pv-contract.md §3.12; Xen `pv/ro-page-fault.c`:
//! `pv_ro_page_fault`, `ptwr_do_page_fault`, `ptwr_emulated_update`, and the conditions of
//! `fixup_page_fault` in `traps.c`).
//!
//! # Theory
//!
//! A validated L1 table is never writable-mapped, so a guest that has enabled
//! `VMASST_TYPE_writable_pagetables` and stores straight into one of its PTEs takes a #PF.
//! The shim finishes that store for it, as if the page were writable, but through the same
//! checks as `mmu_update`:
//!
//! ```text
//!  #PF, guest kernel mode, error code P|W (no RSVD, no I/D), VM assist on
//!   └─ L1 entry mapping CR2 (current tables): present, read-only, its frame the domain's
//!      and typed L1 ──────────────────────────────────────── else: the #PF goes to the guest
//!       └─ decode the instruction at rip (yaxpeax) ─────────── not a store we know: #PF
//!           └─ its operand: ≤ 8 bytes, naturally aligned, in CR2's page ─ else: #PF
//!               └─ old entry ─► execute ─► new entry (sub-word stores merged into the
//!                  8-byte entry) ─► mod_entry (check, reference, adjust; refused: #PF,
//!                  nothing changed) ─► registers, flags, rip as the CPU would leave them
//! ```
//!
//! A refused entry is Xen's `X86EMUL_UNHANDLEABLE`: the original #PF (same CR2, same error
//! code) is delivered to the guest, registers untouched. Writes to read-only L2-L4 pages are
//! never emulated. Nothing is flushed: the guest flushes its own TLB, as on Xen.
//!
//! With one vCPU nothing can change the entry between the read and the update, so the locked
//! read-modify-write forms need no retry loop: the compare of `cmpxchg` is against the entry
//! as read.

pub mod insn;

#[cfg(any(test, feature = "testutil"))]
pub mod fuzz;

use super::frames::PageType;
use super::{_PAGE_PRESENT, _PAGE_PSE, _PAGE_RW, PADDR_MASK, PAGE_SIZE};
use crate::emul::{self, Emulated, MAX_INSN_LEN};
use crate::guest::GuestRegs;
use crate::machine::{Machine, MSR_FS_BASE, MSR_GS_BASE};
use crate::shim::Shim;
use insn::{decode_store, execute, width_mask, DecodeFail, SegBases};
use xen_abi::hostcall::EmulKind;
use xen_abi::xen::VMASST_TYPE_WRITABLE_PAGETABLES;

/// #PF error code bits (`PFEC_*`).
pub const PFEC_PAGE_PRESENT: u64 = 1 << 0;
pub const PFEC_WRITE_ACCESS: u64 = 1 << 1;
pub const PFEC_RESERVED_BIT: u64 = 1 << 3;
pub const PFEC_INSN_FETCH: u64 = 1 << 4;

impl<M: Machine> Shim<M> {
    /// The L1 entry that maps `va` in the current tables (Xen's `guest_get_eff_kern_l1e`,
    /// without the upper levels' permissions), and the L1 frame holding it.
    fn l1e_of(&self, va: u64) -> Option<u64> {
        if !super::guest_range_ok(va, 1) {
            return None;
        }
        let mut table = self.cr3() & PADDR_MASK;
        for level in (2..=4).rev() {
            let e = self.m.read_u64(table + 8 * super::table_index(va, level) as u64).ok()?;
            if e & _PAGE_PRESENT == 0 || e & _PAGE_PSE != 0 {
                return None;
            }
            table = e & PADDR_MASK;
        }
        self.m.read_u64(table + 8 * super::table_index(va, 1) as u64).ok()
    }

    /// A #PF from the guest that may be a direct write to one of its L1 tables: `Some` when
    /// the shim handled it (the store done, or a fault raised while emulating), `None` when
    /// the original #PF must go to the guest.
    pub fn ptwr_page_fault(&mut self, regs: &mut GuestRegs, cr2: u64) -> Option<Emulated> {
        let ec = regs.error_code;
        if self.vm_assist & (1 << VMASST_TYPE_WRITABLE_PAGETABLES) == 0
            || !self.vcpu.kernel_mode
            || ec & (PFEC_RESERVED_BIT | PFEC_INSN_FETCH) != 0
            || ec & (PFEC_WRITE_ACCESS | PFEC_PAGE_PRESENT) != (PFEC_WRITE_ACCESS | PFEC_PAGE_PRESENT)
        {
            return None;
        }
        let pte = self.l1e_of(cr2)?;
        if pte & (_PAGE_PRESENT | _PAGE_RW) != _PAGE_PRESENT {
            return None;
        }
        let l1 = (pte & PADDR_MASK) >> 12;
        if !self.owned(l1) || self.frame(l1).current_type() != PageType::L1 {
            return None;
        }

        let mut bytes = [0u8; MAX_INSN_LEN];
        let got = emul::fetch(self, regs.rip, &mut bytes);
        let seg = SegBases { fs: self.m.read_msr(MSR_FS_BASE), gs: self.m.read_msr(MSR_GS_BASE) };
        let st = match decode_store(&bytes[..got], regs, seg) {
            Ok(st) => st,
            Err(DecodeFail::Truncated) if got < MAX_INSN_LEN => {
                // Xen's ptwr_emulated_insn_fetch: the instruction runs into an unmapped page.
                return Some(Emulated::PageFault {
                    addr: regs.rip.wrapping_add(got as u64),
                    error_code: PFEC_INSN_FETCH as u32,
                });
            }
            Err(_) => return None,
        };
        // Only naturally aligned stores inside the faulting page.
        let size = u64::from(st.size);
        if (st.addr ^ cr2) & !(PAGE_SIZE - 1) != 0 || st.addr & (size - 1) != 0 {
            return None;
        }
        let off = st.addr & (PAGE_SIZE - 1);
        let shift = (off & 7) * 8;
        let mask = width_mask(st.size);
        let full = self.m.read_u64((l1 << 12) + (off & !7)).ok()?;
        let mut r = *regs;
        if let Some(new) = execute(&st, &mut r, (full >> shift) & mask) {
            let new_full = (full & !(mask << shift)) | ((new & mask) << shift);
            self.mod_entry(l1, 1, (off / 8) as usize, new_full, false).ok()?;
        }
        *regs = r;
        if let Some(c) = self.m.stats().emulated.get_mut(EmulKind::PtWrite as usize) {
            *c += 1;
        }
        Some(emul::instruction_done(self, regs, u64::from(st.len)))
    }
}

#[cfg(test)]
mod tests;
