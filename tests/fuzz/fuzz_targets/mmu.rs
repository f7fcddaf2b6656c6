//! Feeds arbitrary bytes as sequences of `mmu_update`, `mmuext_op` and `update_va_mapping`
//! calls to the PV shim's MMU on the mock machine: after every call the type and reference
//! invariants must hold (no page table writable-mapped, every count equal to the references
//! that exist), and after undoing everything every count must be back at its baseline
//! (`pv_shim::mm::fuzz::run_case`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pv_shim::mm::fuzz::run_case(data);
});
