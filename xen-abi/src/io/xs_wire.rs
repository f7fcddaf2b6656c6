//! The xenstore wire protocol (`io/xs_wire.h`): the message header both ends of a xenstore
//! connection exchange, the message types, the error names, and the shared ring page at
//! `start_info.store_mfn` through which a domain talks to the store daemon (here
//! `devices::xenstore`).
//!
//! ```text
//!  0      1024     2048   2052   2056   2060   2064      2068       2072
//!  ┌──────┬────────┬──────┬──────┬──────┬──────┬─────────┬──────────┬───────┐
//!  │ req  │ rsp    │ req_ │ req_ │ rsp_ │ rsp_ │ server_ │connection│ error │
//!  │      │        │ cons │ prod │ cons │ prod │ features│          │       │
//!  └──────┴────────┴──────┴──────┴──────┴──────┴─────────┴──────────┴───────┘
//!   guest→  store→   store  guest  guest  store  store
//! ```
//!
//! Both rings are byte streams with free-running `u32` indices masked by
//! [`XENSTORE_RING_SIZE`]; a message is an [`XsdSockmsg`] header followed by `len` payload bytes
//! and may straddle the wrap (and be larger than the ring).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::Errno;

/// `enum xsd_sockmsg_type`: `XS_CONTROL` (alias `XS_DEBUG`).
pub const XS_CONTROL: u32 = 0;
/// `XS_DIRECTORY`.
pub const XS_DIRECTORY: u32 = 1;
/// `XS_READ`.
pub const XS_READ: u32 = 2;
/// `XS_GET_PERMS`.
pub const XS_GET_PERMS: u32 = 3;
/// `XS_WATCH`.
pub const XS_WATCH: u32 = 4;
/// `XS_UNWATCH`.
pub const XS_UNWATCH: u32 = 5;
/// `XS_TRANSACTION_START`.
pub const XS_TRANSACTION_START: u32 = 6;
/// `XS_TRANSACTION_END`.
pub const XS_TRANSACTION_END: u32 = 7;
/// `XS_INTRODUCE`.
pub const XS_INTRODUCE: u32 = 8;
/// `XS_RELEASE`.
pub const XS_RELEASE: u32 = 9;
/// `XS_GET_DOMAIN_PATH`.
pub const XS_GET_DOMAIN_PATH: u32 = 10;
/// `XS_WRITE`.
pub const XS_WRITE: u32 = 11;
/// `XS_MKDIR`.
pub const XS_MKDIR: u32 = 12;
/// `XS_RM`.
pub const XS_RM: u32 = 13;
/// `XS_SET_PERMS`.
pub const XS_SET_PERMS: u32 = 14;
/// `XS_WATCH_EVENT`: server → client only.
pub const XS_WATCH_EVENT: u32 = 15;
/// `XS_ERROR`: the reply carrying an error name.
pub const XS_ERROR: u32 = 16;
/// `XS_IS_DOMAIN_INTRODUCED`.
pub const XS_IS_DOMAIN_INTRODUCED: u32 = 17;
/// `XS_RESUME`.
pub const XS_RESUME: u32 = 18;
/// `XS_SET_TARGET`.
pub const XS_SET_TARGET: u32 = 19;
/// `XS_RESET_WATCHES` (20 was `XS_RESTRICT`, removed).
pub const XS_RESET_WATCHES: u32 = 21;
/// `XS_DIRECTORY_PART`.
pub const XS_DIRECTORY_PART: u32 = 22;
/// `XS_TYPE_COUNT`: the number of valid types.
pub const XS_TYPE_COUNT: u32 = 23;
/// `XS_INVALID`: guaranteed to remain an invalid type.
pub const XS_INVALID: u32 = 0xffff;

/// `enum xs_watch_type`: index of the path in a watch event's strings.
pub const XS_WATCH_PATH: u32 = 0;
/// Index of the token in a watch event's strings.
pub const XS_WATCH_TOKEN: u32 = 1;

/// `struct xsd_sockmsg`: the header before every message's payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XsdSockmsg {
    /// `XS_*`.
    pub r#type: u32,
    /// Request identifier, echoed in the daemon's response.
    pub req_id: u32,
    /// Transaction id (0 if not in a transaction).
    pub tx_id: u32,
    /// Payload length in bytes.
    pub len: u32,
}

