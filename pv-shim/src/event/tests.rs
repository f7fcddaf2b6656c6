//! Host tests of the port table, every `EVTCHNOP_*` with Xen's errnos, the 2-level algorithms
//! and the mailbox. Also the helpers the sched, time and vcpu_op tests share.

use super::*;
use crate::testutil::{shim_with_guest, MockMachine, GUEST_VA};
use core::mem::offset_of;
use xen_abi::xen::{SharedInfo, VcpuInfo};
use zerocopy::FromZeros;

pub(crate) type TestShim = Shim<MockMachine>;

/// Guest address of hypercall arguments (writable).
pub(crate) const ARG: u64 = GUEST_VA;
/// A guest page mapped read-only.
pub(crate) const RO_PAGE: u64 = GUEST_VA + 31 * 4096;
/// Not mapped at all.
pub(crate) const UNMAPPED: u64 = 0x10_0000;
pub(crate) const SHARED_INFO_MFN: u64 = 5;
pub(crate) const DOMID: u16 = 1;
const HOST_PORTS: [(u32, u32); 2] = [(1, 10), (2, 11)];
const HOST_UNBOUND: [u32; 2] = [20, 21];

/// A shim with shared_info in frame 5, domid 1, guest ports 1 and 2 bound to domain 0's ports
/// 10 and 11, and domain 0's ports 20 and 21 unbound for it.
pub(crate) fn shim() -> TestShim {
    let mut s = shim_with_guest();
    s.boot.shared_info_mfn = SHARED_INFO_MFN;
    s.vcpu.vcpu_info = SHARED_INFO_MFN << 12;
    s.boot.domid = DOMID;
    for (i, (port, remote_port)) in HOST_PORTS.iter().enumerate() {
        s.boot.host_ports[i] = xen_abi::hostcall::HostPort { port: *port, remote_port: *remote_port };
    }
    s.boot.nr_host_ports = HOST_PORTS.len() as u32;
    s.boot.host_unbound[..2].copy_from_slice(&HOST_UNBOUND);
    s.boot.nr_host_unbound = 2;
    s.ev = EventChannels::new(&s.boot);
    s.init_time();
    s
}

pub(crate) fn put<T: IntoBytes + Immutable>(s: &mut TestShim, va: u64, v: &T) {
    let cr3 = s.cr3();
    mm::copy_to_guest(&mut s.m, cr3, va, v.as_bytes()).unwrap();
}

pub(crate) fn get<T: FromBytes + IntoBytes>(s: &TestShim, va: u64) -> T {
    mm::read_guest(&s.m, s.cr3(), va).unwrap()
}

/// Runs `EVTCHNOP_<cmd>` with `arg` at [`ARG`] and reads the argument back.
pub(crate) fn evop<T: FromBytes + IntoBytes + Immutable>(
    s: &mut TestShim,
    cmd: u64,
    arg: &mut T,
) -> Result<u64, Errno> {
    put(s, ARG, arg);
    let r = event_channel_op(s, Args([cmd, ARG, 0, 0, 0, 0]));
    *arg = get(s, ARG);
    r
}

pub(crate) fn alloc_unbound(s: &mut TestShim, dom: u16, remote_dom: u16) -> Result<u32, Errno> {
    let mut op = EvtchnAllocUnbound { dom, remote_dom, port: 0 };
    evop(s, EVTCHNOP_ALLOC_UNBOUND, &mut op).map(|_| op.port)
}

pub(crate) fn bind_interdomain(s: &mut TestShim, remote_dom: u16, remote_port: u32) -> Result<u32, Errno> {
    let mut op = EvtchnBindInterdomain { remote_dom, remote_port, ..Default::default() };
    evop(s, EVTCHNOP_BIND_INTERDOMAIN, &mut op).map(|_| op.local_port)
}

pub(crate) fn bind_virq(s: &mut TestShim, virq: u32, vcpu: u32) -> Result<u32, Errno> {
    let mut op = EvtchnBindVirq { virq, vcpu, port: 0 };
    evop(s, EVTCHNOP_BIND_VIRQ, &mut op).map(|_| op.port)
}

