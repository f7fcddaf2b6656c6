//! The block backend (Linux blkback's role): a guest's `xen-blkfront` disks served from raw and
//! qcow2 image files over blkif rings (`io/blkif.h`; xen-pv-contract.md §10, block.md).
//!
//! ```text
//!  ring worker (one thread per ring)                       engine (per ring)
//!  ─────────────────────────────────                       ─────────────────
//!  kick (ioeventfd) ─► backend: copy requests out of the   queue(token, IoOp) ... submit()
//!  ring once, validate the copies, map their grants,         io_uring (raw) / sync (fallback,
//!  turn each into an IoOp on guest addresses ─────────────►  qcow2 through imago)
//!  completion fd ─► completions(): unmap grants, push  ◄───  (token, result)
//!  responses, one notification per batch
//! ```
//!
//! The parts: `request` parses and validates one copied request (direct or indirect),
//! `backend` is one ring's state machine over a [`BlockIo`] engine, `disk` opens and locks
//! image files, `engine` holds the I/O engines. Everything here is safe Rust except the engines'
//! system-call layer. `testutil` (tests, and the fuzz targets through the `testutil` feature)
//! has an in-memory engine and a stand-in blkfront.

pub mod backend;
pub mod request;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

pub mod disk;
pub mod engine;

use std::os::fd::RawFd;
use vm_memory::GuestAddress;

/// Bytes in a sector, the unit of `sector_number`, `sectors` and `first_sect`/`last_sect`.
pub const SECTOR_SIZE: u64 = 512;

/// Memory an I/O reads into or writes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoBuf {
    /// Guest memory: `len` bytes at `gpa`, inside one guest page that the backend has mapped
    /// through a checked grant for the life of the operation.
    Guest { gpa: GuestAddress, len: u32 },
    /// A private copy (writes only): data the backend had to inspect before writing, so the
    /// guest cannot change it between the check and the write.
    Host(Vec<u8>),
}

impl IoBuf {
    pub fn len(&self) -> usize {
        match self {
            IoBuf::Guest { len, .. } => *len as usize,
            IoBuf::Host(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One operation on a disk image, in bytes. Offsets and lengths are multiples of
/// [`SECTOR_SIZE`] and lie inside the image: the backend checked them against its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Fill `bufs`, in order, from the image at `offset`.
    Read { offset: u64, bufs: Vec<IoBuf> },
    /// Write `bufs`, in order, to the image at `offset`.
    Write { offset: u64, bufs: Vec<IoBuf> },
    /// Make every write that completed before this op was queued durable (fdatasync; for
    /// qcow2 also the format's metadata caches).
    Flush,
    /// The guest no longer needs `[offset, offset + len)`: punch a hole if the image can.
    Discard { offset: u64, len: u64 },
}

/// Why an operation failed. The guest only ever learns `BLKIF_RSP_ERROR` or
/// `BLKIF_RSP_EOPNOTSUPP`; the details are for the log.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A buffer is not guest memory (the backend's checks should have caught it).
    #[error("buffer at {0:#x} is not guest memory")]
    BadBuffer(u64),
    /// The image cannot do this (e.g. discard on a file system without hole punching).
    #[error("operation not supported by this image")]
    NotSupported,
    /// An earlier flush failed: the page cache may have dropped data the guest was told is
    /// safe, so every later write and flush fails too (QEMU's rule; blkfront turns a failed
    /// empty flush into success, so failing once is not enough).
    #[error("the image failed a flush earlier and accepts no more writes")]
    Broken,
    /// The image is read-only.
    #[error("the image is read-only")]
    ReadOnly,
}

/// One ring's I/O engine: operations are queued, handed to the kernel together, and complete
/// in any order.
pub trait BlockIo: Send {
    /// Queues `op`; its completion will carry `token`. Nothing is issued before [`submit`].
    ///
    /// [`submit`]: BlockIo::submit
    fn queue(&mut self, token: u64, op: IoOp);

    /// Issues everything queued since the last call: one `io_uring_enter` for the io_uring
    /// engine; the synchronous engines perform the operations here, in queue order.
    ///
    /// An error loses nothing: what could not be issued stays queued, and the backend calls
    /// `submit` again on its next pass (an operation that fails completes with its error
    /// through [`completions`](BlockIo::completions), like any other).
    fn submit(&mut self) -> Result<(), IoError>;

    /// Appends the operations that completed since the last call.
    fn completions(&mut self, out: &mut Vec<(u64, Result<(), IoError>)>);

    /// A descriptor that becomes readable when [`completions`] has something new (an
    /// eventfd), or `None` when every operation completes within [`submit`].
    ///
    /// [`completions`]: BlockIo::completions
    /// [`submit`]: BlockIo::submit
    fn completion_fd(&self) -> Option<RawFd>;

    /// Operations queued or issued and not yet returned by [`completions`].
    ///
    /// [`completions`]: BlockIo::completions
    fn in_flight(&self) -> usize;
}

/// A boxed engine is an engine: the disk picks io_uring or the synchronous fallback at run
/// time, and the ring's back end is generic.
impl<T: BlockIo + ?Sized> BlockIo for Box<T> {
    fn queue(&mut self, token: u64, op: IoOp) {
        (**self).queue(token, op)
    }

    fn submit(&mut self) -> Result<(), IoError> {
        (**self).submit()
    }

    fn completions(&mut self, out: &mut Vec<(u64, Result<(), IoError>)>) {
        (**self).completions(out)
    }

    fn completion_fd(&self) -> Option<RawFd> {
        (**self).completion_fd()
    }

    fn in_flight(&self) -> usize {
        (**self).in_flight()
    }
}
