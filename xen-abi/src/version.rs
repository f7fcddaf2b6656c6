//! `HYPERVISOR_xen_version` sub-ops (`version.h`) and XENFEAT bits (`features.h`). Xen spells
//! them in lower case (`XENVER_get_features`, `XENFEAT_mmu_pt_update_preserve_ad`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const XENVER_VERSION: u64 = 0;
pub const XENVER_EXTRAVERSION: u64 = 1;
pub const XENVER_COMPILE_INFO: u64 = 2;
pub const XENVER_CAPABILITIES: u64 = 3;
pub const XENVER_CHANGESET: u64 = 4;
pub const XENVER_PLATFORM_PARAMETERS: u64 = 5;
pub const XENVER_GET_FEATURES: u64 = 6;
pub const XENVER_PAGESIZE: u64 = 7;
pub const XENVER_GUEST_HANDLE: u64 = 8;
pub const XENVER_COMMANDLINE: u64 = 9;
pub const XENVER_BUILD_ID: u64 = 10;

/// `sizeof(xen_extraversion_t)`.
pub const XEN_EXTRAVERSION_LEN: usize = 16;
pub const XEN_CAPABILITIES_INFO_LEN: usize = 1024;
pub const XEN_CHANGESET_INFO_LEN: usize = 64;
/// `sizeof(xen_commandline_t)` (the header has no `_LEN` macro for it).
pub const XEN_COMMANDLINE_LEN: usize = 1024;

/// `struct xen_feature_info` (`version.h`): the argument of `XENVER_get_features`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenFeatureInfo {
    pub submap_idx: u32,
    pub submap: u32,
}

/// `struct xen_compile_info` (`version.h`).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenCompileInfo {
    pub compiler: [u8; 64],
    pub compile_by: [u8; 16],
    pub compile_domain: [u8; 32],
    pub compile_date: [u8; 32],
}

/// `struct xen_platform_parameters` (`version.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenPlatformParameters {
    pub virt_start: u64,
}

pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
pub const XENFEAT_WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
pub const XENFEAT_SUPERVISOR_MODE_KERNEL: u32 = 3;
pub const XENFEAT_PAE_PGDIR_ABOVE_4GB: u32 = 4;
pub const XENFEAT_MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
pub const XENFEAT_HIGHMEM_ASSIST: u32 = 6;
pub const XENFEAT_GNTTAB_MAP_AVAIL_BITS: u32 = 7;
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;
pub const XENFEAT_HVM_PIRQS: u32 = 10;
pub const XENFEAT_DOM0: u32 = 11;
// 12 was `XENFEAT_grant_map_identity`, deprecated and commented out in the headers.
pub const XENFEAT_MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
/// `XENFEAT_ARM_SMCCC_supported`.
pub const XENFEAT_ARM_SMCCC_SUPPORTED: u32 = 14;
pub const XENFEAT_LINUX_RSDP_UNRESTRICTED: u32 = 15;
pub const XENFEAT_NOT_DIRECT_MAPPED: u32 = 16;
pub const XENFEAT_DIRECT_MAPPED: u32 = 17;
/// Xen 4.18+ (newer than the 4.17 headers `tests/layout.rs` checks against): the guest may use
/// `VCPUOP_register_runstate_phys_area`.
pub const XENFEAT_RUNSTATE_PHYS_AREA: u32 = 18;
/// Xen 4.18+ (newer than the 4.17 headers `tests/layout.rs` checks against): the guest may use
/// `VCPUOP_register_vcpu_time_phys_area`.
pub const XENFEAT_VCPU_TIME_PHYS_AREA: u32 = 19;
/// Number of 32-bit feature submaps (`XENVER_get_features` accepts only `submap_idx` 0).
pub const XENFEAT_NR_SUBMAPS: u32 = 1;
