use super::*;
use crate::block::testutil::*;
use vm_memory::GuestMemoryMmap;
use xen_abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING};
use xen_abi::hostcall::MfnRange;

/// Machine layout: the grant table in frames 0x10..0x12 (1024 entries), RAM 0x100..0x180.
const TABLE: MfnRange = MfnRange { first_mfn: 0x10, nr_frames: 2 };
const RAM: MfnRange = MfnRange { first_mfn: 0x100, nr_frames: 0x80 };
const DOM0: u16 = 0;
/// The ring's grant (one page, frame 0x100).
const RING_REF: u32 = 8;
/// Disk size in sectors (1 MiB).
const SECTORS: u64 = 2048;
/// Data pages: gref 100 + i grants frame 0x120 + i.
const DATA_REF: u32 = 100;
const DATA_FRAME: u64 = 0x120;

type Mem = Arc<GuestMemoryMmap<()>>;
type Backend = BlkBackend<Mem, MemDisk<Mem>>;

fn info() -> DiskInfo {
    DiskInfo {
        sectors: SECTORS,
        readonly: false,
        discard: true,
        probed_raw: false,
        max_indirect_segments: 256,
    }
}

struct Env {
    mem: Mem,
    grants: Arc<Mutex<GrantTable>>,
    front: Frontend,
    be: Backend,
    /// Grant references the test granted (their in-use bits are checked).
    granted: Vec<u32>,
}

fn env(info: DiskInfo) -> Env {
    env_with(info, &[(RING_REF, 0x100)], |_| {})
}

/// A connected backend over a ring in `ring` (gref, frame) pages; `setup` adjusts the
/// engine before connecting.
fn env_with(info: DiskInfo, ring: &[(u32, u64)], setup: impl FnOnce(&mut MemDisk<Mem>)) -> Env {
    let mem: Mem = Arc::new(
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(TABLE.first_mfn << 12), (TABLE.nr_frames << 12) as usize),
            (GuestAddress(RAM.first_mfn << 12), (RAM.nr_frames << 12) as usize),
        ])
        .unwrap(),
    );
    let grants = Arc::new(Mutex::new(GrantTable::new(TABLE, &[RAM])));
    let pages: Vec<GuestAddress> = ring.iter().map(|&(_, f)| GuestAddress(f << 12)).collect();
    let front = Frontend::new(&*mem, GuestAddress(TABLE.first_mfn << 12), &pages, 0);
    for &(gref, frame) in ring {
        front.grant(&*mem, gref, GTF_PERMIT_ACCESS, DOM0, frame as u32);
    }
    let mut disk = MemDisk::new(mem.clone(), info.sectors);
    disk.readonly = info.readonly;
    disk.discard = info.discard;
    // A recognisable disk: byte i of sector s is (s + i) as u8.
    for (k, b) in disk.data.iter_mut().enumerate() {
        *b = ((k / 512) + (k % 512)) as u8;
    }
    setup(&mut disk);
    let refs: Vec<u32> = ring.iter().map(|&(g, _)| g).collect();
    let be = BlkBackend::connect(mem.clone(), grants.clone(), DOM0, &refs, info, disk).unwrap();
    Env { mem, grants, front, be, granted: refs }
}

impl Env {
    /// Grants data page `i` (gref 100 + i, frame 0x120 + i) to domain 0.
    fn grant(&mut self, i: u32, readonly: bool) -> u32 {
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        self.grant_raw(DATA_REF + i, flags, DOM0, (DATA_FRAME + u64::from(i)) as u32)
    }

    fn grant_raw(&mut self, gref: u32, flags: u16, domid: u16, frame: u32) -> u32 {
        self.front.grant(&*self.mem, gref, flags, domid, frame);
        self.granted.push(gref);
        gref
    }

    fn frame_gpa(i: u32) -> GuestAddress {
        GuestAddress((DATA_FRAME + u64::from(i)) << 12)
    }

    fn fill_page(&self, i: u32, byte: u8) {
        self.mem.write_slice(&[byte; 4096], Self::frame_gpa(i)).unwrap();
    }

    fn page(&self, i: u32) -> Vec<u8> {
        let mut v = vec![0; 4096];
        self.mem.read_slice(&mut v, Self::frame_gpa(i)).unwrap();
        v
    }

    fn request(&mut self, raw: &[u8; BLKIF_RING_ENTRY_SIZE]) {
        self.front.request(&*self.mem, raw);
    }

    /// The worker loop until idle; returns whether the guest was to be notified.
    fn run(&mut self) -> bool {
        let mut notify = false;
        for _ in 0..100 {
            notify |= self.be.process().unwrap();
            notify |= self.be.complete().unwrap();
            if !self.be.final_check().unwrap() {
                return notify;
            }
        }
        panic!("the backend did not go idle");
    }

    fn responses(&mut self) -> Vec<(u64, u8, i16)> {
        self.front.responses(&*self.mem).into_iter().map(|r| (r.id, r.operation, r.status)).collect()
    }