pub(crate) fn bind_ipi(s: &mut TestShim, vcpu: u32) -> Result<u32, Errno> {
    let mut op = EvtchnBindIpi { vcpu, port: 0 };
    evop(s, EVTCHNOP_BIND_IPI, &mut op).map(|_| op.port)
}

pub(crate) fn port_op(s: &mut TestShim, cmd: u64, port: u32) -> Result<u64, Errno> {
    let mut op = EvtchnSend { port };
    evop(s, cmd, &mut op)
}

pub(crate) fn status(s: &mut TestShim, dom: u16, port: u32) -> Result<EvtchnStatus, Errno> {
    let mut op = EvtchnStatus { dom, port, ..Default::default() };
    evop(s, EVTCHNOP_STATUS, &mut op).map(|_| op)
}

fn bind_vcpu(s: &mut TestShim, port: u32, vcpu: u32) -> Result<u64, Errno> {
    let mut op = EvtchnBindVcpu { port, vcpu };
    evop(s, EVTCHNOP_BIND_VCPU, &mut op)
}

fn reset(s: &mut TestShim, cmd: u64, dom: u16) -> Result<u64, Errno> {
    let mut op = EvtchnReset { dom };
    evop(s, cmd, &mut op)
}

fn si_word(s: &TestShim, field: usize, word: u32) -> u64 {
    s.m.read_u64((SHARED_INFO_MFN << 12) + field as u64 + 8 * u64::from(word)).unwrap()
}

pub(crate) fn set_mask(s: &mut TestShim, port: u32, masked: bool) {
    let at = (SHARED_INFO_MFN << 12) + offset_of!(SharedInfo, evtchn_mask) as u64 + 8 * u64::from(port / 64);
    let v = s.m.read_u64(at).unwrap();
    let bit = 1 << (port % 64);
    s.m.write_u64(at, if masked { v | bit } else { v & !bit }).unwrap();
}

pub(crate) fn pending_sel(s: &TestShim) -> u64 {
    s.m.read_u64(s.vcpu.vcpu_info + offset_of!(VcpuInfo, evtchn_pending_sel) as u64).unwrap()
}

/// Clears the selector and `evtchn_upcall_pending`, as the guest's upcall handler does.
pub(crate) fn ack_upcall(s: &mut TestShim) {
    let vi = s.vcpu.vcpu_info;
    s.m.write_u64(vi + offset_of!(VcpuInfo, evtchn_pending_sel) as u64, 0).unwrap();
    s.m.write_phys(vi + offset_of!(VcpuInfo, evtchn_upcall_pending) as u64, &[0]).unwrap();
}

fn neg(port_result: Result<u32, Errno>) -> Errno {
    port_result.unwrap_err()
}

#[test]
fn port_zero_is_reserved_and_vmm_ports_are_prebound_to_domain_0() {
    let mut s = shim();
    let st = status(&mut s, DOMID_SELF, 0).unwrap();
    assert_eq!((st.status, st.vcpu), (EVTCHNSTAT_CLOSED, 0));
    for (port, remote) in HOST_PORTS {
        let st = status(&mut s, DOMID_SELF, port).unwrap();
        assert_eq!((st.status, st.u_val, st.u_port), (EVTCHNSTAT_INTERDOMAIN, 0, remote));
    }
    assert_eq!(port_op(&mut s, EVTCHNOP_CLOSE, 0), Err(Errno::EINVAL));
    assert_eq!(port_op(&mut s, EVTCHNOP_SEND, 0), Err(Errno::EINVAL));
}

#[test]
fn bad_vmm_port_entries_are_skipped() {
    let mut b = crate::testutil::boot_info(8);
    b.host_ports[0] = xen_abi::hostcall::HostPort { port: 0, remote_port: 1 };
    b.host_ports[1] = xen_abi::hostcall::HostPort { port: 5000, remote_port: 2 };
    b.host_ports[2] = xen_abi::hostcall::HostPort { port: 3, remote_port: 4 };
    b.host_ports[3] = xen_abi::hostcall::HostPort { port: 3, remote_port: 5 };
    b.nr_host_ports = 99;
    b.nr_host_unbound = 99;
    let ev = EventChannels::new(&b);
    assert_eq!(ev.channel(3).unwrap().state, PortState::Interdomain { remote_dom: 0, remote_port: 4 });
    assert_eq!(ev.channel(0).unwrap().state, PortState::Reserved);
    assert!(!ev.is_valid(5000));
}

