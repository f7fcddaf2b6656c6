//! Feeds arbitrary bytes as sequences of `memory_op` calls (any command, guest-chosen
//! argument and extent-list bytes) and page unmaps/remaps to the PV shim on the mock machine:
//! the MMU invariants and the reservation counts must hold after every call
//! (`pv_shim::mm::memory_op::fuzz::run_case`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pv_shim::mm::memory_op::fuzz::run_case(data);
});
