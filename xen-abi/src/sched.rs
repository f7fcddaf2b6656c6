//! `HYPERVISOR_sched_op` (`sched.h`): `SCHEDOP_*` commands and `SHUTDOWN_*` reasons (lower case
//! in C: `SCHEDOP_yield` is `SCHEDOP_YIELD`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const SCHEDOP_YIELD: u64 = 0;
pub const SCHEDOP_BLOCK: u64 = 1;
pub const SCHEDOP_SHUTDOWN: u64 = 2;
pub const SCHEDOP_POLL: u64 = 3;
pub const SCHEDOP_REMOTE_SHUTDOWN: u64 = 4;
pub const SCHEDOP_SHUTDOWN_CODE: u64 = 5;
pub const SCHEDOP_WATCHDOG: u64 = 6;
pub const SCHEDOP_PIN_OVERRIDE: u64 = 7;

pub const SHUTDOWN_POWEROFF: u32 = 0;
pub const SHUTDOWN_REBOOT: u32 = 1;
pub const SHUTDOWN_SUSPEND: u32 = 2;
pub const SHUTDOWN_CRASH: u32 = 3;
pub const SHUTDOWN_WATCHDOG: u32 = 4;
pub const SHUTDOWN_SOFT_RESET: u32 = 5;
/// The highest valid shutdown reason.
pub const SHUTDOWN_MAX: u32 = 5;

/// `struct sched_shutdown` (`sched.h`): the argument of `SCHEDOP_shutdown`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedShutdown {
    pub reason: u32,
}

/// `struct sched_poll` (`sched.h`): `ports` is a guest pointer to `evtchn_port_t[nr_ports]`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedPoll {
    pub ports: u64,
    pub nr_ports: u32,
    pub _pad: u32,
    pub timeout: u64,
}

/// `struct sched_remote_shutdown` (`sched.h`): the argument of `SCHEDOP_remote_shutdown`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedRemoteShutdown {
    pub domain_id: u16,
    pub _pad: u16,
    /// `SHUTDOWN_*`.
    pub reason: u32,
}

/// `struct sched_watchdog` (`sched.h`): the argument of `SCHEDOP_watchdog`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedWatchdog {
    /// 0 allocates a new watchdog; otherwise the id a previous call returned.
    pub id: u32,
    /// Seconds; 0 destroys the watchdog `id`.
    pub timeout: u32,
}

/// `struct sched_pin_override` (`sched.h`): the argument of `SCHEDOP_pin_override`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedPinOverride {
    pub pcpu: i32,
}
