//! Feeds arbitrary bytes as guest argument pages, grant entries and sequences of
//! `HYPERVISOR_grant_table_op` calls (with their continuations) to the PV shim on the mock
//! machine: nothing may panic, the table stays within its maximum and the MMU invariants hold
//! (`pv_shim::grant::fuzz::run_case`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pv_shim::grant::fuzz::run_case(data);
});
