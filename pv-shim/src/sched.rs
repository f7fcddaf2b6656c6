//! `HYPERVISOR_sched_op` (Xen `common/sched/core.c`): yield, block, poll, shutdown and its
//! code, the domain watchdogs, and the dom0-only commands a domU is refused.
//!
//! Blocking is the shim's only sleep: with hardware interrupts off it polls every source
//! (mailbox, timers), checks the wake condition, then `sti; hlt; cli`. An interrupt that
//! arrives between the check and the `hlt` is taken right after `sti` and ends the `hlt`, so
//! no wake-up is lost.

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm;
use crate::shim::Shim;
use xen_abi::event::EVTCHN_2L_NR_CHANNELS;
use xen_abi::hostcall::HC_SHUTDOWN;
use xen_abi::sched::*;
use xen_abi::vcpu::{RUNSTATE_BLOCKED, RUNSTATE_RUNNING};
use xen_abi::Errno;

/// Most ports one `SCHEDOP_poll` may list (Xen: "fairly arbitrary limit").
pub const SCHED_POLL_MAX_PORTS: u32 = 128;

pub fn sched_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    // `int cmd` in C.
    let cmd = u64::from(a.0[0] as u32);
    let arg = a.0[1];
    match cmd {
        // One vCPU: there is nobody to yield to.
        SCHEDOP_YIELD => Ok(0),
        SCHEDOP_BLOCK => {
            s.set_upcall_mask(0);
            s.block();
            Ok(0)
        }
        SCHEDOP_SHUTDOWN => {
            let op: SchedShutdown = mm::read_guest(&s.m, s.cr3(), arg)?;
            // Xen passes the reason on as a u8 and accepts any value.
            s.domain_shutdown(op.reason as u8);
            Ok(0)
        }
        SCHEDOP_SHUTDOWN_CODE => {
            let op: SchedShutdown = mm::read_guest(&s.m, s.cr3(), arg)?;
            s.shutdown_code.get_or_insert(op.reason as u8);
            Ok(0)
        }
        SCHEDOP_POLL => {
            let op: SchedPoll = mm::read_guest(&s.m, s.cr3(), arg)?;
            s.poll(&op)
        }
        SCHEDOP_REMOTE_SHUTDOWN => {
            let op: SchedRemoteShutdown = mm::read_guest(&s.m, s.cr3(), arg)?;
            // `rcu_lock_domain_by_id` (no DOMID_SELF), then xsm_schedop_shutdown(XSM_DM_PRIV):
            // a domU is no device model of anyone, itself included.
            if op.domain_id == 0 || op.domain_id == s.ev.domid {
                Err(Errno::EPERM)
            } else {
                Err(Errno::ESRCH)
            }
        }
        SCHEDOP_WATCHDOG => {
            let op: SchedWatchdog = mm::read_guest(&s.m, s.cr3(), arg)?;
            s.domain_watchdog(op.id, op.timeout)
        }
        // Only the hardware domain may pin (checked before the argument is read).
        SCHEDOP_PIN_OVERRIDE => Err(Errno::EPERM),
        _ => Err(Errno::ENOSYS),
    }
}

impl<M: Machine> Shim<M> {
    /// Xen's `domain_shutdown`: the reason is the shutdown code if one was set first; the VMM
    /// is told and the domain ends.
    pub fn domain_shutdown(&mut self, reason: u8) {
        let code = *self.shutdown_code.get_or_insert(reason);
        self.hostcall(HC_SHUTDOWN, [u64::from(code), 0, 0, 0, 0], &[]);
        self.set_dead();
    }

    /// `SCHEDOP_block` after the mask was cleared: sleeps until an event is deliverable
    /// (`evtchn_upcall_pending` with the mask clear), or the domain died (watchdog).
    pub fn block(&mut self) {
        let mut slept = false;
        loop {
            self.poll_sources();
            if self.upcall_deliverable() || self.is_dead() {
                break;
            }
            if !slept {
                self.go_to_sleep();
                slept = true;
            }
            self.m.wait_for_interrupt();
        }
        if slept {
            self.wake_up();
        }
    }

