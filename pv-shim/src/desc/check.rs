//! Xen's `check_descriptor` for a 64-bit PV domain (XEN `pv/descriptor-tables.c`): which
//! 8-byte descriptors a guest may put in a GDT or LDT frame, and how they are stored.
//!
//! The guest kernel runs at CPL3, so no descriptor it supplies may grant ring 0: code and data
//! segments get DPL 3 whatever they asked for, and the only system descriptor allowed is a
//! call gate, stored with DPL 0 so that any use from the guest faults (#GP with the gate's
//! selector) instead of entering a more privileged ring. TSS, LDT, interrupt and trap gates
//! are refused. Each 8-byte entry is judged on its own; the upper half of a 16-byte call gate
//! is usually an all-zero-type system descriptor, which is accepted as it is.
//!
//! ```text
//!  63      56 55 52 51  48 47 46 45 44 43   40 39      32 31             16 15             0
//! | base/off |G D L A|limit|P | DPL |S | type  | base/off  | base / gate CS  | limit / off    |
//!  `-------------------------- b (high 32 bits) ---------' `------- a (low 32 bits) ---------'
//! ```

use xen_abi::xen::{FIRST_RESERVED_GDT_ENTRY, FLAT_KERNEL_CS};

/// Present (`_SEGMENT_P`), in the high word.
const SEG_P: u32 = 1 << 15;
/// Descriptor privilege level (`_SEGMENT_DPL`).
const SEG_DPL: u32 = 3 << 13;
/// Code/data rather than system (`_SEGMENT_S`).
const SEG_S: u32 = 1 << 12;
/// The type field (`_SEGMENT_TYPE`).
const SEG_TYPE: u32 = 15 << 8;
/// Type of a 64-bit call gate.
const TYPE_CALL_GATE: u32 = 0xc << 8;
/// The privilege level of the guest kernel: every guest descriptor gets at least this DPL
/// (Xen's `GUEST_KERNEL_RPL` of a 64-bit PV domain).
const GUEST_KERNEL_RPL: u32 = 3;

/// Xen's `guest_gate_selector_okay` (64-bit): a gate may only lead to a guest GDT entry, the
/// flat kernel code segment, or an LDT entry — never to the shim's reserved segments.
pub fn gate_selector_okay(sel: u16) -> bool {
    u32::from(sel >> 3) < FIRST_RESERVED_GDT_ENTRY || sel == FLAT_KERNEL_CS || sel & 4 != 0
}

/// Checks descriptor `d` as a 64-bit PV guest's; returns it as it must be stored (DPL raised
/// to 3, a call gate's DPL moved into its target selector's RPL), or `None` if it is refused.
pub fn check_descriptor(d: u64) -> Option<u64> {
    let (mut a, mut b) = (d as u32, (d >> 32) as u32);
    // Not present: any use faults.
    if b & SEG_P == 0 {
        return Some(d);
    }
    let dpl = ((b & SEG_DPL) >> 13).max(GUEST_KERNEL_RPL);
    b = (b & !SEG_DPL) | (dpl << 13);
    if b & SEG_S != 0 {
        // Code and data: no base or limit check in 64-bit mode.
        return Some(u64::from(b) << 32 | u64::from(a));
    }
    if b & SEG_TYPE == 0 {
        // Type 0 (the upper half of a 16-byte gate): harmless, kept as given.
        return Some(d);
    }
    if b & SEG_TYPE != TYPE_CALL_GATE {
        return None;
    }
    let cs = (a >> 16) as u16;
    if !gate_selector_okay(cs) {
        return None;
    }
    // DPL 0: every use from the guest raises #GP(gate), where it can be emulated; the DPL the
    // guest asked for (after the fix-up) is kept in the target selector's RPL.
    b &= !SEG_DPL;
    let cs = u32::from(cs & !3) | dpl;
    a = (a & 0xffff) | (cs << 16);
    // Reserved bits of a 64-bit gate (the 32-bit parameter count among them).
    if b & 0xff != 0 {
        return None;
    }
    Some(u64::from(b) << 32 | u64::from(a))
}
