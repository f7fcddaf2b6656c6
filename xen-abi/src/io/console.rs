//! The PV console ring (`io/console.h`): the page at `start_info.console.domU.mfn`, shared
//! between the guest's `hvc_xen` (frontend) and the console daemon (xenconsoled's role, here
//! `devices::console`).
//!
//! ```text
//!  0     1024                       3072  3076  3080  3084  3088
//!  ┌─────┬──────────────────────────┬─────┬─────┬─────┬─────┐
//!  │ in  │ out                      │ in_ │ in_ │ out_│ out_│
//!  │     │                          │ cons│ prod│ cons│ prod│
//!  └─────┴──────────────────────────┴─────┴─────┴─────┴─────┘
//!   host→guest  guest→host            guest  host  host  guest   (who writes each index)
//! ```
//!
//! Indices are free-running `u32`s (`XENCONS_RING_IDX`), masked by the array size
//! (`MASK_XENCONS_IDX`): `prod - cons` is the number of unread bytes and is never more than
//! the array size in a well-formed ring. Newer headers (Xen 4.21) add a `connection` byte at
//! offset 3088; Debian's 4.17 headers, which `tests/layout.rs` checks against, do not have it,
//! and Linux 6.1 ignores it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::console::{XENCONS_IN_SIZE, XENCONS_OUT_SIZE};

/// `XENCONS_RING_IDX`.
pub type XenconsRingIdx = u32;

/// `struct xencons_interface` (`io/console.h`).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenconsInterface {
    /// Host → guest (keyboard) bytes.
    pub r#in: [u8; XENCONS_IN_SIZE],
    /// Guest → host (screen) bytes.
    pub out: [u8; XENCONS_OUT_SIZE],
    /// Written by the guest.
    pub in_cons: XenconsRingIdx,
    /// Written by the host.
    pub in_prod: XenconsRingIdx,
    /// Written by the host.
    pub out_cons: XenconsRingIdx,
    /// Written by the guest.
    pub out_prod: XenconsRingIdx,
}

/// `MASK_XENCONS_IDX(idx, out)`: the position of free-running index `idx` in `out`.
pub const fn mask_out(idx: XenconsRingIdx) -> usize {
    idx as usize & (XENCONS_OUT_SIZE - 1)
}

/// `MASK_XENCONS_IDX(idx, in)`: the position of free-running index `idx` in `in`.
pub const fn mask_in(idx: XenconsRingIdx) -> usize {
    idx as usize & (XENCONS_IN_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_powers_of_two_so_masking_is_modulo() {
        assert!(XENCONS_IN_SIZE.is_power_of_two() && XENCONS_OUT_SIZE.is_power_of_two());
        assert_eq!(mask_out(2048), 0);
        assert_eq!(mask_out(u32::MAX), 2047);
        assert_eq!(mask_in(1023), 1023);
        assert_eq!(mask_in(1024 + 5), 5);
    }
}
