//! Guest RAM mapped by xenvmm itself, so that KVM can back it with 2 MiB pages: each region is
//! placed in this process at an address congruent to its guest-physical address modulo 2 MiB,
//! and transparent huge pages are asked for (`MADV_HUGEPAGE`). KVM maps a guest range with a
//! 2 MiB nested-page entry only where the host has a huge page at the same offset; with
//! vm-memory's own 4 KiB-aligned `mmap` it takes one nested page fault per 4 KiB the guest
//! touches (a Debian boot touched ~54,000; QEMU, which aligns its RAM, took ~1,500).
//!
//! Where the host has transparent huge pages disabled, `madvise` fails and the memory works as
//! before. Ballooning (`MADV_DONTNEED` on 4 KiB ranges) splits a huge page as needed.

use std::io;
use vm_memory::mmap::MmapRegion;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

const HUGE: usize = 2 << 20;
const PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
const FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// The host mappings behind a [`GuestMemoryMmap`] made by [`map_guest_ram`]; unmapped when
/// dropped, which must happen after the memory and the VM that use it are gone.
#[derive(Debug)]
pub struct RamMapping {
    maps: Vec<(usize, usize)>,
}

impl Drop for RamMapping {
    fn drop(&mut self) {
        for &(addr, len) in &self.maps {
            // SAFETY: `addr..addr+len` is a mapping this module made and nothing else unmaps;
            // its users (the GuestMemoryMmap, KVM's memory slots) are gone by contract.
            unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        }
    }
}

/// Maps `regions` (sorted, non-overlapping, page-sized) as anonymous zero-filled memory.
pub fn map_guest_ram(regions: &[(GuestAddress, usize)]) -> io::Result<(GuestMemoryMmap, RamMapping)> {
    let mut mapping = RamMapping { maps: Vec::new() };
    let mut guest = Vec::new();
    for &(gpa, size) in regions {
        let total = size.checked_add(HUGE).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), total, PROT, FLAGS, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p as usize;
        let want = (gpa.0 as usize) % HUGE;
        let head = (want + HUGE - base % HUGE) % HUGE;
        let start = base + head;
        let tail = total - head - size;
        // SAFETY: both ranges lie inside the mapping just made and outside the part kept.
        unsafe {
            if head > 0 {
                libc::munmap(base as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((start + size) as *mut libc::c_void, tail);
            }
        }
        mapping.maps.push((start, size));
        // SAFETY: advice on our own mapping; failure (no THP) changes nothing.
        unsafe { libc::madvise(start as *mut libc::c_void, size, libc::MADV_HUGEPAGE) };
        // SAFETY: `start..start+size` is a live private anonymous mapping with PROT and FLAGS,
        // kept alive by `mapping` for as long as the caller keeps it.
        let region = unsafe { MmapRegion::build_raw(start as *mut u8, size, PROT, FLAGS) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        guest.push(
            GuestRegionMmap::new(region, gpa)
                .ok_or_else(|| io::Error::other(format!("guest region at {:#x} overflows", gpa.0)))?,
        );
    }
    let mem = GuestMemoryMmap::from_regions(guest).map_err(|e| io::Error::other(e.to_string()))?;
    Ok((mem, mapping))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn regions_sit_at_addresses_congruent_to_their_guest_addresses() {
        let regions = [(GuestAddress(0), 6 << 20), (GuestAddress(0x1_0000_0000 + 0x3000), 1 << 20)];
        let (mem, _map) = map_guest_ram(&regions).unwrap();
        for (gpa, size) in regions {
            let r = mem.find_region(gpa).unwrap();
            assert_eq!(r.len(), size as u64);
            let host = r.get_host_address(vm_memory::MemoryRegionAddress(0)).unwrap() as usize;
            assert_eq!(host % HUGE, gpa.0 as usize % HUGE);
        }
        mem.write_obj(0x1234_5678u32, GuestAddress(5 << 20)).unwrap();
        assert_eq!(mem.read_obj::<u32>(GuestAddress(5 << 20)).unwrap(), 0x1234_5678);
        assert_eq!(mem.read_obj::<u64>(GuestAddress(0x1_0000_3000)).unwrap(), 0, "zero-filled");
        assert!(mem.read_obj::<u8>(GuestAddress(6 << 20)).is_err(), "nothing between regions");
    }
}
