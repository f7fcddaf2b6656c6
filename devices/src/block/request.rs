//! One blkif request, from the private copy of its ring entry to a checked [`Request`]
//! (xen-pv-contract.md §10.3), with the checks Linux blkback makes (`drivers/block/xen-blkback/
//! blkback.c`: `__do_block_io_op` dispatch, `dispatch_rw_block_io`, `xen_blkbk_parse_indirect`,
//! `dispatch_discard_io`, `dispatch_other_io`, `xen_vbd_translate`).
//!
//! What a refusal answers, as blkback answers it:
//!
//! | request | status | `operation` echoed |
//! |---|---|---|
//! | unknown op (4, 7..=255) | `EOPNOTSUPP` | the request's |
//! | `WRITE_BARRIER` (never offered here) | `EOPNOTSUPP` | 2 |
//! | `DISCARD` without `feature-discard` | `EOPNOTSUPP` (after the access checks) | 5 |
//! | anything else invalid | `ERROR` | the request's; for `INDIRECT`, its `indirect_op` |
//!
//! blkfront checks the echoed operation against the one it sent, taking an indirect
//! request's `indirect_op` (`blkif_interrupt`), and disables the disk on a mismatch, so the
//! echo matters even for errors. `id` sits at offset 8 in every request shape and is echoed
//! whatever else is wrong.
//!
//! The indirect pages are the guest's too: the caller supplies them through a closure that
//! maps the grant read-only, copies the bytes, and unmaps at once (blkback's
//! `xen_blkbk_parse_indirect`), so every segment is parsed from a private copy as well.

use zerocopy::FromBytes;

use super::SECTOR_SIZE;
use crate::grant::GrantError;
use xen_abi::grant_table::GrantRef;
use xen_abi::io::blkif::*;

/// A segment's sectors are `first_sect..=last_sect` of a 4 KiB page: eight of them.
const SECTORS_PER_PAGE: u8 = 8;

/// Most segments an indirect request can carry: eight pages of 512.
pub const MAX_INDIRECT_SEGMENTS: u32 =
    (BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * BLKIF_SEGS_PER_INDIRECT_FRAME) as u32;

const SEGMENT_SIZE: usize = size_of::<BlkifRequestSegment>();

/// What the backend offered and the disk is: the bounds every request is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Disk size in 512-byte sectors.
    pub sectors: u64,
    pub readonly: bool,
    /// `feature-discard` was written.
    pub discard: bool,
    /// `feature-max-indirect-segments` as written (0: none); at most
    /// [`MAX_INDIRECT_SEGMENTS`] count.
    pub max_indirect_segments: u32,
}

/// One page of a transfer: `[first_sect, last_sect]` of the page granted as `gref`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub gref: GrantRef,
    pub first_sect: u8,
    pub last_sect: u8,
}

impl Segment {
    /// Byte offset of the data in its page.
    pub fn offset(&self) -> u32 {
        u32::from(self.first_sect) * SECTOR_SIZE as u32
    }

    pub fn sectors(&self) -> u64 {
        // Checked by `parse`: last_sect >= first_sect.
        u64::from(self.last_sect.saturating_sub(self.first_sect)) + 1
    }

    /// Bytes of data (512 to 4096).
    pub fn bytes(&self) -> u32 {
        self.sectors() as u32 * SECTOR_SIZE as u32
    }

    fn parse(index: usize, s: &BlkifRequestSegment) -> Result<Segment, RequestError> {
        let (first, last) = (s.first_sect, s.last_sect);
        if last >= SECTORS_PER_PAGE || last < first {
            return Err(RequestError::BadSegment { index, first, last });
        }
        Ok(Segment { gref: s.gref, first_sect: first, last_sect: last })
    }
}

/// Data moved between the disk, from `sector` on, and the segments' pages, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub sector: u64,
    pub segments: Vec<Segment>,
}

impl Transfer {
    pub fn nr_sectors(&self) -> u64 {
        self.segments.iter().map(Segment::sectors).sum()
    }

    /// Byte offset on the disk. Fits: a checked transfer lies inside the disk.
    pub fn offset(&self) -> u64 {
        self.sector.saturating_mul(SECTOR_SIZE)
    }
}

