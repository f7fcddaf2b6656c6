//! The I/O engines behind [`BlockIo`]: io_uring and synchronous for raw images, imago for
//! qcow2. [`Disk::engine`](super::disk::Disk::engine) gives each ring its own engine; all
//! engines of one disk share its file(s) and its `FlushHealth`.
//!
//! # Integrity
//!
//! The promise (block.md §3): a write the guest saw complete survives SIGKILL of xenvmm, and a
//! write that completed before an acknowledged flush survives host power loss.
//!
//! - **raw, io_uring / sync**: a write completes only after `pwritev` (or its CQE) returned
//!   every byte, so the data is in the page cache (or, with `cache=none`, on the device), which
//!   outlives the process. A flush is `fdatasync`, issued when it is dequeued and answered only
//!   when it returned: it covers every write that completed before it was queued, which is all
//!   the guest may rely on (it never waits for writes still in flight; blkfront does not send
//!   barriers).
//! - **qcow2** (details in the `qcow2` module): data reaches the file before a write
//!   completes; the metadata that finds it (L2 tables, refcounts) reaches the file at the
//!   latest on the next flush, which also `fsync`s.
//! - **Sticky failure.** Linux reports a writeback error to one `fsync` per open file
//!   description and may then mark the lost pages clean, so a second `fdatasync` succeeds
//!   although data is gone. All rings share one description, and blkfront turns an error on an
//!   empty flush into success and stops flushing. So after the first failed flush, every later
//!   write, discard and flush of the disk fails with [`IoError::Broken`], on every ring. QEMU
//!   does this only without `O_DIRECT` (`page_cache_inconsistent`); xenvmm does it in every
//!   cache mode, because blkfront would otherwise stop flushing the device's cache for good.

#[allow(unsafe_code)]
mod sys;

pub(crate) mod qcow2;
mod sync;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
mod uring;

use super::{BlockIo, IoBuf, IoError, IoOp};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use sys::Iovecs;
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap};

/// Which engine serves a raw image's ring. qcow2 images always use imago's synchronous engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// io_uring, or the synchronous engine where io_uring is unavailable.
    #[default]
    Auto,
    /// io_uring or an error.
    IoUring,
    /// `preadv`/`pwritev`/`fdatasync`/`fallocate` inside `submit()`.
    Sync,
}

/// Submission slots of an io_uring: the deepest blkif ring (order 4) holds 512 requests.
const URING_ENTRIES: u32 = 512;

/// Alignment of a bounce buffer when nothing stricter is needed: a page, enough for any
/// `O_DIRECT` file.
const BOUNCE_ALIGN: usize = 4096;

/// A disk's "a flush failed" state, shared by the engines of all its rings (see the module
/// documentation for why it is sticky).
#[derive(Debug, Default)]
pub(crate) struct FlushHealth {
    broken: AtomicBool,
}

impl FlushHealth {
    /// Fails with [`IoError::Broken`] once a flush has failed.
    fn check(&self) -> Result<(), IoError> {
        if self.broken.load(Ordering::Acquire) {
            Err(IoError::Broken)
        } else {
            Ok(())
        }
    }

    /// The answer to a flush that returned `result`. A success is not believed after another
    /// ring's flush failed: that failure may have consumed the error this one should report.
    fn flush_result(&self, path: &std::path::Path, result: io::Result<()>) -> Result<(), IoError> {
        match result {
            Ok(()) => self.check(),
            Err(e) => {
                if !self.broken.swap(true, Ordering::AcqRel) {
                    log::error!(
                        "{}: flush failed ({e}); every later write and flush of this disk fails",
                        path.display()
                    );
                }
                Err(IoError::Io(e))
            }
        }
    }
}

/// Alignment `O_DIRECT` needs on this file, in bytes (powers of two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DirectAlign {
    /// Of buffer addresses.
    pub mem: usize,
    /// Of file offsets and lengths. [`Disk::open`](super::disk::Disk::open) refuses
    /// `cache=none` when this exceeds 512, so raw engines never need read-modify-write.
    pub offset: usize,
}

/// A raw image, shared by the engines of all rings of one disk.
#[derive(Debug)]
pub(crate) struct RawImage {
    pub file: Arc<File>,
    pub path: PathBuf,
    pub readonly: bool,
    /// `Some` with `cache=none` (`O_DIRECT`).
    pub direct: Option<DirectAlign>,
    /// Discard is a hole punch; false where the file system cannot punch holes.
    pub discard: bool,
    pub health: FlushHealth,
    /// Whether the fall-back to the synchronous engine was logged already.
    pub uring_fallback_logged: AtomicBool,
}

