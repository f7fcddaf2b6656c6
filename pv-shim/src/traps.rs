//! Traps (Xen `pv/traps.c`, `pv/callback.c`, `pv/iret.c`, `x86_64/entry.S`): the virtual IDT
//! (`set_trap_table`), callbacks, bounce frames, the guest kernel/user mode switch, guest
//! system calls, the `iret` hypercall and the failsafe callback.
//!
//! # Bounce frames (xen-pv-contract.md §3.5)
//!
//! Whatever the shim delivers to the guest kernel (an exception, a software interrupt, an
//! event upcall, a system call, the failsafe callback) it delivers the way 64-bit Xen's
//! `create_bounce_frame` does: leave user mode if needed (toggle to the kernel L4 and GS,
//! stack = `kernel_sp`), or else keep the interrupted kernel stack and report the kernel's CS
//! with RPL 0; align down to 16 and push, from high to low:
//!
//! ```text
//!   [failsafe only]                      [hardware-style part]          [Xen's extra part]
//!   ss  rsp  rflags  cs|mask<<32  rip  [error code]  [gs fs es ds]  r11  rcx   ◄─ new rsp
//! ```
//!
//! `rflags.IF` in the frame is the inverse of the upcall mask at the time of the event (the
//! guest's virtual interrupt flag); the mask itself is saved in bits 32–39 of the CS slot.
//! The handler then runs in guest kernel mode on that stack with the events masked if the
//! trap-table entry or callback asks for it. `HYPERVISOR_iret` undoes all of this.

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

use crate::emul::{self, Emulated};
use crate::guest::{GuestRegs, VECTOR_SYSCALL};
use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm;
use crate::shim::{exception_name, Outcome, Shim};
use xen_abi::callback::*;
use xen_abi::hypercall::HYPERVISOR_SET_TRAP_TABLE;
use xen_abi::xen::{IretContext, TrapInfo, FLAT_KERNEL_CS, FLAT_KERNEL_SS, TI_SET_IF, VGCF_IN_SYSCALL};
use xen_abi::Errno;
use zerocopy::IntoBytes;

/// Vectors whose exceptions push an error code (Xen `X86_EXC_HAVE_EC`).
pub const TRAP_HAVE_EC: u32 =
    (1 << 8) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 17) | (1 << 21);

pub const RFLAGS_TF: u64 = 1 << 8;
pub const RFLAGS_IF: u64 = 1 << 9;
pub const RFLAGS_DF: u64 = 1 << 10;
pub const RFLAGS_IOPL: u64 = 3 << 12;
pub const RFLAGS_NT: u64 = 1 << 14;
pub const RFLAGS_RF: u64 = 1 << 16;
pub const RFLAGS_VM: u64 = 1 << 17;
pub const RFLAGS_AC: u64 = 1 << 18;

/// #PF error code: the access came from user mode.
const PFEC_USER: u64 = 1 << 2;
/// #GP error code bits: external event, IDT vector.
const XEC_EXT: u64 = 1 << 0;
const XEC_IDT: u64 = 1 << 1;
/// #GP error code bit: the selector is an LDT one.
const XEC_TI: u64 = 1 << 2;

/// Entries `set_trap_table` handles before it continues itself (Xen's preemption point).
const TRAP_TABLE_BATCH: u64 = 64;

/// What to deliver and how (Xen's `struct trap_bounce`).
#[derive(Clone, Copy, Debug)]
struct Bounce {
    rip: u64,
    error_code: Option<u64>,
    /// Set the upcall mask on delivery (`TBF_INTERRUPT`).
    mask_events: bool,
    /// Push the data selectors too (`TBF_FAILSAFE`).
    failsafe: Option<[u16; 4]>,
}

impl<M: Machine> Shim<M> {
    /// Every entry from the guest: a SYSCALL (hypercall or guest system call), an exception
    /// or a hardware interrupt. `cr2` is valid for #PF only. Ends with Xen's
    /// `test_all_events`: an upcall is delivered if one is due.
    pub fn entry(&mut self, regs: &mut GuestRegs, cr2: u64) -> Outcome {
        let outcome = match regs.vector {
            VECTOR_SYSCALL if self.vcpu.kernel_mode => self.hypercall(regs),
            VECTOR_SYSCALL => self.guest_syscall(regs),
            v if v < 32 => self.guest_exception(regs, cr2),
            _ => self.interrupt(regs),
        };
        match outcome {
            Outcome::Resume => self.deliver_events(regs),
            Outcome::Dead => Outcome::Dead,
        }
    }

