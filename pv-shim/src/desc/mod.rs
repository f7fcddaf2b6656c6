//! Descriptor tables (xen-pv-contract.md §3.2, §4.6; XEN `pv/descriptor-tables.c`):
//! `HYPERVISOR_set_gdt`, `HYPERVISOR_update_descriptor`, and the validation of descriptor
//! (`SegDesc`) frames that the [type machine](crate::mm::types) runs when a frame takes
//! that type.
//!
//! # How the guest's GDT reaches the CPU
//!
//! Xen maps the guest's GDT frames into the bottom 14 pages of a per-vCPU GDT area. The shim
//! instead **copies** them into the bottom 14 pages of its own GDT (the CPU's GDTR never
//! changes; its limit covers the reserved entries at 0xe000 and up):
//!
//! ```text
//!  shim GDT  page 0 .. nr_frames-1     : copies of the guest's frames (all 512 entries each)
//!            page nr_frames .. 13      : zero (not present)
//!            page 14..15 (0xe000..)    : the shim's reserved entries
//! ```
//!
//! The copy stays exact because a frame in the guest's GDT holds the `SegDesc` type for as
//! long as it is there, so it can never be mapped writable (the type machine refuses the
//! `Writable` type), and the one way left to change it, `update_descriptor`, writes the
//! frame and the copy together. Guest-visible behaviour is Xen's, except that the CPU sets
//! a descriptor's accessed bit in the copy, not in the guest's frame.
//!
//! # Loaded segment registers
//!
//! Changing the GDT does not touch the segment registers: as on hardware (and in Xen between
//! context switches), a loaded selector keeps its cached descriptor until it is reloaded. The
//! shim never reloads the guest's data segments itself except the user GS selector
//! (`SEGBASE_GS_USER_SEL`), which it checks against the live GDT first; a CS or SS that no
//! longer loads makes the return `iretq` fault, which becomes the guest's failsafe callback.

pub mod check;
pub mod ldt;

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm::frames::PageType;
use crate::mm::{self, PAGE_SIZE};
use crate::shim::Shim;
pub use check::check_descriptor;
use xen_abi::xen::{FIRST_RESERVED_GDT_ENTRY, FIRST_RESERVED_GDT_PAGE};
use xen_abi::Errno;
use zerocopy::IntoBytes;

/// Descriptors per frame.
pub const DESCS_PER_FRAME: usize = 512;
/// Frames a guest GDT may have (`FIRST_RESERVED_GDT_PAGE`).
pub const MAX_GDT_FRAMES: usize = FIRST_RESERVED_GDT_PAGE as usize;

/// The guest GDT of one vCPU (Xen's `gdt_frames` / `gdt_ents`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GdtState {
    /// Machine frames of the GDT; the first `nr_frames` hold a `SegDesc` type reference.
    pub frames: [u64; MAX_GDT_FRAMES],
    pub nr_frames: usize,
    /// The entry count the guest gave (`gdt_ents`).
    pub ents: u32,
}

impl GdtState {
    /// The frames in use.
    pub fn live(&self) -> &[u64] {
        &self.frames[..self.nr_frames.min(MAX_GDT_FRAMES)]
    }
}

pub(crate) fn read_frame<M: Machine>(m: &M, mfn: u64) -> [u64; DESCS_PER_FRAME] {
    let mut d = [0u64; DESCS_PER_FRAME];
    // An owned frame always lies in machine memory; an unreadable one reads as zeros.
    if m.read_phys(mfn << 12, d.as_mut_bytes()).is_err() {
        d = [0; DESCS_PER_FRAME];
    }
    d
}

impl<M: Machine> Shim<M> {
    /// Xen's `validate_segdesc_page`: every descriptor of `mfn` must pass
    /// [`check_descriptor`]; the fixed-up values are written back into the frame (on a
    /// refusal, those before the refused one, as Xen fixes them in place).
    pub(crate) fn validate_segdesc_page(&mut self, mfn: u64) -> Result<(), Errno> {
        let descs = read_frame(&self.m, mfn);
        let mut r = Ok(());
        for (i, &d) in descs.iter().enumerate() {
            match check_descriptor(d) {
                Some(fixed) if fixed != d => self.m.write_u64((mfn << 12) + 8 * i as u64, fixed)?,
                Some(_) => {}
                None => {
                    r = Err(Errno::EINVAL);
                    break;
                }
            }
        }
        r
    }

