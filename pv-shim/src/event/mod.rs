//! Event channels, 2-level ABI (Xen `common/event_channel.c`, `event_2l.c`):
//! `HYPERVISOR_event_channel_op`, the port table, and the ports the VMM (domain 0) raises.
//!
//! # Theory
//!
//! A port is a number the guest uses; its binding lives here (Xen's `struct evtchn`), its
//! pending and mask bits live in shared_info and the vCPU's `vcpu_info` (`twolevel`):
//!
//! ```text
//!   port table (shim)                shared_info (guest-visible)        vcpu_info
//!   ┌──────┬──────────────────────┐  evtchn_pending[p/64] bit p%64 ─┐   evtchn_pending_sel bit p/64
//!   │ 0    │ Reserved (never used)│  evtchn_mask[p/64]    bit p%64  ├─► evtchn_upcall_pending
//!   │ 1, 2 │ Interdomain → dom0   │  (xenstore, console: bound by the VMM before boot)
//!   │ p    │ Unbound / Virq / Ipi │                                 │
//!   │ ...  │ Interdomain → self   │  loopback pairs                 │
//!   └──────┴──────────────────────┘                                 └─ upcall when unmasked
//! ```
//!
//! Domain 0 is the VMM. Its side of a channel is only a port number: the guest's notifications
//! for it go through the event mailbox (`Machine::notify_host`), and the ports it raises come
//! back through the mailbox into [`Shim::poll_sources`]. The VMM binds a guest's unbound port
//! (a frontend's `alloc_unbound` to domain 0) without telling the shim, so an `Unbound` port
//! whose remote is domain 0 is treated as possibly bound by it: `send` posts it, and a raise
//! from the VMM is accepted. Every other port the VMM raises is counted and ignored.
//!
//! Ports go up to [`MAX_EVTCHN_PORT`], libxl's default `max_event_channels` for a domU; like
//! Xen, ports are "valid" (answer `status`, `close` with state errors rather than `-EINVAL`)
//! in buckets of 64 up to the highest one ever allocated.
//!
//! One vCPU: the guest never runs while the shim does, so the read-modify-write of the bitmap
//! words below cannot race with the guest's own `lock`ed updates.

mod twolevel;

#[cfg(test)]
pub(crate) mod tests;

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm;
use crate::shim::Shim;
use xen_abi::event::*;
use xen_abi::hostcall::{BootInfo, MAX_HOST_PORTS};
use xen_abi::xen::{DomId, DOMID_SELF};
use xen_abi::Errno;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The highest port a domain may allocate: libxl's default `max_event_channels` (1023).
pub const MAX_EVTCHN_PORT: u32 = 1023;
const NR_PORTS: usize = MAX_EVTCHN_PORT as usize + 1;
/// Xen allocates `struct evtchn`s a page at a time: 4096 / 64 bytes.
const EVTCHNS_PER_BUCKET: u32 = 64;
/// PIRQs a PV domU has (`d->nr_pirqs`): the 24 GSIs of one IO-APIC plus Xen's default
/// `extra_domU_pirqs` (32). None of them is the domain's to bind.
pub const NR_PIRQS: u32 = 24 + 32;

/// What a port is bound to (Xen's `ECS_*`). PIRQs never exist in a domU without devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PortState {
    /// `ECS_FREE`.
    #[default]
    Free,
    /// `ECS_RESERVED`: port 0.
    Reserved,
    /// `ECS_UNBOUND`: waiting for `remote_dom` to bind it.
    Unbound { remote_dom: DomId },
    /// `ECS_INTERDOMAIN`: connected to `remote_port` of `remote_dom` (this domain for a
    /// loopback pair, 0 for the VMM).
    Interdomain { remote_dom: DomId, remote_port: u32 },
    /// `ECS_VIRQ`.
    Virq(u32),
    /// `ECS_IPI`.
    Ipi,
}

/// One port (Xen's `struct evtchn`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channel {
    pub state: PortState,
    /// The vCPU the port notifies (`notify_vcpu_id`).
    pub notify_vcpu: u32,
}

/// A domain-0 port this domain is, or may become, connected to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct HostEnd {
    dom0_port: u32,
    /// The guest port bound to it; 0 while it waits unbound for this domain.
    bound_to: u32,
}

