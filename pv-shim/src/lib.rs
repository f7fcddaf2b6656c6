//! The PV shim: our ring-0 hypervisor inside the KVM VM. It implements the Xen PV ABI for one
//! domain whose kernel and user space both run in ring 3, as 64-bit Xen does.
//!
//! Everything here except `arch` is safe Rust, generic over [`machine::Machine`] (machine memory
//! and the hostcall door), so the hypervisor logic also builds and unit-tests on the host
//! against an in-memory mock. `arch` (x86_64, bare metal only) owns every `unsafe`: entry stubs,
//! descriptor tables, MSRs, and the direct map.
#![cfg_attr(not(any(test, feature = "testutil")), no_std)]
#![deny(unsafe_code)]

pub mod console;
pub mod desc;
pub mod emul;
pub mod event;
pub mod grant;
pub mod guest;
pub mod hypercall;
pub mod machine;
pub mod misc;
pub mod mm;
pub mod sched;
pub mod shim;
pub mod time;
pub mod traps;
pub mod vcpu_op;
pub mod version;

#[cfg(target_os = "none")]
#[allow(unsafe_code)]
pub mod arch;

/// The mock machine, for host tests and the fuzz targets (`--features testutil`).
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
