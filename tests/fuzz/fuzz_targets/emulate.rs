//! Feeds arbitrary instruction bytes and vCPU state (guest mode, virtual IOPL and CR4, CPUID
//! policy, registers, distance to an unmapped page) to the PV shim's #GP/#UD emulator on the
//! mock machine: it must never panic, never move rip by more than one instruction, and never
//! let guest user mode change MSRs, CR4 or XCR0 (`pv_shim::emul::fuzz::run_case`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pv_shim::emul::fuzz::run_case(data);
});