#[test]
fn alloc_unbound_takes_the_lowest_free_port_for_own_domain_only() {
    let mut s = shim();
    assert_eq!(alloc_unbound(&mut s, DOMID_SELF, 0), Ok(3));
    assert_eq!(alloc_unbound(&mut s, DOMID, DOMID_SELF), Ok(4));
    let st = status(&mut s, DOMID_SELF, 4).unwrap();
    assert_eq!(
        (st.status, st.u_val & 0xffff),
        (EVTCHNSTAT_UNBOUND, u32::from(DOMID)),
        "DOMID_SELF is stored as own id"
    );
    // Any remote id is kept, as Xen does; it only matters when that domain binds.
    assert_eq!(alloc_unbound(&mut s, DOMID_SELF, 77), Ok(5));
    assert_eq!(neg(alloc_unbound(&mut s, 0, DOMID_SELF)), Errno::EPERM, "domain 0 is not ours");
    assert_eq!(neg(alloc_unbound(&mut s, 9, 0)), Errno::ESRCH);
    assert_eq!(neg(alloc_unbound(&mut s, xen_abi::xen::DOMID_IO, 0)), Errno::ESRCH);
    assert_eq!(port_op(&mut s, EVTCHNOP_CLOSE, 3), Ok(0));
    assert_eq!(alloc_unbound(&mut s, DOMID_SELF, 0), Ok(3), "closed ports are reused lowest first");
}

#[test]
fn ports_run_out_at_libxls_default_limit() {
    let mut s = shim();
    let mut n = 0;
    let err = loop {
        match alloc_unbound(&mut s, DOMID_SELF, 0) {
            Ok(p) => {
                assert!(p <= MAX_EVTCHN_PORT);
                n += 1
            }
            Err(e) => break e,
        }
        assert!(n <= 2000, "no limit");
    };
    assert_eq!(err, Errno::ENOSPC);
    assert_eq!(n, NR_PORTS - 3, "all but 0, 1 and 2");
    assert!(s.ev.is_valid(MAX_EVTCHN_PORT) && !s.ev.is_valid(MAX_EVTCHN_PORT + 1));
}

#[test]
fn ports_are_valid_in_buckets_of_64() {
    let mut s = shim();
    // Free but inside the first bucket: a state error, reported as Xen reports it.
    assert_eq!(status(&mut s, DOMID_SELF, 63).unwrap().status, EVTCHNSTAT_CLOSED);
    assert_eq!(status(&mut s, DOMID_SELF, 64), Err(Errno::EINVAL));
    for _ in 3..=64 {
        alloc_unbound(&mut s, DOMID_SELF, 0).unwrap();
    }
    assert_eq!(status(&mut s, DOMID_SELF, 127).unwrap().status, EVTCHNSTAT_CLOSED);
    assert_eq!(status(&mut s, DOMID_SELF, 128), Err(Errno::EINVAL));
}

#[test]
fn loopback_pair_connects_and_send_raises_the_peer() {
    let mut s = shim();
    let a = alloc_unbound(&mut s, DOMID_SELF, DOMID_SELF).unwrap();
    let b = bind_interdomain(&mut s, DOMID_SELF, a).unwrap();
    let sa = status(&mut s, DOMID_SELF, a).unwrap();
    let sb = status(&mut s, DOMID_SELF, b).unwrap();
    assert_eq!((sa.status, sa.u_val, sa.u_port), (EVTCHNSTAT_INTERDOMAIN, u32::from(DOMID), b));
    assert_eq!((sb.status, sb.u_val, sb.u_port), (EVTCHNSTAT_INTERDOMAIN, u32::from(DOMID), a));
    // Xen conservatively marks the new local port pending.
    assert!(s.evtchn_is_pending(b) && !s.evtchn_is_pending(a));
    assert_eq!(port_op(&mut s, EVTCHNOP_SEND, b), Ok(0));
    assert!(s.evtchn_is_pending(a));
    assert!(s.m.notified.is_empty(), "a loopback never reaches the VMM");
}

