//! `timer`: the pvclock, single-shot and periodic timers, `set_timer_op`, `SCHEDOP_block` and
//! `SCHEDOP_poll` with timeouts, the runstate and secondary time areas, and the vCPU ops a
//! 1-vCPU domU sees, measured with the pvclock of its own registered `vcpu_info`.
//!
//! Tolerance: a timer event must come no earlier than its deadline and at most [`LATE`]
//! (100 ms) after it; a poll timeout no earlier than the timeout and at most [`LATE`] after;
//! "at once" means within [`LATE`] where the alternative is [`NEVER`] (2 s). Generous on
//! purpose: the nested test host's clocks are slow, its exits expensive, and its vCPU may be
//! preempted on a busy machine. Nothing is timed across a console write.
//!
//! A timer port stays pending once raised (this kernel cannot clear shared_info bits without
//! mapping it), so every check binds VIRQ_TIMER afresh (`close` clears the pending bit).
#![no_std]
#![no_main]

use xenvmm_test_guests::evtchn;
use xenvmm_test_guests::hypercall::hypercall3;
use xenvmm_test_guests::time::{self, VcpuInfoArea, MS};
use xenvmm_test_guests::xen_abi::callback::{CALLBACKF_MASK_EVENTS, CALLBACKTYPE_EVENT};
use xenvmm_test_guests::xen_abi::errno::Errno;
use xenvmm_test_guests::xen_abi::event::VIRQ_TIMER;
use xenvmm_test_guests::xen_abi::hypercall::HYPERVISOR_SCHED_OP;
use xenvmm_test_guests::xen_abi::sched::*;
use xenvmm_test_guests::xen_abi::vcpu::*;
use xenvmm_test_guests::xen_abi::xen::{StartInfo, VcpuTimeInfo, XEN_PVCLOCK_TSC_STABLE_BIT};
use xenvmm_test_guests::{println, sched, traps, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

/// How late a timer may be.
const LATE: u64 = 100 * MS;
/// A timer a little in the future.
const SOON: u64 = 20 * MS;
/// A poll timeout that means "the event never came".
const NEVER: u64 = 2_000 * MS;
/// An address no part of this kernel lives at.
const UNMAPPED: u64 = 0x0000_1000_0000_0000;

static mut SECONDARY_TIME: VcpuTimeInfo = VcpuTimeInfo {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad1: [0; 2],
};
static mut RUNSTATE: VcpuRunstateInfo =
    VcpuRunstateInfo { state: -1, _pad0: 0, state_entry_time: 0, time: [0; 4] };
static CONTEXT: [u8; VCPU_GUEST_CONTEXT_SIZE] = [0; VCPU_GUEST_CONTEXT_SIZE];

fn neg(e: Errno) -> i64 {
    -i64::from(e.0)
}

fn sched_op<T>(cmd: u64, arg: &T) -> i64 {
    // SAFETY: the sched ops used here only read their argument struct.
    unsafe { hypercall3(HYPERVISOR_SCHED_OP, cmd, arg as *const T as u64, 0) }
}

fn guest_main(si: &'static StartInfo) -> ! {
    println!("timer: time, timers, block and poll");
    let mut c = Checks::new("timer");
    c.eq("VCPUOP_stop_periodic_timer", time::vcpu_op(VCPUOP_STOP_PERIODIC_TIMER, 0, 0), 0);
    let vi = match VcpuInfoArea::register(si) {
        Ok(vi) => vi,
        Err(rc) => {
            println!("not ok - register_vcpu_info returned {rc}");
            sched::shutdown(SHUTDOWN_CRASH);
        }
    };
    vi.set_upcall_mask(1);
    vi.ack();
    clock_checks(&mut c, &vi);
    vcpu_checks(&mut c);
    singleshot_checks(&mut c, &vi);
    block_checks(&mut c, &vi);
    poll_checks(&mut c, &vi);
    periodic_checks(&mut c, &vi);
    runstate_checks(&mut c, &vi);
    sched_checks(&mut c);
    if c.summary() != 0 {
        sched::shutdown(SHUTDOWN_CRASH);
    }
    sched::shutdown(SHUTDOWN_POWEROFF)
}

fn clock_checks(c: &mut Checks, vi: &VcpuInfoArea) {
    let t = vi.time_record();
    println!("# vcpu_time_info {t:?}");
    c.check(
        "time record: version even",
        t.version.is_multiple_of(2) && t.version > 0,
        format_args!("{}", t.version),
    );
    c.eq("time record: TSC_STABLE", t.flags & XEN_PVCLOCK_TSC_STABLE_BIT, XEN_PVCLOCK_TSC_STABLE_BIT);
    c.check("time record: mul_frac set", t.tsc_to_system_mul != 0, format_args!("0"));
    // Implied TSC frequency: 2^32 * 10^9 / mul, shifted back.
    let hz = ((1u128 << 32) * 1_000_000_000 / u128::from(t.tsc_to_system_mul.max(1))) as u64;
    let hz = if t.tsc_shift >= 0 { hz >> t.tsc_shift } else { hz << -t.tsc_shift };
    println!("# TSC {} kHz", hz / 1000);
    c.check(
        "implied TSC frequency is plausible (10 MHz .. 10 GHz)",
        (10_000_000..10_000_000_000).contains(&hz),
        format_args!("{hz} Hz"),
    );
    let a = vi.now();
    let b = vi.now();
    c.check("pvclock is monotonic", b >= a, format_args!("{a} then {b}"));
    // SAFETY: the hypervisor writes one vcpu_time_info into SECONDARY_TIME, a static of ours.
    let area = VcpuRegisterTimeMemoryArea { addr: core::ptr::addr_of!(SECONDARY_TIME) as u64 };
    c.eq(
        "register_vcpu_time_memory_area",
        time::vcpu_op(VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA, 0, &area as *const _ as u64),
        0,
    );
    // SAFETY: a static written by the hypervisor; read volatile.
    let sec = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(SECONDARY_TIME)) };
    c.check(
        "secondary time area has the same record, version even",
        sec.version.is_multiple_of(2)
            && sec.tsc_timestamp == t.tsc_timestamp
            && sec.tsc_to_system_mul == t.tsc_to_system_mul,
        format_args!("{sec:?}"),
    );
    let tsc = time::rdtsc();
    let (a, b) = (time::pvclock(&sec, tsc), time::pvclock(&t, tsc));
    c.eq("both records give the same time", a, b);
    let bad = VcpuRegisterTimeMemoryArea { addr: 0xffff_8000_0000_0000 };
    c.eq(
        "time area in the hypervisor hole: -EFAULT",
        time::vcpu_op(VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA, 0, &bad as *const _ as u64),
        neg(Errno::EFAULT),
    );
}