    /// A hardware interrupt taken while the guest ran (already acknowledged).
    pub fn interrupt(&mut self, regs: &mut GuestRegs) -> Outcome {
        let slot = match regs.vector {
            v if v == u64::from(xen_abi::hostcall::VECTOR_HOST_EVENT) => 0,
            v if v == u64::from(xen_abi::hostcall::VECTOR_TIMER) => 1,
            _ => 2,
        };
        self.m.stats().interrupts[slot] += 1;
        self.poll_sources();
        Outcome::Resume
    }

    /// Xen's `test_all_events` tail: bounce to the event callback when an upcall is due.
    fn deliver_events(&mut self, regs: &mut GuestRegs) -> Outcome {
        if self.is_dead() || !self.upcall_deliverable() {
            return Outcome::Resume;
        }
        let cb = self.vcpu.traps.event;
        if cb.address == 0 {
            return self.crash(regs, format_args!("event upcall due but no event callback registered"));
        }
        self.m.stats().upcalls += 1;
        self.bounce(regs, Bounce { rip: cb.address, error_code: None, mask_events: true, failsafe: None })
    }

    /// `domain_crash` for a reason that is not an exception.
    fn crash(&mut self, regs: &GuestRegs, why: core::fmt::Arguments) -> Outcome {
        self.crash_domain(regs, 0, xen_abi::hostcall::FATAL_NO_VECTOR, why)
    }

    /// Xen's `toggle_guest_mode`: swap GS bases, flip the mode, switch L4.
    pub fn toggle_guest_mode(&mut self) {
        self.m.swapgs();
        self.vcpu.kernel_mode = !self.vcpu.kernel_mode;
        let cr3 = self.vcpu.current_cr3();
        self.load_cr3(cr3);
    }

    /// Xen's `create_bounce_frame`: builds the frame on the guest kernel stack and points
    /// `regs` at the handler (see the module comment).
    fn bounce(&mut self, regs: &mut GuestRegs, b: Bounce) -> Outcome {
        if b.rip == 0 {
            return self.crash(regs, format_args!("bounce to a null handler"));
        }
        let saved_mask = self.upcall_mask();
        let mut cs = regs.cs & 0xffff;
        let base = if self.vcpu.kernel_mode {
            // The kernel was interrupted: tell it so with RPL 0 in the saved CS.
            cs &= !3;
            regs.rsp
        } else {
            if self.vcpu.guest_table == 0 {
                return self.crash(regs, format_args!("no kernel page table to bounce into"));
            }
            self.toggle_guest_mode();
            self.vcpu.kernel_sp
        } & !0xf;
        let mut rflags = regs.rflags & !(RFLAGS_IF | RFLAGS_IOPL);
        if saved_mask == 0 {
            rflags |= RFLAGS_IF;
        }
        if self.vm_assist & (1 << xen_abi::xen::VMASST_TYPE_ARCHITECTURAL_IOPL) != 0 {
            rflags |= u64::from(self.vcpu.iopl & 3) << 12;
        }

        // Lowest address first.
        let mut frame = [0u64; 13];
        let mut n = 0;
        let mut push = |v: u64| {
            frame[n] = v;
            n += 1;
        };
        push(regs.rcx);
        push(regs.r11);
        if let Some(sel) = b.failsafe {
            for s in sel {
                push(u64::from(s));
            }
        }
        if let Some(ec) = b.error_code {
            push(ec);
        }
        push(regs.rip);
        push(cs | (u64::from(saved_mask) << 32));
        push(rflags);
        push(regs.rsp);
        push(regs.ss & 0xffff);
        let bytes = frame[..n].as_bytes();
        let len = bytes.len() as u64;
        let Some(rsp) = base.checked_sub(len).filter(|&r| mm::guest_range_ok(r, len)) else {
            return self.crash(
                regs,
                format_args!("guest kernel stack {base:#x} is not a valid address for a bounce frame"),
            );
        };
        let cr3 = self.cr3();
        if mm::copy_to_guest(&mut self.m, cr3, rsp, bytes).is_err() {
            return self.crash(regs, format_args!("fault writing a bounce frame at {rsp:#x}"));
        }
        if b.mask_events {
            self.set_upcall_mask(1);
        }
        regs.rip = b.rip;
        regs.cs = u64::from(FLAT_KERNEL_CS);
        regs.ss = u64::from(FLAT_KERNEL_SS);
        regs.rsp = rsp;
        regs.rflags = (regs.rflags
            & !(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM | RFLAGS_AC | RFLAGS_IOPL))
            | RFLAGS_IF
            | 2;
        Outcome::Resume
    }

