//! The block device protocol (`io/blkif.h`): the requests a guest's `xen-blkfront` puts on a
//! blkif ring, the responses its backend (Linux blkback's role, here `devices::block`)
//! returns, and the `info` bits of the backend's xenstore directory
//! (xen-pv-contract.md §10.3).
//!
//! Every ring entry is 112 bytes, the size of the largest request; a request is read as one
//! of three shapes by its first byte:
//!
//! ```text
//!  0   1    2      4     8        16             24                                  112
//!  ┌───┬────┬──────┬─────┬────────┬──────────────┬──────────────────────────────────────┐
//!  │op │nseg│handle│ pad │ id     │ sector_number│ seg[11]: {gref u32, first, last, pad}│ READ, WRITE,
//!  └───┴────┴──────┴─────┴────────┴──────────────┴──────────────────────────────────────┘ BARRIER, FLUSH
//!  ┌───┬────┬──────┬─────┬────────┬──────────────┬──────────┐
//!  │ 5 │flag│handle│ pad │ id     │ sector_number│nr_sectors│                              DISCARD
//!  └───┴────┴──────┴─────┴────────┴──────────────┴──────────┘
//!  ┌───┬────┬──────┬─────┬────────┬──────────────┬──────┬───┬────────────────────┐
//!  │ 6 │ op │nseg16│ pad │ id     │ sector_number│handle│pad│ indirect_grefs[8]  │       INDIRECT
//!  └───┴────┴──────┴─────┴────────┴──────────────┴──────┴───┴────────────────────┘
//!                                                24     26  28                   60
//! ```
//!
//! `id` is at offset 8 in every shape: the backend echoes it, whatever else is wrong with the
//! request. An indirect request's segments live in up to
//! [`BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`] granted pages of [`BLKIF_SEGS_PER_INDIRECT_FRAME`]
//! [`BlkifRequestSegment`]s each.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::grant_table::GrantRef;

/// `blkif_vdev_t`.
pub type BlkifVdev = u16;
/// `blkif_sector_t`: a 512-byte sector number, whatever the disk's sector size.
pub type BlkifSector = u64;

/// `BLKIF_OP_READ`.
pub const BLKIF_OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`.
pub const BLKIF_OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER`: a write ordered after every earlier one and made durable; only
/// sent when the backend writes `feature-barrier`.
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE`: with `feature-flush-cache`; 0 segments is a pure flush.
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_RESERVED_1`: once a vendor extension; no backend implements it.
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// `BLKIF_OP_DISCARD`: with `feature-discard`; the request is a [`BlkifRequestDiscard`].
pub const BLKIF_OP_DISCARD: u8 = 5;
/// `BLKIF_OP_INDIRECT`: with `feature-max-indirect-segments`; the request is a
/// [`BlkifRequestIndirect`].
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`: segments in a direct request.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`: indirect pages an indirect request may name.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Segments in one indirect page (Linux's `SEGS_PER_INDIRECT_FRAME`: a 4 KiB page of 8-byte
/// [`BlkifRequestSegment`]s).
pub const BLKIF_SEGS_PER_INDIRECT_FRAME: usize = 4096 / size_of::<BlkifRequestSegment>();

/// `BLKIF_DISCARD_SECURE`: the discard `flag` asking for a secure erase.
pub const BLKIF_DISCARD_SECURE: u8 = 1 << 0;

/// `BLKIF_RSP_EOPNOTSUPP`: the backend does not do this operation (the frontend then stops
/// sending it: barrier/flush or discard).
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;
/// `BLKIF_RSP_ERROR`: the operation failed (-EIO to the guest).
pub const BLKIF_RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_OKAY`.
pub const BLKIF_RSP_OKAY: i16 = 0;

/// `VDISK_CDROM`: bit of the backend's `info` node.
pub const VDISK_CDROM: u32 = 0x1;
/// `VDISK_REMOVABLE`.
pub const VDISK_REMOVABLE: u32 = 0x2;
/// `VDISK_READONLY`.
pub const VDISK_READONLY: u32 = 0x4;

/// `struct blkif_request_segment`: one granted page and the sectors of it to transfer,
/// `first_sect..=last_sect` (of the page's eight).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlkifRequestSegment {
    pub gref: GrantRef,
    pub first_sect: u8,
    pub last_sect: u8,
    /// C's tail padding.
    pub _pad0: u16,
}

/// `struct blkif_request`: a direct request (READ, WRITE, WRITE_BARRIER, FLUSH_DISKCACHE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlkifRequest {
    pub operation: u8,
    pub nr_segments: u8,
    pub handle: BlkifVdev,
    pub _pad0: u32,
    /// Private to the frontend; echoed in the response.
    pub id: u64,
    pub sector_number: BlkifSector,
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

/// `struct blkif_request_discard`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlkifRequestDiscard {
    pub operation: u8,
    /// [`BLKIF_DISCARD_SECURE`] or 0.
    pub flag: u8,
    pub handle: BlkifVdev,
    pub _pad0: u32,
    pub id: u64,
    pub sector_number: BlkifSector,
    pub nr_sectors: u64,
}

/// `struct blkif_request_indirect` (the x86_64 layout: no trailing `pad`, which is i386-only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlkifRequestIndirect {
    pub operation: u8,
    /// [`BLKIF_OP_READ`] or [`BLKIF_OP_WRITE`]; the response echoes this, not
    /// [`BLKIF_OP_INDIRECT`].
    pub indirect_op: u8,
    pub nr_segments: u16,
    pub _pad0: u32,
    pub id: u64,
    pub sector_number: BlkifSector,
    pub handle: BlkifVdev,
    pub _pad1: u16,
    pub indirect_grefs: [GrantRef; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// C's tail padding (the struct is 8-byte aligned).
    pub _pad2: u32,
}

/// `struct blkif_response`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlkifResponse {
    /// The request's `id`.
    pub id: u64,
    /// The request's `operation` (an indirect request's `indirect_op`).
    pub operation: u8,
    pub _pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    pub _pad1: u32,
}

/// Size of a blkif ring entry (`union blkif_sring_entry`): the largest request.
pub const BLKIF_RING_ENTRY_SIZE: usize = size_of::<BlkifRequest>();

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::ring::ring_size;

    #[test]
    fn entries_are_the_sizes_blkfront_uses() {
        assert_eq!(size_of::<BlkifRequest>(), 112);
        assert_eq!(size_of::<BlkifRequestDiscard>(), 32);
        assert_eq!(size_of::<BlkifRequestIndirect>(), 64);
        assert_eq!(size_of::<BlkifResponse>(), 16);
        assert_eq!(BLKIF_SEGS_PER_INDIRECT_FRAME, 512);
        assert_eq!(ring_size(4096, BLKIF_RING_ENTRY_SIZE), 32);
        assert_eq!(ring_size(16 * 4096, BLKIF_RING_ENTRY_SIZE), 512);
    }

    #[test]
    fn every_request_shape_has_id_at_offset_8() {
        assert_eq!(core::mem::offset_of!(BlkifRequest, id), 8);
        assert_eq!(core::mem::offset_of!(BlkifRequestDiscard, id), 8);
        assert_eq!(core::mem::offset_of!(BlkifRequestIndirect, id), 8);
    }
}