#[test]
fn closing_one_side_of_a_loopback_leaves_the_peer_unbound_for_us() {
    let mut s = shim();
    let a = alloc_unbound(&mut s, DOMID_SELF, DOMID_SELF).unwrap();
    let b = bind_interdomain(&mut s, DOMID_SELF, a).unwrap();
    port_op(&mut s, EVTCHNOP_SEND, b).unwrap();
    assert_eq!(port_op(&mut s, EVTCHNOP_CLOSE, a), Ok(0));
    assert!(!s.evtchn_is_pending(a), "close clears the pending bit");
    let sb = status(&mut s, DOMID_SELF, b).unwrap();
    assert_eq!((sb.status, sb.u_val & 0xffff), (EVTCHNSTAT_UNBOUND, u32::from(DOMID)));
    assert_eq!(port_op(&mut s, EVTCHNOP_SEND, b), Ok(0), "unbound: silently dropped");
    assert_eq!(port_op(&mut s, EVTCHNOP_CLOSE, a), Err(Errno::EINVAL), "closing twice");
    let c = bind_interdomain(&mut s, DOMID, b).unwrap();
    assert_eq!(status(&mut s, DOMID_SELF, c).unwrap().u_port, b);
}

#[test]
fn bind_interdomain_refuses_what_xen_refuses() {
    let mut s = shim();
    let ipi = bind_ipi(&mut s, 0).unwrap();
    let to_dom0 = alloc_unbound(&mut s, DOMID_SELF, 0).unwrap();
    assert_eq!(neg(bind_interdomain(&mut s, 7, 1)), Errno::ESRCH, "no such domain");
    assert_eq!(neg(bind_interdomain(&mut s, DOMID_SELF, ipi)), Errno::EINVAL, "not unbound");
    assert_eq!(
        neg(bind_interdomain(&mut s, DOMID_SELF, to_dom0)),
        Errno::EINVAL,
        "unbound for domain 0, not us"
    );
    assert_eq!(neg(bind_interdomain(&mut s, DOMID_SELF, 900)), Errno::EINVAL, "not a valid port");
    assert_eq!(neg(bind_interdomain(&mut s, DOMID_SELF, 0)), Errno::EINVAL);
    assert_eq!(neg(bind_interdomain(&mut s, 0, 12345)), Errno::EINVAL, "no such domain-0 port");
    assert_eq!(neg(bind_interdomain(&mut s, 0, 10)), Errno::EINVAL, "domain-0 port 10 is bound to port 1");
    assert_eq!(
        status(&mut s, DOMID_SELF, 5).unwrap().status,
        EVTCHNSTAT_CLOSED,
        "failures leave no port behind"
    );
}

#[test]
fn domain_0_ports_left_unbound_can_be_bound_once_and_again_after_close() {
    let mut s = shim();
    let p = bind_interdomain(&mut s, 0, 20).unwrap();
    let st = status(&mut s, DOMID_SELF, p).unwrap();
    assert_eq!((st.status, st.u_val, st.u_port), (EVTCHNSTAT_INTERDOMAIN, 0, 20));
    assert!(s.evtchn_is_pending(p));
    assert_eq!(neg(bind_interdomain(&mut s, 0, 20)), Errno::EINVAL);
    port_op(&mut s, EVTCHNOP_SEND, p).unwrap();
    assert_eq!(s.m.notified, vec![p]);
    port_op(&mut s, EVTCHNOP_CLOSE, p).unwrap();
    assert!(bind_interdomain(&mut s, 0, 20).is_ok());
    // A pre-bound port closed by the guest becomes bindable, like Xen's remote end.
    port_op(&mut s, EVTCHNOP_CLOSE, 2).unwrap();
    let q = bind_interdomain(&mut s, 0, 11).unwrap();
    assert_eq!(status(&mut s, DOMID_SELF, q).unwrap().u_port, 11);
}