/// What a checked request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Read(Transfer),
    Write(Transfer),
    /// `FLUSH_DISKCACHE`: a pure flush when there are no segments, else a write that must be
    /// durable when answered, and after which all writes answered before it are durable.
    Flush(Transfer),
    /// `nr_sectors` may be 0 (blkback lets that through as a no-op).
    Discard {
        sector: u64,
        nr_sectors: u64,
    },
}

/// A checked request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    /// The `operation` the response must carry (`indirect_op` for an indirect request).
    pub operation: u8,
    pub op: Op,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("operation {0} is not one this backend performs")]
    UnknownOperation(u8),
    #[error("write barriers are not offered (no feature-barrier)")]
    BarrierNotSupported,
    #[error("indirect operation {0} is neither READ nor WRITE")]
    BadIndirectOperation(u8),
    #[error("{nr} segments: this request carries {min} to {max}")]
    SegmentCount { nr: u32, min: u32, max: u32 },
    #[error("segment {index} covers sectors {first}..={last} of its page")]
    BadSegment { index: usize, first: u8, last: u8 },
    #[error("cannot read indirect page {index} (grant {gref:#x})")]
    IndirectPage {
        index: usize,
        gref: GrantRef,
        #[source]
        source: GrantError,
    },
    #[error("sectors {sector}..+{nr_sectors} do not lie inside the {size}-sector disk")]
    OutOfRange { sector: u64, nr_sectors: u64, size: u64 },
    #[error("the disk is read-only")]
    ReadOnly,
    #[error("discard is not offered (no feature-discard)")]
    DiscardNotSupported,
}

impl RequestError {
    /// The `BLKIF_RSP_*` status blkback answers this with.
    pub fn status(&self) -> i16 {
        match self {
            RequestError::UnknownOperation(_)
            | RequestError::BarrierNotSupported
            | RequestError::DiscardNotSupported => BLKIF_RSP_EOPNOTSUPP,
            _ => BLKIF_RSP_ERROR,
        }
    }
}

/// A refused request and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("blkif request {id:#x} (operation {operation}) refused")]
pub struct Rejected {
    pub id: u64,
    /// The `operation` to echo.
    pub operation: u8,
    #[source]
    pub error: RequestError,
}

impl Rejected {
    pub fn status(&self) -> i16 {
        self.error.status()
    }
}

/// Reads indirect page `gref` into the buffer (its first `buf.len()` bytes): maps the grant
/// read-only, copies, unmaps.
pub type IndirectPageFn<'a> = dyn FnMut(GrantRef, &mut [u8]) -> Result<(), GrantError> + 'a;

/// Parses and checks the private copy `raw` of one ring entry.
pub fn parse(
    raw: &[u8; BLKIF_RING_ENTRY_SIZE],
    limits: &Limits,
    indirect_page: &mut IndirectPageFn<'_>,
) -> Result<Request, Rejected> {
    // Every shape fits the 112-byte entry, so the prefix reads cannot fail.
    let direct = BlkifRequest::read_from_bytes(raw).unwrap_or_default();
    let id = direct.id;
    let reject = |operation: u8| move |error| Rejected { id, operation, error };
    match direct.operation {
        BLKIF_OP_READ | BLKIF_OP_WRITE | BLKIF_OP_FLUSH_DISKCACHE => {
            let op = direct.operation;
            parse_direct(&direct, limits)
                .map(|op| Request { id, operation: direct.operation, op })
                .map_err(reject(op))
        }
        BLKIF_OP_WRITE_BARRIER => Err(reject(BLKIF_OP_WRITE_BARRIER)(RequestError::BarrierNotSupported)),
        BLKIF_OP_INDIRECT => {
            let req = BlkifRequestIndirect::read_from_prefix(raw).map(|(r, _)| r).unwrap_or_default();
            parse_indirect(&req, limits, indirect_page)
                .map(|op| Request { id, operation: req.indirect_op, op })
                .map_err(reject(req.indirect_op))
        }
        BLKIF_OP_DISCARD => {
            let req = BlkifRequestDiscard::read_from_prefix(raw).map(|(r, _)| r).unwrap_or_default();
            parse_discard(&req, limits)
                .map(|op| Request { id, operation: BLKIF_OP_DISCARD, op })
                .map_err(reject(BLKIF_OP_DISCARD))
        }
        other => Err(reject(other)(RequestError::UnknownOperation(other))),
    }
}

