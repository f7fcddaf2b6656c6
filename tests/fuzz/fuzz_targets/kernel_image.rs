//! Feeds arbitrary bytes to the domain builder as a kernel image: `probe_kernel` must return
//! an error or a validated kernel, never panic, hang or exhaust memory; a probed kernel then
//! goes through `build_domain` on a small domain (32 MiB), which must not panic either.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm::builder::{build_domain, probe_kernel, DomainSpec};
use vmm::memory::p2m::P2m;
use xen_abi::hostcall::MfnRange;

/// RAM of the fuzzed domain, in pages, starting at MFN 0x10 (so PFN != MFN).
const NR_PAGES: u64 = 32 << 8;
const FIRST_MFN: u64 = 0x10;

struct Domain {
    mem: GuestMemoryMmap<()>,
    p2m: P2m,
}

fn domain() -> &'static Domain {
    static DOMAIN: OnceLock<Domain> = OnceLock::new();
    DOMAIN.get_or_init(|| {
        let bytes = ((FIRST_MFN + NR_PAGES) << 12) as usize;
        Domain {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), bytes)]).expect("guest memory"),
            p2m: P2m::new([MfnRange { first_mfn: FIRST_MFN, nr_frames: NR_PAGES }]),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if probe_kernel(data).is_err() {
        return;
    }
    let d = domain();
    let spec = DomainSpec {
        kernel: data,
        initrd: Some(&data[..data.len().min(5000)]),
        cmdline: "console=hvc0",
        shared_info_mfn: 1,
        store_evtchn: 1,
        console_evtchn: 2,
    };
    let _ = build_domain(&d.mem, &d.p2m, &spec);
});
