//! Host tests of `HYPERVISOR_sched_op` on the mock machine: shutdown and its code, block and
//! poll with every wake-up source, the watchdogs and the refused commands.

use super::*;
use crate::event::tests::{
    ack_upcall, alloc_unbound, bind_ipi, bind_virq, port_op, put, set_mask, shim, TestShim, ARG, DOMID,
    UNMAPPED,
};
use crate::testutil::{shim_with_guest, GUEST_VA};
use xen_abi::event::{EVTCHNOP_SEND, VIRQ_TIMER};
use xen_abi::xen::DOMID_SELF;

fn op<T: zerocopy::IntoBytes + zerocopy::Immutable>(
    s: &mut TestShim,
    cmd: u64,
    arg: &T,
) -> Result<u64, Errno> {
    put(s, ARG, arg);
    sched_op(s, Args([cmd, ARG, 0, 0, 0, 0]))
}

/// Ports for SCHEDOP_poll, after the argument at ARG.
const PORTS: u64 = ARG + 64;

fn poll(s: &mut TestShim, ports: &[u32], timeout: u64) -> Result<u64, Errno> {
    for (i, p) in ports.iter().enumerate() {
        put(s, PORTS + 4 * i as u64, p);
    }
    let arg = SchedPoll { ports: PORTS, nr_ports: ports.len() as u32, _pad: 0, timeout };
    op(s, SCHEDOP_POLL, &arg)
}

/// A shim with its upcall mask set, nothing pending, no periodic tick.
fn quiet_shim() -> TestShim {
    let mut s = shim();
    s.set_periodic(0);
    ack_upcall(&mut s);
    s.set_upcall_mask(1);
    s
}

#[test]
fn shutdown_tells_the_vmm_the_reason_and_ends_the_domain() {
    let mut s = shim_with_guest();
    let cr3 = s.cr3();
    mm::copy_to_guest(&mut s.m, cr3, GUEST_VA, &0x103u32.to_le_bytes()).unwrap();
    assert_eq!(sched_op(&mut s, Args([SCHEDOP_SHUTDOWN, GUEST_VA, 0, 0, 0, 0])), Ok(0));
    assert!(s.is_dead());
    assert_eq!(s.m.hostcalls[0].0, HC_SHUTDOWN);
    assert_eq!(s.m.hostcalls[0].1[0], 3, "reason is truncated to u8 as Xen does");
}

#[test]
fn shutdown_with_bad_pointer_is_efault_and_domain_lives() {
    let mut s = shim_with_guest();
    assert_eq!(sched_op(&mut s, Args([SCHEDOP_SHUTDOWN, 0x10, 0, 0, 0, 0])), Err(Errno::EFAULT));
    assert!(!s.is_dead());
    assert!(s.m.hostcalls.is_empty());
    assert_eq!(sched_op(&mut s, Args([SCHEDOP_YIELD, 0, 0, 0, 0, 0])), Ok(0));
    assert_eq!(sched_op(&mut s, Args([99, 0, 0, 0, 0, 0])), Err(Errno::ENOSYS));
}

#[test]
fn shutdown_code_set_first_wins_over_the_shutdown_reason() {
    let mut s = shim();
    assert_eq!(op(&mut s, SCHEDOP_SHUTDOWN_CODE, &SchedShutdown { reason: SHUTDOWN_POWEROFF }), Ok(0));
    assert_eq!(op(&mut s, SCHEDOP_SHUTDOWN_CODE, &SchedShutdown { reason: SHUTDOWN_CRASH }), Ok(0));
    assert!(!s.is_dead(), "shutdown_code does not shut down");
    assert_eq!(op(&mut s, SCHEDOP_SHUTDOWN, &SchedShutdown { reason: SHUTDOWN_REBOOT }), Ok(0));
    assert_eq!(s.m.hostcalls.last().unwrap().1[0], u64::from(SHUTDOWN_POWEROFF));
    assert_eq!(sched_op(&mut s, Args([SCHEDOP_SHUTDOWN_CODE, UNMAPPED, 0, 0, 0, 0])), Err(Errno::EFAULT));
}

#[test]
fn block_returns_at_once_with_an_event_pending_and_clears_the_mask() {
    let mut s = quiet_shim();
    let p = bind_ipi(&mut s, 0).unwrap();
    port_op(&mut s, EVTCHNOP_SEND, p).unwrap();
    assert_eq!(sched_op(&mut s, Args([SCHEDOP_BLOCK, 0, 0, 0, 0, 0])), Ok(0));
    assert_eq!(s.m.waits, 0);
    assert_eq!(s.upcall_mask(), 0);
    assert!(s.upcall_deliverable());
}

#[test]
fn block_sleeps_until_the_timer_raises_virq_timer() {
    let mut s = quiet_shim();
    let t = bind_virq(&mut s, VIRQ_TIMER, 0).unwrap();
    let deadline = s.now_ns() + 5_000;
    s.set_singleshot(deadline);
    assert_eq!(sched_op(&mut s, Args([SCHEDOP_BLOCK, 0, 0, 0, 0, 0])), Ok(0));
    assert!(s.m.waits >= 1);
    assert!(s.now_ns() >= deadline);
    assert!(s.evtchn_is_pending(t) && s.upcall_deliverable());
    let r = s.runstate_now();
    assert_eq!(r.state, RUNSTATE_RUNNING);
    assert!(r.time[RUNSTATE_BLOCKED as usize] >= 5_000 - 1, "{r:?}");
}

