//! Integration tests for xenvmm.
//!
//! [`guests`] locates the tiny Xen PV test kernels of `tests/guests`, which `build.rs`
//! builds (into `target/guests`) before this crate compiles.

/// Paths of the built PV test guests, one constant per `tests/guests/src/bin/<name>.rs`
/// (`HELLO`, `HELLO_HCPAGE`, `CRASH`, `FAULT`, ...), plus [`guests::ALL`].
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The path of the guest kernel `name` (a file stem of `tests/guests/src/bin`).
///
/// # Panics
/// If there is no such guest.
pub fn guest(name: &str) -> &'static str {
    guests::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, path)| *path)
        .unwrap_or_else(|| panic!("no PV test guest named {name:?}; see tests/guests/src/bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guest_was_built() {
        assert!(guests::ALL.len() >= 4);
        for (name, path) in guests::ALL {
            assert!(std::path::Path::new(path).is_file(), "{name}: {path}");
        }
        assert_eq!(guest("hello-hcpage"), guests::HELLO_HCPAGE);
    }
}
