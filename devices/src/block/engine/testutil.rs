//! Helpers for the disk and engine tests: scratch directories, raw and qcow2 images (qcow2
//! made with imago's create builder, so no `qemu-img` is needed), guest memory, and a driver
//! that runs operations through a [`BlockIo`] the way a backend does.

use crate::block::disk::DiskOptions;
use crate::block::{BlockIo, IoError, IoOp};
use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, StorageOpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::tempdir::TempDir;

/// Guest RAM of the tests: 4 MiB at 0.
pub const MEM_SIZE: usize = 4 << 20;

/// A scratch directory, removed on drop; world-searchable so that a test running with another
/// file system uid can reach the files in it.
pub struct Scratch(TempDir);

impl Scratch {
    pub fn new() -> Scratch {
        let dir = TempDir::new_with_prefix("/tmp/xenvmm-disk-").expect("scratch directory");
        std::fs::set_permissions(dir.as_path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod scratch directory");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.as_path().join(name)
    }

    /// A raw image of `size` bytes whose byte `i` is `pattern(i)`.
    pub fn raw(&self, name: &str, size: usize) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, (0..size).map(pattern).collect::<Vec<u8>>()).expect("raw image");
        path
    }

    /// A qcow2 image of `size` bytes, optionally over `backing` (file name, format).
    pub fn qcow2(&self, name: &str, size: u64, backing: Option<(&str, &str)>) -> PathBuf {
        let path = self.path(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create qcow2 file");
        let opts = StorageOpenOptions::new().filename(&path).write(true);
        let storage = imago::file::File::from_open_file(file, opts).expect("imago storage");
        let mut builder = Qcow2::<imago::file::File>::create_builder(storage).size(size);
        if let Some((file, format)) = backing {
            builder = builder.backing(file.into(), format.into());
        }
        builder.create().expect("create qcow2 image");
        path
    }
}

/// The byte at offset `i` of a test pattern (not periodic at sector or page size).
pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8 ^ (i / 4096) as u8
}

pub fn opts(path: &Path) -> DiskOptions {
    DiskOptions { path: path.to_path_buf(), readonly: false, format: None, cache: Default::default() }
}

pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory")
}

/// Queues `ops` (token = index), submits once, and collects every completion, waiting on the
/// completion descriptor where the engine has one (and failing if it never becomes readable).
pub fn run(engine: &mut dyn BlockIo, ops: Vec<IoOp>) -> Vec<Result<(), IoError>> {
    let n = ops.len();
    for (token, op) in ops.into_iter().enumerate() {
        engine.queue(token as u64, op);
    }
    engine.submit().expect("submit");
    let mut out = Vec::new();
    drain(engine, &mut out);
    assert_eq!(out.len(), n, "one completion per operation");
    out.sort_by_key(|(token, _)| *token);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Collects completions until nothing is in flight.
pub fn drain(engine: &mut dyn BlockIo, out: &mut Vec<(u64, Result<(), IoError>)>) {
    let epoll = engine.completion_fd().map(|fd| {
        let epoll = Epoll::new().expect("epoll");
        epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))
            .expect("watch the completion fd");
        epoll
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        engine.completions(out);
        if engine.in_flight() == 0 {
            return;
        }
        let Some(epoll) = &epoll else {
            panic!("an engine without a completion fd left operations in flight");
        };
        let mut events = [EpollEvent::default()];
        // io_uring runs completion work in this thread, interrupting blocking system calls
        // (TIF_NOTIFY_SIGNAL): epoll_wait returns EINTR then, as it does for signals.
        let ready = match epoll.wait(5000, &mut events) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.expect("epoll_wait"),
        };
        assert!(
            ready > 0 || Instant::now() < deadline,
            "operations in flight but the completion fd never became readable"
        );
    }
}

/// A guest buffer.
pub fn guest(gpa: u64, len: u32) -> crate::block::IoBuf {
    crate::block::IoBuf::Guest { gpa: GuestAddress(gpa), len }
}
