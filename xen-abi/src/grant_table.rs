//! Grant tables (`grant_table.h`): the v1 shared entry, its `GTF_*` flags, the `GNTTABOP_*`
//! sub-ops of `HYPERVISOR_grant_table_op` and their arguments, and the `GNTST_*` statuses.
//!
//! ```text
//!  grant frame (4 KiB) = 512 x grant_entry_v1
//!  ┌──────────────┬──────────────┬────────────────────────────┐
//!  │ flags  (u16) │ domid  (u16) │ frame (u32): the granted   │   flags+domid are one 32-bit
//!  │ GTF_*        │ who may use  │ MFN (== GFN for PV)        │   word, updated with cmpxchg
//!  └──────────────┴──────────────┴────────────────────────────┘
//! ```
//! Only version 1 is implemented by xenvmm; the v2 argument structs are here because the guest
//! may still issue those sub-ops.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `grant_ref_t`.
pub type GrantRef = u32;
/// `grant_handle_t`.
pub type GrantHandle = u32;

// ---- GNTTABOP_* (enum grant_table_op) ----
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
pub const GNTTABOP_SETUP_TABLE: u32 = 2;
pub const GNTTABOP_DUMP_TABLE: u32 = 3;
pub const GNTTABOP_TRANSFER: u32 = 4;
pub const GNTTABOP_COPY: u32 = 5;
pub const GNTTABOP_QUERY_SIZE: u32 = 6;
pub const GNTTABOP_UNMAP_AND_REPLACE: u32 = 7;
pub const GNTTABOP_SET_VERSION: u32 = 8;
pub const GNTTABOP_GET_STATUS_FRAMES: u32 = 9;
pub const GNTTABOP_GET_VERSION: u32 = 10;
pub const GNTTABOP_SWAP_GRANT_REF: u32 = 11;
pub const GNTTABOP_CACHE_FLUSH: u32 = 12;

// ---- grant_entry_v1.flags ----
pub const GTF_INVALID: u16 = 0;
pub const GTF_PERMIT_ACCESS: u16 = 1;
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
pub const GTF_TRANSITIVE: u16 = 3;
pub const GTF_TYPE_MASK: u16 = 3;
pub const GTF_READONLY: u16 = 1 << 2;
pub const GTF_READING: u16 = 1 << 3;
pub const GTF_WRITING: u16 = 1 << 4;
pub const GTF_PWT: u16 = 1 << 5;
pub const GTF_PCD: u16 = 1 << 6;
pub const GTF_PAT: u16 = 1 << 7;
pub const GTF_SUB_PAGE: u16 = 1 << 8;
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;

/// Entries 0..8 are the toolstack's (0 = console, 1 = xenstore); guests never allocate them.
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

// ---- GNTMAP_* (map_grant_ref flags) ----
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
pub const GNTMAP_READONLY: u32 = 1 << 2;
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;
pub const GNTMAP_GUEST_AVAIL_MASK: u32 = !0 << 16;

// ---- GNTCOPY_* (gnttab_copy.flags) ----
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

// ---- GNTTAB_CACHE_* (gnttab_cache_flush.op) ----
pub const GNTTAB_CACHE_CLEAN: u32 = 1 << 0;
pub const GNTTAB_CACHE_INVAL: u32 = 1 << 1;
pub const GNTTAB_CACHE_SOURCE_GREF: u32 = 1 << 31;

// ---- GNTST_* (enum grant_status) ----
pub const GNTST_OKAY: i16 = 0;
pub const GNTST_GENERAL_ERROR: i16 = -1;
pub const GNTST_BAD_DOMAIN: i16 = -2;
pub const GNTST_BAD_GNTREF: i16 = -3;
pub const GNTST_BAD_HANDLE: i16 = -4;
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
pub const GNTST_PERMISSION_DENIED: i16 = -8;
pub const GNTST_BAD_PAGE: i16 = -9;
pub const GNTST_BAD_COPY_ARG: i16 = -10;
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
pub const GNTST_EAGAIN: i16 = -12;
pub const GNTST_NO_SPACE: i16 = -13;

/// Bytes of one v1 entry, and entries per 4 KiB grant frame.
pub const GRANT_ENTRY_V1_SIZE: u64 = 8;
pub const GRANT_ENTRIES_PER_FRAME_V1: u32 = 512;

/// `struct grant_entry_v1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}

/// `struct gnttab_map_grant_ref`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabMapGrantRef {
    pub host_addr: u64,
    pub flags: u32,
    pub r#ref: GrantRef,
    pub dom: u16,
    pub status: i16,
    pub handle: GrantHandle,
    pub dev_bus_addr: u64,
}

/// `struct gnttab_unmap_grant_ref`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabUnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: GrantHandle,
    pub status: i16,
    pub _pad: u16,
}

/// `struct gnttab_setup_table` (64-bit layout; `frame_list` is a guest handle of `xen_pfn_t`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabSetupTable {
    pub dom: u16,
    pub _pad0: u16,
    pub nr_frames: u32,
    pub status: i16,
    pub _pad1: [u16; 3],
    pub frame_list: u64,
}

/// `struct gnttab_transfer`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabTransfer {
    pub mfn: u64,
    pub domid: u16,
    pub _pad0: u16,
    pub r#ref: GrantRef,
    pub status: i16,
    pub _pad1: [u16; 3],
}

/// `struct gnttab_copy_ptr` (the union `u` is a grant ref or a `xen_pfn_t`, as `u64`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabCopyPtr {
    pub u: u64,
    pub domid: u16,
    pub offset: u16,
    pub _pad: u32,
}

/// `struct gnttab_copy`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabCopy {
    pub source: GnttabCopyPtr,
    pub dest: GnttabCopyPtr,
    pub len: u16,
    pub flags: u16,
    pub status: i16,
    pub _pad: u16,
}

/// `struct gnttab_query_size`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabQuerySize {
    pub dom: u16,
    pub _pad0: u16,
    pub nr_frames: u32,
    pub max_nr_frames: u32,
    pub status: i16,
    pub _pad1: u16,
}

/// `struct gnttab_unmap_and_replace`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabUnmapAndReplace {
    pub host_addr: u64,
    pub new_addr: u64,
    pub handle: GrantHandle,
    pub status: i16,
    pub _pad: u16,
}

/// `struct gnttab_set_version`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabSetVersion {
    pub version: u32,
}

/// `struct gnttab_get_status_frames` (`frame_list` is a guest handle of `uint64_t`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabGetStatusFrames {
    pub nr_frames: u32,
    pub dom: u16,
    pub status: i16,
    pub frame_list: u64,
}

/// `struct gnttab_get_version`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabGetVersion {
    pub dom: u16,
    pub pad: u16,
    pub version: u32,
}

/// `struct gnttab_swap_grant_ref`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabSwapGrantRef {
    pub ref_a: GrantRef,
    pub ref_b: GrantRef,
    pub status: i16,
    pub _pad: u16,
}

/// `struct gnttab_cache_flush` (the union `a` is a bus address or a grant ref, as `u64`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabCacheFlush {
    pub a: u64,
    pub offset: u16,
    pub length: u16,
    pub op: u32,
}