    /// Xen's `pv_inject_hw_exception`: deliver hardware exception `vector` through the
    /// virtual IDT. `cr2` is used for #PF.
    pub fn inject_exception(
        &mut self,
        regs: &mut GuestRegs,
        vector: u8,
        error_code: Option<u64>,
        cr2: u64,
    ) -> Outcome {
        let ti = self.vcpu.traps.table[vector as usize];
        let mut ec = if TRAP_HAVE_EC & (1 << (vector & 31)) != 0 && vector < 32 {
            Some(error_code.unwrap_or(0))
        } else {
            None
        };
        if vector == 14 {
            self.set_guest_cr2(cr2);
            if let Some(e) = ec.as_mut() {
                *e &= !PFEC_USER;
                if !self.vcpu.kernel_mode {
                    *e |= PFEC_USER;
                }
            }
        }
        if ti.address == 0 {
            let name = exception_name(u32::from(vector));
            let mut r = *regs;
            r.error_code = ec.unwrap_or(0);
            return self.crash_domain(
                &r,
                cr2,
                u32::from(vector),
                format_args!("unhandled {name} and no trap handler registered"),
            );
        }
        if let Some(slot) = self.m.stats().bounced.get_mut(vector as usize) {
            *slot += 1;
        }
        self.bounce(
            regs,
            Bounce {
                rip: ti.address,
                error_code: ec,
                mask_events: ti.flags & TI_SET_IF != 0,
                failsafe: None,
            },
        )
    }

    /// An exception taken while the guest ran: emulate it if it is ours to emulate, else
    /// deliver it to the guest (Xen `do_trap` and friends).
    pub fn guest_exception(&mut self, regs: &mut GuestRegs, cr2: u64) -> Outcome {
        let v = regs.vector as u8;
        if let Some(slot) = self.m.stats().exceptions.get_mut(v as usize) {
            *slot += 1;
        }
        let ec = regs.error_code;
        match v {
            // NMI: the shim has no NMI sources to forward.
            2 => Outcome::Resume,
            // #DB: merge the status into the virtual DR6 the guest reads with get_debugreg(6).
            1 => {
                let dr6 = self.m.read_dr(6);
                self.vcpu.dr[6] |= dr6 & 0xe00f;
                self.m.write_dr(6, 0xffff_0ff0);
                self.inject_exception(regs, 1, None, 0)
            }
            // #NM: lazy FPU. The real TS only ever mirrors the guest's virtual TS.
            7 => {
                self.m.set_cr0_ts(false);
                if self.vcpu.virt_ts {
                    self.vcpu.virt_ts = false;
                    self.inject_exception(regs, 7, None, 0)
                } else {
                    Outcome::Resume
                }
            }
            6 => match emul::emulate_ud(self, regs) {
                Emulated::NotEmulated => self.inject_exception(regs, 6, None, 0),
                e => self.emulated(regs, e),
            },
            13 => self.general_protection(regs),
            // A direct write to a read-only L1 table (writable page tables), else the guest's.
            14 => match self.ptwr_page_fault(regs, cr2) {
                Some(e) => self.emulated(regs, e),
                None => self.inject_exception(regs, 14, Some(ec), cr2),
            },
            // #MC and #DF cannot be the guest's business.
            8 | 18 => self.crash_domain(
                regs,
                cr2,
                u32::from(v),
                format_args!("{} from the guest", exception_name(u32::from(v))),
            ),
            _ => self.inject_exception(regs, v, Some(ec), cr2),
        }
    }

