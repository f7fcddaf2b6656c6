//! `HYPERVISOR_callback_op` (`callback.h`; C spells the names in lower case:
//! `CALLBACKTYPE_syscall32`, `CALLBACKF_mask_events`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const CALLBACKOP_REGISTER: u64 = 0;
pub const CALLBACKOP_UNREGISTER: u64 = 1;

pub const CALLBACKTYPE_EVENT: u16 = 0;
pub const CALLBACKTYPE_FAILSAFE: u16 = 1;
pub const CALLBACKTYPE_SYSCALL: u16 = 2;
pub const CALLBACKTYPE_SYSENTER_DEPRECATED: u16 = 3;
pub const CALLBACKTYPE_NMI: u16 = 4;
pub const CALLBACKTYPE_SYSENTER: u16 = 5;
pub const CALLBACKTYPE_SYSCALL32: u16 = 7;

pub const CALLBACKF_MASK_EVENTS: u16 = 1 << 0;

/// `struct callback_register` (`callback.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CallbackRegister {
    pub type_: u16,
    pub flags: u16,
    pub _pad: u32,
    pub address: u64,
}

/// `struct callback_unregister` (`callback.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CallbackUnregister {
    pub type_: u16,
    pub _unused: u16,
}
