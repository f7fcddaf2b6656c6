//! Host-side backends ("dom0" devices) for xenvmm guests: xenstore, console, block and net
//! over the Xen shared rings. Every byte they read from guest memory is hostile input.
//!
//! Backends reach guest memory only through vm-memory's bounds-checked [`vm_memory::Bytes`]
//! copies and atomic loads/stores, never through references into it.
//! The one exception is the block engines' system-call layer (`block::engine::sys`), which hands
//! the kernel pointers into guest memory for I/O straight to and from granted pages.
#![deny(unsafe_code)]

pub mod block;
pub mod console;
pub mod grant;
pub mod ring;
pub mod xenbus;
pub mod xenstore;