#[test]
fn bind_virq_enforces_range_scope_vcpu_and_uniqueness() {
    let mut s = shim();
    let t = bind_virq(&mut s, VIRQ_TIMER, 0).unwrap();
    assert_eq!(neg(bind_virq(&mut s, VIRQ_TIMER, 0)), Errno::EEXIST);
    assert_eq!(neg(bind_virq(&mut s, NR_VIRQS, 0)), Errno::EINVAL);
    assert_eq!(neg(bind_virq(&mut s, u32::MAX, 0)), Errno::EINVAL);
    assert_eq!(neg(bind_virq(&mut s, VIRQ_DEBUG, 1)), Errno::ENOENT, "per-vCPU VIRQ on a missing vCPU");
    assert_eq!(neg(bind_virq(&mut s, VIRQ_CONSOLE, 1)), Errno::EINVAL, "global VIRQs only on vCPU 0");
    assert_eq!(neg(bind_virq(&mut s, VIRQ_ARCH_0, 1)), Errno::EINVAL);
    for virq in [VIRQ_DEBUG, VIRQ_CONSOLE, VIRQ_XENPMU, VIRQ_ARCH_7, 5] {
        assert!(bind_virq(&mut s, virq, 0).is_ok(), "virq {virq}");
    }
    let st = status(&mut s, DOMID_SELF, t).unwrap();
    assert_eq!((st.status, st.u_val, st.vcpu), (EVTCHNSTAT_VIRQ, VIRQ_TIMER, 0));
    assert_eq!(port_op(&mut s, EVTCHNOP_SEND, t), Err(Errno::EINVAL), "VIRQs cannot be sent");
    port_op(&mut s, EVTCHNOP_CLOSE, t).unwrap();
    assert_eq!(s.ev.virq_port(VIRQ_TIMER), 0);
    assert_eq!(bind_virq(&mut s, VIRQ_TIMER, 0), Ok(t));
}

#[test]
fn ipi_send_raises_its_own_port() {
    let mut s = shim();
    assert_eq!(neg(bind_ipi(&mut s, 1)), Errno::ENOENT);
    let p = bind_ipi(&mut s, 0).unwrap();
    assert_eq!(status(&mut s, DOMID_SELF, p).unwrap().status, EVTCHNSTAT_IPI);
    ack_upcall(&mut s);
    assert_eq!(port_op(&mut s, EVTCHNOP_SEND, p), Ok(0));
    assert!(s.evtchn_is_pending(p));
    assert_eq!(pending_sel(&s), 1 << (p / 64));
    assert!(s.upcall_pending());
}

#[test]
fn send_reaches_the_vmm_only_for_domain_0_ports() {
    let mut s = shim();
    let frontend = alloc_unbound(&mut s, DOMID_SELF, 0).unwrap();
    let unbound_self = alloc_unbound(&mut s, DOMID_SELF, DOMID_SELF).unwrap();
    assert_eq!(port_op(&mut s, EVTCHNOP_SEND, 2), Ok(0));
    assert_eq!(port_op(&mut s, EVTCHNOP_SEND, frontend), Ok(0));
    assert_eq!(port_op(&mut s, EVTCHNOP_SEND, unbound_self), Ok(0));
    assert_eq!(s.m.notified, vec![2, frontend]);
    assert_eq!((s.m.stats.host_sends, s.m.stats.doorbells), (2, 2));
    assert_eq!(port_op(&mut s, EVTCHNOP_SEND, 40), Err(Errno::EINVAL), "free port");
    assert_eq!(port_op(&mut s, EVTCHNOP_SEND, 4000), Err(Errno::EINVAL), "invalid port");
    assert_eq!(port_op(&mut s, EVTCHNOP_SEND, u32::MAX), Err(Errno::EINVAL));
}