/// One port packed in 32 bits, so that the table stays small (the shim is built on its boot
/// stack): tag in bits 0-2, notify vCPU in bits 3-7, then the tag's value: the remote domid
/// (unbound), the remote port (interdomain to this domain), the `HostEnd` index
/// (interdomain to domain 0), or the VIRQ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Packed(u32);

const TAG_FREE: u32 = 0;
const TAG_RESERVED: u32 = 1;
const TAG_UNBOUND: u32 = 2;
const TAG_LOOPBACK: u32 = 3;
const TAG_DOM0: u32 = 4;
const TAG_VIRQ: u32 = 5;
const TAG_IPI: u32 = 6;

/// The domain's event channels.
#[derive(Clone, Debug)]
pub struct EventChannels {
    ports: [Packed; NR_PORTS],
    /// Xen's `valid_evtchns`: ports below it have a `struct evtchn`.
    valid: u32,
    /// vCPU 0's `virq_to_evtchn` (global VIRQs are bound on vCPU 0, as in Xen).
    virq_to_evtchn: [u32; NR_VIRQS as usize],
    host_ends: [HostEnd; 2 * MAX_HOST_PORTS],
    nr_host_ends: usize,
    /// This domain's id (`DOMID_SELF` resolves to it).
    pub domid: DomId,
    /// Pending bits set (0 → 1) so far: wakes `SCHEDOP_poll` waiters (Xen's
    /// `evtchn_check_pollers`).
    pub raised: u64,
    /// `evtchn_upcall_pending` set (0 → 1) so far (Xen's `vcpu_mark_events_pending` kick).
    pub marked: u64,
    /// Ports the VMM raised that are not bound to it.
    pub ignored_host_raises: u64,
}

impl EventChannels {
    /// Port 0 reserved; the VMM's pre-bound ports connected to domain 0; the VMM's unbound
    /// ports remembered for `EVTCHNOP_bind_interdomain`. Bad entries from the VMM are skipped.
    pub fn new(boot: &BootInfo) -> EventChannels {
        let mut ev = EventChannels {
            ports: [Packed::default(); NR_PORTS],
            valid: EVTCHNS_PER_BUCKET,
            virq_to_evtchn: [0; NR_VIRQS as usize],
            host_ends: [HostEnd::default(); 2 * MAX_HOST_PORTS],
            nr_host_ends: 0,
            domid: boot.domid,
            raised: 0,
            marked: 0,
            ignored_host_raises: 0,
        };
        ev.set(0, Channel { state: PortState::Reserved, notify_vcpu: 0 });
        let n = (boot.nr_host_ports as usize).min(MAX_HOST_PORTS);
        for hp in &boot.host_ports[..n] {
            let p = hp.port;
            let free = p != 0 && p <= MAX_EVTCHN_PORT && ev.get(p).state == PortState::Free;
            if !free || !ev.add_host_end(hp.remote_port, p) {
                continue;
            }
            ev.grow_to(p);
            let state = PortState::Interdomain { remote_dom: 0, remote_port: hp.remote_port };
            ev.set(p, Channel { state, notify_vcpu: 0 });
        }
        let n = (boot.nr_host_unbound as usize).min(MAX_HOST_PORTS);
        for &dom0_port in &boot.host_unbound[..n] {
            ev.add_host_end(dom0_port, 0);
        }
        ev
    }

    /// Remembers a domain-0 port; false when it is known already or there is no room.
    fn add_host_end(&mut self, dom0_port: u32, bound_to: u32) -> bool {
        if self.host_end(dom0_port).is_some() || self.nr_host_ends == self.host_ends.len() {
            return false;
        }
        self.host_ends[self.nr_host_ends] = HostEnd { dom0_port, bound_to };
        self.nr_host_ends += 1;
        true
    }

    /// Decodes port `port` (which must be below `NR_PORTS`).
    fn get(&self, port: u32) -> Channel {
        let v = self.ports[port as usize].0;
        let value = v >> 8;
        let state = match v & 7 {
            TAG_RESERVED => PortState::Reserved,
            TAG_UNBOUND => PortState::Unbound { remote_dom: value as DomId },
            TAG_LOOPBACK => PortState::Interdomain { remote_dom: self.domid, remote_port: value },
            TAG_DOM0 => PortState::Interdomain {
                remote_dom: 0,
                remote_port: self.host_ends.get(value as usize).map_or(0, |h| h.dom0_port),
            },
            TAG_VIRQ => PortState::Virq(value),
            TAG_IPI => PortState::Ipi,
            _ => PortState::Free,
        };
        Channel { state, notify_vcpu: (v >> 3) & 31 }
    }

