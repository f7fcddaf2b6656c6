//! The io_uring engine for raw images: one ring per blkif ring, `READV`/`WRITEV` straight to
//! and from guest memory, `FSYNC|DATASYNC` for a flush, `FALLOCATE(PUNCH_HOLE|KEEP_SIZE)` for
//! a discard, an eventfd registered with the ring as the completion descriptor.
//!
//! ```text
//!  queue() ─► queued ──submit()──► backlog ──push while the ring has room──► io_uring
//!                                    ▲   one io_uring_enter per submit()        │ CQE
//!     short transfer: the rest ──────┘                                          ▼
//!  completions() ◄── done ◄── reap, check, copy bounce buffers out ◄────────────┘
//! ```
//!
//! Operations that do not fit (more than the ring's 512 submission slots, or the completion
//! queue's capacity in flight) wait in the backlog. `completions()` issues them as completions
//! make room, so they never depend on the backend calling `submit()` again, and operations
//! answered without I/O (read-only, broken, bad buffer) also raise the eventfd.

use super::sys::{Sqe, Uring};
use super::{discard_result, no_progress, RawImage, Step, Transfer, PUNCH_HOLE, URING_ENTRIES};
use crate::block::{BlockIo, IoBuf, IoError, IoOp};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// What the engine remembers about an operation in the ring.
struct Pending {
    token: u64,
    /// For a read through a bounce buffer: where the bytes go.
    scatter: Option<Vec<IoBuf>>,
}

/// Work accepted by `submit()` and waiting for room in the ring.
enum Work {
    /// Not yet checked (checked when it goes into the ring, so a flush failure seen meanwhile
    /// applies to it).
    Op(u64, IoOp),
    /// Checked and prepared: an operation the ring had no room for, the rest of a short
    /// transfer, or an operation to retry after `EAGAIN`.
    Ready(Sqe, Pending),
}

pub(super) struct UringEngine {
    image: Arc<RawImage>,
    mem: Arc<GuestMemoryMmap>,
    ring: Uring<Pending>,
    eventfd: EventFd,
    queued: Vec<(u64, IoOp)>,
    backlog: VecDeque<Work>,
    done: Vec<(u64, Result<(), IoError>)>,
    reaped: Vec<(i32, Sqe, Pending)>,
}

impl UringEngine {
    pub(super) fn new(image: Arc<RawImage>, mem: Arc<GuestMemoryMmap>) -> io::Result<Self> {
        let eventfd = EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        let ring = Uring::new(Arc::clone(&image.file), URING_ENTRIES, &eventfd)?;
        Ok(UringEngine {
            image,
            mem,
            ring,
            eventfd,
            queued: Vec::new(),
            backlog: VecDeque::new(),
            done: Vec::new(),
            reaped: Vec::new(),
        })
    }

    /// Work waiting for room in the ring.
    #[cfg(test)]
    pub(super) fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Moves backlog work into the ring while it has room.
    fn pump(&mut self) {
        while let Some(work) = self.backlog.pop_front() {
            let (sqe, pending) = match work {
                Work::Ready(sqe, pending) => (sqe, pending),
                Work::Op(token, op) => {
                    let (sqe, scatter) = match self.image.plan(&self.mem, op) {
                        Step::Done(result) => {
                            self.done.push((token, result));
                            continue;
                        }
                        Step::Read(t) => (Sqe::Readv { offset: t.offset, iov: t.iov }, t.scatter),
                        Step::Write(t) => (Sqe::Writev { offset: t.offset, iov: t.iov }, None),
                        Step::Flush => (Sqe::Fdatasync, None),
                        Step::Discard { offset, len } => {
                            (Sqe::Fallocate { offset, len, mode: PUNCH_HOLE }, None)
                        }
                    };
                    (sqe, Pending { token, scatter })
                }
            };
            if let Err((sqe, pending)) = self.ring.push(sqe, pending) {
                self.backlog.push_front(Work::Ready(sqe, pending));
                break;
            }
        }
    }