    /// Xen's `do_general_protection` for a guest: software `int n`, emulation, or a #GP for
    /// the guest.
    fn general_protection(&mut self, regs: &mut GuestRegs) -> Outcome {
        let mut ec = regs.error_code;
        if ec & XEC_EXT == 0 && ec & XEC_IDT != 0 {
            // `int n` through a DPL-0 gate: allowed if the guest's own DPL lets this mode in.
            // The vector comes from the `int imm8` at rip when it can be read, else from the
            // error code; the #GP reflected to the guest carries the architectural error code
            // (vector * 8 + 2). Some CPU emulators (QEMU TCG before its fix) report
            // vector * 16 + 2 here, which Xen would misread.
            let mut insn = [0u8; 2];
            let vector = match mm::copy_from_guest(&self.m, self.cr3(), regs.rip, &mut insn) {
                Ok(()) if insn[0] == 0xcd => insn[1],
                _ => ((ec >> 3) & 0xff) as u8,
            };
            ec = (u64::from(vector) << 3) | XEC_IDT;
            let dpl = self.vcpu.traps.table[vector as usize].flags & 3;
            let needed = if self.vcpu.kernel_mode { 1 } else { 3 };
            if dpl >= needed {
                regs.rip = regs.rip.wrapping_add(2);
                return self.inject_sw_interrupt(regs, vector);
            }
        } else if ec & (XEC_EXT | XEC_IDT | XEC_TI) == XEC_TI {
            // An LDT selector: the first use of its LDT page maps it (desc::ldt).
            if let Some(o) = self.ldt_fault(regs, ec) {
                return o;
            }
        } else if ec == 0 {
            match emul::emulate_gp(self, regs) {
                Emulated::NotEmulated => {}
                e => return self.emulated(regs, e),
            }
        }
        self.inject_exception(regs, 13, Some(ec), 0)
    }

    /// A software interrupt: no error code, RIP already past the instruction.
    fn inject_sw_interrupt(&mut self, regs: &mut GuestRegs, vector: u8) -> Outcome {
        let ti = self.vcpu.traps.table[vector as usize];
        if ti.address == 0 {
            return self.crash_domain(
                regs,
                0,
                u32::from(vector),
                format_args!("int {vector:#x} with no trap handler registered"),
            );
        }
        self.bounce(
            regs,
            Bounce {
                rip: ti.address,
                error_code: None,
                mask_events: ti.flags & TI_SET_IF != 0,
                failsafe: None,
            },
        )
    }

    /// Finish an emulation: resume, or deliver what the emulator raised. A page fault
    /// (an instruction or operand on an unmapped page) goes to the guest with the address in
    /// its CR2 and the U bit from the guest mode, as Xen's `pv_inject_event` does.
    fn emulated(&mut self, regs: &mut GuestRegs, e: Emulated) -> Outcome {
        match e {
            Emulated::Done => Outcome::Resume,
            Emulated::NotEmulated => {
                let v = regs.vector as u8;
                let ec = (v == 13).then_some(regs.error_code);
                self.inject_exception(regs, v, ec, 0)
            }
            Emulated::Raise { vector, error_code } => {
                self.inject_exception(regs, vector, error_code.map(u64::from), 0)
            }
            Emulated::PageFault { addr, error_code } => {
                self.inject_exception(regs, emul::X86_EXC_PF, Some(u64::from(error_code)), addr)
            }
        }
    }

    /// SYSCALL from guest user mode (Xen `lstar_enter` → `switch_to_kernel`): bounce to the
    /// registered syscall callback with the user's rip/rflags in the frame, or #UD at the
    /// instruction when there is none.
    fn guest_syscall(&mut self, regs: &mut GuestRegs) -> Outcome {
        self.m.stats().syscalls += 1;
        let cb = self.vcpu.traps.syscall;
        if cb.address == 0 {
            regs.rip = regs.rip.wrapping_sub(2);
            return self.inject_exception(regs, 6, None, 0);
        }
        let r = self.bounce(
            regs,
            Bounce { rip: cb.address, error_code: None, mask_events: cb.mask_events, failsafe: None },
        );
        regs.rflags &= !RFLAGS_DF;
        r
    }

