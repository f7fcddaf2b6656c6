//! `HYPERVISOR_console_io` commands (`xen.h`) and the PV console ring (`io/console.h`).

/// `CONSOLEIO_write`.
pub const CONSOLEIO_WRITE: u64 = 0;
/// `CONSOLEIO_read`.
pub const CONSOLEIO_READ: u64 = 1;

/// Size of the `in` buffer of `struct xencons_interface` (`io/console.h`).
pub const XENCONS_IN_SIZE: usize = 1024;
/// Size of the `out` buffer of `struct xencons_interface` (`io/console.h`).
pub const XENCONS_OUT_SIZE: usize = 2048;