    fn disk(&self) -> &MemDisk<Mem> {
        self.be.engine()
    }

    fn disk_mut(&mut self) -> &mut MemDisk<Mem> {
        self.be.engine_mut()
    }

    fn sector(&self, s: u64) -> &[u8] {
        &self.disk().data[(s * 512) as usize..((s + 1) * 512) as usize]
    }

    /// No grant the guest made is marked in use, and only the ring's grants are pinned.
    fn assert_grants_released(&self) {
        for &gref in &self.granted[self.be.ring.pages().len()..] {
            let flags = self.front.grant_flags(&*self.mem, gref);
            assert_eq!(flags & (GTF_READING | GTF_WRITING), 0, "grant {gref} still in use: {flags:#x}");
        }
        assert_eq!(lock(&self.grants).nr_active(), self.be.ring.pages().len(), "only the ring stays mapped");
    }

    fn ops(&self) -> Vec<IoOp> {
        self.disk().log.iter().map(|(_, op)| op.clone()).collect()
    }
}

fn expected_sector(s: u64) -> Vec<u8> {
    (0..512).map(|i| (s as usize + i) as u8).collect()
}

#[test]
fn reads_disk_sectors_into_the_granted_pages() {
    let mut e = env(info());
    let a = e.grant(0, false);
    let b = e.grant(1, false);
    e.fill_page(0, 0xaa);
    e.fill_page(1, 0xaa);
    // 8 sectors into all of page 0, then 2 into sectors 3..=4 of page 1.
    e.request(&rw_request(BLKIF_OP_READ, 7, 100, &[seg(a, 0, 7), seg(b, 3, 4)]));
    assert!(e.run(), "the first response notifies");
    assert_eq!(e.responses(), vec![(7, BLKIF_OP_READ, BLKIF_RSP_OKAY)]);
    let p0 = e.page(0);
    for k in 0..8 {
        assert_eq!(p0[k * 512..(k + 1) * 512], expected_sector(100 + k as u64)[..]);
    }
    let p1 = e.page(1);
    assert!(p1[..3 * 512].iter().all(|&x| x == 0xaa), "sectors before first_sect untouched");
    assert_eq!(p1[3 * 512..4 * 512], expected_sector(108)[..]);
    assert_eq!(p1[4 * 512..5 * 512], expected_sector(109)[..]);
    assert!(p1[5 * 512..].iter().all(|&x| x == 0xaa), "sectors after last_sect untouched");
    e.assert_grants_released();
    let s = e.be.stats();
    assert_eq!((s.rd_req, s.rd_sect, s.batches, s.notifications), (1, 10, 1, 1));
}

#[test]
fn writes_the_granted_pages_to_the_disk() {
    let mut e = env(info());
    let a = e.grant(0, true);
    e.fill_page(0, 0x5c);
    e.request(&rw_request(BLKIF_OP_WRITE, 9, 40, &[seg(a, 6, 7)]));
    e.run();
    assert_eq!(e.responses(), vec![(9, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)]);
    assert!(e.sector(40).iter().chain(e.sector(41)).all(|&x| x == 0x5c));
    assert_eq!(e.sector(42), &expected_sector(42)[..]);
    e.assert_grants_released();
    assert_eq!(e.be.stats().wr_sect, 2);
}

#[test]
fn a_segment_whose_grant_cannot_be_mapped_fails_the_request_and_unmaps_the_others() {
    for bad in ["beyond the table", "granted to another domain", "not a grant", "frame not RAM"] {
        let mut e = env(info());
        let a = e.grant(0, false);
        let b = e.grant(1, false);
        let gref = match bad {
            "beyond the table" => 5000,
            "granted to another domain" => e.grant_raw(300, GTF_PERMIT_ACCESS, 5, 0x130),
            "not a grant" => e.grant_raw(301, 0, DOM0, 0x130),
            _ => e.grant_raw(302, GTF_PERMIT_ACCESS, DOM0, 0x10),
        };
        e.request(&rw_request(BLKIF_OP_READ, 1, 0, &[seg(a, 0, 7), seg(b, 0, 7), seg(gref, 0, 7)]));
        e.run();
        assert_eq!(e.responses(), vec![(1, BLKIF_OP_READ, BLKIF_RSP_ERROR)], "{bad}");
        assert!(e.ops().is_empty(), "{bad}: no I/O");
        e.assert_grants_released();
    }
}

#[test]
fn a_read_only_grant_cannot_receive_a_guest_read_but_can_feed_a_write() {
    let mut e = env(info());
    let a = e.grant(0, true);
    e.request(&rw_request(BLKIF_OP_READ, 1, 0, &[seg(a, 0, 7)]));
    e.request(&rw_request(BLKIF_OP_WRITE, 2, 0, &[seg(a, 0, 7)]));
    e.run();
    assert_eq!(e.responses(), vec![(1, BLKIF_OP_READ, BLKIF_RSP_ERROR), (2, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)]);
    assert_eq!(e.ops().len(), 1);
    e.assert_grants_released();
}

