//! Guest page tables as the shim reads them: software walks for `copy_{from,to}_guest` (the
//! only door to guest pointers) and adoption of the domain builder's initial tables.
//!
//! The guest's page tables are the hardware page tables (direct paging, as in Xen PV): every
//! entry holds a machine address. The shim owns L4 slots 256..=271 (Xen's hypervisor hole) of
//! every L4 it loads, and forces `_PAGE_USER` into every present guest entry, because the guest
//! kernel runs at CPL3 (xen-pv-contract.md §3.1). Page-type tracking and full validation
//! (Xen's `mm.c` rules) come with the PV MMU.

use crate::machine::Machine;
use xen_abi::hostcall::{BootInfo, MAX_RAM_RANGES};
use xen_abi::xen::{HYPERVISOR_L4_FIRST, HYPERVISOR_L4_LAST, HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};
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

    /// True when the domain may map `mfn` with an L1 entry.
    pub fn may_map(&self, mfn: u64) -> bool {
        self.is_ram(mfn) || mfn == self.shared_info_mfn
    }
}

/// Why the initial page tables were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdoptError {
    /// An entry at `level` points at a frame the domain does not own.
    ForeignFrame { level: u32, mfn: u64 },
    /// A superpage entry at `level` (PV guests use 4 KiB pages only).
    Superpage { level: u32 },
    /// The tables could not be read.
    Unreadable,
    /// More page-table pages than the domain has RAM: a loop.
    TooManyTables,
}

/// Adopts the domain builder's initial page tables rooted at the L4 `l4_mfn`: checks that every
/// present entry points at a frame the domain owns and forces `_PAGE_USER` as 64-bit Xen does
/// (L4 entries also get `_PAGE_ACCESSED`; L1 kernel mappings are tagged `_PAGE_GUEST_KERNEL`),
/// then writes the shim's own hypervisor-hole entries `hole` into slots 256..=271.
pub fn adopt_initial_tables<M: Machine>(
    m: &mut M,
    own: &Ownership,
    l4_mfn: u64,
    hole: &[u64; HYPERVISOR_L4_LAST - HYPERVISOR_L4_FIRST + 1],
) -> Result<(), AdoptError> {
    if !own.is_ram(l4_mfn) {
        return Err(AdoptError::ForeignFrame { level: 4, mfn: l4_mfn });
    }
    // A tree of tables visits each table once; anything beyond the domain's size is a cycle.
    let mut budget: u64 = own.ram[..own.nr_ram].iter().map(|r| r.nr_frames).sum();
    adopt_table(m, own, l4_mfn, 4, &mut budget)?;
    let l4 = l4_mfn << 12;
    for (i, e) in hole.iter().enumerate() {
        m.write_u64(l4 + 8 * (HYPERVISOR_L4_FIRST + i) as u64, *e).map_err(|_| AdoptError::Unreadable)?;
    }
    Ok(())
}

