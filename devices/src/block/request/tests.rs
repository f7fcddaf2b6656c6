use super::*;
use crate::block::testutil::{
    discard_request as discard, indirect_request as indirect, rw_request as direct, seg,
};
use std::collections::BTreeMap;
use zerocopy::IntoBytes;

const DISK: u64 = 1 << 20; // sectors (512 MiB)

fn limits() -> Limits {
    Limits { sectors: DISK, readonly: false, discard: true, max_indirect_segments: 256 }
}

/// Indirect pages by gref; records the reads.
struct Pages {
    pages: BTreeMap<u32, Vec<u8>>,
    reads: Vec<(u32, usize)>,
}

impl Pages {
    fn new() -> Pages {
        Pages { pages: BTreeMap::new(), reads: Vec::new() }
    }

    fn with(mut self, gref: u32, segs: &[BlkifRequestSegment]) -> Pages {
        let mut page = vec![0u8; 4096];
        page[..segs.len() * 8].copy_from_slice(segs.as_bytes());
        self.pages.insert(gref, page);
        self
    }

    fn read(&mut self, gref: u32, buf: &mut [u8]) -> Result<(), GrantError> {
        self.reads.push((gref, buf.len()));
        let page = self.pages.get(&gref).ok_or(GrantError::BadRef { gref })?;
        buf.copy_from_slice(&page[..buf.len()]);
        Ok(())
    }
}

fn no_pages(gref: u32, _: &mut [u8]) -> Result<(), GrantError> {
    panic!("indirect page {gref} read for a direct request")
}

fn check(raw: &[u8; BLKIF_RING_ENTRY_SIZE], l: &Limits) -> Result<Request, Rejected> {
    parse(raw, l, &mut no_pages)
}

fn refused(raw: &[u8; BLKIF_RING_ENTRY_SIZE], l: &Limits) -> (u8, i16, RequestError) {
    let r = check(raw, l).unwrap_err();
    (r.operation, r.status(), r.error)
}

#[test]
fn parses_a_direct_read_with_its_segments() {
    let raw = direct(BLKIF_OP_READ, 0xabc, 100, &[seg(8, 0, 7), seg(9, 2, 3)]);
    let r = check(&raw, &limits()).unwrap();
    assert_eq!((r.id, r.operation), (0xabc, BLKIF_OP_READ));
    let Op::Read(t) = &r.op else { panic!("{r:?}") };
    assert_eq!(t.sector, 100);
    assert_eq!(t.offset(), 100 * 512);
    assert_eq!(t.nr_sectors(), 10);
    assert_eq!(t.segments[1], Segment { gref: 9, first_sect: 2, last_sect: 3 });
    assert_eq!((t.segments[1].offset(), t.segments[1].bytes()), (1024, 1024));
    assert_eq!((t.segments[0].offset(), t.segments[0].bytes()), (0, 4096));
}

#[test]
fn writes_and_flushes_parse_to_their_ops() {
    let w = check(&direct(BLKIF_OP_WRITE, 1, 0, &[seg(8, 0, 0)]), &limits()).unwrap();
    assert!(matches!(w.op, Op::Write(_)));
    let f = check(&direct(BLKIF_OP_FLUSH_DISKCACHE, 2, 7, &[]), &limits()).unwrap();
    assert_eq!(f.op, Op::Flush(Transfer { sector: 7, segments: vec![] }));
    let fw = check(&direct(BLKIF_OP_FLUSH_DISKCACHE, 3, 7, &[seg(8, 0, 7)]), &limits()).unwrap();
    assert!(matches!(&fw.op, Op::Flush(t) if t.segments.len() == 1));
}

#[test]
fn an_empty_flush_ignores_its_sector_number() {
    let f = check(&direct(BLKIF_OP_FLUSH_DISKCACHE, 2, u64::MAX, &[]), &limits()).unwrap();
    assert!(matches!(f.op, Op::Flush(_)));
}