#[test]
fn malformed_requests_are_answered_with_errors_and_do_no_io() {
    let mut e = env(info());
    let a = e.grant(0, false);
    let cases = [
        (rw_request(BLKIF_OP_READ, 1, 0, &[seg(a, 4, 3)]), BLKIF_OP_READ, BLKIF_RSP_ERROR),
        (rw_request(BLKIF_OP_READ, 2, 0, &[seg(a, 0, 8)]), BLKIF_OP_READ, BLKIF_RSP_ERROR),
        (rw_request(BLKIF_OP_READ, 3, SECTORS - 7, &[seg(a, 0, 7)]), BLKIF_OP_READ, BLKIF_RSP_ERROR),
        (rw_request(BLKIF_OP_WRITE, 4, u64::MAX - 3, &[seg(a, 0, 7)]), BLKIF_OP_WRITE, BLKIF_RSP_ERROR),
        (rw_request(BLKIF_OP_READ, 5, 0, &[seg(a, 0, 0); 12]), BLKIF_OP_READ, BLKIF_RSP_ERROR),
        (rw_request(BLKIF_OP_WRITE, 6, 0, &[]), BLKIF_OP_WRITE, BLKIF_RSP_ERROR),
        (
            rw_request(BLKIF_OP_WRITE_BARRIER, 7, 0, &[seg(a, 0, 7)]),
            BLKIF_OP_WRITE_BARRIER,
            BLKIF_RSP_EOPNOTSUPP,
        ),
        (rw_request(BLKIF_OP_RESERVED_1, 8, 0, &[]), BLKIF_OP_RESERVED_1, BLKIF_RSP_EOPNOTSUPP),
        (rw_request(0xee, 9, 0, &[]), 0xee, BLKIF_RSP_EOPNOTSUPP),
        (
            indirect_request(BLKIF_OP_FLUSH_DISKCACHE, 10, 0, 1, &[a]),
            BLKIF_OP_FLUSH_DISKCACHE,
            BLKIF_RSP_ERROR,
        ),
        (indirect_request(BLKIF_OP_READ, 11, 0, 257, &[a]), BLKIF_OP_READ, BLKIF_RSP_ERROR),
        (discard_request(12, SECTORS, 1), BLKIF_OP_DISCARD, BLKIF_RSP_ERROR),
    ];
    for (raw, _, _) in &cases {
        e.request(raw);
    }
    let notify = e.run();
    let want: Vec<_> = cases.iter().enumerate().map(|(i, (_, op, st))| (i as u64 + 1, *op, *st)).collect();
    assert_eq!(e.responses(), want);
    assert!(notify);
    assert!(e.ops().is_empty());
    assert_eq!(e.disk().submits, 0, "nothing to submit");
    e.assert_grants_released();
    let s = e.be.stats();
    assert_eq!((s.err_rsp, s.notsupp_rsp, s.other_req), (9, 3, 3));
}

#[test]
fn indirect_requests_read_their_segment_pages_through_read_only_grants() {
    let mut e = env(info());
    // 20 segments of one sector each: sector 200 + i into sector i % 8 of page 1 + i / 8.
    let data: Vec<u32> = (1..4).map(|i| e.grant(i, false)).collect();
    let segs: Vec<_> =
        (0..20u32).map(|i| seg(data[(i / 8) as usize], (i % 8) as u8, (i % 8) as u8)).collect();
    let ind = e.grant(0, true);
    e.mem.write_slice(segs.as_bytes(), Env::frame_gpa(0)).unwrap();
    e.request(&indirect_request(BLKIF_OP_READ, 77, 200, 20, &[ind]));
    e.run();
    assert_eq!(e.responses(), vec![(77, BLKIF_OP_READ, BLKIF_RSP_OKAY)], "echoes indirect_op, not INDIRECT");
    for i in 0..20u64 {
        let page = e.page(1 + (i / 8) as u32);
        let k = (i % 8) as usize;
        assert_eq!(page[k * 512..(k + 1) * 512], expected_sector(200 + i)[..], "segment {i}");
    }
    e.assert_grants_released();
    let s = e.be.stats();
    assert_eq!((s.indirect_req, s.rd_req, s.rd_sect), (1, 1, 20));
}

