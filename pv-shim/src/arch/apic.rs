//! The local APIC, in xAPIC mode through its MMIO page at `LAPIC_VIRT` (KVM's in-kernel
//! LAPIC): the one-shot timer behind the guest's timers, and end-of-interrupt.
//!
//! xAPIC rather than x2APIC, and one-shot rather than TSC-deadline mode, so that the CPUID
//! policy the guest sees can hide X2APIC and TSC_DEADLINE exactly as Xen does for a PV domU.

use xen_abi::hostcall::{LAPIC_VIRT, VECTOR_SPURIOUS, VECTOR_TIMER};

const REG_EOI: u64 = 0xb0;
const REG_SVR: u64 = 0xf0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INIT: u64 = 0x380;
const REG_TIMER_DIV: u64 = 0x3e0;
const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
/// Divide configuration 0b1011: divide by 1.
const DIV_BY_1: u32 = 0xb;

fn write(reg: u64, v: u32) {
    // SAFETY: the VMM maps the LAPIC page at LAPIC_VIRT in every address space the shim
    // runs on (slot 261, uncached, supervisor-only); `reg` is an architectural register offset.
    unsafe { ((LAPIC_VIRT + reg) as *mut u32).write_volatile(v) }
}

/// Software-enables the LAPIC with our spurious vector and a masked one-shot timer.
pub fn init() {
    write(REG_SVR, SVR_ENABLE | u32::from(VECTOR_SPURIOUS));
    write(REG_TIMER_DIV, DIV_BY_1);
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(VECTOR_TIMER));
    write(REG_TIMER_INIT, 0);
}

/// Fires VECTOR_TIMER once after `ticks` timer ticks, or stops the timer (`None`).
pub fn arm(ticks: Option<u32>) {
    match ticks {
        Some(t) => {
            write(REG_LVT_TIMER, u32::from(VECTOR_TIMER));
            // 0 would stop the timer: the earliest expiry is one tick away.
            write(REG_TIMER_INIT, t.max(1));
        }
        None => {
            write(REG_LVT_TIMER, LVT_MASKED | u32::from(VECTOR_TIMER));
            write(REG_TIMER_INIT, 0);
        }
    }
}

/// Acknowledges the interrupt being serviced.
pub fn eoi(vector: u64) {
    if vector != u64::from(VECTOR_SPURIOUS) {
        write(REG_EOI, 0);
    }
}