    /// Encodes `chn` into port `port` (below `NR_PORTS`). An interdomain binding to domain 0
    /// refers to its remembered `HostEnd`: callers only make such bindings for those.
    fn set(&mut self, port: u32, chn: Channel) {
        let (tag, value) = match chn.state {
            PortState::Free => (TAG_FREE, 0),
            PortState::Reserved => (TAG_RESERVED, 0),
            PortState::Unbound { remote_dom } => (TAG_UNBOUND, u32::from(remote_dom)),
            PortState::Interdomain { remote_dom: 0, remote_port } => {
                let i = self.host_ends[..self.nr_host_ends].iter().position(|h| h.dom0_port == remote_port);
                (TAG_DOM0, i.unwrap_or(0) as u32)
            }
            PortState::Interdomain { remote_port, .. } => (TAG_LOOPBACK, remote_port),
            PortState::Virq(virq) => (TAG_VIRQ, virq),
            PortState::Ipi => (TAG_IPI, 0),
        };
        self.ports[port as usize] = Packed(tag | ((chn.notify_vcpu & 31) << 3) | (value << 8));
    }

    fn set_state(&mut self, port: u32, state: PortState) {
        let notify_vcpu = self.get(port).notify_vcpu;
        self.set(port, Channel { state, notify_vcpu });
    }

    fn host_end(&mut self, dom0_port: u32) -> Option<&mut HostEnd> {
        self.host_ends[..self.nr_host_ends].iter_mut().find(|h| h.dom0_port == dom0_port)
    }

    /// Allocates the buckets up to `port` (Xen's `evtchn_allocate_port`).
    fn grow_to(&mut self, port: u32) {
        while self.valid <= port && self.valid < NR_PORTS as u32 {
            self.valid += EVTCHNS_PER_BUCKET;
        }
    }

    /// Xen's `port_is_valid`.
    pub fn is_valid(&self, port: u32) -> bool {
        port < self.valid
    }

    /// The port's binding, `None` for a port that is not valid.
    pub fn channel(&self, port: u32) -> Option<Channel> {
        self.is_valid(port).then(|| self.get(port))
    }

    /// The port bound to `virq` (on vCPU 0), 0 for none.
    pub fn virq_port(&self, virq: u32) -> u32 {
        self.virq_to_evtchn.get(virq as usize).copied().unwrap_or(0)
    }

    /// Xen's `get_free_port`: the lowest free port, growing the table a bucket at a time.
    fn get_free_port(&mut self) -> Result<u32, Errno> {
        if let Some(p) = (0..self.valid).find(|&p| self.ports[p as usize].0 & 7 == TAG_FREE) {
            return Ok(p);
        }
        if self.valid > MAX_EVTCHN_PORT {
            return Err(Errno::ENOSPC);
        }
        let p = self.valid;
        self.grow_to(p);
        Ok(p)
    }

    /// Which domain `dom` names, with `DOMID_SELF` resolved (`rcu_lock_domain_by_any_id`).
    fn domain(&self, dom: DomId) -> Option<Domain> {
        match dom {
            d if d == DOMID_SELF || d == self.domid => Some(Domain::Own),
            0 => Some(Domain::Dom0),
            _ => None,
        }
    }
}

/// The domains a domU can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Domain {
    Own,
    /// The VMM: it exists, but the dummy XSM policy gives a domU no rights over it.
    Dom0,
}

/// Copies the argument of an `EVTCHNOP_*` in.
fn arg_in<M: Machine, T: FromBytes + IntoBytes>(s: &Shim<M>, va: u64) -> Result<T, Errno> {
    mm::read_guest(&s.m, s.cr3(), va)
}

/// Copies an argument with its OUT fields back (Xen's `__copy_to_guest` after a successful op:
/// the op stays done when this fails).
fn arg_out<M: Machine, T: IntoBytes + Immutable>(s: &mut Shim<M>, va: u64, v: &T) -> Result<u64, Errno> {
    let cr3 = s.cr3();
    mm::copy_to_guest(&mut s.m, cr3, va, v.as_bytes()).map(|()| 0)
}

