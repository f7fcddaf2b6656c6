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

/// `XENMEMF_populate_on_demand` (`mem_flags` of [`XenMemoryReservation`]): HVM only.
pub const XENMEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;
pub const XENMEMF_EXACT_NODE_REQUEST: u32 = 1 << 17;
pub const XENMEMF_VNODE: u32 = 1 << 18;

/// `XENMAPSPACE_*`: what `XENMEM_add_to_physmap{,_batch}` maps.
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
pub const XENMAPSPACE_GMFN: u32 = 2;
pub const XENMAPSPACE_GMFN_RANGE: u32 = 3;
pub const XENMAPSPACE_GMFN_FOREIGN: u32 = 4;
pub const XENMAPSPACE_DEV_MMIO: u32 = 5;

/// `struct xen_memory_reservation` (`memory.h`): the argument of
/// `XENMEM_{increase,decrease}_reservation` and `XENMEM_populate_physmap`. `extent_start` is a
/// guest pointer to `nr_extents` frame numbers (`xen_pfn_t`), each the base of `2^extent_order`
/// frames.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenMemoryReservation {
    pub extent_start: u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: u16,
    pub _pad: [u8; 6],
}

/// `struct xen_machphys_mfn_list` (`memory.h`): `XENMEM_machphys_mfn_list` writes the first
/// MFN of each 2 MiB piece of the M2P table to `extent_start` (at most `max_extents`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenMachphysMfnList {
    pub max_extents: u32,
    pub _pad0: u32,
    pub extent_start: u64,
    pub nr_extents: u32,
    pub _pad1: u32,
}

/// `struct xen_add_to_physmap` (`memory.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenAddToPhysmap {
    pub domid: u16,
    pub size: u16,
    pub space: u32,
    pub idx: u64,
    pub gpfn: u64,
}

/// `struct xen_add_to_physmap_batch` (`memory.h`, interface 0x00040700 and later).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenAddToPhysmapBatch {
    pub domid: u16,
    pub space: u16,
    pub size: u16,
    /// `u.foreign_domid` / `u.res0`.
    pub u: u16,
    pub idxs: u64,
    pub gpfns: u64,
    pub errs: u64,
}

/// `struct xen_remove_from_physmap` (`memory.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenRemoveFromPhysmap {
    pub domid: u16,
    pub _pad: [u8; 6],
    pub gpfn: u64,
}

/// `struct xen_pod_target` (`memory.h`): `XENMEM_{set,get}_pod_target`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenPodTarget {
    pub target_pages: u64,
    pub tot_pages: u64,
    pub pod_cache_pages: u64,
    pub pod_entries: u64,
    pub domid: u16,
    pub _pad: [u8; 6],
}

/// `struct xen_mem_acquire_resource` (`memory.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenMemAcquireResource {
    pub domid: u16,
    pub type_: u16,
    pub id: u32,
    pub nr_frames: u32,
    pub pad: u32,
    pub frame: u64,
    pub frame_list: u64,
}

/// `struct xen_vnuma_topology_info` (`memory.h`): `XENMEM_get_vnumainfo`. The three arrays
/// are guest pointers (`union { handle; uint64_t pad; }`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenVnumaTopologyInfo {
    pub domid: u16,
    pub pad: u16,
    pub nr_vnodes: u32,
    pub nr_vcpus: u32,
    pub nr_vmemranges: u32,
    pub vdistance: u64,
    pub vcpu_to_vnode: u64,
    pub vmemrange: u64,
}

/// One entry of the pseudo-physical memory map `XENMEM_memory_map` returns (Xen's
/// `struct e820entry`, packed: 20 bytes).
pub const E820_ENTRY_SIZE: usize = 20;
/// `E820_RAM`.
pub const E820_RAM: u32 = 1;