fn vcpu_checks(c: &mut Checks) {
    c.eq("is_up(0)", time::vcpu_op(VCPUOP_IS_UP, 0, 0), 1);
    c.eq("is_up(1): -ENOENT", time::vcpu_op(VCPUOP_IS_UP, 1, 0), neg(Errno::ENOENT));
    c.eq("is_up(8191): -ENOENT", time::vcpu_op(VCPUOP_IS_UP, 8191, 0), neg(Errno::ENOENT));
    c.eq("up(0) of a running vCPU", time::vcpu_op(VCPUOP_UP, 0, 0), 0);
    c.eq(
        "initialise(0) of an initialised vCPU: -EEXIST",
        time::vcpu_op(VCPUOP_INITIALISE, 0, CONTEXT.as_ptr() as u64),
        neg(Errno::EEXIST),
    );
    c.eq(
        "initialise with a bad pointer: -EFAULT",
        time::vcpu_op(VCPUOP_INITIALISE, 0, UNMAPPED),
        neg(Errno::EFAULT),
    );
    c.eq("set_singleshot_timer on vCPU 1: -ENOENT", time::set_singleshot(1, 1, 0), neg(Errno::ENOENT));
    c.eq(
        "send_nmi with an argument: -EINVAL",
        time::vcpu_op(VCPUOP_SEND_NMI, 0, UNMAPPED),
        neg(Errno::EINVAL),
    );
    c.eq("get_physid of a domU: -EINVAL", time::vcpu_op(VCPUOP_GET_PHYSID, 0, UNMAPPED), neg(Errno::EINVAL));
    c.eq("periodic timer below 1 ms: -EINVAL", time::set_periodic(MS - 1), neg(Errno::EINVAL));
    c.eq("unknown VCPUOP 16: -ENOSYS", time::vcpu_op(16, 0, 0), neg(Errno::ENOSYS));
}