#[test]
fn block_wakes_on_a_port_the_vmm_raises() {
    let mut s = quiet_shim();
    s.m.host_events_at_wait.push((3, 1));
    sched_op(&mut s, Args([SCHEDOP_BLOCK, 0, 0, 0, 0, 0])).unwrap();
    assert_eq!(s.m.waits, 3);
    assert!(s.evtchn_is_pending(1));
}

#[test]
fn block_ignores_masked_ports() {
    let mut s = quiet_shim();
    set_mask(&mut s, 1, true);
    s.m.host_events_at_wait.push((1, 1));
    s.m.host_events_at_wait.push((2, 2));
    sched_op(&mut s, Args([SCHEDOP_BLOCK, 0, 0, 0, 0, 0])).unwrap();
    assert_eq!(s.m.waits, 2, "masked port 1 did not wake; port 2 did");
    assert!(s.evtchn_is_pending(1) && s.evtchn_is_pending(2));
}

#[test]
fn periodic_tick_sleeps_while_blocked_and_fires_on_wake_up() {
    let mut s = quiet_shim();
    let t = bind_virq(&mut s, VIRQ_TIMER, 0).unwrap();
    s.set_periodic(crate::time::MILLISECS);
    let start = s.now_ns();
    s.set_singleshot(start + 5 * crate::time::MILLISECS);
    sched_op(&mut s, Args([SCHEDOP_BLOCK, 0, 0, 0, 0, 0])).unwrap();
    assert_eq!(s.m.waits, 1, "no 1 ms ticks while blocked");
    assert!(s.evtchn_is_pending(t));
    assert_eq!(s.vcpu.time.periodic_last, s.now_ns(), "the overdue tick ran on wake-up");
    assert_eq!(s.m.timer, Some(crate::time::MILLISECS as u32), "ticking again");
}

#[test]
fn block_ends_when_a_watchdog_kills_the_domain() {
    let mut s = quiet_shim();
    assert_eq!(op(&mut s, SCHEDOP_WATCHDOG, &SchedWatchdog { id: 0, timeout: 2 }), Ok(1));
    sched_op(&mut s, Args([SCHEDOP_BLOCK, 0, 0, 0, 0, 0])).unwrap();
    assert!(s.is_dead());
    assert_eq!(s.m.hostcalls.last().unwrap().1[0], u64::from(SHUTDOWN_WATCHDOG));
    assert!(s.now_ns() >= 2 * crate::time::NANOSECS_PER_SEC);
}

#[test]
fn poll_checks_count_pointer_and_ports_in_xens_order() {
    let mut s = quiet_shim();
    let arg = SchedPoll { ports: PORTS, nr_ports: 129, _pad: 0, timeout: 1 };
    assert_eq!(op(&mut s, SCHEDOP_POLL, &arg), Err(Errno::EINVAL));
    let arg = SchedPoll { ports: 0xffff_8000_0000_0000, nr_ports: 1, _pad: 0, timeout: 1 };
    assert_eq!(op(&mut s, SCHEDOP_POLL, &arg), Err(Errno::EFAULT), "hypervisor hole");
    let arg = SchedPoll { ports: UNMAPPED, nr_ports: 1, _pad: 0, timeout: 1 };
    assert_eq!(op(&mut s, SCHEDOP_POLL, &arg), Err(Errno::EFAULT), "unmapped");
    assert_eq!(sched_op(&mut s, Args([SCHEDOP_POLL, UNMAPPED, 0, 0, 0, 0])), Err(Errno::EFAULT));
    assert_eq!(poll(&mut s, &[3, 4096], 1), Err(Errno::EINVAL));
    // A pending port ends the scan before the bad one.
    let p = bind_ipi(&mut s, 0).unwrap();
    port_op(&mut s, EVTCHNOP_SEND, p).unwrap();
    assert_eq!(poll(&mut s, &[p, 4096], 0), Ok(0));
    assert_eq!(s.m.waits, 0);
}

#[test]
fn poll_returns_after_the_timeout_with_nothing_pending() {
    let mut s = quiet_shim();
    let deadline = s.now_ns() + 7_000;
    assert_eq!(poll(&mut s, &[3], deadline), Ok(0));
    assert!(s.now_ns() >= deadline);
    assert_eq!(s.vcpu.time.poll_deadline, None);
    assert_eq!(s.upcall_mask(), 1, "poll leaves the mask alone");
    assert!(s.runstate_now().time[RUNSTATE_BLOCKED as usize] >= 7_000 - 1);
    assert_eq!(poll(&mut s, &[3], 1), Ok(0), "a past timeout returns without sleeping");
}