/// `HYPERVISOR_event_channel_op(cmd, arg)`.
pub fn event_channel_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    // `int cmd` in C.
    let cmd = u64::from(a.0[0] as u32);
    let va = a.0[1];
    match cmd {
        EVTCHNOP_ALLOC_UNBOUND => {
            let mut op: EvtchnAllocUnbound = arg_in(s, va)?;
            op.port = s.evtchn_alloc_unbound(op.dom, op.remote_dom)?;
            arg_out(s, va, &op)
        }
        EVTCHNOP_BIND_INTERDOMAIN => {
            let mut op: EvtchnBindInterdomain = arg_in(s, va)?;
            op.local_port = s.evtchn_bind_interdomain(op.remote_dom, op.remote_port)?;
            arg_out(s, va, &op)
        }
        EVTCHNOP_BIND_VIRQ => {
            let mut op: EvtchnBindVirq = arg_in(s, va)?;
            op.port = s.evtchn_bind_virq(op.virq, op.vcpu)?;
            arg_out(s, va, &op)
        }
        EVTCHNOP_BIND_IPI => {
            let mut op: EvtchnBindIpi = arg_in(s, va)?;
            op.port = s.evtchn_bind_ipi(op.vcpu)?;
            arg_out(s, va, &op)
        }
        EVTCHNOP_BIND_PIRQ => {
            let op: EvtchnBindPirq = arg_in(s, va)?;
            // No PIRQ is ever the domain's (`pirq_access_permitted` fails).
            Err(if op.pirq >= NR_PIRQS { Errno::EINVAL } else { Errno::EPERM })
        }
        EVTCHNOP_CLOSE => {
            let op: EvtchnClose = arg_in(s, va)?;
            s.evtchn_close(op.port).map(|()| 0)
        }
        EVTCHNOP_SEND => {
            let op: EvtchnSend = arg_in(s, va)?;
            s.evtchn_send(op.port).map(|()| 0)
        }
        EVTCHNOP_STATUS => {
            let mut op: EvtchnStatus = arg_in(s, va)?;
            s.evtchn_status(&mut op)?;
            arg_out(s, va, &op)
        }
        EVTCHNOP_BIND_VCPU => {
            let op: EvtchnBindVcpu = arg_in(s, va)?;
            s.evtchn_bind_vcpu(op.port, op.vcpu).map(|()| 0)
        }
        EVTCHNOP_UNMASK => {
            let op: EvtchnUnmask = arg_in(s, va)?;
            s.evtchn_unmask(op.port).map(|()| 0)
        }
        EVTCHNOP_RESET | EVTCHNOP_RESET_CONT => {
            let op: EvtchnReset = arg_in(s, va)?;
            s.evtchn_reset(op.dom, cmd == EVTCHNOP_RESET_CONT).map(|()| 0)
        }
        // The FIFO ABI is not offered: Linux then uses the 2-level ABI (contract §5.1).
        EVTCHNOP_INIT_CONTROL => {
            let _: EvtchnInitControl = arg_in(s, va)?;
            Err(Errno::ENOSYS)
        }
        EVTCHNOP_EXPAND_ARRAY => {
            let _: EvtchnExpandArray = arg_in(s, va)?;
            Err(Errno::ENOSYS)
        }
        EVTCHNOP_SET_PRIORITY => {
            // `evtchn_port_set_priority`: the 2-level ABI has no priorities.
            let op: EvtchnSetPriority = arg_in(s, va)?;
            if !s.ev.is_valid(op.port) {
                return Err(Errno::EINVAL);
            }
            Err(Errno::ENOSYS)
        }
        _ => Err(Errno::ENOSYS),
    }
}

impl<M: Machine> Shim<M> {
    /// The vCPUs that exist: the shim runs one.
    pub fn vcpu_exists(&self, vcpu: u32) -> bool {
        vcpu == 0
    }

    /// `EVTCHNOP_alloc_unbound`.
    pub fn evtchn_alloc_unbound(&mut self, dom: DomId, remote_dom: DomId) -> Result<u32, Errno> {
        match self.ev.domain(dom) {
            None => Err(Errno::ESRCH),
            // xsm_evtchn_unbound(XSM_TARGET): a domU has no rights over domain 0.
            Some(Domain::Dom0) => Err(Errno::EPERM),
            Some(Domain::Own) => {
                let port = self.ev.get_free_port()?;
                // Xen keeps any remote domid: it is checked when that domain binds.
                let remote_dom = if remote_dom == DOMID_SELF { self.ev.domid } else { remote_dom };
                self.ev.set(port, Channel { state: PortState::Unbound { remote_dom }, notify_vcpu: 0 });
                Ok(port)
            }
        }
    }

