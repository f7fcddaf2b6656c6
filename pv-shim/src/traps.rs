//! Traps (Xen `pv/traps.c`, `pv/callback.c`, `x86_64/entry.S`): the virtual IDT
//! (`set_trap_table`), callbacks, bounce frames, and the guest kernel/user mode switch.

/// One virtual IDT entry (`trap_info` as the guest registered it, validated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapEntry {
    /// `TI_*` flags: DPL for `int n` in bits 0-1, `TI_SET_IF` (bit 2).
    pub flags: u8,
    pub cs: u16,
    /// Handler; 0 = none registered.
    pub address: u64,
}

/// A registered callback (`callback_op`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Callback {
    pub address: u64,
    /// `CALLBACKF_mask_events`: set the upcall mask on delivery.
    pub mask_events: bool,
}

/// The virtual IDT and the callbacks of one vCPU.
#[derive(Clone, Debug)]
pub struct TrapState {
    pub table: [TrapEntry; 256],
    pub event: Callback,
    pub failsafe: Callback,
    pub syscall: Callback,
    pub syscall32: Callback,
    pub sysenter: Callback,
    pub nmi: Callback,
}

impl Default for TrapState {
    fn default() -> Self {
        TrapState {
            table: [TrapEntry::default(); 256],
            event: Callback::default(),
            failsafe: Callback::default(),
            syscall: Callback::default(),
            syscall32: Callback::default(),
            sysenter: Callback::default(),
            nmi: Callback::default(),
        }
    }
}

use crate::guest::{GuestRegs, VECTOR_SYSCALL};
use crate::machine::Machine;
use crate::shim::{Outcome, Shim};

impl<M: Machine> Shim<M> {
    /// Every entry from the guest: a SYSCALL (hypercall or guest system call), an exception
    /// or a hardware interrupt. `cr2` is valid for #PF only.
    pub fn entry(&mut self, regs: &mut GuestRegs, cr2: u64) -> Outcome {
        match regs.vector {
            VECTOR_SYSCALL => self.hypercall(regs),
            v if v < 32 => self.guest_exception(regs, cr2),
            _ => self.interrupt(regs),
        }
    }

    /// A hardware interrupt taken while the guest ran (already acknowledged).
    pub fn interrupt(&mut self, _regs: &mut GuestRegs) -> Outcome {
        self.poll_sources();
        Outcome::Resume
    }
}