#[test]
fn bad_indirect_pages_fail_the_request() {
    let mut e = env(info());
    let a = e.grant(1, false);
    let good = e.grant(0, true);
    e.mem.write_slice([seg(a, 0, 7); 2].as_bytes(), Env::frame_gpa(0)).unwrap();
    let foreign = e.grant_raw(400, GTF_PERMIT_ACCESS, 9, 0x121);
    let bad_seg = e.grant(2, true);
    e.mem.write_slice([seg(a, 0, 7), seg(a, 7, 1)].as_bytes(), Env::frame_gpa(2)).unwrap();
    e.request(&indirect_request(BLKIF_OP_READ, 1, 0, 2, &[foreign]));
    e.request(&indirect_request(BLKIF_OP_READ, 2, 0, 2, &[4000]));
    e.request(&indirect_request(BLKIF_OP_READ, 3, 0, 2, &[bad_seg]));
    e.request(&indirect_request(BLKIF_OP_WRITE, 4, 0, 513, &[good, 4000]));
    e.request(&indirect_request(BLKIF_OP_WRITE, 5, 0, 2, &[good]));
    e.run();
    let r = e.responses();
    assert_eq!(r[..4].iter().map(|x| x.2).collect::<Vec<_>>(), vec![BLKIF_RSP_ERROR; 4]);
    assert_eq!(r[4], (5, BLKIF_OP_WRITE, BLKIF_RSP_OKAY));
    e.assert_grants_released();
}

#[test]
fn a_producer_running_ahead_of_the_ring_stops_it_and_in_flight_io_is_still_answered() {
    let mut e = env_with(info(), &[(RING_REF, 0x100)], |d| d.auto_complete = false);
    let a = e.grant(0, false);
    e.request(&rw_request(BLKIF_OP_READ, 1, 0, &[seg(a, 0, 7)]));
    assert!(!e.be.process().unwrap());
    assert_eq!(e.disk().issued.len(), 1);
    // The guest claims 40 more requests in a 32-entry ring.
    e.front.set_req_prod(&*e.mem, 41);
    assert!(matches!(e.be.process(), Err(BlkError::Ring(RingError::ProdOverflow { req_prod: 41, .. }))));
    assert!(e.be.is_stopped());
    // Once only: later passes do nothing, and the final check asks for no event.
    assert!(!e.be.process().unwrap());
    assert!(!e.be.final_check().unwrap());
    e.disk_mut().complete_all();
    assert!(e.be.complete().unwrap());
    assert_eq!(e.responses(), vec![(1, BLKIF_OP_READ, BLKIF_RSP_OKAY)]);
    assert_eq!(e.ops().len(), 1);
    e.assert_grants_released();
}

#[test]
fn a_request_rewritten_after_it_was_taken_is_served_as_first_read() {
    let mut e = env_with(info(), &[(RING_REF, 0x100)], |d| d.auto_complete = false);
    let a = e.grant(0, true);
    let b = e.grant(1, true);
    e.fill_page(0, 0x11);
    e.request(&rw_request(BLKIF_OP_WRITE, 0x77, 16, &[seg(a, 0, 1)]));
    e.be.process().unwrap();
    // The guest rewrites the slot: another id, sector, grant and segment.
    let evil = rw_request(BLKIF_OP_WRITE, 0x66, 0, &[seg(b, 0, 7)]);
    for (i, byte) in evil.iter().enumerate() {
        e.mem.write_obj(*byte, e.front.ring_gpa(e.front.entry_off(0) + i)).unwrap();
    }
    e.disk_mut().complete_all();
    e.be.complete().unwrap();
    assert_eq!(e.responses(), vec![(0x77, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)]);
    let IoOp::Write { offset, bufs } = &e.ops()[0] else { panic!() };
    assert_eq!((*offset, bufs.len(), bufs[0].len()), (16 * 512, 1, 1024));
    assert!(e.sector(16).iter().all(|&x| x == 0x11));
    assert_eq!(e.sector(0), &expected_sector(0)[..]);
    e.assert_grants_released();
}

#[test]
fn a_read_only_disk_never_gets_a_write() {
    // The engine panics on any write or discard to a read-only disk.
    let mut e = env(DiskInfo { readonly: true, ..info() });
    let a = e.grant(0, false);
    let ind = e.grant(1, true);
    e.mem.write_slice(seg(a, 0, 7).as_bytes(), Env::frame_gpa(1)).unwrap();
    e.request(&rw_request(BLKIF_OP_WRITE, 1, 0, &[seg(a, 0, 7)]));
    e.request(&rw_request(BLKIF_OP_FLUSH_DISKCACHE, 2, 0, &[seg(a, 0, 7)]));
    e.request(&rw_request(BLKIF_OP_FLUSH_DISKCACHE, 3, 0, &[]));
    e.request(&discard_request(4, 0, 8));
    e.request(&indirect_request(BLKIF_OP_WRITE, 5, 0, 1, &[ind]));
    e.request(&rw_request(BLKIF_OP_READ, 6, 0, &[seg(a, 0, 7)]));
    e.run();
    let r = e.responses();
    assert_eq!(
        r.iter().map(|x| x.2).collect::<Vec<_>>(),
        [[BLKIF_RSP_ERROR; 5].as_slice(), &[BLKIF_RSP_OKAY]].concat()
    );
    assert_eq!(e.ops().len(), 1, "only the read ran");
    e.assert_grants_released();
}