    /// `EVTCHNOP_bind_interdomain`: to an unbound port of this domain (loopback) or to one of
    /// the VMM's ports left unbound for this domain.
    pub fn evtchn_bind_interdomain(&mut self, remote_dom: DomId, remote_port: u32) -> Result<u32, Errno> {
        let rd = self.ev.domain(remote_dom).ok_or(Errno::ESRCH)?;
        let lport = self.ev.get_free_port()?;
        let own = self.ev.domid;
        match rd {
            Domain::Own => {
                let unbound_for_us = self.ev.channel(remote_port).map(|c| c.state)
                    == Some(PortState::Unbound { remote_dom: own });
                if !unbound_for_us {
                    return Err(Errno::EINVAL);
                }
                self.ev.set_state(lport, PortState::Interdomain { remote_dom: own, remote_port });
                self.ev
                    .set_state(remote_port, PortState::Interdomain { remote_dom: own, remote_port: lport });
            }
            Domain::Dom0 => {
                let end = self.ev.host_end(remote_port).filter(|h| h.bound_to == 0).ok_or(Errno::EINVAL)?;
                end.bound_to = lport;
                self.ev.set_state(lport, PortState::Interdomain { remote_dom: 0, remote_port });
            }
        }
        // Notifications sent to the remote port while it was unbound may be lost: Xen sets
        // the new local port pending, conservatively.
        self.evtchn_set_pending(lport);
        Ok(lport)
    }

    /// `EVTCHNOP_bind_virq`: any VIRQ may be bound (most never fire); global ones on vCPU 0.
    pub fn evtchn_bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, Errno> {
        if virq >= NR_VIRQS {
            return Err(Errno::EINVAL);
        }
        if virq_is_global(virq) && vcpu != 0 {
            return Err(Errno::EINVAL);
        }
        if !self.vcpu_exists(vcpu) {
            return Err(Errno::ENOENT);
        }
        if self.ev.virq_to_evtchn[virq as usize] != 0 {
            return Err(Errno::EEXIST);
        }
        let port = self.ev.get_free_port()?;
        self.ev.set(port, Channel { state: PortState::Virq(virq), notify_vcpu: vcpu });
        self.ev.virq_to_evtchn[virq as usize] = port;
        if virq == VIRQ_TIMER {
            self.rearm_timer();
        }
        Ok(port)
    }

    /// `EVTCHNOP_bind_ipi`.
    pub fn evtchn_bind_ipi(&mut self, vcpu: u32) -> Result<u32, Errno> {
        if !self.vcpu_exists(vcpu) {
            return Err(Errno::ENOENT);
        }
        let port = self.ev.get_free_port()?;
        self.ev.set(port, Channel { state: PortState::Ipi, notify_vcpu: vcpu });
        Ok(port)
    }

    /// `EVTCHNOP_close` (Xen's `evtchn_close`): the peer of an interdomain port becomes
    /// unbound for this domain again.
    pub fn evtchn_close(&mut self, port: u32) -> Result<(), Errno> {
        let chn = self.ev.channel(port).ok_or(Errno::EINVAL)?;
        let own = self.ev.domid;
        match chn.state {
            PortState::Free | PortState::Reserved => return Err(Errno::EINVAL),
            PortState::Unbound { .. } | PortState::Ipi => {}
            PortState::Virq(virq) => {
                self.ev.virq_to_evtchn[virq as usize] = 0;
            }
            PortState::Interdomain { remote_dom: 0, remote_port } => {
                if let Some(end) = self.ev.host_end(remote_port) {
                    end.bound_to = 0;
                }
            }
            PortState::Interdomain { remote_port, .. } => {
                if remote_port < NR_PORTS as u32 {
                    self.ev.set_state(remote_port, PortState::Unbound { remote_dom: own });
                }
            }
        }
        self.evtchn_free(port);
        if chn.state == PortState::Virq(VIRQ_TIMER) {
            self.rearm_timer();
        }
        Ok(())
    }

    /// Xen's `evtchn_free`: clear the pending bit, free the port, notify vCPU 0 again.
    fn evtchn_free(&mut self, port: u32) {
        self.evtchn_clear_pending(port);
        self.ev.set(port, Channel::default());
    }