    /// Xen's `pv_set_gdt`: takes a `SegDesc` reference on each of `frames` (all or none),
    /// then drops the old GDT and installs the new one.
    pub fn set_gdt(&mut self, frames: &[u64], ents: u32) -> Result<(), Errno> {
        if ents > FIRST_RESERVED_GDT_ENTRY || frames.len() > MAX_GDT_FRAMES {
            return Err(Errno::EINVAL);
        }
        for (i, &mfn) in frames.iter().enumerate() {
            if self.get_page_and_type(mfn, PageType::SegDesc).is_err() {
                for &taken in frames[..i].iter().rev() {
                    self.put_page_and_type(taken);
                }
                return Err(Errno::EINVAL);
            }
        }
        let old = self.vcpu.gdt;
        for (i, &mfn) in frames.iter().enumerate() {
            let descs = read_frame(&self.m, mfn);
            self.m.write_gdt(i * DESCS_PER_FRAME, &descs);
        }
        for i in frames.len()..old.nr_frames {
            self.m.write_gdt(i * DESCS_PER_FRAME, &[0; DESCS_PER_FRAME]);
        }
        for &mfn in old.live() {
            self.put_page_and_type(mfn);
        }
        let mut new = GdtState { nr_frames: frames.len(), ents, ..GdtState::default() };
        new.frames[..frames.len()].copy_from_slice(frames);
        self.vcpu.gdt = new;
        Ok(())
    }

    /// Stores `d` (already checked) at `maddr` in a frame the caller holds a type reference
    /// on, and in the shim's copies wherever that frame is part of the GDT or mapped LDT.
    fn store_descriptor(&mut self, maddr: u64, d: u64) -> Result<(), Errno> {
        self.m.write_u64(maddr, d).map_err(|_| Errno::EINVAL)?;
        let (mfn, index) = (maddr >> 12, ((maddr & (PAGE_SIZE - 1)) / 8) as usize);
        let gdt = self.vcpu.gdt;
        for (i, _) in gdt.live().iter().enumerate().filter(|(_, &f)| f == mfn) {
            self.m.write_gdt(i * DESCS_PER_FRAME + index, &[d]);
        }
        self.ldt_store(mfn, index, d);
        Ok(())
    }
}

/// `HYPERVISOR_set_gdt(frame_list, entries)`: `entries` ≤ 7168, `ceil(entries / 512)` frame
/// numbers read from `frame_list` (-EFAULT), each validated as a descriptor frame that is not
/// mapped writable anywhere (-EINVAL, the old GDT kept). Flushes the TLB as Xen does.
pub fn set_gdt<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let (list, ents) = (a.0[0], a.0[1] as u32);
    if ents > FIRST_RESERVED_GDT_ENTRY {
        return Err(Errno::EINVAL);
    }
    let nr = (ents as usize).div_ceil(DESCS_PER_FRAME);
    let mut frames = [0u64; MAX_GDT_FRAMES];
    mm::copy_from_guest(&s.m, s.cr3(), list, frames[..nr].as_mut_bytes()).map_err(|_| Errno::EFAULT)?;
    s.set_gdt(&frames[..nr], ents)?;
    s.m.flush_tlb();
    Ok(0)
}

/// `HYPERVISOR_update_descriptor(maddr, desc)`: `maddr` 8-byte aligned in a frame of the
/// domain, `desc` accepted by [`check_descriptor`] and stored fixed up. A descriptor frame is
/// written under its `SegDesc` type, any other under a `Writable` one (so never a page
/// table). Every failure is -EINVAL, as in Xen.
pub fn update_descriptor<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let (maddr, desc) = (a.0[0], a.0[1]);
    if maddr % 8 != 0 {
        return Err(Errno::EINVAL);
    }
    let d = check_descriptor(desc).ok_or(Errno::EINVAL)?;
    let mfn = maddr >> 12;
    s.get_page(mfn)?;
    let t = match s.frame(mfn).current_type() {
        PageType::SegDesc => PageType::SegDesc,
        _ => PageType::Writable,
    };
    let r = s.get_page_type(mfn, t).and_then(|()| {
        let r = s.store_descriptor(maddr, d);
        s.put_page_type(mfn);
        r
    });
    s.put_page(mfn);
    r.map(|()| 0)
}

#[cfg(test)]
mod tests;