fn parse_direct(req: &BlkifRequest, limits: &Limits) -> Result<Op, RequestError> {
    let nr = req.nr_segments;
    let min = u32::from(req.operation != BLKIF_OP_FLUSH_DISKCACHE);
    if u32::from(nr) < min || usize::from(nr) > BLKIF_MAX_SEGMENTS_PER_REQUEST {
        return Err(RequestError::SegmentCount {
            nr: u32::from(nr),
            min,
            max: BLKIF_MAX_SEGMENTS_PER_REQUEST as u32,
        });
    }
    let segments = req.seg[..usize::from(nr)]
        .iter()
        .enumerate()
        .map(|(i, s)| Segment::parse(i, s))
        .collect::<Result<Vec<_>, _>>()?;
    let t = Transfer { sector: req.sector_number, segments };
    let op = match req.operation {
        BLKIF_OP_READ => Op::Read(t),
        BLKIF_OP_WRITE => Op::Write(t),
        _ => Op::Flush(t),
    };
    check_access(&op, limits)?;
    Ok(op)
}

fn parse_indirect(
    req: &BlkifRequestIndirect,
    limits: &Limits,
    indirect_page: &mut IndirectPageFn<'_>,
) -> Result<Op, RequestError> {
    if req.indirect_op != BLKIF_OP_READ && req.indirect_op != BLKIF_OP_WRITE {
        return Err(RequestError::BadIndirectOperation(req.indirect_op));
    }
    let nr = u32::from(req.nr_segments);
    let max = limits.max_indirect_segments.min(MAX_INDIRECT_SEGMENTS);
    if nr == 0 || nr > max {
        return Err(RequestError::SegmentCount { nr, min: 1, max });
    }
    // nr <= 4096, so at most eight pages.
    let nr = nr as usize;
    let mut segments = Vec::with_capacity(nr);
    let mut page = vec![0u8; BLKIF_SEGS_PER_INDIRECT_FRAME * SEGMENT_SIZE];
    for (index, &gref) in req.indirect_grefs.iter().enumerate() {
        let first = index * BLKIF_SEGS_PER_INDIRECT_FRAME;
        if first >= nr {
            break;
        }
        let count = (nr - first).min(BLKIF_SEGS_PER_INDIRECT_FRAME);
        let bytes = &mut page[..count * SEGMENT_SIZE];
        indirect_page(gref, bytes).map_err(|source| RequestError::IndirectPage { index, gref, source })?;
        for (k, raw) in bytes.chunks_exact(SEGMENT_SIZE).enumerate() {
            let s = BlkifRequestSegment::read_from_bytes(raw).unwrap_or_default();
            segments.push(Segment::parse(first + k, &s)?);
        }
    }
    let t = Transfer { sector: req.sector_number, segments };
    let op = if req.indirect_op == BLKIF_OP_READ { Op::Read(t) } else { Op::Write(t) };
    check_access(&op, limits)?;
    Ok(op)
}

fn parse_discard(req: &BlkifRequestDiscard, limits: &Limits) -> Result<Op, RequestError> {
    // The secure flag is ignored, as blkback ignores it since `discard-secure` went away.
    let op = Op::Discard { sector: req.sector_number, nr_sectors: req.nr_sectors };
    check_access(&op, limits)?;
    if !limits.discard {
        return Err(RequestError::DiscardNotSupported);
    }
    Ok(op)
}

/// `xen_vbd_translate`: anything but a read needs a writable disk (a flush too), and a
/// non-empty range must lie inside the disk, computed without overflow (in bytes too, so
/// that [`Transfer::offset`] is exact).
fn check_access(op: &Op, limits: &Limits) -> Result<(), RequestError> {
    let (sector, nr_sectors) = match op {
        Op::Read(t) => (t.sector, t.nr_sectors()),
        Op::Write(t) | Op::Flush(t) => {
            if limits.readonly {
                return Err(RequestError::ReadOnly);
            }
            (t.sector, t.nr_sectors())
        }
        Op::Discard { sector, nr_sectors } => {
            if limits.readonly {
                return Err(RequestError::ReadOnly);
            }
            (*sector, *nr_sectors)
        }
    };
    let inside = |end: u64| end <= limits.sectors && end.checked_mul(SECTOR_SIZE).is_some();
    if nr_sectors > 0 && !sector.checked_add(nr_sectors).is_some_and(inside) {
        return Err(RequestError::OutOfRange { sector, nr_sectors, size: limits.sectors });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
