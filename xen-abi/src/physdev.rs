//! `HYPERVISOR_physdev_op` (`physdev.h`) and `HYPERVISOR_nmi_op` (`nmi.h`): the sub-ops a PV
//! domU issues.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const PHYSDEVOP_IRQ_UNMASK_NOTIFY: u64 = 4;
pub const PHYSDEVOP_EOI: u64 = 12;
pub const PHYSDEVOP_PIRQ_EOI_GMFN_V1: u64 = 17;
pub const PHYSDEVOP_PIRQ_EOI_GMFN_V2: u64 = 28;
pub const PHYSDEVOP_IRQ_STATUS_QUERY: u64 = 5;
pub const PHYSDEVOP_SET_IOPL: u64 = 6;
pub const PHYSDEVOP_SET_IOBITMAP: u64 = 7;
pub const PHYSDEVOP_APIC_READ: u64 = 8;
pub const PHYSDEVOP_APIC_WRITE: u64 = 9;
pub const PHYSDEVOP_ALLOC_IRQ_VECTOR: u64 = 10;
pub const PHYSDEVOP_FREE_IRQ_VECTOR: u64 = 11;
pub const PHYSDEVOP_MAP_PIRQ: u64 = 13;
pub const PHYSDEVOP_UNMAP_PIRQ: u64 = 14;
pub const PHYSDEVOP_MANAGE_PCI_ADD: u64 = 15;
pub const PHYSDEVOP_MANAGE_PCI_REMOVE: u64 = 16;
pub const PHYSDEVOP_RESTORE_MSI: u64 = 19;
pub const PHYSDEVOP_MANAGE_PCI_ADD_EXT: u64 = 20;
pub const PHYSDEVOP_SETUP_GSI: u64 = 21;
pub const PHYSDEVOP_GET_FREE_PIRQ: u64 = 23;
pub const PHYSDEVOP_PCI_MMCFG_RESERVED: u64 = 24;
pub const PHYSDEVOP_PCI_DEVICE_ADD: u64 = 25;
pub const PHYSDEVOP_PCI_DEVICE_REMOVE: u64 = 26;
pub const PHYSDEVOP_RESTORE_MSI_EXT: u64 = 27;
pub const PHYSDEVOP_DBGP_OP: u64 = 29;
pub const PHYSDEVOP_PREPARE_MSIX: u64 = 30;
pub const PHYSDEVOP_RELEASE_MSIX: u64 = 31;
/// Xen 4.20 and later (not in the 4.17 headers).
pub const PHYSDEVOP_PCI_DEVICE_RESET: u64 = 32;

/// `physdev_irq_status_query.flags`.
pub const XENIRQSTAT_NEEDS_EOI: u32 = 1 << 0;
pub const XENIRQSTAT_SHARED: u32 = 1 << 1;

/// `struct physdev_set_iopl`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevSetIopl {
    pub iopl: u32,
}

/// `struct physdev_set_iobitmap` (64-bit layout).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevSetIobitmap {
    pub bitmap: u64,
    pub nr_ports: u32,
    pub _pad: u32,
}

/// `struct physdev_eoi`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevEoi {
    pub irq: u32,
}

/// `struct physdev_irq_status_query`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevIrqStatusQuery {
    pub irq: u32,
    pub flags: u32,
}

/// `struct physdev_pirq_eoi_gmfn`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PhysdevPirqEoiGmfn {
    pub gmfn: u64,
}

pub const XENNMI_REGISTER_CALLBACK: u64 = 0;
pub const XENNMI_UNREGISTER_CALLBACK: u64 = 1;

/// `struct xennmi_callback` (`nmi.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XennmiCallback {
    pub handler_address: u64,
    pub pad: u64,
}