#[test]
fn completions_in_any_order_answer_the_right_requests() {
    let mut e = env_with(info(), &[(RING_REF, 0x100)], |d| d.auto_complete = false);
    let g: Vec<u32> = (0..4).map(|i| e.grant(i, false)).collect();
    for (i, &gref) in g.iter().enumerate() {
        e.request(&rw_request(BLKIF_OP_READ, 100 + i as u64, 8 * i as u64, &[seg(gref, 0, 7)]));
    }
    e.be.process().unwrap();
    assert_eq!(e.disk().submits, 1, "one submit for the whole pass");
    assert_eq!(e.disk().issued.len(), 4);
    e.disk_mut().complete_at(2);
    assert!(e.be.complete().unwrap());
    assert_eq!(e.responses(), vec![(102, BLKIF_OP_READ, BLKIF_RSP_OKAY)]);
    // The grants of the answered request are free; the others are still in use.
    assert_eq!(e.front.grant_flags(&*e.mem, g[2]) & GTF_WRITING, 0);
    assert_ne!(e.front.grant_flags(&*e.mem, g[0]) & GTF_WRITING, 0);
    e.disk_mut().complete_all_reversed();
    e.be.complete().unwrap();
    assert_eq!(
        e.responses(),
        vec![
            (103, BLKIF_OP_READ, BLKIF_RSP_OKAY),
            (101, BLKIF_OP_READ, BLKIF_RSP_OKAY),
            (100, BLKIF_OP_READ, BLKIF_RSP_OKAY)
        ]
    );
    for i in 0..4 {
        assert_eq!(e.page(i)[..512], expected_sector(8 * u64::from(i))[..]);
    }
    e.assert_grants_released();
}

#[test]
fn failed_io_is_answered_with_an_error() {
    let mut e = env_with(info(), &[(RING_REF, 0x100)], |d| {
        d.fail =
            Some(Box::new(|op| matches!(op, IoOp::Read { offset: 0, .. }).then(|| IoError::BadBuffer(0))))
    });
    let a = e.grant(0, false);
    e.request(&rw_request(BLKIF_OP_READ, 1, 0, &[seg(a, 0, 7)]));
    e.request(&rw_request(BLKIF_OP_READ, 2, 8, &[seg(a, 0, 7)]));
    e.run();
    assert_eq!(e.responses(), vec![(1, BLKIF_OP_READ, BLKIF_RSP_ERROR), (2, BLKIF_OP_READ, BLKIF_RSP_OKAY)]);
    e.assert_grants_released();
}

#[test]
fn a_probed_raw_image_never_gets_the_qcow2_magic_at_offset_0() {
    let mut e = env(DiskInfo { probed_raw: true, ..info() });
    let a = e.grant(0, true);
    let mut page = vec![0x42u8; 4096];
    page[..4].copy_from_slice(&QCOW2_MAGIC);
    e.mem.write_slice(&page, Env::frame_gpa(0)).unwrap();
    e.request(&rw_request(BLKIF_OP_WRITE, 1, 0, &[seg(a, 0, 7)]));
    e.request(&rw_request(BLKIF_OP_FLUSH_DISKCACHE, 2, 0, &[seg(a, 0, 0)]));
    let b = e.grant(1, true);
    e.fill_page(1, 0x42);
    e.request(&indirect_request(BLKIF_OP_WRITE, 3, 0, 1, &[b]));
    e.mem.write_slice(seg(a, 0, 0).as_bytes(), Env::frame_gpa(1)).unwrap();
    // The same bytes elsewhere than offset 0 are just data.
    e.request(&rw_request(BLKIF_OP_WRITE, 4, 8, &[seg(a, 0, 7)]));
    e.run();
    let r = e.responses();
    assert_eq!(
        r,
        vec![
            (1, 1, BLKIF_RSP_ERROR),
            (2, 3, BLKIF_RSP_ERROR),
            (3, 1, BLKIF_RSP_ERROR),
            (4, 1, BLKIF_RSP_OKAY)
        ]
    );
    assert_eq!(e.sector(0), &expected_sector(0)[..]);
    assert_eq!(e.sector(8)[..4], QCOW2_MAGIC);
    assert_eq!(e.be.stats().qcow2_refused, 3);
    e.assert_grants_released();
}

#[test]
fn a_sector_0_write_to_a_probed_raw_image_is_written_from_the_checked_copy() {
    let mut e =
        env_with(DiskInfo { probed_raw: true, ..info() }, &[(RING_REF, 0x100)], |d| d.auto_complete = false);
    let a = e.grant(0, true);
    let b = e.grant(1, true);
    e.fill_page(0, 0x20);
    e.fill_page(1, 0x30);
    e.request(&rw_request(BLKIF_OP_WRITE, 1, 0, &[seg(a, 0, 7), seg(b, 0, 0)]));
    e.be.process().unwrap();
    // The guest swaps in the magic after the check, before the I/O runs.
    e.mem.write_slice(&QCOW2_MAGIC, Env::frame_gpa(0)).unwrap();
    e.disk_mut().complete_all();
    e.be.complete().unwrap();
    assert_eq!(e.responses(), vec![(1, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)]);
    assert!(e.disk().data[..4096].iter().all(|&x| x == 0x20), "written from the copy");
    assert!(e.sector(8).iter().all(|&x| x == 0x30), "later segments from guest memory");
    let IoOp::Write { bufs, .. } = &e.ops()[0] else { panic!() };
    assert!(matches!(bufs[0], IoBuf::Host(_)) && matches!(bufs[1], IoBuf::Guest { .. }));
    e.assert_grants_released();
}

