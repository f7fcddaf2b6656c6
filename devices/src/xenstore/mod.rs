//! The xenstore daemon (xenstored's role): a tree of nodes with permissions, watches and
//! transactions, served to each domain over its store ring (`io/xs_wire.h`).
//!
//! `path` validates names, `tree` holds nodes and permissions, `store` answers requests as
//! C xenstored answers a domU, `wire` frames messages from the ring bytes, `socket` serves dom0
//! tools over a Unix socket.

pub mod domain;
pub mod path;
pub mod socket;
pub mod store;
pub mod tree;
pub mod wire;

#[cfg(test)]
mod tests;

pub use domain::{introduce, DomainEntries};
pub use store::{ConnId, Quota, Store};