    /// `HYPERVISOR_iret` (Xen `do_iret`): return from a bounce frame to kernel or user mode.
    pub fn do_iret(&mut self, regs: &mut GuestRegs) -> Outcome {
        let ctx: IretContext = match mm::read_guest(&self.m, self.cr3(), regs.rsp) {
            Ok(c) => c,
            Err(_) => {
                return self.crash(regs, format_args!("fault reading the iret context at {:#x}", regs.rsp))
            }
        };
        if ctx.cs & 3 == 3 {
            if self.vcpu.guest_table_user == 0 {
                return self.crash(regs, format_args!("iret to user mode with no user page tables"));
            }
            self.toggle_guest_mode();
        }
        if self.vm_assist & (1 << xen_abi::xen::VMASST_TYPE_ARCHITECTURAL_IOPL) != 0 {
            self.vcpu.iopl = ((ctx.rflags & RFLAGS_IOPL) >> 12) as u32;
        }
        regs.rip = ctx.rip;
        regs.cs = (ctx.cs & 0xffff) | 3;
        regs.rflags = (ctx.rflags & !(RFLAGS_IOPL | RFLAGS_VM)) | RFLAGS_IF | 2;
        regs.rsp = ctx.rsp;
        regs.ss = (ctx.ss & 0xffff) | 3;
        if ctx.flags & VGCF_IN_SYSCALL == 0 {
            regs.r11 = ctx.r11;
            regs.rcx = ctx.rcx;
        } else {
            // Xen returns through SYSRET here, which leaves the return rip in rcx and the
            // rflags in r11 (never the kernel's values from the hypercall).
            regs.rcx = regs.rip;
            regs.r11 = regs.rflags;
        }
        self.set_upcall_mask(u8::from(ctx.rflags & RFLAGS_IF == 0));
        regs.rax = ctx.rax;
        Outcome::Resume
    }

    /// The CPU refused to return to the guest with the state in `regs` (a bad CS or SS from
    /// `iret`): Xen's `failsafe_callback`. `data_sel` are the guest's DS, ES, FS, GS.
    pub fn failsafe(&mut self, regs: &mut GuestRegs, data_sel: [u16; 4]) -> Outcome {
        let cb = self.vcpu.traps.failsafe;
        if cb.address == 0 {
            return self.crash(
                regs,
                format_args!("cannot return to the guest (bad segment state) and no failsafe callback"),
            );
        }
        let r = self.bounce(
            regs,
            Bounce {
                rip: cb.address,
                error_code: None,
                mask_events: cb.mask_events,
                failsafe: Some(data_sel),
            },
        );
        match r {
            Outcome::Resume => self.deliver_events(regs),
            Outcome::Dead => Outcome::Dead,
        }
    }
}

/// `HYPERVISOR_set_trap_table(table)`: overwrite the listed vectors; a NULL table clears the
/// whole virtual IDT. Continues itself every [`TRAP_TABLE_BATCH`] entries as Xen's does.
pub fn set_trap_table<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let mut va = a.0[0];
    if va == 0 {
        s.vcpu.traps.table = [TrapEntry::default(); 256];
        return Ok(0);
    }
    for _ in 0..TRAP_TABLE_BATCH {
        let t: TrapInfo = mm::read_guest(&s.m, s.cr3(), va)?;
        if t.address == 0 {
            return Ok(0);
        }
        if !mm::is_canonical(t.address) {
            return Err(Errno::EINVAL);
        }
        s.vcpu.traps.table[t.vector as usize] =
            TrapEntry { flags: t.flags, cs: t.cs | 3, address: t.address };
        va = va.checked_add(core::mem::size_of::<TrapInfo>() as u64).ok_or(Errno::EFAULT)?;
    }
    s.continue_hypercall(HYPERVISOR_SET_TRAP_TABLE, [va, 0, 0, 0, 0, 0]);
    Ok(0)
}

fn register_callback<M: Machine>(s: &mut Shim<M>, reg: &CallbackRegister) -> Result<u64, Errno> {
    if !mm::is_canonical(reg.address) {
        return Err(Errno::EINVAL);
    }
    let cb = Callback { address: reg.address, mask_events: reg.flags & CALLBACKF_MASK_EVENTS != 0 };
    let t = &mut s.vcpu.traps;
    match reg.type_ {
        // The event callback always masks events; its flag is ignored (Xen).
        CALLBACKTYPE_EVENT => t.event = Callback { address: reg.address, mask_events: true },
        CALLBACKTYPE_FAILSAFE => t.failsafe = cb,
        CALLBACKTYPE_SYSCALL => t.syscall = cb,
        CALLBACKTYPE_SYSCALL32 => t.syscall32 = cb,
        CALLBACKTYPE_SYSENTER => t.sysenter = cb,
        CALLBACKTYPE_NMI => {
            t.table[2] = TrapEntry { flags: TI_SET_IF, cs: FLAT_KERNEL_CS, address: reg.address };
            t.nmi = cb;
        }
        _ => return Err(Errno::ENOSYS),
    }
    Ok(0)
}

