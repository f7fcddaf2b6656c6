//! Shared-memory device protocols (`xen/include/public/io/`): the rings a frontend in the
//! guest and a backend in domain 0 exchange through granted or pre-shared pages.

pub mod blkif;
pub mod console;
pub mod ring;
pub mod xs_wire;