#[test]
fn poll_returns_early_when_a_listed_port_is_raised() {
    let mut s = quiet_shim();
    let p = alloc_unbound(&mut s, DOMID_SELF, 0).unwrap();
    s.m.host_events_at_wait.push((1, p));
    let start = s.now_ns();
    assert_eq!(poll(&mut s, &[p], start + 1_000_000_000), Ok(0));
    assert_eq!(s.m.waits, 1);
    assert!(s.now_ns() < start + 1_000_000_000);
    assert!(s.evtchn_is_pending(p));
}

#[test]
fn poll_on_one_port_ignores_other_masked_ports_but_several_ports_wake_on_any() {
    let mut s = quiet_shim();
    let p = alloc_unbound(&mut s, DOMID_SELF, 0).unwrap();
    set_mask(&mut s, 1, true);
    s.m.host_events_at_wait.push((1, 1));
    s.m.host_events_at_wait.push((2, p));
    assert_eq!(poll(&mut s, &[p], 0), Ok(0));
    assert_eq!(s.m.waits, 2, "masked port 1 raised no upcall, so only port {p} woke the poll");
    let mut s = quiet_shim();
    let p = alloc_unbound(&mut s, DOMID_SELF, 0).unwrap();
    let q = alloc_unbound(&mut s, DOMID_SELF, 0).unwrap();
    set_mask(&mut s, 1, true);
    s.m.host_events_at_wait.push((1, 1));
    assert_eq!(poll(&mut s, &[p, q], 0), Ok(0));
    assert_eq!(s.m.waits, 1, "with several ports, any raise wakes (Xen's evtchn_check_pollers)");
}

#[test]
fn poll_wakes_when_an_upcall_becomes_pending_and_returns_at_once_if_deliverable() {
    let mut s = quiet_shim();
    s.m.host_events_at_wait.push((2, 2));
    assert_eq!(poll(&mut s, &[3], 0), Ok(0));
    assert_eq!(s.m.waits, 2, "vcpu_mark_events_pending kicks the poller");
    s.set_upcall_mask(0);
    let waits = s.m.waits;
    assert_eq!(poll(&mut s, &[3], 0), Ok(0));
    assert_eq!(s.m.waits, waits);
}

#[test]
fn remote_shutdown_and_pin_override_are_refused_to_a_domu() {
    let mut s = shim();
    let rs = |d| SchedRemoteShutdown { domain_id: d, _pad: 0, reason: SHUTDOWN_POWEROFF };
    assert_eq!(op(&mut s, SCHEDOP_REMOTE_SHUTDOWN, &rs(0)), Err(Errno::EPERM));
    assert_eq!(op(&mut s, SCHEDOP_REMOTE_SHUTDOWN, &rs(DOMID)), Err(Errno::EPERM));
    assert_eq!(op(&mut s, SCHEDOP_REMOTE_SHUTDOWN, &rs(DOMID_SELF)), Err(Errno::ESRCH));
    assert_eq!(op(&mut s, SCHEDOP_REMOTE_SHUTDOWN, &rs(5)), Err(Errno::ESRCH));
    assert_eq!(sched_op(&mut s, Args([SCHEDOP_REMOTE_SHUTDOWN, UNMAPPED, 0, 0, 0, 0])), Err(Errno::EFAULT));
    assert_eq!(op(&mut s, SCHEDOP_PIN_OVERRIDE, &SchedPinOverride { pcpu: 0 }), Err(Errno::EPERM));
    assert_eq!(sched_op(&mut s, Args([SCHEDOP_PIN_OVERRIDE, UNMAPPED, 0, 0, 0, 0])), Err(Errno::EPERM));
    assert!(!s.is_dead());
}

#[test]
fn watchdogs_allocate_rearm_and_free_like_xen() {
    let mut s = shim();
    let wd = |s: &mut TestShim, id, timeout| op(s, SCHEDOP_WATCHDOG, &SchedWatchdog { id, timeout });
    assert_eq!(wd(&mut s, 0, 30), Ok(1));
    assert_eq!(wd(&mut s, 0, 30), Ok(2));
    assert_eq!(wd(&mut s, 0, 30), Err(Errno::ENOSPC));
    assert_eq!(wd(&mut s, 3, 30), Err(Errno::EINVAL));
    assert_eq!(wd(&mut s, 2, 0), Ok(0), "timeout 0 frees it");
    assert_eq!(wd(&mut s, 2, 5), Err(Errno::EINVAL), "freed");
    assert_eq!(wd(&mut s, 1, 60), Ok(0), "re-armed");
    s.m.tsc += 59 * crate::time::NANOSECS_PER_SEC;
    s.poll_sources();
    assert!(!s.is_dead());
    s.m.tsc += crate::time::NANOSECS_PER_SEC;
    s.poll_sources();
    assert!(s.is_dead());
    assert_eq!(sched_op(&mut s, Args([SCHEDOP_WATCHDOG, UNMAPPED, 0, 0, 0, 0])), Err(Errno::EFAULT));
}

#[test]
fn poll_on_no_ports_sleeps_until_the_timeout() {
    let mut s = quiet_shim();
    let deadline = s.now_ns() + 10_000;
    assert_eq!(poll(&mut s, &[], deadline), Ok(0));
    assert!(s.now_ns() >= deadline);
}
