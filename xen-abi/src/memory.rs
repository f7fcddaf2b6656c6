//! `HYPERVISOR_memory_op` (`memory.h`): `XENMEM_*` sub-ops (lower case in C:
//! `XENMEM_memory_map`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const XENMEM_INCREASE_RESERVATION: u64 = 0;
pub const XENMEM_DECREASE_RESERVATION: u64 = 1;
pub const XENMEM_MAXIMUM_RAM_PAGE: u64 = 2;
pub const XENMEM_CURRENT_RESERVATION: u64 = 3;
pub const XENMEM_MAXIMUM_RESERVATION: u64 = 4;
pub const XENMEM_MACHPHYS_MFN_LIST: u64 = 5;
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
pub const XENMEM_MEMORY_MAP: u64 = 9;
pub const XENMEM_MACHINE_MEMORY_MAP: u64 = 10;
pub const XENMEM_EXCHANGE: u64 = 11;
pub const XENMEM_MACHPHYS_MAPPING: u64 = 12;
pub const XENMEM_SET_MEMORY_MAP: u64 = 13;
pub const XENMEM_MAXIMUM_GPFN: u64 = 14;
pub const XENMEM_REMOVE_FROM_PHYSMAP: u64 = 15;
pub const XENMEM_SET_POD_TARGET: u64 = 16;
pub const XENMEM_GET_POD_TARGET: u64 = 17;
pub const XENMEM_ADD_TO_PHYSMAP_BATCH: u64 = 23;
pub const XENMEM_MACHPHYS_COMPAT_MFN_LIST: u64 = 25;
pub const XENMEM_GET_VNUMAINFO: u64 = 26;
pub const XENMEM_ACQUIRE_RESOURCE: u64 = 28;
/// Low bits of the `memory_op` command that name the operation; the bits above carry a
/// continuation's start extent (Xen's private `MEMOP_CMD_MASK`, `MEMOP_EXTENT_SHIFT` = 6).
pub const MEMOP_CMD_MASK: u64 = (1 << 6) - 1;

/// `struct xen_machphys_mapping` (`memory.h`): the answer to `XENMEM_machphys_mapping`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenMachphysMapping {
    pub v_start: u64,
    pub v_end: u64,
    pub max_mfn: u64,
}

/// `struct xen_memory_map` (`memory.h`): `buffer` is a guest pointer to E820 entries (20 bytes
/// each).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenMemoryMap {
    pub nr_entries: u32,
    pub _pad: u32,
    pub buffer: u64,
}
