//! Event channels (`event_channel.h`): `EVTCHNOP_*` sub-op numbers, and the `VIRQ_*` numbers
//! of `xen.h`, and the argument of every `EVTCHNOP_*` command.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
pub const EVTCHNOP_BIND_PIRQ: u64 = 2;
pub const EVTCHNOP_CLOSE: u64 = 3;
pub const EVTCHNOP_SEND: u64 = 4;
pub const EVTCHNOP_STATUS: u64 = 5;
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
pub const EVTCHNOP_BIND_IPI: u64 = 7;
pub const EVTCHNOP_BIND_VCPU: u64 = 8;
pub const EVTCHNOP_UNMASK: u64 = 9;
pub const EVTCHNOP_RESET: u64 = 10;
pub const EVTCHNOP_INIT_CONTROL: u64 = 11;
pub const EVTCHNOP_EXPAND_ARRAY: u64 = 12;
pub const EVTCHNOP_SET_PRIORITY: u64 = 13;
/// Defined only `#ifdef __XEN__` (the continuation of `EVTCHNOP_reset`), so `tests/layout.rs`
/// cannot see it in the guest view of the headers.
pub const EVTCHNOP_RESET_CONT: u64 = 14;

pub const VIRQ_TIMER: u32 = 0;
pub const VIRQ_DEBUG: u32 = 1;
pub const VIRQ_CONSOLE: u32 = 2;
pub const VIRQ_DOM_EXC: u32 = 3;
pub const VIRQ_TBUF: u32 = 4;
pub const VIRQ_DEBUGGER: u32 = 6;
pub const VIRQ_XENOPROF: u32 = 7;
pub const VIRQ_CON_RING: u32 = 8;
pub const VIRQ_PCPU_STATE: u32 = 9;
pub const VIRQ_MEM_EVENT: u32 = 10;
pub const VIRQ_ARGO: u32 = 11;
pub const VIRQ_ENOMEM: u32 = 12;
pub const VIRQ_XENPMU: u32 = 13;
/// Architecture-specific VIRQs; on x86 `VIRQ_ARCH_0` is `VIRQ_MCA` (`arch-x86/xen-mca.h`).
pub const VIRQ_ARCH_0: u32 = 16;
pub const VIRQ_ARCH_1: u32 = 17;
pub const VIRQ_ARCH_2: u32 = 18;
pub const VIRQ_ARCH_3: u32 = 19;
pub const VIRQ_ARCH_4: u32 = 20;
pub const VIRQ_ARCH_5: u32 = 21;
pub const VIRQ_ARCH_6: u32 = 22;
pub const VIRQ_ARCH_7: u32 = 23;
pub const NR_VIRQS: u32 = 24;

/// `EVTCHN_2L_NR_CHANNELS`: ports of the 2-level ABI on a 64-bit guest, 64 words × 64 bits.
pub const EVTCHN_2L_NR_CHANNELS: u32 = 64 * 64;

// ---- EVTCHNOP_status results (`EVTCHNSTAT_*`) ----
pub const EVTCHNSTAT_CLOSED: u32 = 0;
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
pub const EVTCHNSTAT_PIRQ: u32 = 3;
pub const EVTCHNSTAT_VIRQ: u32 = 4;
pub const EVTCHNSTAT_IPI: u32 = 5;

/// `evtchn_bind_pirq.flags`: the PIRQ may be shared with other domains.
pub const BIND_PIRQ__WILL_SHARE: u32 = 1;

/// `evtchn_port_t`.
pub type EvtchnPort = u32;

/// `struct evtchn_alloc_unbound` (`event_channel.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnAllocUnbound {
    pub dom: u16,
    pub remote_dom: u16,
    /// OUT.
    pub port: u32,
}

/// `struct evtchn_bind_interdomain` (`event_channel.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnBindInterdomain {
    pub remote_dom: u16,
    pub _pad: u16,
    pub remote_port: u32,
    /// OUT.
    pub local_port: u32,
}

/// `struct evtchn_bind_virq` (`event_channel.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnBindVirq {
    pub virq: u32,
    pub vcpu: u32,
    /// OUT.
    pub port: u32,
}

/// `struct evtchn_bind_pirq` (`event_channel.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnBindPirq {
    pub pirq: u32,
    /// `BIND_PIRQ__*`.
    pub flags: u32,
    /// OUT.
    pub port: u32,
}

/// `struct evtchn_bind_ipi` (`event_channel.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnBindIpi {
    pub vcpu: u32,
    /// OUT.
    pub port: u32,
}

/// `struct evtchn_close` (`event_channel.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnClose {
    pub port: u32,
}

/// `struct evtchn_send` (`event_channel.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnSend {
    pub port: u32,
}

/// `struct evtchn_unmask` (`event_channel.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnUnmask {
    pub port: u32,
}

/// `struct evtchn_status` (`event_channel.h`), 24 bytes. The union `u` is flattened: `u_val`
/// is `u.pirq`, `u.virq`, or (low 16 bits) `u.unbound.dom` / `u.interdomain.dom`; `u_port` is
/// `u.interdomain.port`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnStatus {
    pub dom: u16,
    pub _pad: u16,
    pub port: u32,
    /// OUT: `EVTCHNSTAT_*`.
    pub status: u32,
    /// OUT: the vCPU the port notifies.
    pub vcpu: u32,
    pub u_val: u32,
    pub u_port: u32,
}

/// `struct evtchn_bind_vcpu` (`event_channel.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnBindVcpu {
    pub port: u32,
    pub vcpu: u32,
}

/// `struct evtchn_reset` (`event_channel.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnReset {
    pub dom: u16,
}

/// `struct evtchn_init_control` (`event_channel.h`): FIFO ABI set-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnInitControl {
    pub control_gfn: u64,
    pub offset: u32,
    pub vcpu: u32,
    /// OUT.
    pub link_bits: u8,
    pub _pad: [u8; 7],
}

/// `struct evtchn_expand_array` (`event_channel.h`): FIFO ABI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnExpandArray {
    pub array_gfn: u64,
}

/// `struct evtchn_set_priority` (`event_channel.h`): FIFO ABI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnSetPriority {
    pub port: u32,
    pub priority: u32,
}