#[test]
fn reads_and_writes_need_at_least_one_segment() {
    for op in [BLKIF_OP_READ, BLKIF_OP_WRITE] {
        let (echo, status, e) = refused(&direct(op, 1, 0, &[]), &limits());
        assert_eq!((echo, status), (op, BLKIF_RSP_ERROR));
        assert_eq!(e, RequestError::SegmentCount { nr: 0, min: 1, max: 11 });
    }
}

#[test]
fn more_than_eleven_direct_segments_is_an_error() {
    let mut raw = direct(BLKIF_OP_READ, 1, 0, &[seg(8, 0, 7); 11]);
    assert!(check(&raw, &limits()).is_ok());
    for nr in [12u8, 200, 255] {
        raw[1] = nr;
        let (_, status, e) = refused(&raw, &limits());
        assert_eq!(status, BLKIF_RSP_ERROR);
        assert_eq!(e, RequestError::SegmentCount { nr: u32::from(nr), min: 1, max: 11 });
    }
}

#[test]
fn a_segment_must_lie_inside_its_page_first_sect_to_last_sect() {
    for (first, last) in [(3, 2), (0, 8), (8, 8), (7, 255), (255, 255)] {
        let raw = direct(BLKIF_OP_WRITE, 1, 0, &[seg(8, 0, 7), seg(9, first, last)]);
        let (echo, status, e) = refused(&raw, &limits());
        assert_eq!((echo, status), (BLKIF_OP_WRITE, BLKIF_RSP_ERROR));
        assert_eq!(e, RequestError::BadSegment { index: 1, first, last });
    }
    // Segments past nr_segments are not looked at.
    let mut raw = direct(BLKIF_OP_READ, 1, 0, &[seg(8, 0, 7)]);
    raw[24 + 8 + 4..24 + 8 + 6].copy_from_slice(&[5, 1]);
    assert!(check(&raw, &limits()).is_ok());
}

#[test]
fn sectors_past_the_end_are_refused_with_checked_arithmetic() {
    let l = limits();
    // The last 8 sectors: fine; one more: not.
    assert!(check(&direct(BLKIF_OP_READ, 1, DISK - 8, &[seg(8, 0, 7)]), &l).is_ok());
    for sector in [DISK - 7, DISK, u64::MAX, u64::MAX - 7, u64::MAX - 8] {
        let (_, status, e) = refused(&direct(BLKIF_OP_READ, 1, sector, &[seg(8, 0, 7)]), &l);
        assert_eq!(status, BLKIF_RSP_ERROR);
        assert_eq!(e, RequestError::OutOfRange { sector, nr_sectors: 8, size: DISK });
    }
    // A disk whose size in bytes would not fit a u64 still gets exact offsets.
    let huge = Limits { sectors: u64::MAX, ..l };
    assert!(check(&direct(BLKIF_OP_READ, 1, u64::MAX / 512 - 8, &[seg(8, 0, 7)]), &huge).is_ok());
    assert!(check(&direct(BLKIF_OP_READ, 1, u64::MAX / 512, &[seg(8, 0, 7)]), &huge).is_err());
}

#[test]
fn a_read_only_disk_refuses_writes_flushes_and_discards_but_not_reads() {
    let ro = Limits { readonly: true, ..limits() };
    assert!(check(&direct(BLKIF_OP_READ, 1, 0, &[seg(8, 0, 7)]), &ro).is_ok());
    for raw in [
        direct(BLKIF_OP_WRITE, 1, 0, &[seg(8, 0, 7)]),
        direct(BLKIF_OP_FLUSH_DISKCACHE, 1, 0, &[]),
        direct(BLKIF_OP_FLUSH_DISKCACHE, 1, 0, &[seg(8, 0, 7)]),
        discard(1, 0, 8),
    ] {
        let (echo, status, e) = refused(&raw, &ro);
        assert_eq!((echo, status, e), (raw[0], BLKIF_RSP_ERROR, RequestError::ReadOnly));
    }
    let mut pages = Pages::new().with(50, &[seg(8, 0, 7)]);
    let r = parse(&indirect(BLKIF_OP_WRITE, 1, 0, 1, &[50]), &ro, &mut |g, b| pages.read(g, b)).unwrap_err();
    assert_eq!((r.operation, r.error), (BLKIF_OP_WRITE, RequestError::ReadOnly));
}