/// `XENSTORE_RING_SIZE`: bytes in each of the two rings.
pub const XENSTORE_RING_SIZE: usize = 1024;
/// `XENSTORE_PAYLOAD_MAX`: the largest payload a message may carry.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// `XENSTORE_ABS_PATH_MAX`.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_REL_PATH_MAX`.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;
/// `XENSTORE_SERVER_FEATURE_RECONNECTION`.
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// `XENSTORE_CONNECTED`: the steady state of `connection`.
pub const XENSTORE_CONNECTED: u32 = 0;
/// `XENSTORE_RECONNECT`: reconnection in progress.
pub const XENSTORE_RECONNECT: u32 = 1;
/// `XENSTORE_ERROR_NONE`.
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `XENSTORE_ERROR_COMM`: communication problem.
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `XENSTORE_ERROR_RINGIDX`: invalid ring index.
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `XENSTORE_ERROR_PROTO`: protocol violation (payload too long).
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// `XENSTORE_RING_IDX`.
pub type XenstoreRingIdx = u32;

/// `struct xenstore_domain_interface`: the page at `start_info.store_mfn`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenstoreDomainInterface {
    /// Requests to the store daemon (guest → store).
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and watch events (store → guest).
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// Written by the store.
    pub req_cons: XenstoreRingIdx,
    /// Written by the guest.
    pub req_prod: XenstoreRingIdx,
    /// Written by the guest.
    pub rsp_cons: XenstoreRingIdx,
    /// Written by the store.
    pub rsp_prod: XenstoreRingIdx,
    /// `XENSTORE_SERVER_FEATURE_*` bits the store supports.
    pub server_features: u32,
    /// `XENSTORE_CONNECTED` / `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// `XENSTORE_ERROR_*`.
    pub error: u32,
}

/// `MASK_XENSTORE_IDX(idx)`: the position of free-running index `idx` in a ring.
pub const fn mask_idx(idx: XenstoreRingIdx) -> usize {
    idx as usize & (XENSTORE_RING_SIZE - 1)
}

/// `xsd_errors[]`: the errors an `XS_ERROR` reply may name, in the header's order (new ones
/// are only ever appended). The reply payload is the name followed by a NUL.
pub const XSD_ERRORS: [(Errno, &str); 16] = [
    (Errno::EINVAL, "EINVAL"),
    (Errno::EACCES, "EACCES"),
    (Errno::EEXIST, "EEXIST"),
    (Errno::EISDIR, "EISDIR"),
    (Errno::ENOENT, "ENOENT"),
    (Errno::ENOMEM, "ENOMEM"),
    (Errno::ENOSPC, "ENOSPC"),
    (Errno::EIO, "EIO"),
    (Errno::ENOTEMPTY, "ENOTEMPTY"),
    (Errno::ENOSYS, "ENOSYS"),
    (Errno::EROFS, "EROFS"),
    (Errno::EBUSY, "EBUSY"),
    (Errno::EAGAIN, "EAGAIN"),
    (Errno::EISCONN, "EISCONN"),
    (Errno::E2BIG, "E2BIG"),
    (Errno::EPERM, "EPERM"),
];

/// The `xsd_errors` name of `e`; errors the table lacks are sent as `EINVAL`, which is what
/// the clients' lookup (`get_error` in libxenstore and Linux's xenbus) falls back to.
pub fn xsd_error_name(e: Errno) -> &'static str {
    XSD_ERRORS.iter().find(|(n, _)| *n == e).map_or("EINVAL", |(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_match_their_errno_and_unknown_falls_back_to_einval() {
        assert_eq!(xsd_error_name(Errno::EAGAIN), "EAGAIN");
        assert_eq!(xsd_error_name(Errno::EPERM), "EPERM");
        assert_eq!(xsd_error_name(Errno::EFAULT), "EINVAL");
        for (i, (e, _)) in XSD_ERRORS.iter().enumerate() {
            assert!(XSD_ERRORS[..i].iter().all(|(o, _)| o != e), "duplicate errno {e:?}");
        }
        assert_eq!(mask_idx(1024 + 7), 7);
    }
}