#[test]
fn close_refuses_free_reserved_and_invalid_ports() {
    let mut s = shim();
    let p = bind_ipi(&mut s, 0).unwrap();
    assert_eq!(port_op(&mut s, EVTCHNOP_CLOSE, p), Ok(0));
    assert_eq!(port_op(&mut s, EVTCHNOP_CLOSE, p), Err(Errno::EINVAL));
    assert_eq!(port_op(&mut s, EVTCHNOP_CLOSE, 0), Err(Errno::EINVAL));
    assert_eq!(port_op(&mut s, EVTCHNOP_CLOSE, 5000), Err(Errno::EINVAL));
}

#[test]
fn status_checks_the_domain_then_the_port_and_keeps_untouched_union_bytes() {
    let mut s = shim();
    assert_eq!(status(&mut s, 0, 1), Err(Errno::EPERM));
    assert_eq!(status(&mut s, 9, 1), Err(Errno::ESRCH));
    assert_eq!(status(&mut s, DOMID, 4000), Err(Errno::EINVAL));
    let mut op =
        EvtchnStatus { dom: DOMID_SELF, port: 30, u_val: 0xdead_beef, u_port: 7, ..Default::default() };
    evop(&mut s, EVTCHNOP_STATUS, &mut op).unwrap();
    assert_eq!((op.status, op.u_val, op.u_port), (EVTCHNSTAT_CLOSED, 0xdead_beef, 7));
    let p = alloc_unbound(&mut s, DOMID_SELF, 0).unwrap();
    let mut op = EvtchnStatus { dom: DOMID_SELF, port: p, u_val: 0xdead_beef, ..Default::default() };
    evop(&mut s, EVTCHNOP_STATUS, &mut op).unwrap();
    assert_eq!(op.u_val, 0xdead_0000, "only u.unbound.dom (16 bits) is written");
}

#[test]
fn bind_vcpu_moves_only_what_xen_lets_move() {
    let mut s = shim();
    let timer = bind_virq(&mut s, VIRQ_TIMER, 0).unwrap();
    let console = bind_virq(&mut s, VIRQ_CONSOLE, 0).unwrap();
    let ipi = bind_ipi(&mut s, 0).unwrap();
    let unbound = alloc_unbound(&mut s, DOMID_SELF, 0).unwrap();
    assert_eq!(bind_vcpu(&mut s, 1, 1), Err(Errno::ENOENT), "vCPU 1 does not exist");
    assert_eq!(bind_vcpu(&mut s, 4000, 0), Err(Errno::EINVAL));
    assert_eq!(bind_vcpu(&mut s, timer, 0), Err(Errno::EINVAL), "per-vCPU VIRQ");
    assert_eq!(bind_vcpu(&mut s, ipi, 0), Err(Errno::EINVAL));
    assert_eq!(bind_vcpu(&mut s, 50, 0), Err(Errno::EINVAL), "free port");
    for p in [console, unbound, 1] {
        assert_eq!(bind_vcpu(&mut s, p, 0), Ok(0), "port {p}");
    }
}

#[test]
fn raise_of_a_masked_port_waits_for_unmask() {
    let mut s = shim();
    let p = bind_ipi(&mut s, 0).unwrap();
    ack_upcall(&mut s);
    set_mask(&mut s, p, true);
    port_op(&mut s, EVTCHNOP_SEND, p).unwrap();
    assert!(s.evtchn_is_pending(p));
    assert_eq!(pending_sel(&s), 0, "masked: no selector bit");
    assert!(!s.upcall_pending());
    assert_eq!(port_op(&mut s, EVTCHNOP_UNMASK, p), Ok(0));
    assert!(!s.evtchn_is_masked(p));
    assert_eq!(pending_sel(&s), 1 << (p / 64));
    assert!(s.upcall_pending());
    // Unmasking an unmasked port does nothing.
    ack_upcall(&mut s);
    port_op(&mut s, EVTCHNOP_UNMASK, p).unwrap();
    assert!(!s.upcall_pending());
}

#[test]
fn unmask_of_a_free_port_is_accepted_and_changes_nothing() {
    let mut s = shim();
    set_mask(&mut s, 40, true);
    assert_eq!(port_op(&mut s, EVTCHNOP_UNMASK, 40), Ok(0));
    assert!(s.evtchn_is_masked(40));
    assert_eq!(port_op(&mut s, EVTCHNOP_UNMASK, 4000), Err(Errno::EINVAL));
}