/// A fresh VIRQ_TIMER port (closing the last one cleared its pending bit).
fn timer_port() -> u32 {
    match evtchn::bind_virq(VIRQ_TIMER, 0) {
        Ok(p) => p,
        Err(rc) => {
            println!("not ok - bind_virq(VIRQ_TIMER) returned {rc}");
            sched::shutdown(SHUTDOWN_CRASH)
        }
    }
}

/// Polls `port` until it is pending or `NEVER` passes; returns the system time then.
fn wait_port(vi: &VcpuInfoArea, port: u32) -> u64 {
    time::poll(&[port], vi.now() + NEVER);
    vi.now()
}

fn on_time(c: &mut Checks, name: &str, deadline: u64, fired: u64) {
    c.check(
        name,
        fired >= deadline && fired - deadline <= LATE,
        format_args!("fired {} ns after the deadline", fired as i64 - deadline as i64),
    );
}

fn singleshot_checks(c: &mut Checks, vi: &VcpuInfoArea) {
    let p = timer_port();
    vi.ack();
    let deadline = vi.now() + SOON;
    let rc = time::set_singleshot(0, deadline, 0);
    let fired = wait_port(vi, p);
    c.eq("set_singleshot_timer 20 ms ahead", rc, 0);
    on_time(c, "single-shot timer fires on time (within 100 ms, never early)", deadline, fired);
    c.eq("VIRQ_TIMER set the selector bit", vi.pending_sel() & (1 << (p / 64)) != 0, true);
    c.eq("...and evtchn_upcall_pending", vi.upcall_pending(), 1);
    evtchn::close(p);

    let p = timer_port();
    let t0 = vi.now();
    let rc = time::set_singleshot(0, t0 - MS, 0);
    let fired = wait_port(vi, p);
    c.eq("set_singleshot_timer in the past", rc, 0);
    c.check("a past deadline fires at once", fired - t0 < LATE, format_args!("after {} ns", fired - t0));
    evtchn::close(p);

    let p = timer_port();
    let t0 = vi.now();
    let rc = time::set_timer_op(t0 - MS);
    let fired = wait_port(vi, p);
    c.eq("set_timer_op in the past", rc, 0);
    c.check(
        "set_timer_op: a past deadline fires at once",
        fired - t0 < LATE,
        format_args!("after {} ns", fired - t0),
    );
    evtchn::close(p);

    c.eq(
        "VCPU_SSHOTTMR_future with a past deadline: -ETIME",
        time::set_singleshot(0, vi.now() - MS, VCPU_SSHOTTMR_FUTURE),
        neg(Errno::ETIME),
    );

    let p = timer_port();
    let deadline = vi.now() + SOON;
    let rc = time::set_timer_op(deadline);
    let fired = wait_port(vi, p);
    c.eq("set_timer_op 20 ms ahead", rc, 0);
    on_time(c, "set_timer_op fires on time", deadline, fired);
    evtchn::close(p);

    // Cancelled timers: the poll runs into its timeout.
    for (name, cancel) in [("stop_singleshot_timer", 0), ("set_timer_op(0)", 1)] {
        let p = timer_port();
        let t0 = vi.now();
        time::set_singleshot(0, t0 + SOON, 0);
        let rc = if cancel == 0 {
            time::vcpu_op(VCPUOP_STOP_SINGLESHOT_TIMER, 0, 0)
        } else {
            time::set_timer_op(0)
        };
        let timeout = t0 + 3 * SOON;
        time::poll(&[p], timeout);
        let back = vi.now();
        c.eq(name, rc, 0);
        on_time(c, "a cancelled timer never fires (poll times out)", timeout, back);
        evtchn::close(p);
    }
}