/// An engine for one ring of `image`.
pub(crate) fn raw_engine(
    image: &Arc<RawImage>,
    mem: Arc<GuestMemoryMmap>,
    kind: EngineKind,
) -> io::Result<Box<dyn BlockIo>> {
    if kind == EngineKind::Sync {
        return Ok(Box::new(Inline::new(sync::SyncEngine::new(Arc::clone(image), mem))));
    }
    #[cfg(test)]
    let uring = if tests::URING_REFUSED.get() {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    } else {
        uring::UringEngine::new(Arc::clone(image), Arc::clone(&mem))
    };
    #[cfg(not(test))]
    let uring = uring::UringEngine::new(Arc::clone(image), Arc::clone(&mem));
    match uring {
        Ok(engine) => Ok(Box::new(engine)),
        Err(e) if kind == EngineKind::Auto => {
            if !image.uring_fallback_logged.swap(true, Ordering::Relaxed) {
                log::warn!("{}: io_uring is unavailable ({e}); using synchronous I/O", image.path.display());
            }
            Ok(Box::new(Inline::new(sync::SyncEngine::new(Arc::clone(image), mem))))
        }
        Err(e) => Err(e),
    }
}

/// A read or write of a raw image, ready to issue.
struct Transfer {
    offset: u64,
    iov: Iovecs,
    /// For a read through a bounce buffer: where its bytes go when it completed.
    scatter: Option<Vec<IoBuf>>,
}

/// What a raw operation becomes after the checks every raw engine makes before issuing it.
enum Step {
    /// Answered without I/O.
    Done(Result<(), IoError>),
    Read(Transfer),
    Write(Transfer),
    Flush,
    Discard {
        offset: u64,
        len: u64,
    },
}

impl RawImage {
    /// Checks `op` and prepares its buffers. Read-only images refuse writes and discards
    /// before anything is issued; a broken image refuses writes, discards and flushes.
    fn plan(&self, mem: &Arc<GuestMemoryMmap>, op: IoOp) -> Step {
        let result = match op {
            IoOp::Read { offset, bufs } => self.transfer(mem, offset, bufs, false).map(Step::Read),
            IoOp::Write { offset, bufs } => {
                self.writable().and_then(|()| self.transfer(mem, offset, bufs, true)).map(Step::Write)
            }
            // Nothing to make durable on a read-only image; no need to ask the kernel.
            IoOp::Flush if self.readonly => Ok(Step::Done(Ok(()))),
            IoOp::Flush => self.health.check().map(|()| Step::Flush),
            IoOp::Discard { offset, len } => self.writable().and_then(|()| {
                if !self.discard {
                    Err(IoError::NotSupported)
                } else if len == 0 {
                    Ok(Step::Done(Ok(())))
                } else {
                    Ok(Step::Discard { offset, len })
                }
            }),
        };
        match result {
            Ok(Step::Read(t) | Step::Write(t)) if t.iov.len() == 0 => Step::Done(Ok(())),
            Ok(step) => step,
            Err(e) => Step::Done(Err(e)),
        }
    }

    fn writable(&self) -> Result<(), IoError> {
        if self.readonly {
            return Err(IoError::ReadOnly);
        }
        self.health.check()
    }

