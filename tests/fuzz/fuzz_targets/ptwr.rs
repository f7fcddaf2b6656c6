//! Feeds arbitrary bytes as direct stores to a read-only L1 table (instruction bytes,
//! registers, error code, guest mode, VM assist) through the PV shim's #PF path on the mock
//! machine: after every fault the type and reference invariants must hold, a fault delivered
//! to the guest must have changed nothing, and restoring the original entries must bring
//! every count back to its baseline (`pv_shim::mm::ptwr::fuzz::run_case`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pv_shim::mm::ptwr::fuzz::run_case(data);
});