/// `HYPERVISOR_callback_op(cmd, arg)` (Xen `do_callback_op`).
pub fn callback_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    match a.0[0] {
        CALLBACKOP_REGISTER => {
            let reg: CallbackRegister = mm::read_guest(&s.m, s.cr3(), a.0[1])?;
            register_callback(s, &reg)
        }
        CALLBACKOP_UNREGISTER => {
            let u: CallbackUnregister = mm::read_guest(&s.m, s.cr3(), a.0[1])?;
            match u.type_ {
                CALLBACKTYPE_EVENT
                | CALLBACKTYPE_FAILSAFE
                | CALLBACKTYPE_SYSCALL
                | CALLBACKTYPE_SYSCALL32
                | CALLBACKTYPE_SYSENTER => Err(Errno::EINVAL),
                CALLBACKTYPE_NMI => {
                    s.vcpu.traps.table[2] = TrapEntry::default();
                    s.vcpu.traps.nmi = Callback::default();
                    Ok(0)
                }
                _ => Err(Errno::ENOSYS),
            }
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `HYPERVISOR_set_callbacks(event, failsafe, syscall)`: the old interface; errors ignored.
pub fn set_callbacks<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    for (type_, address) in
        [(CALLBACKTYPE_EVENT, a.0[0]), (CALLBACKTYPE_FAILSAFE, a.0[1]), (CALLBACKTYPE_SYSCALL, a.0[2])]
    {
        let _ = register_callback(s, &CallbackRegister { type_, flags: 0, _pad: 0, address });
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{shim_with_guest, MockMachine, GUEST_VA};

    fn words(s: &Shim<MockMachine>, va: u64, n: usize) -> Vec<u64> {
        let mut b = vec![0u8; n * 8];
        mm::copy_from_guest(&s.m, s.cr3(), va, &mut b).unwrap();
        b.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect()
    }

    fn kernel_regs() -> GuestRegs {
        GuestRegs {
            rip: 0xffff_ffff_8100_1234,
            cs: u64::from(FLAT_KERNEL_CS),
            rflags: 0x246,
            rsp: GUEST_VA + 0x8008,
            ss: u64::from(FLAT_KERNEL_SS),
            rcx: 0x11,
            r11: 0x22,
            ..Default::default()
        }
    }

    #[test]
    fn page_fault_bounce_frame_matches_xen_layout() {
        let mut s = shim_with_guest();
        s.vcpu.traps.table[14] = TrapEntry { flags: 0, cs: FLAT_KERNEL_CS, address: 0xffff_ffff_8100_0014 };
        let mut r = kernel_regs();
        r.vector = 14;
        r.error_code = 0x6; // hardware says "user write": both guest modes run at CPL3
        assert_eq!(s.guest_exception(&mut r, 0xdead_b000), Outcome::Resume);
        let base = (GUEST_VA + 0x8008) & !0xf;
        assert_eq!(r.rsp, base - 64);
        assert_eq!(r.rip, 0xffff_ffff_8100_0014);
        let f = words(&s, r.rsp, 8);
        // rcx r11 ec rip cs|mask rflags rsp ss; mask is 0 in the mock's zeroed vcpu_info.
        assert_eq!(f, vec![0x11, 0x22, 0x2, 0xffff_ffff_8100_1234, 0xe030, 0x246, GUEST_VA + 0x8008, 0xe02b]);
        assert_eq!(s.m.read_u64(s.vcpu.vcpu_info + 16).unwrap(), 0xdead_b000, "cr2 in vcpu_info");
    }

    #[test]
    fn exception_without_handler_crashes_the_domain() {
        let mut s = shim_with_guest();
        let mut r = kernel_regs();
        r.vector = 6;
        assert_eq!(s.guest_exception(&mut r, 0), Outcome::Dead);
        assert_eq!(s.m.hostcalls.last().unwrap().0, xen_abi::hostcall::HC_DOMAIN_CRASH);
    }

    #[test]
    fn int_n_honours_the_guest_dpl_and_reports_the_architectural_error_code() {
        let mut s = shim_with_guest();
        s.vcpu.traps.table[13] = TrapEntry { flags: 0, cs: FLAT_KERNEL_CS, address: 0xffff_ffff_8100_0013 };
        s.vcpu.traps.table[0x81] = TrapEntry { flags: 1, cs: FLAT_KERNEL_CS, address: 0xffff_ffff_8100_0081 };
        let mut r = kernel_regs();
        r.vector = 13;
        r.rip = GUEST_VA + 0x100;
        s.copy_to_guest(r.rip, &[0xcd, 0x81]).unwrap();
        r.error_code = 0x81 * 16 + 2; // as a buggy emulator reports it
        assert_eq!(s.guest_exception(&mut r, 0), Outcome::Resume);
        assert_eq!(r.rip, 0xffff_ffff_8100_0081, "DPL 1 admits the kernel");
        let f = words(&s, r.rsp, 7);
        assert_eq!(f[2], GUEST_VA + 0x102, "a trap: rip after the instruction");

        let mut r = kernel_regs();
        r.vector = 13;
        r.rip = GUEST_VA + 0x200;
        s.copy_to_guest(r.rip, &[0xcd, 0x82]).unwrap();
        r.error_code = 0x82 * 8 + 2;
        assert_eq!(s.guest_exception(&mut r, 0), Outcome::Resume);
        assert_eq!(r.rip, 0xffff_ffff_8100_0013, "DPL 0 refuses: #GP");
        assert_eq!(words(&s, r.rsp, 3)[2], 0x82 * 8 + 2);
    }

    #[test]
    fn set_trap_table_rejects_non_canonical_handlers_and_continues_long_tables() {
        let mut s = shim_with_guest();
        let t = TrapInfo { vector: 3, flags: 3, cs: 0, _pad: 0, address: 0x0000_8000_0000_0000 };
        s.copy_to_guest(GUEST_VA, t.as_bytes()).unwrap();
        assert_eq!(set_trap_table(&mut s, Args([GUEST_VA, 0, 0, 0, 0, 0])), Err(Errno::EINVAL));
        for i in 0..100u64 {
            let t =
                TrapInfo { vector: i as u8, flags: 0, cs: 0, _pad: 0, address: 0xffff_ffff_8100_0000 + i };
            s.copy_to_guest(GUEST_VA + 16 * i, t.as_bytes()).unwrap();
        }
        s.copy_to_guest(GUEST_VA + 1600, &[0u8; 16]).unwrap();
        assert_eq!(set_trap_table(&mut s, Args([GUEST_VA, 0, 0, 0, 0, 0])), Ok(0));
        let (nr, a) = s.take_continuation().expect("a continuation after one batch");
        assert_eq!((nr, a[0]), (HYPERVISOR_SET_TRAP_TABLE, GUEST_VA + 16 * TRAP_TABLE_BATCH));
        assert_eq!(s.vcpu.traps.table[5].cs, 3, "RPL forced to 3");
    }

    #[test]
    fn iret_to_user_without_user_tables_crashes_and_to_kernel_restores_the_mask() {
        let mut s = shim_with_guest();
        let ctx = IretContext {
            rax: 7,
            r11: 1,
            rcx: 2,
            flags: 0,
            rip: 0x1000,
            cs: 0xe033,
            rflags: 0x2,
            rsp: 0x2000,
            ss: 0xe02b,
        };
        s.copy_to_guest(GUEST_VA, ctx.as_bytes()).unwrap();
        let mut r = GuestRegs { rsp: GUEST_VA, ..kernel_regs() };
        assert_eq!(s.do_iret(&mut r), Outcome::Dead);

        let mut s = shim_with_guest();
        let ctx = IretContext { cs: 0xe030, rflags: 0x200, ..ctx };
        s.copy_to_guest(GUEST_VA, ctx.as_bytes()).unwrap();
        s.set_upcall_mask(1);
        let mut r = GuestRegs { rsp: GUEST_VA, ..kernel_regs() };
        assert_eq!(s.do_iret(&mut r), Outcome::Resume);
        assert_eq!((r.rax, r.rcx, r.r11, r.rip, r.cs, r.rsp), (7, 2, 1, 0x1000, 0xe033, 0x2000));
        assert_eq!(s.upcall_mask(), 0, "IF set in the frame unmasks events");
        assert!(s.vcpu.kernel_mode);

        // VGCF_in_syscall: rcx and r11 are what SYSRET leaves, not the context's.
        let ctx = IretContext { flags: VGCF_IN_SYSCALL, rflags: 0x3246, ..ctx };
        s.copy_to_guest(GUEST_VA, ctx.as_bytes()).unwrap();
        let mut r = GuestRegs { rsp: GUEST_VA, ..kernel_regs() };
        assert_eq!(s.do_iret(&mut r), Outcome::Resume);
        assert_eq!((r.rcx, r.r11), (0x1000, 0x246), "rip and the sanitised rflags (IOPL cleared)");
    }
}