#[test]
fn unknown_operations_get_eopnotsupp_with_their_operation_echoed() {
    for op in [BLKIF_OP_RESERVED_1, 7, 0x80, 255] {
        let raw = direct(op, 0x1234, 0, &[seg(8, 0, 7)]);
        let r = check(&raw, &limits()).unwrap_err();
        assert_eq!((r.id, r.operation, r.status()), (0x1234, op, BLKIF_RSP_EOPNOTSUPP));
        assert_eq!(r.error, RequestError::UnknownOperation(op));
    }
}

#[test]
fn write_barriers_are_not_offered() {
    let (echo, status, e) = refused(&direct(BLKIF_OP_WRITE_BARRIER, 1, 0, &[seg(8, 0, 7)]), &limits());
    assert_eq!(
        (echo, status, e),
        (BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, RequestError::BarrierNotSupported)
    );
}

#[test]
fn discards_are_checked_like_writes_and_need_the_feature() {
    let r = check(&discard(9, 16, 64), &limits()).unwrap();
    assert_eq!((r.id, r.operation), (9, BLKIF_OP_DISCARD));
    assert_eq!(r.op, Op::Discard { sector: 16, nr_sectors: 64 });
    // An empty discard passes (a no-op), wherever it points.
    assert!(check(&discard(9, u64::MAX, 0), &limits()).is_ok());
    let (_, status, e) = refused(&discard(9, DISK - 1, 2), &limits());
    assert_eq!(
        (status, e),
        (BLKIF_RSP_ERROR, RequestError::OutOfRange { sector: DISK - 1, nr_sectors: 2, size: DISK })
    );
    let (_, status, _) = refused(&discard(9, 1, u64::MAX), &limits());
    assert_eq!(status, BLKIF_RSP_ERROR);
    // Without feature-discard: EOPNOTSUPP, but only for a request that passed the checks.
    let off = Limits { discard: false, ..limits() };
    let (echo, status, e) = refused(&discard(9, 0, 8), &off);
    assert_eq!(
        (echo, status, e),
        (BLKIF_OP_DISCARD, BLKIF_RSP_EOPNOTSUPP, RequestError::DiscardNotSupported)
    );
    let (_, status, _) = refused(&discard(9, DISK, 8), &off);
    assert_eq!(status, BLKIF_RSP_ERROR);
}

#[test]
fn the_id_is_echoed_from_offset_8_in_every_shape() {
    let id = 0x0102_0304_0506_0708;
    assert_eq!(check(&direct(9, id, 0, &[]), &limits()).unwrap_err().id, id);
    assert_eq!(check(&discard(id, DISK, 1), &limits()).unwrap_err().id, id);
    let r = parse(&indirect(BLKIF_OP_READ, id, 0, 0, &[]), &limits(), &mut no_pages).unwrap_err();
    assert_eq!(r.id, id);
}

#[test]
fn parses_an_indirect_request_across_pages() {
    let l = Limits { max_indirect_segments: 4096, ..limits() };
    let first: Vec<_> = (0..512).map(|i| seg(1000 + i, (i % 8) as u8, 7)).collect();
    let second: Vec<_> = (0..88).map(|i| seg(2000 + i, 0, 7)).collect();
    let mut pages = Pages::new().with(70, &first).with(71, &second);
    let raw = indirect(BLKIF_OP_WRITE, 5, 1000, 600, &[70, 71, 72]);
    let r = parse(&raw, &l, &mut |g, b| pages.read(g, b)).unwrap();
    assert_eq!((r.id, r.operation), (5, BLKIF_OP_WRITE), "the response carries indirect_op");
    let Op::Write(t) = &r.op else { panic!("{r:?}") };
    assert_eq!(t.segments.len(), 600);
    assert_eq!(t.segments[3], Segment { gref: 1003, first_sect: 3, last_sect: 7 });
    assert_eq!(t.segments[599], Segment { gref: 2087, first_sect: 0, last_sect: 7 });
    // Only the pages the count needs, only the bytes of their segments.
    assert_eq!(pages.reads, vec![(70, 4096), (71, 88 * 8)]);
}