#[test]
fn a_flush_with_data_runs_flush_then_write_then_flush_one_after_another() {
    let mut e = env_with(info(), &[(RING_REF, 0x100)], |d| d.auto_complete = false);
    let a = e.grant(0, true);
    e.fill_page(0, 0x99);
    e.request(&rw_request(BLKIF_OP_FLUSH_DISKCACHE, 5, 64, &[seg(a, 0, 7)]));
    e.be.process().unwrap();
    let step = |e: &mut Env, want: &str| {
        assert_eq!(e.disk().issued.len(), 1, "one step at a time ({want})");
        let kind = match e.disk().issued[0].1 {
            IoOp::Flush => "flush",
            IoOp::Write { offset: 32768, .. } => "write",
            ref op => panic!("{op:?}"),
        };
        assert_eq!(kind, want);
        assert!(e.responses().is_empty(), "no answer before the last step");
        assert_ne!(e.front.grant_flags(&*e.mem, a) & GTF_READING, 0, "the data grant is held throughout");
        e.disk_mut().complete_all();
        e.be.complete().unwrap()
    };
    assert!(!step(&mut e, "flush"));
    assert!(!step(&mut e, "write"));
    assert!(step(&mut e, "flush"));
    assert_eq!(e.responses(), vec![(5, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_OKAY)]);
    assert!(e.sector(64).iter().all(|&x| x == 0x99));
    let tokens: Vec<u64> = e.disk().log.iter().map(|(t, _)| *t).collect();
    assert!(tokens.iter().all(|&t| t == tokens[0]));
    e.assert_grants_released();
}

#[test]
fn a_flush_with_data_on_a_synchronous_engine_completes_in_one_pass() {
    let mut e = env(info());
    let a = e.grant(0, true);
    e.request(&rw_request(BLKIF_OP_FLUSH_DISKCACHE, 5, 64, &[seg(a, 0, 7)]));
    e.be.process().unwrap();
    assert!(e.be.complete().unwrap());
    assert_eq!(e.responses(), vec![(5, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_OKAY)]);
    let kinds: Vec<&str> =
        e.ops().iter().map(|op| if matches!(op, IoOp::Flush) { "flush" } else { "write" }).collect();
    assert_eq!(kinds, ["flush", "write", "flush"]);
    e.assert_grants_released();
}

#[test]
fn a_failed_step_of_a_flush_with_data_answers_an_error_and_stops_the_sequence() {
    let mut e = env_with(info(), &[(RING_REF, 0x100)], |d| {
        d.fail = Some(Box::new(|op| matches!(op, IoOp::Write { .. }).then(|| IoError::BadBuffer(1))))
    });
    let a = e.grant(0, true);
    e.request(&rw_request(BLKIF_OP_FLUSH_DISKCACHE, 5, 64, &[seg(a, 0, 7)]));
    e.run();
    assert_eq!(e.responses(), vec![(5, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_ERROR)]);
    assert_eq!(e.ops().len(), 2, "flush, write; no last flush");
    e.assert_grants_released();
}

#[test]
fn a_failed_flush_is_an_error_and_breaks_later_writes() {
    let mut e = env_with(info(), &[(RING_REF, 0x100)], |d| {
        d.fail =
            Some(Box::new(|op| matches!(op, IoOp::Flush).then(|| IoError::Io(std::io::Error::other("EIO")))))
    });
    let a = e.grant(0, true);
    e.request(&rw_request(BLKIF_OP_FLUSH_DISKCACHE, 1, 0, &[]));
    e.run();
    e.disk_mut().fail = None;
    e.request(&rw_request(BLKIF_OP_WRITE, 2, 0, &[seg(a, 0, 7)]));
    e.request(&rw_request(BLKIF_OP_FLUSH_DISKCACHE, 3, 0, &[]));
    e.run();
    assert_eq!(
        e.responses(),
        vec![
            (1, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_ERROR),
            (2, BLKIF_OP_WRITE, BLKIF_RSP_ERROR),
            (3, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_ERROR)
        ]
    );
    assert_eq!(e.ops()[0], IoOp::Flush, "an empty flush is one engine flush");
    e.assert_grants_released();
}