#[test]
fn second_raise_and_raise_into_a_set_selector_do_not_mark_again() {
    let mut s = shim();
    let p = bind_ipi(&mut s, 0).unwrap();
    let q = bind_ipi(&mut s, 0).unwrap();
    ack_upcall(&mut s);
    let marked = s.ev.marked;
    s.evtchn_set_pending(p);
    assert_eq!(s.ev.marked, marked + 1);
    s.evtchn_set_pending(p);
    assert_eq!(s.ev.raised, 1, "only the first raise is a 0 -> 1 edge");
    // Same word, selector already set: upcall_pending is not touched again.
    s.m.write_phys(s.vcpu.vcpu_info + offset_of!(VcpuInfo, evtchn_upcall_pending) as u64, &[0]).unwrap();
    s.evtchn_set_pending(q);
    assert!(!s.upcall_pending());
    assert_eq!(si_word(&s, offset_of!(SharedInfo, evtchn_pending), 0), (1 << p) | (1 << q));
}

#[test]
fn ports_past_the_2_level_range_are_never_raised() {
    let mut s = shim();
    s.evtchn_set_pending(EVTCHN_2L_NR_CHANNELS);
    s.evtchn_2l_unmask(EVTCHN_2L_NR_CHANNELS + 5);
    assert!(s.evtchn_is_masked(EVTCHN_2L_NR_CHANNELS));
    assert_eq!(s.ev.raised, 0);
}

#[test]
fn reset_closes_every_port_of_own_domain_only() {
    let mut s = shim();
    let t = bind_virq(&mut s, VIRQ_TIMER, 0).unwrap();
    let p = bind_ipi(&mut s, 0).unwrap();
    port_op(&mut s, EVTCHNOP_SEND, p).unwrap();
    assert_eq!(reset(&mut s, EVTCHNOP_RESET, 0), Err(Errno::EPERM));
    assert_eq!(reset(&mut s, EVTCHNOP_RESET, 9), Err(Errno::ESRCH));
    assert_eq!(reset(&mut s, EVTCHNOP_RESET_CONT, DOMID_SELF), Err(Errno::EBUSY), "nothing to continue");
    assert_eq!(reset(&mut s, EVTCHNOP_RESET, DOMID_SELF), Ok(0));
    for port in [1, 2, t, p] {
        assert_eq!(status(&mut s, DOMID_SELF, port).unwrap().status, EVTCHNSTAT_CLOSED, "port {port}");
    }
    assert!(!s.evtchn_is_pending(p));
    assert_eq!(status(&mut s, DOMID_SELF, 0).unwrap().status, EVTCHNSTAT_CLOSED, "port 0 stays reserved");
    assert_eq!(bind_virq(&mut s, VIRQ_TIMER, 0), Ok(1), "VIRQ slots are free again");
    assert!(bind_interdomain(&mut s, 0, 10).is_ok(), "domain 0's ends are unbound for us again");
}

#[test]
fn fifo_abi_is_not_offered_and_pirqs_are_not_ours() {
    let mut s = shim();
    let mut ic = EvtchnInitControl::new_zeroed();
    assert_eq!(evop(&mut s, EVTCHNOP_INIT_CONTROL, &mut ic), Err(Errno::ENOSYS));
    let mut ea = EvtchnExpandArray::default();
    assert_eq!(evop(&mut s, EVTCHNOP_EXPAND_ARRAY, &mut ea), Err(Errno::ENOSYS));
    let mut sp = EvtchnSetPriority { port: 1, priority: 3 };
    assert_eq!(evop(&mut s, EVTCHNOP_SET_PRIORITY, &mut sp), Err(Errno::ENOSYS));
    let mut sp = EvtchnSetPriority { port: 4000, priority: 3 };
    assert_eq!(evop(&mut s, EVTCHNOP_SET_PRIORITY, &mut sp), Err(Errno::EINVAL));
    let mut bp = EvtchnBindPirq { pirq: 0, ..Default::default() };
    assert_eq!(evop(&mut s, EVTCHNOP_BIND_PIRQ, &mut bp), Err(Errno::EPERM));
    let mut bp = EvtchnBindPirq { pirq: NR_PIRQS, ..Default::default() };
    assert_eq!(evop(&mut s, EVTCHNOP_BIND_PIRQ, &mut bp), Err(Errno::EINVAL));
    assert_eq!(event_channel_op(&mut s, Args([15, ARG, 0, 0, 0, 0])), Err(Errno::ENOSYS));
}

