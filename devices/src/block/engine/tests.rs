use super::testutil::{drain, guest, guest_memory, opts, pattern, run, Scratch, MEM_SIZE};
use super::*;
use crate::block::disk::{CacheMode, Disk, DiskOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use vm_memory::{Bytes, GuestAddress};

thread_local! {
    /// Makes this thread's io_uring setups fail, as `kernel.io_uring_disabled=2` or a seccomp
    /// filter would.
    pub(super) static URING_REFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The raw engines, with how each is opened.
const RAW_ENGINES: [(EngineKind, CacheMode); 4] = [
    (EngineKind::IoUring, CacheMode::Writeback),
    (EngineKind::Sync, CacheMode::Writeback),
    (EngineKind::IoUring, CacheMode::None),
    (EngineKind::Sync, CacheMode::None),
];

fn open(path: &Path, cache: CacheMode) -> Disk {
    Disk::open(&DiskOptions { cache, ..opts(path) }).expect("open")
}

fn engine(disk: &Disk, mem: &GuestMemoryMmap, kind: EngineKind) -> Box<dyn BlockIo> {
    disk.engine_with(mem.clone(), kind).unwrap_or_else(|e| {
        panic!("{kind:?} engine: {e} (is io_uring disabled on this host? kernel.io_uring_disabled)")
    })
}

fn fill(mem: &GuestMemoryMmap, gpa: u64, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len).map(|i| pattern(i) ^ seed).collect();
    mem.write_slice(&data, GuestAddress(gpa)).unwrap();
}

fn guest_bytes(mem: &GuestMemoryMmap, gpa: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    mem.read_slice(&mut v, GuestAddress(gpa)).unwrap();
    v
}

fn file_bytes(path: &Path, offset: usize, len: usize) -> Vec<u8> {
    std::fs::read(path).unwrap()[offset..offset + len].to_vec()
}

fn ok(results: Vec<Result<(), IoError>>) {
    for (i, r) in results.into_iter().enumerate() {
        if let Err(e) = r {
            panic!("operation {i}: {e}");
        }
    }
}

/// Blkfront-shaped segments: 512-byte aligned sector runs inside different pages.
fn segments() -> Vec<(u64, u32)> {
    vec![(0x1_0200, 0xe00), (0x3_0000, 0x1000), (0x5_0000, 0x200), (0x7_0400, 0x400)]
}

#[test]
fn raw_engines_write_and_read_guest_memory_in_place() {
    for (kind, cache) in RAW_ENGINES {
        let dir = Scratch::new();
        let path = dir.raw("a.img", 1 << 20);
        let disk = open(&path, cache);
        let mem = guest_memory();
        let mut e = engine(&disk, &mem, kind);
        let segs = segments();
        let total: usize = segs.iter().map(|s| s.1 as usize).sum();
        let mut at = 0;
        let mut expect = Vec::new();
        for &(gpa, len) in &segs {
            fill(&mem, gpa, len as usize, 0x5a ^ at as u8);
            expect.extend(guest_bytes(&mem, gpa, len as usize));
            at += len as usize;
        }
        let bufs = segs.iter().map(|&(g, l)| guest(g, l)).collect();
        ok(run(&mut *e, vec![IoOp::Write { offset: 0x2_0000, bufs }, IoOp::Flush]));
        assert_eq!(file_bytes(&path, 0x2_0000, total), expect, "{kind:?} {cache:?} write");

        // Read it back into other pages, and a neighbouring untouched range.
        let read_segs = [(0x20_0000u64, 0x1000u32), (0x21_0000, total as u32 - 0x1000)];
        let bufs = read_segs.iter().map(|&(g, l)| guest(g, l)).collect();
        let old = [(0x30_0000u64, 0x800u32)];
        let old_bufs = old.iter().map(|&(g, l)| guest(g, l)).collect();
        ok(run(
            &mut *e,
            vec![IoOp::Read { offset: 0x2_0000, bufs }, IoOp::Read { offset: 0x800, bufs: old_bufs }],
        ));
        let mut got = guest_bytes(&mem, 0x20_0000, 0x1000);
        got.extend(guest_bytes(&mem, 0x21_0000, total - 0x1000));
        assert_eq!(got, expect, "{kind:?} {cache:?} read");
        let want: Vec<u8> = (0x800..0x1000).map(pattern).collect();
        assert_eq!(guest_bytes(&mem, 0x30_0000, 0x800), want, "{kind:?} {cache:?}");
    }
}

#[test]
fn host_buffers_are_written_as_given() {
    for (kind, cache) in RAW_ENGINES {
        let dir = Scratch::new();
        let path = dir.raw("a.img", 1 << 16);
        let disk = open(&path, cache);
        let mem = guest_memory();
        let mut e = engine(&disk, &mem, kind);
        let data = vec![0xc3; 1024];
        fill(&mem, 0x4000, 512, 1);
        let write = IoOp::Write { offset: 4096, bufs: vec![IoBuf::Host(data.clone()), guest(0x4000, 512)] };
        ok(run(&mut *e, vec![write]));
        let mut expect = data;
        expect.extend(guest_bytes(&mem, 0x4000, 512));
        assert_eq!(file_bytes(&path, 4096, 1536), expect, "{kind:?} {cache:?}");
    }
}

#[test]
fn discard_punches_a_hole_that_reads_as_zeroes() {
    for (kind, cache) in RAW_ENGINES {
        let dir = Scratch::new();
        let path = dir.raw("a.img", 1 << 20);
        let disk = open(&path, cache);
        assert!(disk.discard_supported());
        let mem = guest_memory();
        let mut e = engine(&disk, &mem, kind);
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        ok(run(&mut *e, vec![IoOp::Discard { offset: 0x4_0000, len: 0x4_0000 }]));
        assert!(std::fs::metadata(&path).unwrap().blocks() < blocks, "{kind:?} freed blocks");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20, "size kept");
        fill(&mem, 0x1_0000, 0x1000, 0xff);
        let read = IoOp::Read { offset: 0x4_0000, bufs: vec![guest(0x1_0000, 0x1000)] };
        ok(run(&mut *e, vec![read]));
        assert_eq!(guest_bytes(&mem, 0x1_0000, 0x1000), vec![0; 0x1000]);
        assert_eq!(
            file_bytes(&path, 0x3_f000, 0x1000),
            (0x3_f000..0x4_0000).map(pattern).collect::<Vec<u8>>(),
            "{kind:?} {cache:?}: data before the hole kept"
        );
    }
}