    fn go_to_sleep(&mut self) {
        self.vcpu.time.blocked = true;
        self.runstate_change(RUNSTATE_BLOCKED);
        self.rearm_timer();
    }

    fn wake_up(&mut self) {
        self.vcpu.time.blocked = false;
        self.runstate_change(RUNSTATE_RUNNING);
        // Runs a periodic tick that fell due while asleep, and re-arms.
        self.check_timers();
    }

    /// Xen's `do_poll`: returns at once when events are deliverable or a listed port is
    /// pending; otherwise sleeps until a listed port is raised (with several ports listed:
    /// any port), `evtchn_upcall_pending` is set, or the absolute `timeout` (0 = none)
    /// passes. The upcall mask is left alone.
    pub fn poll(&mut self, op: &SchedPoll) -> Result<u64, Errno> {
        if op.nr_ports > SCHED_POLL_MAX_PORTS {
            return Err(Errno::EINVAL);
        }
        let len = u64::from(op.nr_ports) * 4;
        if !mm::guest_range_ok(op.ports, len) {
            return Err(Errno::EFAULT);
        }
        if self.upcall_deliverable() {
            return Ok(0);
        }
        // Ports are read one at a time, as Xen does: a pending one ends the scan early.
        let mut ports = [0u32; SCHED_POLL_MAX_PORTS as usize];
        for (i, slot) in ports.iter_mut().enumerate().take(op.nr_ports as usize) {
            let port: u32 = mm::read_guest(&self.m, self.cr3(), op.ports + 4 * i as u64)?;
            if port >= EVTCHN_2L_NR_CHANNELS {
                return Err(Errno::EINVAL);
            }
            if self.evtchn_is_pending(port) {
                return Ok(0);
            }
            *slot = port;
        }
        let single = (op.nr_ports == 1).then_some(ports[0]);
        let (raised, marked) = (self.ev.raised, self.ev.marked);
        self.vcpu.time.poll_deadline = (op.timeout != 0).then_some(op.timeout);
        let mut slept = false;
        loop {
            self.poll_sources();
            let woken = match single {
                Some(p) => self.evtchn_is_pending(p),
                None => self.ev.raised != raised,
            };
            let timed_out = op.timeout != 0 && self.now_ns() >= op.timeout;
            if woken || self.ev.marked != marked || timed_out || self.is_dead() {
                break;
            }
            if !slept {
                self.go_to_sleep();
                slept = true;
            }
            self.m.wait_for_interrupt();
        }
        self.vcpu.time.poll_deadline = None;
        if slept {
            self.wake_up();
        } else {
            self.rearm_timer();
        }
        Ok(0)
    }

    /// Xen's `domain_watchdog`: id 0 allocates a watchdog and returns its id (1-based); a
    /// known id is re-armed, or freed with timeout 0. When one bites, the domain shuts down
    /// with `SHUTDOWN_watchdog`.
    pub fn domain_watchdog(&mut self, id: u32, timeout: u32) -> Result<u64, Errno> {
        let n = self.time.watchdogs.len();
        if id as usize > n {
            return Err(Errno::EINVAL);
        }
        let deadline = self.now_ns().saturating_add(u64::from(timeout) * crate::time::NANOSECS_PER_SEC);
        if id == 0 {
            let Some(i) = self.time.watchdogs.iter().position(|w| !w.in_use) else {
                return Err(Errno::ENOSPC);
            };
            self.time.watchdogs[i] = crate::time::Watchdog { in_use: true, deadline: Some(deadline) };
            self.check_timers();
            return Ok(i as u64 + 1);
        }
        let w = &mut self.time.watchdogs[id as usize - 1];
        if !w.in_use {
            return Err(Errno::EINVAL);
        }
        *w = if timeout == 0 {
            crate::time::Watchdog::default()
        } else {
            crate::time::Watchdog { in_use: true, deadline: Some(deadline) }
        };
        self.check_timers();
        Ok(0)
    }
}

#[cfg(test)]
mod tests;