/// Upcalls the event callback took, and the upcall mask they saw when delivered.
static mut UPCALLS: u32 = 0;
static mut UPCALL_MASK_SEEN: u8 = 0;
/// The registered vcpu_info, for the event callback.
static mut VCPU_INFO: Option<VcpuInfoArea> = None;

/// The event callback: what Linux's does first (clear `evtchn_upcall_pending` and the
/// selector), count, and `HYPERVISOR_iret` back (which restores the mask from RFLAGS.IF).
fn on_event(_f: &traps::TrapFrame, _rax: &mut u64) -> traps::Action {
    // SAFETY: one vCPU and events masked while the callback runs: nothing else touches these.
    unsafe {
        if let Some(vi) = *core::ptr::addr_of!(VCPU_INFO) {
            UPCALL_MASK_SEEN = vi.upcall_mask();
            vi.ack();
        }
        UPCALLS += 1;
    }
    traps::Action::Iret
}

fn upcalls() -> u32 {
    // SAFETY: a plain read on the only vCPU.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(UPCALLS)) }
}

/// `SCHEDOP_block` unmasks events, so an upcall comes on the way out: the event callback
/// must take it.
fn block_checks(c: &mut Checks, vi: &VcpuInfoArea) {
    // SAFETY: set before the callback can run (events are masked).
    unsafe { VCPU_INFO = Some(*vi) };
    traps::set_handler(traps::VEC_EVENT, Some(on_event));
    let rc = traps::register_callback(
        CALLBACKTYPE_EVENT,
        CALLBACKF_MASK_EVENTS,
        traps::stub_addr(traps::VEC_EVENT),
    );
    c.eq("callback_op: register the event callback", rc, 0);
    let p = timer_port();
    vi.ack();
    let before = upcalls();
    let deadline = vi.now() + SOON;
    time::set_singleshot(0, deadline, 0);
    let rc = time::block();
    let woke = vi.now();
    c.eq("SCHEDOP_block", rc, 0);
    on_time(c, "block wakes on the timer event", deadline, woke);
    c.eq("the timer event was delivered as one upcall", upcalls(), before + 1);
    // SAFETY: a plain read on the only vCPU.
    c.eq("the upcall came with events masked", unsafe { UPCALL_MASK_SEEN }, 1);
    c.eq("iret restored the unmasked state of block", vi.upcall_mask(), 0);
    vi.set_upcall_mask(1);
    let Ok(ipi) = evtchn::bind_ipi(0) else { return };
    evtchn::send(ipi);
    c.eq("a masked event is not delivered", upcalls(), before + 1);
    let t0 = vi.now();
    let rc = time::block();
    let dt = vi.now() - t0;
    c.eq("SCHEDOP_block with an event pending", rc, 0);
    c.check("...returns at once", dt < LATE, format_args!("after {dt} ns"));
    c.eq("...and the event is delivered", upcalls(), before + 2);
    vi.set_upcall_mask(1);
    vi.ack();
    evtchn::close(ipi);
    evtchn::close(p);
}