#[test]
fn read_only_disks_refuse_writes_and_discards_without_issuing_them() {
    for (kind, cache) in RAW_ENGINES {
        let dir = Scratch::new();
        let path = dir.raw("a.img", 1 << 16);
        let before = std::fs::read(&path).unwrap();
        let disk = Disk::open(&DiskOptions { readonly: true, cache, ..opts(&path) }).unwrap();
        let mem = guest_memory();
        let mut e = engine(&disk, &mem, kind);
        let results = run(
            &mut *e,
            vec![
                IoOp::Write { offset: 0, bufs: vec![guest(0, 512)] },
                IoOp::Discard { offset: 0, len: 4096 },
                IoOp::Flush,
                IoOp::Read { offset: 512, bufs: vec![guest(0, 512)] },
            ],
        );
        assert!(matches!(results[0], Err(IoError::ReadOnly)), "{kind:?}");
        assert!(matches!(results[1], Err(IoError::ReadOnly)), "{kind:?}");
        assert!(results[2].is_ok() && results[3].is_ok(), "{kind:?}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}

#[test]
fn many_operations_in_one_submit_all_complete() {
    // More than the 512 submission slots and the 1024 completion slots in one submit(): the
    // rest waits in the backlog and goes out as completions make room.
    for kind in [EngineKind::IoUring, EngineKind::Sync] {
        let dir = Scratch::new();
        let path = dir.raw("a.img", 2 << 20);
        let disk = open(&path, CacheMode::Writeback);
        let mem = guest_memory();
        let mut e = engine(&disk, &mem, kind);
        let n = 1500u64;
        fill(&mem, 0, n as usize * 512, 0x77);
        let mut ops: Vec<IoOp> =
            (0..n).map(|i| IoOp::Write { offset: i * 512, bufs: vec![guest(i * 512, 512)] }).collect();
        ops.push(IoOp::Flush);
        ok(run(&mut *e, ops));
        assert_eq!(file_bytes(&path, 0, n as usize * 512), guest_bytes(&mem, 0, n as usize * 512));
        let ops = (0..n)
            .map(|i| IoOp::Read { offset: i * 512, bufs: vec![guest(0x20_0000 + i * 512, 512)] })
            .collect();
        ok(run(&mut *e, ops));
        assert_eq!(
            guest_bytes(&mem, 0x20_0000, n as usize * 512),
            guest_bytes(&mem, 0, n as usize * 512),
            "{kind:?}"
        );
    }
}

#[test]
fn operations_beyond_the_ring_wait_and_go_out_as_completions_make_room() {
    let dir = Scratch::new();
    let path = dir.raw("a.img", 1 << 20);
    let disk = open(&path, CacheMode::Writeback);
    let mem = Arc::new(guest_memory());
    let mut e = uring::UringEngine::new(disk.raw_image(), Arc::clone(&mem)).unwrap();
    let n = 2000u64;
    for i in 0..n {
        let op = IoOp::Read { offset: (i % 2048) * 512, bufs: vec![guest((i % 4096) * 1024, 512)] };
        e.queue(i, op);
    }
    e.submit().unwrap();
    // One io_uring_enter took what fits in the 512 submission slots; the rest waits.
    assert_eq!(e.backlog_len(), (n - URING_ENTRIES as u64) as usize);
    assert_eq!(e.in_flight(), n as usize);
    let mut out = Vec::new();
    drain(&mut e, &mut out);
    assert_eq!(out.len(), n as usize);
    assert!(out.iter().all(|(_, r)| r.is_ok()));
}

#[test]
fn io_uring_runs_here_and_sync_is_forced_on_request() {
    let dir = Scratch::new();
    let path = dir.raw("a.img", 1 << 16);
    let disk = open(&path, CacheMode::Writeback);
    let mem = guest_memory();
    assert!(engine(&disk, &mem, EngineKind::IoUring).completion_fd().is_some());
    assert!(disk.engine(mem.clone()).unwrap().completion_fd().is_some());
    let mut sync = engine(&disk, &mem, EngineKind::Sync);
    assert!(sync.completion_fd().is_none());
    sync.queue(7, IoOp::Flush);
    assert_eq!(sync.in_flight(), 1);
    sync.submit().unwrap();
    let mut out = Vec::new();
    sync.completions(&mut out);
    assert!(matches!(out.as_slice(), [(7, Ok(()))]));
    assert_eq!(sync.in_flight(), 0);
}

#[test]
fn without_io_uring_the_sync_engine_takes_over() {
    let dir = Scratch::new();
    let path = dir.raw("a.img", 1 << 16);
    let disk = open(&path, CacheMode::Writeback);
    let mem = guest_memory();
    URING_REFUSED.set(true);
    let auto = disk.engine(mem.clone());
    let forced = disk.engine_with(mem.clone(), EngineKind::IoUring);
    URING_REFUSED.set(false);
    let mut e = auto.expect("the fallback");
    assert!(e.completion_fd().is_none(), "the synchronous engine");
    fill(&mem, 0, 512, 8);
    let write = IoOp::Write { offset: 512, bufs: vec![guest(0, 512)] };
    ok(run(&mut *e, vec![write, IoOp::Flush]));
    assert_eq!(file_bytes(&path, 512, 512), guest_bytes(&mem, 0, 512));
    let err = forced.err().expect("io_uring was asked for explicitly");
    assert!(matches!(err, crate::block::disk::DiskError::Engine { .. }), "{err}");
}

#[test]
fn disks_and_engines_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Disk>();
    let dir = Scratch::new();
    let path = dir.raw("a.img", 1 << 16);
    let disk = open(&path, CacheMode::Writeback);
    let mut e = disk.engine(guest_memory()).unwrap();
    std::thread::spawn(move || ok(run(&mut *e, vec![IoOp::Flush]))).join().unwrap();
}

#[test]
fn qcow2_rings_allocate_concurrently() {
    // Several rings writing new clusters at once share one imago image: every write must be
    // found again, on the same run and after reopening.
    let dir = Scratch::new();
    let path = dir.qcow2("a.qcow2", 8 << 20, None);
    let disk = Arc::new(Disk::open(&opts(&path)).unwrap());
    let mem = guest_memory();
    const RINGS: u64 = 4;
    const WRITES: u64 = 64;
    // Ring r writes 4 KiB blocks r, r + RINGS, ...: interleaved, so rings allocate clusters
    // next to each other, share L2 tables, and some writes straddle two clusters.
    let block = |r: u64, i: u64| (i * RINGS + r) * 0x4e00;
    for r in 0..RINGS {
        fill(&mem, 0x1_0000 * r, 4096, r as u8 + 1);
    }
    let threads: Vec<_> = (0..RINGS)
        .map(|r| {
            let disk = Arc::clone(&disk);
            let mem = mem.clone();
            std::thread::spawn(move || {
                let mut e = disk.engine(mem).unwrap();
                let ops = (0..WRITES)
                    .map(|i| IoOp::Write { offset: block(r, i), bufs: vec![guest(0x1_0000 * r, 4096)] })
                    .collect();
                ok(run(&mut *e, ops));
                ok(run(&mut *e, vec![IoOp::Flush]));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(disk);
    let disk = Disk::open(&opts(&path)).unwrap();
    let mut e = disk.engine(mem.clone()).unwrap();
    for r in 0..RINGS {
        let want = guest_bytes(&mem, 0x1_0000 * r, 4096);
        for i in 0..WRITES {
            let read = IoOp::Read { offset: block(r, i), bufs: vec![guest(0x30_0000, 4096)] };
            ok(run(&mut *e, vec![read]));
            assert_eq!(guest_bytes(&mem, 0x30_0000, 4096), want, "ring {r} write {i}");
        }
    }
}

#[test]
fn a_failed_flush_breaks_writes_and_flushes_on_every_ring() {
    for kind in [EngineKind::IoUring, EngineKind::Sync] {
        // /dev/zero takes writes and gives zeroes, but fdatasync on it fails (EINVAL): a
        // file whose flush fails.
        let file = std::fs::OpenOptions::new().read(true).write(true).open("/dev/zero").unwrap();
        let disk = Disk::raw_for_test(file, false, None, true);
        let mem = guest_memory();
        let mut a = engine(&disk, &mem, kind);
        let mut b = engine(&disk, &mem, kind);
        let write = || IoOp::Write { offset: 0, bufs: vec![guest(0, 512)] };
        let read = || IoOp::Read { offset: 0, bufs: vec![guest(0, 512)] };
        ok(run(&mut *b, vec![write(), read()]));
        let r = run(&mut *a, vec![IoOp::Flush]);
        assert!(matches!(r[0], Err(IoError::Io(_))), "{kind:?}: {:?}", r[0]);
        for e in [&mut a, &mut b] {
            let r = run(&mut **e, vec![write(), IoOp::Flush, IoOp::Discard { offset: 0, len: 512 }, read()]);
            assert!(matches!(r[0], Err(IoError::Broken)), "{kind:?}: {:?}", r[0]);
            assert!(matches!(r[1], Err(IoError::Broken)), "{kind:?}: {:?}", r[1]);
            assert!(matches!(r[2], Err(IoError::Broken)), "{kind:?}: {:?}", r[2]);
            assert!(r[3].is_ok(), "{kind:?}: reads still work");
        }
        // A new ring of the same disk is broken too.
        let mut c = engine(&disk, &mem, kind);
        assert!(matches!(run(&mut *c, vec![write()])[0], Err(IoError::Broken)));
    }
}

#[test]
fn buffers_outside_guest_memory_fail_without_io() {
    for kind in [EngineKind::IoUring, EngineKind::Sync] {
        let dir = Scratch::new();
        let path = dir.raw("a.img", 1 << 16);
        let before = std::fs::read(&path).unwrap();
        let disk = open(&path, CacheMode::Writeback);
        let mem = guest_memory();
        let mut e = engine(&disk, &mem, kind);
        let beyond = MEM_SIZE as u64 + 0x1000;
        let r = run(
            &mut *e,
            vec![
                IoOp::Write { offset: 0, bufs: vec![guest(0, 512), guest(beyond, 512)] },
                IoOp::Read { offset: 0, bufs: vec![guest(MEM_SIZE as u64 - 512, 1024)] },
            ],
        );
        assert!(matches!(r[0], Err(IoError::BadBuffer(a)) if a == beyond), "{:?}", r[0]);
        assert!(matches!(r[1], Err(IoError::BadBuffer(_))), "{:?}", r[1]);
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}

#[test]
fn empty_operations_complete_at_once() {
    let dir = Scratch::new();
    let path = dir.raw("a.img", 1 << 16);
    let disk = open(&path, CacheMode::Writeback);
    let mem = guest_memory();
    for kind in [EngineKind::IoUring, EngineKind::Sync] {
        let mut e = engine(&disk, &mem, kind);
        let r =
            run(&mut *e, vec![IoOp::Read { offset: 0, bufs: vec![] }, IoOp::Discard { offset: 0, len: 0 }]);
        assert!(r.iter().all(Result::is_ok), "{kind:?}");
    }
}

#[test]
fn direct_io_bounces_buffers_the_file_cannot_take() {
    // A file that (we pretend) needs page-aligned memory: blkfront's 512-aligned sector runs
    // go through an aligned bounce buffer, in both directions.
    for kind in [EngineKind::IoUring, EngineKind::Sync] {
        let dir = Scratch::new();
        let path = dir.raw("a.img", 1 << 16);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .unwrap();
        let align = DirectAlign { mem: 4096, offset: 512 };
        let disk = Disk::raw_for_test(file, false, Some(align), false);
        let mem = guest_memory();
        let mut e = engine(&disk, &mem, kind);
        fill(&mem, 0x1200, 0x600, 3);
        fill(&mem, 0x5000, 0x200, 4);
        let mut expect = guest_bytes(&mem, 0x1200, 0x600);
        expect.extend(guest_bytes(&mem, 0x5000, 0x200));
        let write = IoOp::Write { offset: 0x1000, bufs: vec![guest(0x1200, 0x600), guest(0x5000, 0x200)] };
        let read = IoOp::Read { offset: 0x1000, bufs: vec![guest(0x8200, 0x200), guest(0x9a00, 0x600)] };
        ok(run(&mut *e, vec![write, IoOp::Flush]));
        ok(run(&mut *e, vec![read]));
        assert_eq!(file_bytes(&path, 0x1000, 0x800), expect, "{kind:?}");
        let mut got = guest_bytes(&mem, 0x8200, 0x200);
        got.extend(guest_bytes(&mem, 0x9a00, 0x600));
        assert_eq!(got, expect, "{kind:?}");
    }
}

#[test]
fn dropping_an_engine_waits_for_its_io() {
    let dir = Scratch::new();
    let path = dir.raw("a.img", 2 << 20);
    let disk = open(&path, CacheMode::None);
    let mem = guest_memory();
    let mut e = engine(&disk, &mem, EngineKind::IoUring);
    for i in 0..1000u64 {
        let op = IoOp::Read { offset: (i % 512) * 4096, bufs: vec![guest(i * 4096 % MEM_SIZE as u64, 4096)] };
        e.queue(i, op);
    }
    e.submit().unwrap();
    assert!(e.in_flight() > 0);
    drop(e);
    drop(mem);
    // The ring of a second engine still works: nothing was left behind.
    let mem = guest_memory();
    let mut e = engine(&disk, &mem, EngineKind::IoUring);
    ok(run(&mut *e, vec![IoOp::Flush]));
}

#[test]
fn qcow2_round_trip_is_on_the_file_after_a_flush() {
    let dir = Scratch::new();
    let path = dir.qcow2("a.qcow2", 4 << 20, None);
    let disk = Disk::open(&opts(&path)).unwrap();
    let mem = guest_memory();
    let mut e = disk.engine(mem.clone()).unwrap();
    assert!(e.completion_fd().is_none());
    let segs = segments();
    let total: usize = segs.iter().map(|s| s.1 as usize).sum();
    let mut expect = Vec::new();
    for &(gpa, len) in &segs {
        fill(&mem, gpa, len as usize, 9);
        expect.extend(guest_bytes(&mem, gpa, len as usize));
    }
    let bufs = segs.iter().map(|&(g, l)| guest(g, l)).collect();
    ok(run(&mut *e, vec![IoOp::Write { offset: 0x1_0000, bufs }]));
    ok(run(&mut *e, vec![IoOp::Flush]));

    // While xenvmm still has the image open (as if SIGKILLed now, without any drop), the
    // file alone holds the data and the metadata that finds it.
    let copy = dir.path("copy.qcow2");
    std::fs::copy(&path, &copy).unwrap();
    let reader = Disk::open(&opts(&copy)).unwrap();
    let mut r = reader.engine(mem.clone()).unwrap();
    let read = IoOp::Read { offset: 0x1_0000, bufs: vec![guest(0x20_0000, total as u32)] };
    ok(run(&mut *r, vec![read]));
    assert_eq!(guest_bytes(&mem, 0x20_0000, total), expect);

    // Unwritten ranges read as zeroes; the original engine reads its own writes.
    let read = IoOp::Read { offset: 0x1_0000, bufs: vec![guest(0x30_0000, total as u32)] };
    ok(run(&mut *e, vec![read]));
    assert_eq!(guest_bytes(&mem, 0x30_0000, total), expect);
    let read = IoOp::Read { offset: 0x20_0000, bufs: vec![guest(0x30_0000, 4096)] };
    ok(run(&mut *e, vec![read]));
    assert_eq!(guest_bytes(&mem, 0x30_0000, 4096), vec![0; 4096]);
}

#[test]
fn qcow2_reads_fall_through_to_the_backing_file_and_writes_stay_in_the_overlay() {
    let dir = Scratch::new();
    let base = dir.raw("base.img", 1 << 20);
    let base_before = std::fs::read(&base).unwrap();
    let overlay = dir.qcow2("overlay.qcow2", 1 << 20, Some(("base.img", "raw")));
    let mem = guest_memory();
    {
        let disk = Disk::open(&opts(&overlay)).unwrap();
        let mut e = disk.engine(mem.clone()).unwrap();
        let read = IoOp::Read { offset: 0x3_0000, bufs: vec![guest(0x1000, 0x2000)] };
        ok(run(&mut *e, vec![read]));
        let want: Vec<u8> = (0x3_0000..0x3_2000).map(pattern).collect();
        assert_eq!(guest_bytes(&mem, 0x1000, 0x2000), want, "read through to the base");

        fill(&mem, 0x8000, 0x1000, 0xee);
        let write = IoOp::Write { offset: 0x3_1000, bufs: vec![guest(0x8000, 0x1000)] };
        ok(run(&mut *e, vec![write, IoOp::Flush]));
    }
    assert_eq!(std::fs::read(&base).unwrap(), base_before, "backing file untouched");

    let disk = Disk::open(&opts(&overlay)).unwrap();
    let mut e = disk.engine(mem.clone()).unwrap();
    let read = IoOp::Read { offset: 0x3_0000, bufs: vec![guest(0x10_0000, 0x2000)] };
    ok(run(&mut *e, vec![read]));
    let mut want: Vec<u8> = (0x3_0000..0x3_1000).map(pattern).collect();
    want.extend(guest_bytes(&mem, 0x8000, 0x1000));
    assert_eq!(guest_bytes(&mem, 0x10_0000, 0x2000), want, "overlay over base");
}

#[test]
fn qcow2_read_only_refuses_writes_and_discard_is_not_offered() {
    let dir = Scratch::new();
    let path = dir.qcow2("a.qcow2", 1 << 20, None);
    let before = std::fs::read(&path).unwrap();
    let mem = guest_memory();
    {
        let disk = Disk::open(&DiskOptions { readonly: true, ..opts(&path) }).unwrap();
        let mut e = disk.engine(mem.clone()).unwrap();
        let r = run(
            &mut *e,
            vec![
                IoOp::Write { offset: 0, bufs: vec![guest(0, 512)] },
                IoOp::Discard { offset: 0, len: 512 },
                IoOp::Flush,
            ],
        );
        assert!(matches!(r[0], Err(IoError::ReadOnly)));
        assert!(matches!(r[1], Err(IoError::ReadOnly)));
        assert!(r[2].is_ok());
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let disk = Disk::open(&opts(&path)).unwrap();
    let mut e = disk.engine(mem).unwrap();
    let r = run(&mut *e, vec![IoOp::Discard { offset: 0, len: 512 }]);
    assert!(matches!(r[0], Err(IoError::NotSupported)));
}

#[test]
fn qcow2_failed_flush_breaks_every_ring() {
    let dir = Scratch::new();
    let path = dir.qcow2("a.qcow2", 1 << 20, None);
    let disk = Disk::open(&opts(&path)).unwrap();
    let mem = guest_memory();
    let mut a = disk.engine(mem.clone()).unwrap();
    let mut b = disk.engine(mem.clone()).unwrap();
    let write = || IoOp::Write { offset: 0, bufs: vec![guest(0, 512)] };
    ok(run(&mut *a, vec![write(), IoOp::Flush]));
    disk.fail_next_qcow2_flush();
    assert!(matches!(run(&mut *a, vec![IoOp::Flush])[0], Err(IoError::Io(_))));
    let r =
        run(&mut *b, vec![write(), IoOp::Flush, IoOp::Read { offset: 0, bufs: vec![guest(0x1000, 512)] }]);
    assert!(matches!(r[0], Err(IoError::Broken)));
    assert!(matches!(r[1], Err(IoError::Broken)));
    assert!(r[2].is_ok());
}

#[test]
fn completions_of_several_submits_are_all_reported() {
    // A backend may submit again before collecting: nothing is lost in between.
    let dir = Scratch::new();
    let path = dir.raw("a.img", 1 << 16);
    let disk = open(&path, CacheMode::Writeback);
    let mem = guest_memory();
    let mut e = engine(&disk, &mem, EngineKind::IoUring);
    for round in 0..3u64 {
        for i in 0..10u64 {
            let op = IoOp::Read { offset: i * 512, bufs: vec![guest(i * 4096, 512)] };
            e.queue(round * 10 + i, op);
        }
        e.submit().unwrap();
    }
    let mut out = Vec::new();
    drain(&mut *e, &mut out);
    let mut tokens: Vec<u64> = out.iter().map(|(t, _)| *t).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, (0..30).collect::<Vec<_>>());
}

/// Set in the child process of `sigkill_keeps_every_write_completed_before_a_flush`: the image
/// to write, then the engine to use.
const SIGKILL_CHILD: &str = "XENVMM_TEST_SIGKILL_CHILD";

/// The child half of `sigkill_keeps_every_write_completed_before_a_flush`; in a normal run it
/// has nothing to do and returns at once.
#[test]
fn sigkill_child() {
    let Ok(spec) = std::env::var(SIGKILL_CHILD) else {
        return;
    };
    let (path, kind) = spec.split_once(';').unwrap();
    let kind = if kind == "sync" { EngineKind::Sync } else { EngineKind::IoUring };
    let disk = Disk::open(&opts(Path::new(path))).unwrap();
    let mem = guest_memory();
    let mut e = engine(&disk, &mem, kind);
    fill(&mem, 0, 64 * 4096, 0x3c);
    let ops =
        (0..64u64).map(|i| IoOp::Write { offset: i * 0x1_1000, bufs: vec![guest(i * 4096, 4096)] }).collect();
    ok(run(&mut *e, ops));
    ok(run(&mut *e, vec![IoOp::Flush]));
    // Written after the flush: may or may not survive, but must not corrupt anything.
    let ops = (0..64u64)
        .map(|i| IoOp::Write { offset: 0x60_0000 + i * 0x8000, bufs: vec![guest(i * 4096, 4096)] })
        .collect();
    ok(run(&mut *e, ops));
    println!("FLUSHED");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    unreachable!("SIGKILL");
}

#[test]
fn sigkill_keeps_every_write_completed_before_a_flush() {
    use std::os::unix::process::ExitStatusExt;
    for (name, kind) in [("qcow2", "sync"), ("raw", "uring"), ("raw", "sync")] {
        let dir = Scratch::new();
        let path =
            if name == "qcow2" { dir.qcow2("a.qcow2", 8 << 20, None) } else { dir.raw("a.img", 8 << 20) };
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "block::engine::tests::sigkill_child", "--nocapture", "--test-threads=1"])
            .env(SIGKILL_CHILD, format!("{};{kind}", path.display()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{name}/{kind}: {stdout}{stderr}");
        assert!(stdout.contains("FLUSHED"), "{name}/{kind}: {stdout}");

        let disk = Disk::open(&opts(&path)).expect("the image opens after SIGKILL");
        let mem = guest_memory();
        fill(&mem, 0, 64 * 4096, 0x3c);
        let mut e = disk.engine(mem.clone()).unwrap();
        for i in 0..64u64 {
            let read = IoOp::Read { offset: i * 0x1_1000, bufs: vec![guest(0x20_0000, 4096)] };
            ok(run(&mut *e, vec![read]));
            let want = guest_bytes(&mem, i * 4096, 4096);
            assert_eq!(guest_bytes(&mem, 0x20_0000, 4096), want, "{name}/{kind}: write {i}");
        }
    }
}