#[test]
fn indirect_requests_are_read_or_write_only() {
    let mut pages = Pages::new().with(70, &[seg(8, 0, 7)]);
    for op in [BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT, BLKIF_OP_WRITE_BARRIER, 200] {
        let r = parse(&indirect(op, 1, 0, 1, &[70]), &limits(), &mut |g, b| pages.read(g, b)).unwrap_err();
        assert_eq!((r.operation, r.status()), (op, BLKIF_RSP_ERROR), "echoes indirect_op {op}");
        assert_eq!(r.error, RequestError::BadIndirectOperation(op));
    }
    assert!(pages.reads.is_empty());
}

#[test]
fn indirect_segment_counts_are_bounded_by_what_was_offered() {
    let segs = vec![seg(8, 0, 7); 512];
    let mut pages = Pages::new().with(70, &segs);
    let mut run = |nr: u16, l: &Limits| {
        parse(&indirect(BLKIF_OP_READ, 1, 0, nr, &[70]), l, &mut |g, b| pages.read(g, b))
    };
    assert!(run(256, &limits()).is_ok());
    for nr in [0, 257, 512, u16::MAX] {
        let e = run(nr, &limits()).unwrap_err();
        assert_eq!(e.error, RequestError::SegmentCount { nr: u32::from(nr), min: 1, max: 256 });
    }
    // None offered: every indirect request is refused.
    let none = Limits { max_indirect_segments: 0, ..limits() };
    assert!(matches!(run(1, &none).unwrap_err().error, RequestError::SegmentCount { max: 0, .. }));
    // More than eight pages' worth is never accepted, whatever was offered.
    let silly = Limits { max_indirect_segments: u32::MAX, ..limits() };
    assert!(matches!(run(4097, &silly).unwrap_err().error, RequestError::SegmentCount { max: 4096, .. }));
}

#[test]
fn bad_indirect_pages_and_segments_are_errors() {
    let mut good = vec![seg(8, 0, 7); 512];
    let mut pages = Pages::new().with(70, &good);
    // Page 1 missing (a grant the backend cannot map).
    let r =
        parse(&indirect(BLKIF_OP_READ, 1, 0, 513, &[70, 99]), &limits_4096(), &mut |g, b| pages.read(g, b))
            .unwrap_err();
    assert_eq!(r.status(), BLKIF_RSP_ERROR);
    assert!(matches!(
        r.error,
        RequestError::IndirectPage { index: 1, gref: 99, source: GrantError::BadRef { gref: 99 } }
    ));
    // A bad segment in the second page, reported by its index in the request.
    good[9] = seg(8, 6, 5);
    let mut pages = Pages::new().with(70, &[seg(8, 0, 7); 512]).with(71, &good);
    let r =
        parse(&indirect(BLKIF_OP_READ, 1, 0, 600, &[70, 71]), &limits_4096(), &mut |g, b| pages.read(g, b))
            .unwrap_err();
    assert_eq!(r.error, RequestError::BadSegment { index: 521, first: 6, last: 5 });
    // Indirect segments past the disk's end.
    let mut pages = Pages::new().with(70, &[seg(8, 0, 7); 3]);
    let r = parse(&indirect(BLKIF_OP_READ, 1, DISK - 16, 3, &[70]), &limits(), &mut |g, b| pages.read(g, b))
        .unwrap_err();
    assert_eq!(r.error, RequestError::OutOfRange { sector: DISK - 16, nr_sectors: 24, size: DISK });
}

fn limits_4096() -> Limits {
    Limits { max_indirect_segments: 4096, ..limits() }
}