#[test]
fn bad_argument_pointers_are_efault_and_out_faults_keep_the_op_done() {
    let mut s = shim();
    for cmd in 0..=13 {
        assert_eq!(
            event_channel_op(&mut s, Args([cmd, UNMAPPED, 0, 0, 0, 0])),
            Err(Errno::EFAULT),
            "cmd {cmd}"
        );
    }
    // Readable but not writable: Xen allocates, then fails the copy back ("a mess to undo").
    let r = event_channel_op(&mut s, Args([EVTCHNOP_BIND_IPI, RO_PAGE, 0, 0, 0, 0]));
    assert_eq!(r, Err(Errno::EFAULT));
    assert_eq!(status(&mut s, DOMID_SELF, 3).unwrap().status, EVTCHNSTAT_IPI);
}

#[test]
fn vmm_raises_only_ports_bound_or_unbound_to_domain_0() {
    let mut s = shim();
    let frontend = alloc_unbound(&mut s, DOMID_SELF, 0).unwrap();
    let ipi = bind_ipi(&mut s, 0).unwrap();
    let own = alloc_unbound(&mut s, DOMID_SELF, DOMID_SELF).unwrap();
    for p in [1, frontend, ipi, own, 60, 900, 4095] {
        s.m.to_guest[p as usize / 64] |= 1 << (p % 64);
    }
    s.poll_sources();
    assert!(s.evtchn_is_pending(1) && s.evtchn_is_pending(frontend));
    assert!(!s.evtchn_is_pending(ipi) && !s.evtchn_is_pending(own) && !s.evtchn_is_pending(60));
    assert_eq!(s.m.stats.host_raised, 7);
    assert_eq!(s.ev.ignored_host_raises, 5);
    assert!(s.m.to_guest.iter().all(|&w| w == 0), "the mailbox is emptied");
}

#[test]
fn commands_are_c_ints() {
    let mut s = shim();
    let p = bind_ipi(&mut s, 0).unwrap();
    put(&mut s, ARG, &EvtchnSend { port: p });
    assert_eq!(event_channel_op(&mut s, Args([(1 << 32) | EVTCHNOP_SEND, ARG, 0, 0, 0, 0])), Ok(0));
    assert!(s.evtchn_is_pending(p));
}

#[test]
fn the_port_table_stays_small() {
    // The shim is built on its 64 KiB boot stack: keep the table a few KiB.
    assert!(core::mem::size_of::<EventChannels>() <= 4096 + 512, "{}", core::mem::size_of::<EventChannels>());
}

#[test]
fn packed_ports_decode_to_what_was_bound() {
    let mut s = shim();
    let unbound = alloc_unbound(&mut s, DOMID_SELF, 0x7fef).unwrap();
    let virq = bind_virq(&mut s, VIRQ_ARCH_7, 0).unwrap();
    let to_dom0 = bind_interdomain(&mut s, 0, 21).unwrap();
    assert_eq!(s.ev.channel(unbound).unwrap().state, PortState::Unbound { remote_dom: 0x7fef });
    assert_eq!(s.ev.channel(virq).unwrap().state, PortState::Virq(VIRQ_ARCH_7));
    assert_eq!(
        s.ev.channel(to_dom0).unwrap().state,
        PortState::Interdomain { remote_dom: 0, remote_port: 21 }
    );
    assert_eq!(s.ev.channel(2).unwrap().state, PortState::Interdomain { remote_dom: 0, remote_port: 11 });
}