fn poll_checks(c: &mut Checks, vi: &VcpuInfoArea) {
    let p = timer_port();
    let timeout = vi.now() + 30 * MS;
    let rc = time::poll(&[p], timeout);
    let back = vi.now();
    c.eq("SCHEDOP_poll with nothing pending", rc, 0);
    on_time(c, "poll returns after its timeout, not before", timeout, back);
    c.eq("poll left the upcall mask set", vi.upcall_mask(), 1);

    let t0 = vi.now();
    let rc = time::poll(&[p], t0 - MS);
    let dt = vi.now() - t0;
    c.eq("poll with a past timeout", rc, 0);
    c.check("...returns at once", dt < LATE, format_args!("after {dt} ns"));

    let q = evtchn::bind_ipi(0).unwrap_or(0);
    let deadline = vi.now() + SOON;
    time::set_singleshot(0, deadline, 0);
    time::poll(&[q, p], deadline + NEVER);
    let back = vi.now();
    on_time(c, "poll returns early when a listed port is raised", deadline, back);
    evtchn::send(q);
    let t0 = vi.now();
    let rc = time::poll(&[q], t0 + NEVER);
    let dt = vi.now() - t0;
    c.eq("poll on a pending port", rc, 0);
    c.check("...returns at once", dt < LATE, format_args!("after {dt} ns"));
    evtchn::close(q);
    evtchn::close(p);

    let too_many = [0u32; 129];
    let arg = SchedPoll { ports: too_many.as_ptr() as u64, nr_ports: 129, _pad: 0, timeout: 1 };
    c.eq("poll on 129 ports: -EINVAL", time::poll_raw(&arg), neg(Errno::EINVAL));
    let arg = SchedPoll { ports: UNMAPPED, nr_ports: 1, _pad: 0, timeout: 1 };
    c.eq("poll on an unmapped port list: -EFAULT", time::poll_raw(&arg), neg(Errno::EFAULT));
    c.eq("poll on port 4096: -EINVAL", time::poll(&[4096], 1), neg(Errno::EINVAL));
}

/// Spins (running, not blocked) until `evtchn_upcall_pending` is set or `limit` ns pass;
/// returns how long it took.
fn spin_for_upcall(vi: &VcpuInfoArea, limit: u64) -> u64 {
    let t0 = vi.now();
    while vi.upcall_pending() == 0 && vi.now() - t0 < limit {
        core::hint::spin_loop();
    }
    vi.now() - t0
}

/// The periodic timer ticks only while the vCPU runs: Xen stops it while the vCPU is blocked
/// and runs an overdue tick when it wakes.
fn periodic_checks(c: &mut Checks, vi: &VcpuInfoArea) {
    let p = timer_port();
    vi.ack();
    let rc = time::set_periodic(10 * MS);
    let dt = spin_for_upcall(vi, 10 * MS + LATE);
    c.eq("set_periodic_timer 10 ms", rc, 0);
    c.check(
        "periodic timer ticks within a period while running",
        vi.upcall_pending() == 1,
        format_args!("none after {dt} ns"),
    );
    evtchn::close(p);
    let p = timer_port();
    vi.ack();
    let dt = spin_for_upcall(vi, 10 * MS + LATE);
    c.check(
        "...and again within the next period",
        vi.upcall_pending() == 1,
        format_args!("none after {dt} ns"),
    );
    evtchn::close(p);
    let p = timer_port();
    vi.ack();
    let timeout = vi.now() + 30 * MS;
    time::poll(&[p], timeout);
    let back = vi.now();
    on_time(c, "no periodic tick wakes a blocked poll", timeout, back);
    c.eq("the overdue tick fires on wake-up", vi.upcall_pending(), 1);
    c.eq("stop_periodic_timer", time::vcpu_op(VCPUOP_STOP_PERIODIC_TIMER, 0, 0), 0);
    evtchn::close(p);
    vi.ack();
}

