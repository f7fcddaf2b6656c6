//! xenvmm: run unmodified Xen PV guests on Linux KVM, with no Xen anywhere.
//!
//! A KVM VM runs our ring-0 PV shim (the `pv-shim` crate, embedded in this library), which
//! implements the Xen PV ABI for a guest whose kernel and user space run in ring 3. This crate
//! is the host side: domain builder, KVM set-up, and the "dom0" services.
//!
//! The public API is small: [`DomainConfig`] to describe a domain, [`Domain::new`] to build
//! it, [`Domain::run`] to run it to its end, and [`ExitReason`] to learn how it ended.
#![deny(unsafe_code)]

pub mod api;
mod block;
pub mod builder;
pub mod config;
pub mod events;
#[allow(unsafe_code)]
pub mod kvm;
pub mod memory;
pub mod shim;
pub mod stats;
mod vcpu;

pub use api::{Domain, DomainControl, ExitReason, Fault, GuestMode, RunReport, ShutdownRequest};
pub use config::{parse_mem_size, DiskConfig, DomainConfig, ImageSource};
pub use stats::{DiskStats, EventStats, Stats};

/// Everything that can stop xenvmm from building or running a domain. Messages are one line
/// that says what is wrong and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the {what} {path}: {source}")]
    ReadImage {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Kernel {
        path: String,
        #[source]
        source: builder::BuilderError,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Kvm(#[from] kvm::KvmError),
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error(transparent)]
    Shim(#[from] shim::ShimError),
    #[error("guest memory access failed: {0}")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    #[error("{0}")]
    Vcpu(String),
    #[error(transparent)]
    Events(#[from] events::EventError),
    #[error(transparent)]
    XenstoreSocket(#[from] devices::xenstore::socket::SocketError),
    #[error(transparent)]
    Disk(#[from] devices::block::disk::DiskError),
}