    /// Handles one completion: answers its operation, or queues the rest of a short transfer
    /// (or the whole operation after `EAGAIN`/`EINTR`) to go out again.
    fn complete(&mut self, res: i32, sqe: Sqe, pending: Pending) {
        if res == -libc::EAGAIN || res == -libc::EINTR {
            self.backlog.push_front(Work::Ready(sqe, pending));
            return;
        }
        let Pending { token, scatter } = pending;
        let result = match sqe {
            Sqe::Readv { offset, iov } => {
                let mut t = Transfer { offset, iov, scatter };
                match transferred(res, false) {
                    Ok(n) if t.advance(n) => t.finish_read(&self.mem),
                    Ok(_) => return self.again(token, t, false),
                    Err(e) => Err(e),
                }
            }
            Sqe::Writev { offset, iov } => {
                let mut t = Transfer { offset, iov, scatter };
                match transferred(res, true) {
                    Ok(n) if t.advance(n) => Ok(()),
                    Ok(_) => return self.again(token, t, true),
                    Err(e) => Err(e),
                }
            }
            Sqe::Fdatasync => self.image.health.flush_result(&self.image.path, errno_result(res)),
            Sqe::Fallocate { .. } => discard_result(errno_result(res)),
        };
        self.done.push((token, result));
    }

    /// Sends the rest of a short transfer, before any other waiting work.
    fn again(&mut self, token: u64, t: Transfer, write: bool) {
        let sqe = if write {
            Sqe::Writev { offset: t.offset, iov: t.iov }
        } else {
            Sqe::Readv { offset: t.offset, iov: t.iov }
        };
        let pending = Pending { token, scatter: t.scatter };
        self.backlog.push_front(Work::Ready(sqe, pending));
    }

    /// Raises the eventfd for what no CQE will announce: operations answered without I/O, and
    /// entries the kernel did not take (`EAGAIN`/`EBUSY`, or an error) that the next
    /// `completions()` must hand over again, since nothing else would wake the backend.
    /// Writing fails only when the counter would overflow, i.e. when it is readable anyway.
    fn wake_if_needed(&mut self) {
        if !self.done.is_empty() || self.ring.has_unsubmitted() {
            let _ = self.eventfd.write(1);
        }
    }

    /// One `io_uring_enter` for whatever sits in the submission ring.
    fn enter(&mut self) -> io::Result<()> {
        if self.ring.has_unsubmitted() {
            self.ring.submit()
        } else {
            Ok(())
        }
    }
}

/// Bytes a read or write CQE reports, or its error.
fn transferred(res: i32, write: bool) -> Result<usize, IoError> {
    match res {
        r if r < 0 => Err(IoError::Io(io::Error::from_raw_os_error(-r))),
        0 => Err(no_progress(write)),
        r => Ok(r as usize),
    }
}

/// The result of a CQE that carries only success or a negated errno.
fn errno_result(res: i32) -> io::Result<()> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(())
    }
}

impl BlockIo for UringEngine {
    fn queue(&mut self, token: u64, op: IoOp) {
        self.queued.push((token, op));
    }

    fn submit(&mut self) -> Result<(), IoError> {
        self.backlog.extend(self.queued.drain(..).map(|(token, op)| Work::Op(token, op)));
        self.pump();
        let result = self.enter().map_err(IoError::Io);
        self.wake_if_needed();
        result
    }

    fn completions(&mut self, out: &mut Vec<(u64, Result<(), IoError>)>) {
        // Reset the counter before reaping: a CQE posted after the reap raises it again.
        let _ = self.eventfd.read();
        let mut reaped = std::mem::take(&mut self.reaped);
        self.ring.reap(&mut reaped);
        for (res, sqe, pending) in reaped.drain(..) {
            self.complete(res, sqe, pending);
        }
        self.reaped = reaped;
        if !self.backlog.is_empty() {
            self.pump();
        }
        if let Err(e) = self.enter() {
            log::warn!("{}: io_uring_enter failed: {e}", self.image.path.display());
        }
        out.append(&mut self.done);
        self.wake_if_needed();
    }

    fn completion_fd(&self) -> Option<RawFd> {
        Some(self.eventfd.as_raw_fd())
    }

    fn in_flight(&self) -> usize {
        self.queued.len() + self.backlog.len() + self.ring.in_flight() + self.done.len()
    }
}