    /// `EVTCHNOP_send`.
    pub fn evtchn_send(&mut self, port: u32) -> Result<(), Errno> {
        let chn = self.ev.channel(port).ok_or(Errno::EINVAL)?;
        match chn.state {
            PortState::Interdomain { remote_dom: 0, .. } | PortState::Unbound { remote_dom: 0 } => {
                // Domain 0's end: the VMM. An unbound port to domain 0 may already be bound
                // by it (see the module comment); if not, the VMM drops it, as Xen would.
                self.m.stats().host_sends += 1;
                if self.m.notify_host(port) {
                    self.m.stats().doorbells += 1;
                }
            }
            PortState::Interdomain { remote_port, .. } => self.evtchn_set_pending(remote_port),
            PortState::Ipi => self.evtchn_set_pending(port),
            // Silently dropped.
            PortState::Unbound { .. } => {}
            PortState::Free | PortState::Reserved | PortState::Virq(_) => return Err(Errno::EINVAL),
        }
        Ok(())
    }

    /// `EVTCHNOP_status`: fills the OUT fields of `op` as Xen does (the union keeps the bytes
    /// the guest passed where Xen writes nothing).
    pub fn evtchn_status(&mut self, op: &mut EvtchnStatus) -> Result<(), Errno> {
        match self.ev.domain(op.dom) {
            None => return Err(Errno::ESRCH),
            // xsm_evtchn_status(XSM_TARGET) on domain 0.
            Some(Domain::Dom0) => return Err(Errno::EPERM),
            Some(Domain::Own) => {}
        }
        let chn = self.ev.channel(op.port).ok_or(Errno::EINVAL)?;
        op.status = match chn.state {
            PortState::Free | PortState::Reserved => EVTCHNSTAT_CLOSED,
            PortState::Unbound { remote_dom } => {
                op.u_val = (op.u_val & !0xffff) | u32::from(remote_dom);
                EVTCHNSTAT_UNBOUND
            }
            PortState::Interdomain { remote_dom, remote_port } => {
                op.u_val = (op.u_val & !0xffff) | u32::from(remote_dom);
                op.u_port = remote_port;
                EVTCHNSTAT_INTERDOMAIN
            }
            PortState::Virq(virq) => {
                op.u_val = virq;
                EVTCHNSTAT_VIRQ
            }
            PortState::Ipi => EVTCHNSTAT_IPI,
        };
        op.vcpu = chn.notify_vcpu;
        Ok(())
    }

    /// `EVTCHNOP_bind_vcpu`.
    pub fn evtchn_bind_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), Errno> {
        if !self.vcpu_exists(vcpu) {
            return Err(Errno::ENOENT);
        }
        let chn = self.ev.channel(port).ok_or(Errno::EINVAL)?;
        match chn.state {
            PortState::Virq(virq) if virq_is_global(virq) => {}
            PortState::Unbound { .. } | PortState::Interdomain { .. } => {}
            _ => return Err(Errno::EINVAL),
        }
        let state = self.ev.get(port).state;
        self.ev.set(port, Channel { state, notify_vcpu: vcpu });
        Ok(())
    }

    /// `EVTCHNOP_unmask`: a free port is valid but not usable, and stays untouched.
    pub fn evtchn_unmask(&mut self, port: u32) -> Result<(), Errno> {
        let chn = self.ev.channel(port).ok_or(Errno::EINVAL)?;
        if !matches!(chn.state, PortState::Free | PortState::Reserved) {
            self.evtchn_2l_unmask(port);
        }
        Ok(())
    }

    /// `EVTCHNOP_reset` (and `reset_cont`, which only continues a preempted reset: this one
    /// never is, so there is nothing to continue).
    pub fn evtchn_reset(&mut self, dom: DomId, resuming: bool) -> Result<(), Errno> {
        match self.ev.domain(dom) {
            None => return Err(Errno::ESRCH),
            // xsm_evtchn_reset(XSM_TARGET) on domain 0.
            Some(Domain::Dom0) => return Err(Errno::EPERM),
            Some(Domain::Own) => {}
        }
        if resuming {
            return Err(Errno::EBUSY);
        }
        for port in 1..self.ev.valid {
            // Free ports answer -EINVAL; Xen ignores every result here.
            let _ = self.evtchn_close(port);
        }
        Ok(())
    }
}

/// Xen's `virq_is_global`: per-vCPU VIRQs are TIMER, DEBUG, XENOPROF and XENPMU; on x86
/// every other one, including the architectural ones, is global.
pub fn virq_is_global(virq: u32) -> bool {
    !matches!(virq, VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU)
}
