//! The synchronous engine for raw images, for hosts without io_uring (`kernel.io_uring_disabled`,
//! a seccomp filter, a kernel before 5.6): every queued operation runs inside `submit()`, in
//! queue order, as `preadv`/`pwritev` straight to and from guest memory, `fdatasync`, or
//! `fallocate(PUNCH_HOLE|KEEP_SIZE)`. It blocks the ring's thread for the duration, which costs
//! throughput, not correctness: completions are only ever reported after the system call
//! returned.

use super::sys;
use super::{discard_result, no_progress, RawImage, Step, Transfer};
use crate::block::{IoError, IoOp};
use rustix::fs::FallocateFlags;
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

pub(super) struct SyncEngine {
    image: Arc<RawImage>,
    mem: Arc<GuestMemoryMmap>,
}

impl SyncEngine {
    pub(super) fn new(image: Arc<RawImage>, mem: Arc<GuestMemoryMmap>) -> Self {
        SyncEngine { image, mem }
    }

    pub(crate) fn run_op(&self, op: IoOp) -> Result<(), IoError> {
        let file = &*self.image.file;
        match self.image.plan(&self.mem, op) {
            Step::Done(result) => result,
            Step::Read(mut t) => {
                loop {
                    let n = sys::preadv(file, &mut t.iov, t.offset)?;
                    if n == 0 {
                        return Err(no_progress(false));
                    }
                    if t.advance(n) {
                        break;
                    }
                }
                t.finish_read(&self.mem)
            }
            Step::Write(mut t) => write_all(file, &mut t),
            Step::Flush => {
                let result = rustix::fs::fdatasync(file).map_err(Into::into);
                self.image.health.flush_result(&self.image.path, result)
            }
            Step::Discard { offset, len } => {
                let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
                discard_result(rustix::fs::fallocate(file, mode, offset, len).map_err(Into::into))
            }
        }
    }
}

fn write_all(file: &std::fs::File, t: &mut Transfer) -> Result<(), IoError> {
    loop {
        let n = sys::pwritev(file, &t.iov, t.offset)?;
        if n == 0 {
            return Err(no_progress(true));
        }
        if t.advance(n) {
            return Ok(());
        }
    }
}

impl super::RunOp for SyncEngine {
    fn run(&self, op: IoOp) -> Result<(), IoError> {
        self.run_op(op)
    }
}
