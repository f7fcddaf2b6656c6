//! The block engines' system-call layer, the only code in `devices` that hands the kernel raw
//! pointers: scatter-gather lists into guest memory ([`Iovecs`]), the positioned vector
//! system calls of the synchronous engine ([`preadv`], [`pwritev`]) and the io_uring queue of
//! the asynchronous one ([`Uring`]).
//!
//! Everything exported here is safe to call. The invariant that makes it so is ownership:
//!
//! ```text
//!  Iovecs ──owns──► Arc<GuestMemoryMmap>   the guest RAM mappings every guest iovec points into
//!         ──owns──► Vec<Vec<u8>>           host buffers (private copies, bounce buffers)
//!         ──owns──► Box<[iovec]>           the array the kernel walks
//!
//!  Uring<T> ──owns──► Arc<File>            the descriptor every SQE names
//!           ──owns──► slots[user_data] = (Sqe with its Iovecs, T) from push() until its CQE
//! ```
//!
//! An operation's memory is therefore alive for as long as the kernel may touch it: a pushed
//! [`Sqe`] comes back only with its completion, and dropping a [`Uring`] first waits for every
//! operation it pushed. Host code never reads or writes guest memory through these pointers
//! (it uses vm-memory's checked copies); only the kernel does, which is not a Rust access.
//! Nothing here creates a Rust reference into guest memory.