fn adopt_table<M: Machine>(
    m: &mut M,
    own: &Ownership,
    mfn: u64,
    level: u32,
    budget: &mut u64,
) -> Result<(), AdoptError> {
    *budget = budget.checked_sub(1).ok_or(AdoptError::TooManyTables)?;
    let base = mfn << 12;
    for i in 0..512usize {
        if level == 4 && (HYPERVISOR_L4_FIRST..=HYPERVISOR_L4_LAST).contains(&i) {
            continue; // overwritten with the shim's entries
        }
        let addr = base + 8 * i as u64;
        let e = m.read_u64(addr).map_err(|_| AdoptError::Unreadable)?;
        if e & _PAGE_PRESENT == 0 {
            continue;
        }
        let target = (e & PADDR_MASK) >> 12;
        if level > 1 && e & _PAGE_PSE != 0 {
            return Err(AdoptError::Superpage { level });
        }
        let ok = if level == 1 { own.may_map(target) } else { own.is_ram(target) };
        if !ok {
            return Err(AdoptError::ForeignFrame { level, mfn: target });
        }
        let adjusted = match level {
            1 if e & _PAGE_USER == 0 => e | _PAGE_USER | _PAGE_GUEST_KERNEL,
            1 => e,
            4 => e | _PAGE_USER | _PAGE_ACCESSED,
            _ => e | _PAGE_USER,
        };
        if adjusted != e {
            m.write_u64(addr, adjusted).map_err(|_| AdoptError::Unreadable)?;
        }
        if level > 1 {
            adopt_table(m, own, target, level - 1, budget)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::MockMachine;

    /// Maps VA 0xffffffff80000000 + i*4K -> frames 10+i with a 4-level chain in frames 1..=4.
    fn small_tables(m: &mut MockMachine) -> u64 {
        let va = 0xffff_ffff_8000_0000u64;
        let (l4, l3, l2, l1) = (1u64, 2u64, 3u64, 4u64);
        m.write_u64((l4 << 12) + 8 * table_index(va, 4) as u64, (l3 << 12) | 0x67).unwrap();
        m.write_u64((l3 << 12) + 8 * table_index(va, 3) as u64, (l2 << 12) | 0x67).unwrap();
        m.write_u64((l2 << 12) + 8 * table_index(va, 2) as u64, (l1 << 12) | 0x67).unwrap();
        for i in 0..4u64 {
            m.write_u64((l1 << 12) + 8 * i, ((10 + i) << 12) | 0x23).unwrap();
        }
        // A read-only page at index 4.
        m.write_u64((l1 << 12) + 8 * 4, (14u64 << 12) | 0x21).unwrap();
        l4
    }

    fn own_all(m: &MockMachine) -> Ownership {
        let mut b = crate::testutil::boot_info(m.frames());
        b.shared_info_mfn = 0x7777;
        Ownership::from_boot(&b)
    }

    #[test]
    fn adopt_forces_user_and_installs_hole() {
        let mut m = MockMachine::new(64);
        let l4 = small_tables(&mut m);
        let hole = [0xdead_0000_0067u64; 16];
        {
            let own = own_all(&m);
            adopt_initial_tables(&mut m, &own, l4, &hole)
        }
        .unwrap();
        let va = 0xffff_ffff_8000_0000u64;
        let l1e = m.read_u64(4 << 12).unwrap();
        assert_eq!(l1e & (_PAGE_USER | _PAGE_GUEST_KERNEL), _PAGE_USER | _PAGE_GUEST_KERNEL);
        let l4e = m.read_u64((l4 << 12) + 8 * table_index(va, 4) as u64).unwrap();
        assert_eq!(l4e & (_PAGE_USER | _PAGE_ACCESSED), _PAGE_USER | _PAGE_ACCESSED);
        assert_eq!(m.read_u64((l4 << 12) + 8 * 256).unwrap(), 0xdead_0000_0067);
        assert_eq!(m.read_u64((l4 << 12) + 8 * 271).unwrap(), 0xdead_0000_0067);
        // Translation now works for CPL3 reads; writes to the read-only page fail.
        assert_eq!(translate(&m, l4 << 12, va + 0x1234, false), Ok((11 << 12) | 0x234));
        assert_eq!(translate(&m, l4 << 12, va + 4 * 4096, true), Err(Errno::EFAULT));
        assert!(translate(&m, l4 << 12, va + 4 * 4096, false).is_ok());
    }

    #[test]
    fn adopt_rejects_foreign_frames_and_superpages() {
        let mut m = MockMachine::new(64);
        let l4 = small_tables(&mut m);
        m.write_u64((4 << 12) + 8 * 7, (0x9999u64 << 12) | 0x23).unwrap();
        let hole = [0u64; 16];
        assert_eq!(
            {
                let own = own_all(&m);
                adopt_initial_tables(&mut m, &own, l4, &hole)
            },
            Err(AdoptError::ForeignFrame { level: 1, mfn: 0x9999 })
        );
        let mut m = MockMachine::new(64);
        let l4 = small_tables(&mut m);
        m.write_u64((3 << 12) + 8 * 9, (20u64 << 12) | 0xe7).unwrap();
        assert_eq!(
            {
                let own = own_all(&m);
                adopt_initial_tables(&mut m, &own, l4, &hole)
            },
            Err(AdoptError::Superpage { level: 2 })
        );
    }

    #[test]
    fn adopt_terminates_on_self_referencing_tables() {
        let mut m = MockMachine::new(8);
        // L4 slot 0 points at itself: a "linear" loop that would recurse forever if unchecked.
        m.write_u64(1 << 12, (1u64 << 12) | 0x67).unwrap();
        let r = {
            let own = own_all(&m);
            adopt_initial_tables(&mut m, &own, 1, &[0; 16])
        };
        assert!(r.is_ok() || r == Err(AdoptError::TooManyTables));
    }

    #[test]
    fn copies_refuse_the_hypervisor_hole_and_noncanonical_pointers() {
        let mut m = MockMachine::new(64);
        let l4 = small_tables(&mut m) << 12;
        let mut buf = [0u8; 8];
        assert_eq!(copy_from_guest(&m, l4, 0xffff_8000_0000_0000, &mut buf), Err(Errno::EFAULT));
        assert_eq!(copy_from_guest(&m, l4, 0x0000_8000_0000_0000, &mut buf), Err(Errno::EFAULT));
        assert_eq!(copy_from_guest(&m, l4, u64::MAX - 3, &mut buf), Err(Errno::EFAULT));
        assert!(!guest_range_ok(0x7fff_ffff_fff0, 0x20));
    }

    #[test]
    fn copy_crosses_pages() {
        let mut m = MockMachine::new(64);
        let l4 = small_tables(&mut m);
        {
            let own = own_all(&m);
            adopt_initial_tables(&mut m, &own, l4, &[0; 16])
        }
        .unwrap();
        let va = 0xffff_ffff_8000_0000u64 + 4096 - 3;
        copy_to_guest(&mut m, l4 << 12, va, b"abcdef").unwrap();
        let mut out = [0u8; 6];
        copy_from_guest(&m, l4 << 12, va, &mut out).unwrap();
        assert_eq!(&out, b"abcdef");
        assert_eq!(
            m.read_u64(11 << 12).unwrap() & 0xff_ffff,
            u64::from_le_bytes(*b"def\0\0\0\0\0") & 0xff_ffff
        );
    }
}
