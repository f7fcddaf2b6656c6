//! Builder tests: every image format and hostile inputs (`image`); the worked example of
//! xen-pv-contract.md §2.4, page-table contents and the real Debian kernel (`domain`).

mod domain;
mod image;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use xen_abi::hostcall::MfnRange;
use xen_abi::xen::{SIF_MOD_START_PFN, SIF_VIRT_P2M_4TOOLS};
use zerocopy::FromBytes;

use super::testutil::*;
use super::*;

pub(super) const ALL: [Compression; 4] =
    [Compression::Gzip, Compression::Xz, Compression::Zstd, Compression::Lz4];
pub(super) const MIB: u64 = 1 << 20;

pub(super) fn spec<'a>(kernel: &'a [u8], initrd: Option<&'a [u8]>, cmdline: &'a str) -> DomainSpec<'a> {
    DomainSpec { kernel, initrd, cmdline, shared_info_mfn: 0x7_7777, store_evtchn: 1, console_evtchn: 2 }
}

/// Guest memory holding `ranges` (MFN ranges) and the P2M over them.
pub(super) fn domain_memory(ranges: &[(u64, u64)]) -> (GuestMemoryMmap<()>, P2m) {
    let end = ranges.iter().map(|&(m, n)| m + n).max().unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), (end << 12) as usize)]).unwrap();
    let p2m = P2m::new(ranges.iter().map(|&(first_mfn, nr_frames)| MfnRange { first_mfn, nr_frames }));
    (mem, p2m)
}

pub(super) fn read_u64(mem: &GuestMemoryMmap<()>, gpa: u64) -> u64 {
    mem.read_obj::<u64>(GuestAddress(gpa)).unwrap()
}

pub(super) fn read_page(mem: &GuestMemoryMmap<()>, mfn: u64) -> Vec<u8> {
    let mut v = vec![0u8; 4096];
    mem.read_slice(&mut v, GuestAddress(mfn << 12)).unwrap();
    v
}

/// Tiny deterministic PRNG (xorshift) for corruption tests.
pub(super) fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

pub(super) fn probe_elf(e: &TestElf) -> Result<XenElfInfo, BuilderError> {
    probe_kernel(&e.build())
}