use super::super::IoBuf;
use io_uring::{opcode, squeue, types, IoUring, Probe};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Most iovecs one `preadv`/`pwritev`/`IORING_OP_READV` accepts (`UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;

/// A scatter-gather list the kernel reads from or writes into: iovecs pointing into guest
/// memory and into host buffers this value owns. Every pointer stays valid while the value
/// lives, because it holds the guest memory mappings and owns the host buffers.
pub struct Iovecs {
    iov: Box<[libc::iovec]>,
    /// First iovec not yet transferred completely (see [`Iovecs::advance`]).
    start: usize,
    /// Host buffers some iovecs point into. A `Vec`'s heap block does not move when the `Vec`
    /// itself moves, so the pointers survive moves of `self`.
    owned: Vec<Vec<u8>>,
    /// For a bounce buffer: where its aligned bytes start inside `owned[0]`, and how many.
    bounce: Option<(usize, usize)>,
    _mem: Arc<GuestMemoryMmap>,
}

// SAFETY: the raw pointers in `iov` point into guest memory mappings kept alive by `_mem`
// (`GuestMemoryMmap` is `Send + Sync`) and into heap buffers owned by `owned`. Neither is tied
// to the thread that built the list, so moving the list to another thread is sound.
unsafe impl Send for Iovecs {}

impl Iovecs {
    /// The list for `bufs`, in order: guest buffers by their host address, host buffers moved
    /// in. Fails with the guest address of the first buffer that is not guest RAM.
    pub fn new(mem: &Arc<GuestMemoryMmap>, bufs: Vec<IoBuf>) -> Result<Iovecs, u64> {
        let mut iov = Vec::with_capacity(bufs.len());
        let mut owned = Vec::new();
        for buf in bufs {
            match buf {
                IoBuf::Guest { gpa, len } => {
                    let slice = mem.get_slice(gpa, len as usize).map_err(|_| gpa.0)?;
                    // `ptr_guard_mut` pins nothing for ordinary mmap regions (only Xen foreign
                    // mappings need a guard), so the address stays valid as long as `mem` does.
                    let base = slice.ptr_guard_mut().as_ptr();
                    iov.push(libc::iovec { iov_base: base.cast(), iov_len: slice.len() });
                }
                IoBuf::Host(mut v) => {
                    iov.push(libc::iovec { iov_base: v.as_mut_ptr().cast(), iov_len: v.len() });
                    owned.push(v);
                }
            }
        }
        Ok(Iovecs { iov: iov.into_boxed_slice(), start: 0, owned, bounce: None, _mem: Arc::clone(mem) })
    }

    /// A single host buffer of `len` bytes whose address is a multiple of `align` (a power of
    /// two), for I/O that cannot go straight to the guest's buffers. `fill` writes its
    /// contents first (for a write); the iovec is made afterwards, so that no borrow of the
    /// buffer is taken after its raw pointer.
    pub fn bounce<E>(
        mem: &Arc<GuestMemoryMmap>,
        len: usize,
        align: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Iovecs, E> {
        let mut block = vec![0u8; len + align];
        let at = block.as_ptr().align_offset(align);
        fill(&mut block[at..at + len])?;
        let iov = libc::iovec { iov_base: block[at..].as_mut_ptr().cast(), iov_len: len };
        Ok(Iovecs {
            iov: Box::new([iov]),
            start: 0,
            owned: vec![block],
            bounce: Some((at, len)),
            _mem: Arc::clone(mem),
        })
    }

    /// The aligned bytes of a bounce buffer (`None` for other lists), to copy out after a
    /// read. Only reachable while no operation is in flight on this list: a pushed list
    /// belongs to its [`Uring`].
    pub fn bounce_bytes(&self) -> Option<&[u8]> {
        let (at, len) = self.bounce?;
        Some(&self.owned[0][at..at + len])
    }

    /// Bytes still to transfer.
    pub fn len(&self) -> usize {
        self.iov[self.start..].iter().map(|v| v.iov_len).sum()
    }

    /// Iovecs still to transfer.
    pub fn count(&self) -> usize {
        self.iov.len() - self.start
    }

    /// Drops the first `n` bytes after a short transfer, so that the rest can be issued again.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 && self.start < self.iov.len() {
            let v = &mut self.iov[self.start];
            if n < v.iov_len {
                v.iov_base = (v.iov_base as usize + n) as *mut libc::c_void;
                v.iov_len -= n;
                return;
            }
            n -= v.iov_len;
            self.start += 1;
        }
    }

    fn as_ptr(&self) -> *const libc::iovec {
        self.iov[self.start..].as_ptr()
    }
}

/// Retries a system call interrupted by a signal.
fn retry_eintr(mut f: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let r = f();
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `preadv(2)` of `file` at `offset` into `iov`; returns the bytes read (possibly short).
pub fn preadv(file: &File, iov: &mut Iovecs, offset: u64) -> io::Result<usize> {
    let count = iov.count().min(IOV_MAX) as libc::c_int;
    retry_eintr(|| {
        // SAFETY: `iov` points to `count` valid iovecs, each describing memory that stays mapped
        // and writable for the call: guest RAM kept mapped by the list's `Arc<GuestMemoryMmap>`
        // or host buffers the list owns and nobody else can reach (`&mut`). The kernel writes
        // only inside them.
        unsafe { libc::preadv(file.as_raw_fd(), iov.as_ptr(), count, offset as libc::off_t) }
    })
}

/// `pwritev(2)` of `iov` to `file` at `offset`; returns the bytes written (possibly short).
pub fn pwritev(file: &File, iov: &Iovecs, offset: u64) -> io::Result<usize> {
    let count = iov.count().min(IOV_MAX) as libc::c_int;
    retry_eintr(|| {
        // SAFETY: as in `preadv`; the kernel only reads the described memory.
        unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), count, offset as libc::off_t) }
    })
}

/// One operation for [`Uring`], owning whatever memory the kernel will use.
pub enum Sqe {
    /// `IORING_OP_READV` into the list.
    Readv { offset: u64, iov: Iovecs },
    /// `IORING_OP_WRITEV` from the list.
    Writev { offset: u64, iov: Iovecs },
    /// `IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC`: fdatasync.
    Fdatasync,
    /// `IORING_OP_FALLOCATE` with `mode` (e.g. `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`).
    Fallocate { offset: u64, len: u64, mode: i32 },
}

/// An io_uring on one file. Each pushed [`Sqe`] is kept, with the caller's `T`, in the slot
/// whose index is its `user_data`, and handed back by [`Uring::reap`] with the result of its
/// completion. At most `capacity` operations are in flight, so the completion queue (twice the
/// submission queue) can never overflow.
pub struct Uring<T> {
    ring: IoUring,
    file: Arc<File>,
    slots: Vec<Option<(Sqe, T)>>,
    free: Vec<usize>,
    in_flight: usize,
}

impl<T> Uring<T> {
    /// A ring of `entries` submission slots on `file`, signalling `eventfd` on completions.
    /// Fails when io_uring is unavailable (`io_uring_setup` refused by the
    /// `kernel.io_uring_disabled` sysctl or seccomp, or a kernel older than 5.6 that lacks an
    /// opcode the engine needs).
    pub fn new(file: Arc<File>, entries: u32, eventfd: &EventFd) -> io::Result<Self> {
        let mut builder = IoUring::builder();
        builder.dontfork();
        // IORING_SETUP_SUBMIT_ALL (5.18) keeps submitting past an SQE that fails to prepare;
        // without it the rest would wait for the next io_uring_enter.
        let ring = match builder.clone().setup_submit_all().build(entries) {
            Ok(ring) => ring,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => builder.build(entries)?,
            Err(e) => return Err(e),
        };
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (name, code) in [
            ("READV", opcode::Readv::CODE),
            ("WRITEV", opcode::Writev::CODE),
            ("FSYNC", opcode::Fsync::CODE),
            ("FALLOCATE", opcode::Fallocate::CODE),
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the kernel's io_uring lacks IORING_OP_{name}"),
                ));
            }
        }
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let capacity = ring.params().cq_entries() as usize;
        Ok(Uring {
            ring,
            file,
            slots: (0..capacity).map(|_| None).collect(),
            free: (0..capacity).rev().collect(),
            in_flight: 0,
        })
    }

    /// Operations pushed and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether the submission ring holds entries the kernel has not taken yet.
    pub fn has_unsubmitted(&mut self) -> bool {
        !self.ring.submission().is_empty()
    }

    /// Queues `sqe` in the submission ring (issued by the next [`Uring::submit`]). Hands it
    /// back when the submission ring is full or `capacity` operations are in flight.
    #[allow(clippy::result_large_err)]
    pub fn push(&mut self, sqe: Sqe, data: T) -> Result<(), (Sqe, T)> {
        if self.ring.submission().is_full() {
            return Err((sqe, data));
        }
        let Some(slot) = self.free.pop() else {
            return Err((sqe, data));
        };
        let fd = types::Fd(self.file.as_raw_fd());
        let entry: squeue::Entry = match &sqe {
            Sqe::Readv { offset, iov } => {
                opcode::Readv::new(fd, iov.as_ptr(), iov.count().min(IOV_MAX) as u32).offset(*offset).build()
            }
            Sqe::Writev { offset, iov } => {
                opcode::Writev::new(fd, iov.as_ptr(), iov.count().min(IOV_MAX) as u32).offset(*offset).build()
            }
            Sqe::Fdatasync => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
            Sqe::Fallocate { offset, len, mode } => {
                opcode::Fallocate::new(fd, *len).offset(*offset).mode(*mode).build()
            }
        };
        let entry = entry.user_data(slot as u64);
        // SAFETY: the entry names `self.file`, which `self` keeps open, and, for READV/WRITEV,
        // the iovec array of the `Iovecs` inside `sqe`. That array is a boxed slice whose heap
        // block does not move when `sqe` moves into `self.slots` below, and whose iovecs point
        // into memory the `Iovecs` keeps alive (see the module documentation). The slot is
        // emptied only by `reap` after the kernel posted this entry's completion, and `Drop`
        // waits for every pushed entry, so all of it outlives the kernel's use.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            self.free.push(slot);
            return Err((sqe, data));
        }
        self.slots[slot] = Some((sqe, data));
        self.in_flight += 1;
        Ok(())
    }

    /// Hands everything pushed so far to the kernel: one `io_uring_enter`. Entries the kernel
    /// could not take now (`EBUSY`/`EAGAIN`) stay in the ring for the next call.
    pub fn submit(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves every posted completion to `out` as (result, the operation, its data). The result
    /// is the kernel's: bytes transferred, or a negated errno.
    pub fn reap(&mut self, out: &mut Vec<(i32, Sqe, T)>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let slot = cqe.user_data() as usize;
            if let Some((sqe, data)) = self.slots.get_mut(slot).and_then(Option::take) {
                self.free.push(slot);
                self.in_flight -= 1;
                out.push((cqe.result(), sqe, data));
            }
        }
    }
}

impl<T> Drop for Uring<T> {
    /// Waits until the kernel is done with every pushed operation: until then it may still
    /// write into guest memory and into buffers held in `slots`.
    fn drop(&mut self) {
        let mut done = Vec::new();
        while self.in_flight > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => {}
                Err(e) => {
                    // We cannot tell when the kernel is done: leak the buffers, the guest
                    // memory mapping and the descriptor rather than free memory under it.
                    log::error!("io_uring: cannot wait for in-flight I/O ({e}); leaking its buffers");
                    std::mem::forget(std::mem::take(&mut self.slots));
                    std::mem::forget(Arc::clone(&self.file));
                    return;
                }
            }
            self.reap(&mut done);
            done.clear();
        }
    }
}
