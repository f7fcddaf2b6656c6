//! The generic shared ring (`io/ring.h`): the header every request/response ring
//! (`DEFINE_RING_TYPES`: blkif, netif, ...) starts with, and the ring-size rule.
//!
//! ```text
//!  0         4          8         12         16        20                 64
//!  ┌─────────┬──────────┬─────────┬──────────┬─────────┬──────────────────┬──────────────┐
//!  │req_prod │req_event │rsp_prod │rsp_event │ pvt[4]  │ __pad[44]        │ ring[N] ...  │
//!  └─────────┴──────────┴─────────┴──────────┴─────────┴──────────────────┴──────────────┘
//!   frontend   backend    backend   frontend                               entries (union
//!                                                                          of req and rsp)
//! ```
//!
//! The ring spans one or more pages (`ring-page-order`); `N` is the largest power of two with
//! `64 + N * sizeof(entry) <= pages * 4096` (`__CONST_RING_SIZE`). Indices are free-running
//! `RING_IDX` (`u32`) values; an entry's slot is `idx & (N - 1)`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `RING_IDX`.
pub type RingIdx = u32;

/// The page size rings are measured in (`XEN_PAGE_SIZE`), whatever the host's page size.
pub const XEN_PAGE_SIZE: usize = 4096;

/// The fixed part of `struct <name>_sring`, before `ring[]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SringHeader {
    /// Written by the frontend: requests up to here are in the ring.
    pub req_prod: RingIdx,
    /// Written by the backend: "notify me when `req_prod` passes this".
    pub req_event: RingIdx,
    /// Written by the backend: responses up to here are in the ring.
    pub rsp_prod: RingIdx,
    /// Written by the frontend: "notify me when `rsp_prod` passes this".
    pub rsp_event: RingIdx,
    /// `pvt.pvt_pad` (netif's `smartpoll_active`; unused by blkif).
    pub pvt: [u8; 4],
    /// `__pad`.
    pub _pad: [u8; 44],
}

/// Offset of `ring[0]` in the shared ring (`offsetof(struct <name>_sring, ring)`).
pub const SRING_ENTRIES_OFFSET: usize = size_of::<SringHeader>();

/// `__CONST_RING_SIZE` for a ring of `bytes` bytes whose entries (the union of request and
/// response) are `entry_size` bytes: the largest power of two `N` with
/// `64 + N * entry_size <= bytes`, or 0 when not even one entry fits.
pub const fn ring_size(bytes: usize, entry_size: usize) -> usize {
    if entry_size == 0 || bytes < SRING_ENTRIES_OFFSET {
        return 0;
    }
    let n = (bytes - SRING_ENTRIES_OFFSET) / entry_size;
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_rounds_the_entry_count_down_to_a_power_of_two() {
        assert_eq!(ring_size(4096, 112), 32, "(4096 - 64) / 112 = 36 → 32");
        assert_eq!(ring_size(16 * 4096, 112), 512);
        assert_eq!(ring_size(4096, 12), 256);
        assert_eq!(ring_size(4096, 8), 256, "503 → 256");
        assert_eq!(ring_size(64 + 112, 112), 1);
        assert_eq!(ring_size(64 + 111, 112), 0);
        assert_eq!(ring_size(10, 1), 0);
        assert_eq!(ring_size(4096, 0), 0);
    }
}
