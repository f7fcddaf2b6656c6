//! The PV MMU: guest page tables as the shim reads them (software walks for
//! `copy_{from,to}_guest`, the only door to guest pointers), the [frame table](frames), the
//! [page-type machine](types) and the [MMU hypercalls](ops).
//!
//! The guest's page tables are the hardware page tables (direct paging, as in Xen PV): every
//! entry holds a machine address. The shim owns L4 slots 256..=271 (Xen's hypervisor hole) of
//! every L4 it validates, and forces `_PAGE_USER` into every present guest entry, because the
//! guest kernel runs at CPL3 (xen-pv-contract.md §3.1).

#[cfg(any(test, feature = "testutil"))]
pub mod check;
pub mod frames;
#[cfg(any(test, feature = "testutil"))]
pub mod fuzz;
pub mod memory_op;
pub mod ops;
pub mod ptwr;
pub mod types;

use crate::machine::Machine;
use xen_abi::hostcall::{BootInfo, MAX_RAM_RANGES};
use xen_abi::xen::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};
use xen_abi::Errno;

pub const PAGE_SIZE: u64 = 4096;
pub const _PAGE_PRESENT: u64 = 1 << 0;
pub const _PAGE_RW: u64 = 1 << 1;
pub const _PAGE_USER: u64 = 1 << 2;
pub const _PAGE_PWT: u64 = 1 << 3;
pub const _PAGE_PCD: u64 = 1 << 4;
pub const _PAGE_ACCESSED: u64 = 1 << 5;
pub const _PAGE_DIRTY: u64 = 1 << 6;
pub const _PAGE_PSE: u64 = 1 << 7;
pub const _PAGE_GLOBAL: u64 = 1 << 8;
/// Xen's software bit 52: a guest-kernel mapping that Xen made user-accessible.
pub const _PAGE_GUEST_KERNEL: u64 = 1 << 52;
pub const _PAGE_NX: u64 = 1 << 63;
/// Machine-address bits of an entry (bits 12..51).
pub const PADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Index of `va` in the page table of `level` (1 = L1 .. 4 = L4).
pub fn table_index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 511) as usize
}

/// True for a canonical 48-bit virtual address.
pub fn is_canonical(va: u64) -> bool {
    ((va as i64) << 16 >> 16) as u64 == va
}

/// Xen's `access_ok`: a guest pointer range must be canonical and stay clear of the hypervisor
/// hole.
pub fn guest_range_ok(va: u64, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let Some(last) = va.checked_add(len - 1) else {
        return false;
    };
    is_canonical(va)
        && is_canonical(last)
        && (va >> 47 == last >> 47)
        && !(va < HYPERVISOR_VIRT_END && last >= HYPERVISOR_VIRT_START)
}

/// Translates guest-virtual `va` through the L4 at machine address `l4`, as the MMU would for a
/// CPL3 access (`write` asks for a writable mapping). Returns the machine address of `va`.
pub fn translate<M: Machine>(m: &M, l4: u64, va: u64, write: bool) -> Result<u64, Errno> {
    if !guest_range_ok(va, 1) {
        return Err(Errno::EFAULT);
    }
    let mut table = l4 & PADDR_MASK;
    for level in (1..=4).rev() {
        let e = m.read_u64(table + 8 * table_index(va, level) as u64)?;
        if e & _PAGE_PRESENT == 0 || e & _PAGE_USER == 0 || (write && e & _PAGE_RW == 0) {
            return Err(Errno::EFAULT);
        }
        if level > 1 && e & _PAGE_PSE != 0 {
            // PV guests never get superpages; the shim does not follow them.
            return Err(Errno::EFAULT);
        }
        table = e & PADDR_MASK;
    }
    Ok(table | (va & (PAGE_SIZE - 1)))
}

/// Splits `[va, va + len)` into `(va, offset, n)` pieces that do not cross a page boundary.
fn page_chunks(va: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut done = 0usize;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let cur = va.wrapping_add(done as u64);
        let n = ((PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize).min(len - done);
        let piece = (cur, done, n);
        done += n;
        Some(piece)
    })
}

/// Copies guest memory at `va` (through the L4 `cr3`) into `buf`, page by page.
pub fn copy_from_guest<M: Machine>(m: &M, cr3: u64, va: u64, buf: &mut [u8]) -> Result<(), Errno> {
    if !guest_range_ok(va, buf.len() as u64) {
        return Err(Errno::EFAULT);
    }
    for (cur, off, n) in page_chunks(va, buf.len()) {
        let maddr = translate(m, cr3, cur, false)?;
        m.read_phys(maddr, &mut buf[off..off + n])?;
    }
    Ok(())
}

/// Copies `buf` to guest memory at `va` (through the L4 `cr3`), page by page; every page
/// must be mapped writable.
pub fn copy_to_guest<M: Machine>(m: &mut M, cr3: u64, va: u64, buf: &[u8]) -> Result<(), Errno> {
    if !guest_range_ok(va, buf.len() as u64) {
        return Err(Errno::EFAULT);
    }
    for (cur, off, n) in page_chunks(va, buf.len()) {
        let maddr = translate(m, cr3, cur, true)?;
        m.write_phys(maddr, &buf[off..off + n])?;
    }
    Ok(())
}

/// Reads a plain-data struct from guest memory.
pub fn read_guest<M: Machine, T: zerocopy::FromBytes + zerocopy::IntoBytes>(
    m: &M,
    cr3: u64,
    va: u64,
) -> Result<T, Errno> {
    let mut v = T::new_zeroed();
    copy_from_guest(m, cr3, va, v.as_mut_bytes())?;
    Ok(v)
}

/// Which machine frames the domain may map: its RAM and its shared_info frame.
#[derive(Clone, Copy, Debug)]
pub struct Ownership {
    ram: [xen_abi::hostcall::MfnRange; MAX_RAM_RANGES],
    nr_ram: usize,
    shared_info_mfn: u64,
}

impl Ownership {
    pub fn from_boot(b: &BootInfo) -> Ownership {
        Ownership {
            ram: b.ram,
            nr_ram: (b.nr_ram_ranges as usize).min(MAX_RAM_RANGES),
            shared_info_mfn: b.shared_info_mfn,
        }
    }

    /// True when `mfn` is the domain's RAM.
    pub fn is_ram(&self, mfn: u64) -> bool {
        self.ram[..self.nr_ram].iter().any(|r| r.contains(mfn))
    }

    /// The shared_info frame (outside RAM, mappable by the domain).
    pub fn shared_info_mfn(&self) -> u64 {
        self.shared_info_mfn
    }
}

#[cfg(test)]
mod tests;
