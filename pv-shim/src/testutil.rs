//! An in-memory machine for host unit tests.

use crate::machine::Machine;
use xen_abi::hostcall::{BootInfo, MfnRange, ShimStats};
use xen_abi::Errno;
use zerocopy::FromZeros;

/// A machine with `frames` pages of memory that records hostcalls.
pub struct MockMachine {
    pub mem: Vec<u8>,
    pub hostcalls: Vec<(u32, [u64; 5], Vec<u8>)>,
    pub stats: ShimStats,
}

impl MockMachine {
    pub fn new(frames: u64) -> MockMachine {
        MockMachine {
            mem: vec![0; (frames * 4096) as usize],
            hostcalls: Vec::new(),
            stats: ShimStats::new_zeroed(),
        }
    }

    pub fn frames(&self) -> u64 {
        self.mem.len() as u64 / 4096
    }

    /// Console text written through hostcalls.
    pub fn console(&self) -> String {
        self.hostcalls
            .iter()
            .filter(|h| h.0 == xen_abi::hostcall::HC_CONSOLE_WRITE)
            .map(|h| String::from_utf8_lossy(&h.2).into_owned())
            .collect()
    }

    fn range(&self, maddr: u64, len: usize) -> Result<core::ops::Range<usize>, Errno> {
        let start = usize::try_from(maddr).map_err(|_| Errno::EFAULT)?;
        let end = start.checked_add(len).ok_or(Errno::EFAULT)?;
        if end > self.mem.len() {
            return Err(Errno::EFAULT);
        }
        Ok(start..end)
    }
}

impl Machine for MockMachine {
    fn read_phys(&self, maddr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let r = self.range(maddr, buf.len())?;
        buf.copy_from_slice(&self.mem[r]);
        Ok(())
    }

    fn write_phys(&mut self, maddr: u64, buf: &[u8]) -> Result<(), Errno> {
        let r = self.range(maddr, buf.len())?;
        self.mem[r].copy_from_slice(buf);
        Ok(())
    }

    fn hostcall(&mut self, nr: u32, args: [u64; 5], data: &[u8]) -> i64 {
        self.hostcalls.push((nr, args, data.to_vec()));
        0
    }

    fn stats(&mut self) -> &mut ShimStats {
        &mut self.stats
    }
}

/// Boot info describing all of the mock's memory as the domain's RAM.
pub fn boot_info(frames: u64) -> BootInfo {
    let mut b = BootInfo::new_zeroed();
    b.magic = xen_abi::hostcall::BOOT_INFO_MAGIC;
    b.version = xen_abi::hostcall::HOSTCALL_VERSION;
    b.nr_vcpus = 1;
    b.max_mfn = frames;
    b.ram[0] = MfnRange { first_mfn: 0, nr_frames: frames };
    b.nr_ram_ranges = 1;
    b
}

/// Guest-virtual base of the test address space built by [`shim_with_guest`].
pub const GUEST_VA: u64 = 0xffff_ffff_8000_0000;
/// First machine frame mapped at [`GUEST_VA`].
pub const GUEST_FIRST_DATA_MFN: u64 = 16;

/// A shim over a 64-frame mock whose guest maps `GUEST_VA + i*4K` to frame 16 + i (i < 32),
/// writable, with page tables in frames 1..=4; page 31 is mapped read-only.
pub fn shim_with_guest() -> crate::shim::Shim<MockMachine> {
    let mut m = MockMachine::new(64);
    let va = GUEST_VA;
    let idx = |v: u64, l: u32| crate::mm::table_index(v, l) as u64;
    m.write_u64((1 << 12) + 8 * idx(va, 4), (2 << 12) | 0x67).unwrap();
    m.write_u64((2 << 12) + 8 * idx(va, 3), (3 << 12) | 0x67).unwrap();
    m.write_u64((3 << 12) + 8 * idx(va, 2), (4 << 12) | 0x67).unwrap();
    for i in 0..32u64 {
        let flags = if i == 31 { 0x21 } else { 0x23 };
        m.write_u64((4 << 12) + 8 * i, ((GUEST_FIRST_DATA_MFN + i) << 12) | flags).unwrap();
    }
    let mut b = boot_info(64);
    b.guest_l4_mfn = 1;
    let mut s = crate::shim::Shim::new(m, b).unwrap();
    s.boot_domain(&[0; 16]).unwrap();
    s
}