    /// The iovecs for `bufs`: straight into guest memory when the file takes them, else one
    /// aligned bounce buffer (filled now for a write, scattered on completion for a read).
    ///
    /// Only memory alignment can call for a bounce: offsets and lengths are multiples of 512,
    /// and `open` refuses `cache=none` on files that need more. Lists longer than
    /// `UIO_MAXIOV` bounce too (blkback's 256 segments never get there).
    fn transfer(
        &self,
        mem: &Arc<GuestMemoryMmap>,
        offset: u64,
        bufs: Vec<IoBuf>,
        write: bool,
    ) -> Result<Transfer, IoError> {
        let mem_align = self.direct.map_or(1, |d| d.mem);
        let mut aligned = bufs.len() <= sys::IOV_MAX;
        // Check addresses only where it matters; `Iovecs::new` rejects non-RAM buffers anyway.
        if !aligned || mem_align > 1 {
            for buf in &bufs {
                let addr = match buf {
                    IoBuf::Guest { gpa, len } => {
                        let slice =
                            mem.get_slice(*gpa, *len as usize).map_err(|_| IoError::BadBuffer(gpa.0))?;
                        slice.ptr_guard().as_ptr() as usize
                    }
                    IoBuf::Host(v) => v.as_ptr() as usize,
                };
                aligned &= addr & (mem_align - 1) == 0;
            }
        }
        if aligned {
            let iov = Iovecs::new(mem, bufs).map_err(IoError::BadBuffer)?;
            return Ok(Transfer { offset, iov, scatter: None });
        }
        let total = bufs.iter().map(IoBuf::len).sum();
        let align = mem_align.max(BOUNCE_ALIGN);
        if !write {
            let iov = Iovecs::bounce(mem, total, align, |_| Ok::<(), IoError>(()))?;
            return Ok(Transfer { offset, iov, scatter: Some(bufs) });
        }
        let iov = Iovecs::bounce(mem, total, align, |bounce| {
            let mut at = 0;
            for buf in &bufs {
                let dst = &mut bounce[at..at + buf.len()];
                match buf {
                    IoBuf::Guest { gpa, .. } => {
                        mem.read_slice(dst, *gpa).map_err(|_| IoError::BadBuffer(gpa.0))?
                    }
                    IoBuf::Host(v) => dst.copy_from_slice(v),
                }
                at += buf.len();
            }
            Ok::<(), IoError>(())
        })?;
        Ok(Transfer { offset, iov, scatter: None })
    }
}

impl Transfer {
    /// Accounts for `n` bytes transferred; true when nothing is left.
    fn advance(&mut self, n: usize) -> bool {
        self.iov.advance(n);
        self.offset += n as u64;
        self.iov.len() == 0
    }

    /// Finishes a read: copies a bounce buffer out to the guest.
    fn finish_read(self, mem: &GuestMemoryMmap) -> Result<(), IoError> {
        let (Some(bufs), Some(bytes)) = (self.scatter, self.iov.bounce_bytes()) else {
            return Ok(());
        };
        let mut at = 0;
        for buf in &bufs {
            if let IoBuf::Guest { gpa, len } = buf {
                mem.write_slice(&bytes[at..at + *len as usize], *gpa)
                    .map_err(|_| IoError::BadBuffer(gpa.0))?;
            }
            at += buf.len();
        }
        Ok(())
    }
}

/// The error for a transfer that made no progress: the image ends early (truncated behind our
/// back) or the file system accepts no more bytes.
fn no_progress(write: bool) -> IoError {
    IoError::Io(if write {
        io::Error::new(io::ErrorKind::WriteZero, "the image accepted no more bytes")
    } else {
        io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the image (was it truncated?)")
    })
}

/// The answer to a hole punch that returned `result`.
fn discard_result(result: io::Result<()>) -> Result<(), IoError> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Err(IoError::NotSupported),
        Err(e) => Err(IoError::Io(e)),
    }
}

/// `fallocate` mode of a discard: free the blocks, keep the size.
const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;

/// An engine whose operations run one after another, on the ring's thread, inside `submit`:
/// the synchronous raw engine and qcow2 through imago's synchronous API.
pub(crate) trait RunOp: Send {
    fn run(&self, op: IoOp) -> Result<(), IoError>;
}

/// [`BlockIo`] for a [`RunOp`]: operations are queued, run in queue order at `submit`, and
/// their results handed out by the next `completions`.
pub(crate) struct Inline<R: RunOp> {
    ops: R,
    queued: Vec<(u64, IoOp)>,
    done: Vec<(u64, Result<(), IoError>)>,
}

impl<R: RunOp> Inline<R> {
    pub(crate) fn new(ops: R) -> Inline<R> {
        Inline { ops, queued: Vec::new(), done: Vec::new() }
    }
}

impl<R: RunOp> BlockIo for Inline<R> {
    fn queue(&mut self, token: u64, op: IoOp) {
        self.queued.push((token, op));
    }

    fn submit(&mut self) -> Result<(), IoError> {
        let mut queued = std::mem::take(&mut self.queued);
        for (token, op) in queued.drain(..) {
            let result = self.ops.run(op);
            self.done.push((token, result));
        }
        self.queued = queued;
        Ok(())
    }

    fn completions(&mut self, out: &mut Vec<(u64, Result<(), IoError>)>) {
        out.append(&mut self.done);
    }

    fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    fn in_flight(&self) -> usize {
        self.queued.len() + self.done.len()
    }
}