#[test]
fn discards_go_to_the_engine_only_when_offered() {
    let mut e = env(info());
    e.request(&discard_request(1, 16, 8));
    e.request(&discard_request(2, 5, 0));
    e.run();
    // The empty discard is answered during the pass, before the engine's completions.
    assert_eq!(
        e.responses(),
        vec![(2, BLKIF_OP_DISCARD, BLKIF_RSP_OKAY), (1, BLKIF_OP_DISCARD, BLKIF_RSP_OKAY)]
    );
    assert_eq!(
        e.ops(),
        vec![IoOp::Discard { offset: 16 * 512, len: 8 * 512 }],
        "an empty discard does no I/O"
    );
    assert!(e.sector(16).iter().all(|&x| x == 0));

    let mut off = env(DiskInfo { discard: false, ..info() });
    off.request(&discard_request(3, 16, 8));
    off.run();
    assert_eq!(off.responses(), vec![(3, BLKIF_OP_DISCARD, BLKIF_RSP_EOPNOTSUPP)]);
    assert!(off.ops().is_empty());

    // Offered, but the image cannot punch holes after all.
    let mut cannot = env_with(info(), &[(RING_REF, 0x100)], |d| d.discard = false);
    cannot.request(&discard_request(4, 16, 8));
    cannot.run();
    assert_eq!(cannot.responses(), vec![(4, BLKIF_OP_DISCARD, BLKIF_RSP_EOPNOTSUPP)]);
}

#[test]
fn one_pass_publishes_its_responses_with_one_notification() {
    let mut e = env(info());
    let a = e.grant(0, false);
    for i in 0..5 {
        e.request(&rw_request(BLKIF_OP_READ, i, 0, &[seg(a, 0, 7)]));
    }
    assert!(e.run());
    assert_eq!(e.responses().len(), 5);
    assert_eq!(e.be.stats().notifications, 1);
    // The frontend did not re-arm rsp_event: the next batch is not notified.
    e.request(&rw_request(BLKIF_OP_READ, 9, 0, &[seg(a, 0, 7)]));
    assert!(!e.run());
    e.front.set_rsp_event(&*e.mem, e.front.rsp_cons + 1);
    assert_eq!(e.responses().len(), 1);
    e.front.set_rsp_event(&*e.mem, e.front.rsp_cons + 1);
    e.request(&rw_request(BLKIF_OP_READ, 10, 0, &[seg(a, 0, 7)]));
    assert!(e.run());
}

#[test]
fn the_final_check_leaves_no_request_behind() {
    let mut e = env(info());
    let a = e.grant(0, false);
    e.run();
    assert_eq!(e.front.get(&*e.mem, 4), 1, "req_event armed at req_cons + 1");
    // The guest's next request sends an event, and the pass picks it up.
    assert!(e.front.request(&*e.mem, &rw_request(BLKIF_OP_READ, 1, 0, &[seg(a, 0, 7)])));
    // A request published between a pass and the final check is found by the check.
    e.be.process().unwrap();
    assert!(!e.front.request(&*e.mem, &rw_request(BLKIF_OP_READ, 2, 0, &[seg(a, 0, 7)])));
    assert!(e.be.final_check().unwrap());
    e.run();
    assert_eq!(e.responses().len(), 2);
}

#[test]
fn a_multi_page_ring_with_straddling_entries_is_served() {
    let ring = [(8, 0x104), (9, 0x101), (10, 0x10a), (11, 0x107)];
    let mut e = env_with(info(), &ring, |_| {});
    // 16 pages (a grant takes at most 127 pins).
    let g: Vec<u32> = (0..16).map(|i| e.grant(i, false)).collect();
    // Two laps of the 128-entry ring; entries 72 and 109 straddle pages.
    for lap in 0..2u64 {
        for i in 0..128u64 {
            e.request(&rw_request(
                BLKIF_OP_READ,
                lap << 32 | i,
                i % 16,
                &[seg(g[i as usize % 16], (i % 8) as u8, 7)],
            ));
        }
        e.run();
        let r = e.responses();
        assert_eq!(r.len(), 128);
        for (i, x) in r.iter().enumerate() {
            assert_eq!(*x, (lap << 32 | i as u64, BLKIF_OP_READ, BLKIF_RSP_OKAY));
        }
    }
    e.assert_grants_released();
}

#[test]
fn a_failed_submit_is_reported_and_retried_on_the_next_pass() {
    let mut e = env_with(info(), &[(RING_REF, 0x100)], |d| d.failing_submits = 1);
    let a = e.grant(0, false);
    e.request(&rw_request(BLKIF_OP_READ, 1, 0, &[seg(a, 0, 7)]));
    assert!(matches!(e.be.process(), Err(BlkError::Submit(_))));
    assert!(e.responses().is_empty());
    assert!(e.be.complete().unwrap(), "the retry submits and completes");
    assert_eq!(e.responses(), vec![(1, BLKIF_OP_READ, BLKIF_RSP_OKAY)]);
    e.assert_grants_released();
}