fn runstate_checks(c: &mut Checks, vi: &VcpuInfoArea) {
    let mut r = VcpuRunstateInfo::default();
    c.eq("get_runstate_info", time::get_runstate_info(&mut r), 0);
    c.eq("runstate: running", r.state, RUNSTATE_RUNNING);
    c.check(
        "runstate: time blocked in block/poll is accounted",
        r.time[RUNSTATE_BLOCKED as usize] >= 50 * MS && r.time[RUNSTATE_RUNNING as usize] > 0,
        format_args!("{r:?}"),
    );
    let area = VcpuRegisterRunstateMemoryArea { addr: core::ptr::addr_of!(RUNSTATE) as u64 };
    c.eq(
        "register_runstate_memory_area",
        time::vcpu_op(VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, 0, &area as *const _ as u64),
        0,
    );
    // SAFETY: a static the hypervisor writes; read volatile.
    let r0 = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(RUNSTATE)) };
    c.eq("the area is filled at once: running", r0.state, RUNSTATE_RUNNING);
    let t0 = vi.now();
    let rc = time::poll(&[], t0 + 10 * MS);
    let dt = vi.now() - t0;
    c.check(
        "poll on no ports sleeps until its timeout",
        rc == 0 && dt >= 10 * MS,
        format_args!("rc {rc} after {dt} ns"),
    );
    // SAFETY: as above.
    let r1 = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(RUNSTATE)) };
    let slept = r1.time[RUNSTATE_BLOCKED as usize] - r0.time[RUNSTATE_BLOCKED as usize];
    c.check(
        "the area follows a poll's blocked time",
        r1.state == RUNSTATE_RUNNING && slept > 0 && slept <= dt,
        format_args!("blocked {slept} ns of a {dt} ns poll: {r0:?} then {r1:?}"),
    );
    let bad = VcpuRegisterRunstateMemoryArea { addr: 0xffff_8000_0000_0000 };
    c.eq(
        "runstate area in the hypervisor hole: -EFAULT",
        time::vcpu_op(VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, 0, &bad as *const _ as u64),
        neg(Errno::EFAULT),
    );
    c.eq(
        "get_runstate_info to a bad pointer: -EFAULT",
        time::vcpu_op(VCPUOP_GET_RUNSTATE_INFO, 0, UNMAPPED),
        neg(Errno::EFAULT),
    );
}

fn sched_checks(c: &mut Checks) {
    let rs = |domain_id| SchedRemoteShutdown { domain_id, _pad: 0, reason: SHUTDOWN_POWEROFF };
    c.eq("remote_shutdown of domain 0: -EPERM", sched_op(SCHEDOP_REMOTE_SHUTDOWN, &rs(0)), neg(Errno::EPERM));
    c.eq(
        "remote_shutdown of no such domain: -ESRCH",
        sched_op(SCHEDOP_REMOTE_SHUTDOWN, &rs(9)),
        neg(Errno::ESRCH),
    );
    c.eq(
        "pin_override: -EPERM",
        sched_op(SCHEDOP_PIN_OVERRIDE, &SchedPinOverride { pcpu: 0 }),
        neg(Errno::EPERM),
    );
    let wd = |id, timeout| SchedWatchdog { id, timeout };
    c.eq("watchdog: allocate", sched_op(SCHEDOP_WATCHDOG, &wd(0, 3600)), 1);
    c.eq("watchdog: allocate another", sched_op(SCHEDOP_WATCHDOG, &wd(0, 3600)), 2);
    c.eq("watchdog: no third", sched_op(SCHEDOP_WATCHDOG, &wd(0, 3600)), neg(Errno::ENOSPC));
    c.eq("watchdog: id 3: -EINVAL", sched_op(SCHEDOP_WATCHDOG, &wd(3, 1)), neg(Errno::EINVAL));
    c.eq("watchdog: free 1", sched_op(SCHEDOP_WATCHDOG, &wd(1, 0)), 0);
    c.eq("watchdog: free 2", sched_op(SCHEDOP_WATCHDOG, &wd(2, 0)), 0);
    c.eq("watchdog: re-arm a freed one: -EINVAL", sched_op(SCHEDOP_WATCHDOG, &wd(2, 5)), neg(Errno::EINVAL));
    c.eq("SCHEDOP_yield", sched_op(SCHEDOP_YIELD, &0u8), 0);
}
