//! The qcow2 engine: imago's synchronous API on the ring's thread. All rings of a disk share
//! one [`FormatAccess`]; imago serialises what must be serialised (cluster allocation, cache
//! updates) with its own locks, so rings do not wait on each other for plain reads and
//! overwrites of allocated clusters. Data moves without copies: imago's vm-memory I/O vectors
//! wrap the guest's buffers, and its file driver `preadv`/`pwritev`s straight into them.
//! (imago builds those vectors as byte slices over guest memory, inside the crate: the one
//! place where guest memory is seen through Rust references. Guest data is copied only when
//! imago realigns it for `O_DIRECT`; copy-on-write of cluster heads and tails and inflating
//! compressed clusters use imago's own buffers.)
//!
//! # What imago caches, and why a flushed write survives SIGKILL
//!
//! - **Guest data** is never cached: `writev` returns after `pwritev` put every byte into the
//!   image file (page cache), at the host offset of its cluster. Overwrites of allocated
//!   clusters are durable against SIGKILL the moment they complete.
//! - **Metadata** is cached write-back: L2 tables and refcount blocks live in LRU caches
//!   (`qcow2/cache.rs`), updated in memory when a write allocates a cluster and written to the
//!   file on eviction or on `flush()`, which writes dependencies first (refcounts before the
//!   L2 entries pointing at them, or the reverse when freeing) and also frees clusters queued
//!   for freeing. Until then, a newly allocated cluster's data is in the file but nothing
//!   points at it: SIGKILL loses that write (the guest reads the old contents, never garbage),
//!   which a guest must expect of any write it has not flushed.
//! - **A flush** is `FormatAccess::flush()` (every dirty cached table to the file) followed by
//!   `sync()` (`fsync` of the image file, and of an external data file). When it returns, every
//!   write that completed before it is reachable from the on-file metadata and on stable
//!   storage: it survives SIGKILL and power loss. A failure of either step breaks the disk
//!   (sticky, see the parent module).
//! - **Backing files** are opened read-only and never written, so they need no flush.

use super::{FlushHealth, PathBuf};
use crate::block::{IoBuf, IoError, IoOp};
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::FormatAccess;
use std::io;
use std::sync::Arc;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// A qcow2 image, shared by the engines of all rings of one disk.
#[derive(Debug)]
pub(crate) struct Qcow2Image {
    pub access: FormatAccess<imago::file::File>,
    pub path: PathBuf,
    pub readonly: bool,
    pub health: FlushHealth,
    /// Test hook: the next flush fails as if `fsync` had returned `EIO`.
    #[cfg(test)]
    pub fail_next_flush: std::sync::atomic::AtomicBool,
}

impl Qcow2Image {
    fn flush(&self) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_next_flush.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.access.flush()?;
        self.access.sync()
    }
}

pub(crate) struct Qcow2Engine {
    image: Arc<Qcow2Image>,
    mem: Arc<GuestMemoryMmap>,
}

/// One buffer of an operation, resolved: guest memory or a host buffer.
enum Piece<'m> {
    Guest(VolatileSlice<'m, ()>),
    Host(Vec<u8>),
}

fn resolve(mem: &GuestMemoryMmap, bufs: Vec<IoBuf>) -> Result<Vec<Piece<'_>>, IoError> {
    bufs.into_iter()
        .map(|buf| match buf {
            IoBuf::Guest { gpa, len } => {
                mem.get_slice(gpa, len as usize).map(Piece::Guest).map_err(|_| IoError::BadBuffer(gpa.0))
            }
            IoBuf::Host(v) => Ok(Piece::Host(v)),
        })
        .collect()
}

impl Qcow2Engine {
    pub(crate) fn new(image: Arc<Qcow2Image>, mem: Arc<GuestMemoryMmap>) -> Self {
        Qcow2Engine { image, mem }
    }

    pub(crate) fn run_op(&self, op: IoOp) -> Result<(), IoError> {
        let image = &*self.image;
        match op {
            IoOp::Read { offset, bufs } => {
                let mut pieces = resolve(&self.mem, bufs)?;
                let mut vector = IoVectorMut::new();
                // The guards keep guest memory pinned while imago uses the vector (a no-op for
                // ordinary mmap regions, required by the API).
                let mut guards = Vec::new();
                for piece in pieces.iter_mut() {
                    match piece {
                        Piece::Guest(slice) => {
                            let (v, guard) = IoVectorMut::from_volatile_slice_one(slice);
                            vector.append(v);
                            guards.push(guard);
                        }
                        Piece::Host(v) => vector.push(v.as_mut_slice()),
                    }
                }
                image.access.readv(vector, offset)?;
                Ok(())
            }
            IoOp::Write { offset, bufs } => {
                image.writable()?;
                let pieces = resolve(&self.mem, bufs)?;
                let mut vector = IoVector::new();
                let mut guards = Vec::new();
                for piece in pieces.iter() {
                    match piece {
                        Piece::Guest(slice) => {
                            let (v, guard) = IoVector::from_volatile_slice_one(slice);
                            vector.append(v);
                            guards.push(guard);
                        }
                        Piece::Host(v) => vector.push(v.as_slice()),
                    }
                }
                image.access.writev(vector, offset)?;
                Ok(())
            }
            IoOp::Flush if image.readonly => Ok(()),
            IoOp::Flush => {
                image.health.check()?;
                image.health.flush_result(&image.path, image.flush())
            }
            // Freeing clusters while other rings hold mappings into them needs exclusive access
            // to the image (imago's `discard_to_any` takes `&mut`); not offered for now.
            IoOp::Discard { .. } => {
                image.writable()?;
                Err(IoError::NotSupported)
            }
        }
    }
}

impl Qcow2Image {
    fn writable(&self) -> Result<(), IoError> {
        if self.readonly {
            return Err(IoError::ReadOnly);
        }
        self.health.check()
    }
}

impl super::RunOp for Qcow2Engine {
    fn run(&self, op: IoOp) -> Result<(), IoError> {
        self.run_op(op)
    }
}
