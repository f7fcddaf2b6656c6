//! The local APIC, in xAPIC mode through its MMIO page at `LAPIC_VIRT` (KVM's in-kernel
//! LAPIC): the one-shot timer behind the guest's timers, and end-of-interrupt.
//!
//! xAPIC rather than x2APIC, and one-shot rather than TSC-deadline mode, so that the CPUID
//! policy the guest sees can hide X2APIC and TSC_DEADLINE exactly as Xen does for a PV domU.

use core::sync::atomic::{AtomicBool, Ordering};
use xen_abi::hostcall::{LAPIC_VIRT, VECTOR_SPURIOUS, VECTOR_TIMER};

const REG_EOI: u64 = 0xb0;
const REG_SVR: u64 = 0xf0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INIT: u64 = 0x380;
const REG_TIMER_DIV: u64 = 0x3e0;
const SVR_ENABLE: u32 = 1 << 8;
/// Divide configuration 0b1011: divide by 1.
const DIV_BY_1: u32 = 0xb;

fn write(reg: u64, v: u32) {
    // SAFETY: the VMM maps the LAPIC page at LAPIC_VIRT in every address space the shim
    // runs on (slot 261, uncached, supervisor-only); `reg` is an architectural register offset.
    unsafe { ((LAPIC_VIRT + reg) as *mut u32).write_volatile(v) }
}

/// Whether the timer is stopped for sure: the last write to the initial-count register was 0,
/// or the timer fired since it was armed. One vCPU; the shim arms the timer with interrupts
/// off, and the timer interrupt's acknowledgement sets this.
static STOPPED: AtomicBool = AtomicBool::new(true);

/// Software-enables the LAPIC with our spurious vector and a stopped one-shot timer.
pub fn init() {
    write(REG_SVR, SVR_ENABLE | u32::from(VECTOR_SPURIOUS));
    write(REG_TIMER_DIV, DIV_BY_1);
    write(REG_TIMER_INIT, 0);
    STOPPED.store(true, Ordering::Relaxed);
    // Unmasked once and for all: an initial count of 0 is what stops a one-shot timer, so
    // arming and stopping are one register write each. Every LAPIC write is a VM exit (KVM
    // emulates the MMIO access), and the guest re-arms its timer several times per idle
    // period: bench-io's 1 MiB reads took 9 LVT writes each before this.
    write(REG_LVT_TIMER, u32::from(VECTOR_TIMER));
}

/// Fires VECTOR_TIMER once after `ticks` timer ticks, or stops the timer (`None`).
pub fn arm(ticks: Option<u32>) {
    match ticks {
        Some(t) => {
            // 0 would stop the timer: the earliest expiry is one tick away.
            write(REG_TIMER_INIT, t.max(1));
            STOPPED.store(false, Ordering::Relaxed);
        }
        // Already stopped: writing 0 again would only cost an exit.
        None if STOPPED.load(Ordering::Relaxed) => {}
        None => {
            write(REG_TIMER_INIT, 0);
            STOPPED.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether the one-shot timer armed last is still counting down.
pub fn running() -> bool {
    !STOPPED.load(Ordering::Relaxed)
}

/// Acknowledges the interrupt being serviced.
pub fn eoi(vector: u64) {
    if vector == u64::from(VECTOR_TIMER) {
        // A one-shot timer that fired has stopped.
        STOPPED.store(true, Ordering::Relaxed);
    }
    if vector != u64::from(VECTOR_SPURIOUS) {
        write(REG_EOI, 0);
    }
}
