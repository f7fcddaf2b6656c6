//! Giving guest memory back to the host: the frames a domain released with
//! `XENMEM_decrease_reservation` (the shim's `HC_RELEASE_FRAMES`): `madvise` on this
//! process's own mapping of guest RAM.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use xen_abi::hostcall::MfnRange;
use xen_abi::Errno;

/// Drops the host memory behind `ranges` with `madvise(MADV_DONTNEED)`: the mapping is
/// private and anonymous, so the frames read as zeros afterwards and take no host memory
/// until touched. Every range must lie inside the domain's RAM (`ram`) and inside one region
/// of the mapping; the first that does not fails the call with `EINVAL` (ranges before it
/// were dropped).
pub fn release_frames(mem: &GuestMemoryMmap, ram: &[MfnRange], ranges: &[MfnRange]) -> Result<(), Errno> {
    for r in ranges {
        let last =
            r.first_mfn.checked_add(r.nr_frames).and_then(|e| e.checked_sub(1)).ok_or(Errno::EINVAL)?;
        if r.nr_frames == 0 || !ram.iter().any(|x| x.contains(r.first_mfn) && x.contains(last)) {
            return Err(Errno::EINVAL);
        }
        let gpa = GuestAddress(r.first_mfn << 12);
        let len = (r.nr_frames << 12) as usize;
        let region = mem.find_region(gpa).ok_or(Errno::EINVAL)?;
        let offset = gpa.0 - region.start_addr().0;
        if offset.checked_add(len as u64).is_none_or(|end| end > region.len()) {
            return Err(Errno::EINVAL);
        }
        let host =
            region.get_host_address(vm_memory::MemoryRegionAddress(offset)).map_err(|_| Errno::EINVAL)?;
        // SAFETY: `host..host+len` lies inside one region of this process's mapping of guest
        // memory (checked above); MADV_DONTNEED on it only replaces the pages with zero-fill
        // pages, which every user of guest memory (KVM, the shim, the backends) tolerates: no
        // Rust reference into guest memory exists.
        let rc = unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(Errno::EINVAL);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0x10_000), 0x10_000), (GuestAddress(0x40_000), 0x4000)])
            .unwrap()
    }

    const RAM: [MfnRange; 2] =
        [MfnRange { first_mfn: 0x12, nr_frames: 14 }, MfnRange { first_mfn: 0x40, nr_frames: 4 }];

    #[test]
    fn released_frames_read_as_zeros_and_others_keep_their_bytes() {
        let m = mem();
        for a in (0x12_000..0x20_000).step_by(0x1000) {
            m.write_slice(&[0xab; 0x1000], GuestAddress(a)).unwrap();
        }
        release_frames(&m, &RAM, &[MfnRange { first_mfn: 0x13, nr_frames: 2 }]).unwrap();
        let v: u64 = m.read_obj(GuestAddress(0x13_800)).unwrap();
        assert_eq!(v, 0);
        let v: u64 = m.read_obj(GuestAddress(0x14_ff8)).unwrap();
        assert_eq!(v, 0);
        let v: u8 = m.read_obj(GuestAddress(0x12_fff)).unwrap();
        assert_eq!(v, 0xab);
        let v: u8 = m.read_obj(GuestAddress(0x15_000)).unwrap();
        assert_eq!(v, 0xab);
    }

    #[test]
    fn ranges_outside_the_domains_ram_are_refused() {
        let m = mem();
        m.write_slice(&[0xcd; 16], GuestAddress(0x10_000)).unwrap();
        for (first, n) in
            [(0x10, 1), (0x1f, 2), (0x20, 1), (0x3f, 2), (0x12, 0), (u64::MAX, 2), (0x12, u64::MAX)]
        {
            let r = release_frames(&m, &RAM, &[MfnRange { first_mfn: first, nr_frames: n }]);
            assert_eq!(r, Err(Errno::EINVAL), "{first:#x}+{n}");
        }
        let v: u8 = m.read_obj(GuestAddress(0x10_000)).unwrap();
        assert_eq!(v, 0xcd, "shim memory untouched");
        release_frames(&m, &RAM, &[MfnRange { first_mfn: 0x40, nr_frames: 4 }]).unwrap();
    }
}
