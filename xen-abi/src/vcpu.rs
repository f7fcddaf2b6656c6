//! `HYPERVISOR_vcpu_op` (`vcpu.h`): `VCPUOP_*` commands (lower case in C: `VCPUOP_is_up`) and
//! their arguments.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const VCPUOP_INITIALISE: u64 = 0;
pub const VCPUOP_UP: u64 = 1;
pub const VCPUOP_DOWN: u64 = 2;
pub const VCPUOP_IS_UP: u64 = 3;
pub const VCPUOP_GET_RUNSTATE_INFO: u64 = 4;
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
pub const VCPUOP_SET_PERIODIC_TIMER: u64 = 6;
pub const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;
pub const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;
pub const VCPUOP_SEND_NMI: u64 = 11;
pub const VCPUOP_GET_PHYSID: u64 = 12;
pub const VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA: u64 = 13;

// ---- vcpu_runstate_info.state ----
pub const RUNSTATE_RUNNING: i32 = 0;
pub const RUNSTATE_RUNNABLE: i32 = 1;
pub const RUNSTATE_BLOCKED: i32 = 2;
pub const RUNSTATE_OFFLINE: i32 = 3;
/// Set in `state_entry_time` while the hypervisor updates the area, when the guest enabled
/// `VMASST_TYPE_runstate_update_flag`.
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// `struct vcpu_runstate_info` (`vcpu.h`), 48 bytes: what `VCPUOP_get_runstate_info` returns
/// and what the hypervisor keeps current in a registered runstate area.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRunstateInfo {
    /// `RUNSTATE_*`.
    pub state: i32,
    pub _pad0: u32,
    /// System time (ns) when `state` was entered, maybe with `XEN_RUNSTATE_UPDATE`.
    pub state_entry_time: u64,
    /// Time (ns) spent in each `RUNSTATE_*`.
    pub time: [u64; 4],
}

/// `struct vcpu_register_runstate_memory_area` (`vcpu.h`): the union `addr` is a guest
/// virtual address (`addr.p`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRegisterRunstateMemoryArea {
    pub addr: u64,
}

/// `struct vcpu_set_periodic_timer` (`vcpu.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuSetPeriodicTimer {
    pub period_ns: u64,
}

/// `struct vcpu_set_singleshot_timer` (`vcpu.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuSetSingleshotTimer {
    pub timeout_abs_ns: u64,
    /// `VCPU_SSHOTTMR_*`.
    pub flags: u32,
    pub _pad: u32,
}

/// `VCPU_SSHOTTMR_future`: fail with `-ETIME` if the deadline has passed (obsolete; Linux
/// passes 0).
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << 0;

/// `struct vcpu_register_vcpu_info` (`vcpu.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRegisterVcpuInfo {
    pub mfn: u64,
    pub offset: u32,
    pub rsvd: u32,
}

/// `struct vcpu_register_time_memory_area` (`vcpu.h`): the union `addr` is a guest virtual
/// address (`addr.p`) of a secondary `vcpu_time_info`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRegisterTimeMemoryArea {
    pub addr: u64,
}

/// `sizeof(struct vcpu_guest_context)` on x86_64 (`arch-x86/xen.h`): what `VCPUOP_initialise`
/// reads from the guest (xen-pv-contract.md §4.8.1).
pub const VCPU_GUEST_CONTEXT_SIZE: usize = 5168;

/// `struct vcpu_get_physid` (`vcpu.h`): `VCPUOP_get_physid`'s result (dom0 only).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuGetPhysid {
    pub phys_id: u64,
}
