//! The shim's view of the machine: machine (= KVM guest-physical) memory and the hostcall door
//! to the VMM. `arch` implements it over the direct map; tests implement it over a `Vec`.

use xen_abi::hostcall::ShimStats;
use xen_abi::Errno;

pub trait Machine {
    /// Copies `buf.len()` bytes of machine memory at `maddr` into `buf`.
    /// Fails with `EFAULT` when any byte lies outside machine memory.
    fn read_phys(&self, maddr: u64, buf: &mut [u8]) -> Result<(), Errno>;
    /// Copies `buf` into machine memory at `maddr`; `EFAULT` when outside machine memory.
    fn write_phys(&mut self, maddr: u64, buf: &[u8]) -> Result<(), Errno>;
    /// Makes hostcall `nr` (see `xen_abi::hostcall`) with `args` and payload `data`; returns the
    /// VMM's answer. For calls that end the domain the VMM never answers on real hardware.
    fn hostcall(&mut self, nr: u32, args: [u64; 5], data: &[u8]) -> i64;
    /// The statistics page the VMM reads at exit.
    fn stats(&mut self) -> &mut ShimStats;

    fn read_u64(&self, maddr: u64) -> Result<u64, Errno> {
        let mut b = [0u8; 8];
        self.read_phys(maddr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn write_u64(&mut self, maddr: u64, v: u64) -> Result<(), Errno> {
        self.write_phys(maddr, &v.to_le_bytes())
    }
}