#[test]
fn disconnect_drains_in_flight_io_and_unmaps_every_grant() {
    let mut e = env_with(info(), &[(RING_REF, 0x100)], |d| d.auto_complete = false);
    let a = e.grant(0, false);
    e.request(&rw_request(BLKIF_OP_READ, 1, 0, &[seg(a, 0, 7)]));
    e.be.process().unwrap();
    // Nothing completes: the wait is bounded, and nothing is unmapped under the I/O.
    let r = e.be.disconnect(Duration::from_millis(20));
    assert!(matches!(r, Err(BlkError::Drain { in_flight: 1, .. })), "{r:?}");
    assert_ne!(e.front.grant_flags(&*e.mem, a) & GTF_WRITING, 0);
    assert_eq!(lock(&e.grants).nr_active(), 2);
    e.disk_mut().complete_all();
    e.be.disconnect(Duration::from_millis(20)).unwrap();
    assert_eq!(e.responses(), vec![(1, BLKIF_OP_READ, BLKIF_RSP_OKAY)], "answered while draining");
    assert_eq!(lock(&e.grants).nr_active(), 0, "the ring's grant too");
    assert_eq!(e.front.grant_flags(&*e.mem, RING_REF), GTF_PERMIT_ACCESS);
    // Disconnected: the rest is a no-op.
    e.request(&rw_request(BLKIF_OP_READ, 2, 0, &[seg(a, 0, 7)]));
    assert!(!e.be.process().unwrap() && !e.be.complete().unwrap() && !e.be.final_check().unwrap());
    e.be.disconnect(Duration::ZERO).unwrap();
}

#[test]
fn connect_maps_the_ring_writable_or_fails_leaving_nothing_mapped() {
    let e = env(info());
    assert_eq!(e.front.grant_flags(&*e.mem, RING_REF), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    let mem = e.mem.clone();
    let grants = Arc::new(Mutex::new(GrantTable::new(TABLE, &[RAM])));
    let f = &e.front;
    f.grant(&*mem, 20, GTF_PERMIT_ACCESS, DOM0, 0x102);
    f.grant(&*mem, 21, GTF_PERMIT_ACCESS | GTF_READONLY, DOM0, 0x103);
    let disk = || MemDisk::new(mem.clone(), SECTORS);
    let r = BlkBackend::connect(mem.clone(), grants.clone(), DOM0, &[20, 21], info(), disk());
    assert!(matches!(r, Err(BlkError::MapRing { gref: 21, .. })));
    assert_eq!(lock(&grants).nr_active(), 0);
    assert_eq!(f.grant_flags(&*mem, 20), GTF_PERMIT_ACCESS, "the first page was unmapped again");
    let r = BlkBackend::connect(mem.clone(), grants.clone(), DOM0, &[], info(), disk());
    assert!(matches!(r, Err(BlkError::RingRefs(0))));
    let r = BlkBackend::connect(mem.clone(), grants.clone(), DOM0, &[20; 17], info(), disk());
    assert!(matches!(r, Err(BlkError::RingRefs(17))));
    // A ring whose req_prod is already past a ringful is refused too.
    mem.write_obj(1000u32, GuestAddress(0x102 << 12)).unwrap();
    let r = BlkBackend::connect(mem.clone(), grants.clone(), DOM0, &[20], info(), disk());
    assert!(matches!(r, Err(BlkError::Ring(RingError::ProdOverflow { .. }))));
    assert_eq!(lock(&grants).nr_active(), 0);
}

#[test]
fn counters_count_requests_by_operation() {
    let mut e = env(info());
    let a = e.grant(0, false);
    let ind = e.grant(1, true);
    e.mem.write_slice(seg(a, 0, 7).as_bytes(), Env::frame_gpa(1)).unwrap();
    e.request(&rw_request(BLKIF_OP_READ, 1, 0, &[seg(a, 0, 7)]));
    e.request(&rw_request(BLKIF_OP_WRITE, 2, 0, &[seg(a, 0, 3)]));
    e.request(&indirect_request(BLKIF_OP_WRITE, 3, 0, 1, &[ind]));
    e.request(&rw_request(BLKIF_OP_FLUSH_DISKCACHE, 4, 0, &[]));
    e.request(&discard_request(5, 0, 8));
    e.request(&rw_request(42, 6, 0, &[]));
    e.run();
    let s = e.be.stats();
    assert_eq!(
        s,
        BlkStats {
            rd_req: 1,
            wr_req: 2,
            f_req: 1,
            ds_req: 1,
            indirect_req: 1,
            other_req: 1,
            rd_sect: 8,
            wr_sect: 12,
            err_rsp: 0,
            notsupp_rsp: 1,
            qcow2_refused: 0,
            batches: 1,
            notifications: 1,
        }
    );
}

#[test]
fn a_backend_can_move_to_its_ring_worker_thread() {
    fn send<T: Send>() {}
    send::<Backend>();
}
