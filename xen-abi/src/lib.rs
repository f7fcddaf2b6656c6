//! The Xen public ABI for 64-bit x86 PV guests, as the guest sees it, plus xenvmm's own
//! private shim<->VMM protocol (`hostcall`), kept apart from Xen's.
//!
//! Every struct mirrors a C struct from Xen's public headers (`xen/include/public/...`) and is
//! checked field by field against Debian's `libxen-dev` headers by `tests/layout.rs`.
//! Names follow Xen's so that a Xen reader can search for them.
#![no_std]
#![forbid(unsafe_code)]

pub mod callback;
pub mod console;
pub mod elfnote;
pub mod errno;
pub mod event;
pub mod grant_table;
pub mod hostcall;
pub mod hypercall;
pub mod io;
pub mod memory;
pub mod physdev;
pub mod sched;
pub mod vcpu;
pub mod version;
pub mod xen;

pub use errno::Errno;
