//! `events`: every `EVTCHNOP_*` a domU uses, positive and negative, with Xen's errnos; the
//! ports the VMM binds to domain 0 before boot; and upcall delivery through the event callback:
//! a port masked in shared_info raises nothing until `EVTCHNOP_unmask`, and an upcall held by
//! `evtchn_upcall_mask` comes on the way out of the first hypercall or trap after the mask is
//! cleared, at that instruction.
//!
//! Pending and mask bits are read and written in shared_info, which this kernel maps with
//! `update_va_mapping` as Linux does. Ends with `SCHEDOP_shutdown_code(poweroff)` followed by
//! `SCHEDOP_shutdown(reboot)`: the domain must power off (exit 0), proving the code wins.
#![no_std]
#![no_main]

use core::arch::asm;
use core::ptr::{addr_of, addr_of_mut};
use xenvmm_test_guests::emul::forced_cpuid;
use xenvmm_test_guests::evtchn::{self, SharedInfoMap};
use xenvmm_test_guests::hypercall::hypercall3;
use xenvmm_test_guests::time::{self, VcpuInfoArea};
use xenvmm_test_guests::traps::{self, TrapFrame};
use xenvmm_test_guests::xen_abi::callback::{CALLBACKF_MASK_EVENTS, CALLBACKTYPE_EVENT};
use xenvmm_test_guests::xen_abi::errno::Errno;
use xenvmm_test_guests::xen_abi::event::*;
use xenvmm_test_guests::xen_abi::hypercall::{
    HYPERVISOR_EVENT_CHANNEL_OP, HYPERVISOR_SCHED_OP, HYPERVISOR_XEN_VERSION,
};
use xenvmm_test_guests::xen_abi::sched::{
    SchedShutdown, SCHEDOP_SHUTDOWN_CODE, SHUTDOWN_CRASH, SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT,
};
use xenvmm_test_guests::xen_abi::vcpu::VCPUOP_STOP_PERIODIC_TIMER;
use xenvmm_test_guests::xen_abi::xen::{StartInfo, DOMID_SELF};
use xenvmm_test_guests::{println, sched, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

/// An address no part of this kernel lives at.
const UNMAPPED: u64 = 0x0000_1000_0000_0000;

fn neg(e: Errno) -> i64 {
    -i64::from(e.0)
}

#[derive(Clone, Copy)]
struct Env {
    vi: VcpuInfoArea,
    shinfo: SharedInfoMap,
    domid: u16,
}

impl Env {
    fn pending(&self, port: u32) -> bool {
        self.shinfo.pending(port)
    }
}

fn guest_main(si: &'static StartInfo) -> ! {
    println!("events: event channels");
    let mut c = Checks::new("events");
    // As Linux at time_init: no 100 Hz tick to wake the polls below.
    c.eq("VCPUOP_stop_periodic_timer", time::vcpu_op(VCPUOP_STOP_PERIODIC_TIMER, 0, 0), 0);
    let vi = register_vcpu_info(&mut c, si);
    vi.set_upcall_mask(1);
    vi.ack();
    let shinfo = match SharedInfoMap::map(si) {
        Ok(m) => m,
        Err(rc) => {
            println!("not ok - update_va_mapping of shared_info returned {rc}");
            sched::shutdown(SHUTDOWN_CRASH);
        }
    };
    let domid = alloc_unbound_checks(&mut c);
    let env = Env { vi, shinfo, domid };
    let host = prebound_ports(&mut c, si);
    loopback_checks(&mut c, &env);
    bind_interdomain_errors(&mut c, &env);
    virq_checks(&mut c, &env);
    ipi_checks(&mut c, &env);
    send_close_errors(&mut c);
    status_checks(&mut c);
    bind_vcpu_checks(&mut c);
    mask_checks(&mut c, &env);
    upcall_mask_checks(&mut c, &env);
    unsupported_checks(&mut c);
    reset_checks(&mut c, &host);
    let failed = c.summary();
    if failed != 0 {
        sched::shutdown(SHUTDOWN_CRASH);
    }
    let code = SchedShutdown { reason: SHUTDOWN_POWEROFF };
    // SAFETY: SCHEDOP_shutdown_code only reads `code`.
    let rc = unsafe { hypercall3(HYPERVISOR_SCHED_OP, SCHEDOP_SHUTDOWN_CODE, &code as *const _ as u64, 0) };
    if rc != 0 {
        println!("not ok - SCHEDOP_shutdown_code returned {rc}");
        sched::shutdown(SHUTDOWN_CRASH);
    }
    sched::shutdown(SHUTDOWN_REBOOT)
}

fn register_vcpu_info(c: &mut Checks, si: &StartInfo) -> VcpuInfoArea {
    let Some((mfn, offset)) = VcpuInfoArea::location(si) else {
        println!("PANIC: no P2M entry for the vcpu_info page");
        sched::shutdown(SHUTDOWN_CRASH);
    };
    c.eq(
        "register_vcpu_info crossing its page: -EINVAL",
        VcpuInfoArea::register_at(mfn, 4096 - 63),
        neg(Errno::EINVAL),
    );
    c.eq(
        "register_vcpu_info on a frame not ours: -EINVAL",
        VcpuInfoArea::register_at(1 << 40, 0),
        neg(Errno::EINVAL),
    );
    let vi = match VcpuInfoArea::register(si) {
        Ok(vi) => vi,
        Err(rc) => {
            println!("not ok - register_vcpu_info returned {rc}");
            sched::shutdown(SHUTDOWN_CRASH);
        }
    };
    c.eq("register_vcpu_info forces a rescan: upcall_pending", vi.upcall_pending(), 1);
    c.eq("register_vcpu_info forces a rescan: every selector bit", vi.pending_sel(), u64::MAX);
    let t = vi.time_record();
    c.check(
        "register_vcpu_info moved a valid time record",
        t.version.is_multiple_of(2) && t.tsc_to_system_mul != 0,
        format_args!("{t:?}"),
    );
    c.eq("register_vcpu_info twice: -EINVAL", VcpuInfoArea::register_at(mfn, offset), neg(Errno::EINVAL));
    vi
}

/// Returns this domain's id, as `EVTCHNOP_status` reports a port unbound for `DOMID_SELF`.
fn alloc_unbound_checks(c: &mut Checks) -> u16 {
    let p = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF);
    c.check("alloc_unbound(DOMID_SELF, DOMID_SELF)", matches!(p, Ok(p) if p > 0), format_args!("{p:?}"));
    let st = evtchn::status(DOMID_SELF, p.unwrap_or(0));
    let domid = st.map(|s| s.u_val as u16).unwrap_or(0);
    c.check(
        "status: unbound, remote = own domid (not DOMID_SELF, not 0)",
        matches!(st, Ok(s) if s.status == EVTCHNSTAT_UNBOUND) && domid != 0 && domid != DOMID_SELF,
        format_args!("{st:?}"),
    );
    println!("# domid {domid}");
    c.eq("alloc_unbound for domain 0: -EPERM", evtchn::alloc_unbound(0, DOMID_SELF), Err(neg(Errno::EPERM)));
    c.eq("alloc_unbound for no such domain: -ESRCH", evtchn::alloc_unbound(7, 0), Err(neg(Errno::ESRCH)));
    let q = evtchn::alloc_unbound(domid, 0);
    c.check("alloc_unbound(own domid, 0)", q.is_ok(), format_args!("{q:?}"));
    if let (Ok(p), Ok(q)) = (p, q) {
        c.eq("close the unbound ports", (evtchn::close(p), evtchn::close(q)), (0, 0));
        c.eq("closed ports are reused lowest first", evtchn::alloc_unbound(DOMID_SELF, 0), Ok(p.min(q)));
        evtchn::close(p.min(q));
    }
    c.eq(
        "alloc_unbound with a bad pointer: -EFAULT",
        evtchn::op_raw(EVTCHNOP_ALLOC_UNBOUND, UNMAPPED),
        neg(Errno::EFAULT),
    );
    domid
}

/// The VMM's pre-bound ports (xenstore, console) as (guest port, domain-0 port): each is
/// interdomain to domain 0, as xenstored's and xenconsoled's would be, and takes notifications.
fn prebound_ports(c: &mut Checks, si: &StartInfo) -> [(u32, u32); 2] {
    let mut out = [(0, 0); 2];
    let ports = [("xenstore", si.store_evtchn), ("console", si.console_evtchn)];
    for (i, (name, port)) in ports.into_iter().enumerate() {
        let st = evtchn::status(DOMID_SELF, port);
        let ok = matches!(st, Ok(s) if s.status == EVTCHNSTAT_INTERDOMAIN
            && s.u_val & 0xffff == 0 && s.u_port != 0 && s.vcpu == 0);
        c.check(
            "start_info port is interdomain to a port of domain 0, notified on vCPU 0",
            port != 0 && ok,
            format_args!("{name} port {port}: {st:?}"),
        );
        out[i] = (port, st.map(|s| s.u_port).unwrap_or(0));
        c.eq("EVTCHNOP_send on it is accepted", evtchn::send(port), 0);
        c.eq(
            "binding domain 0's end again: -EINVAL (already bound)",
            evtchn::bind_interdomain(0, out[i].1),
            Err(neg(Errno::EINVAL)),
        );
    }
    c.check(
        "the xenstore and console ports differ, at both ends",
        out[0].0 != out[1].0 && out[0].1 != out[1].1,
        format_args!("{out:?}"),
    );
    out
}

fn loopback_checks(c: &mut Checks, env: &Env) {
    let Ok(a) = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF) else {
        c.check("alloc_unbound for a loopback", false, format_args!("failed"));
        return;
    };
    let b = evtchn::bind_interdomain(DOMID_SELF, a);
    c.check("bind_interdomain(DOMID_SELF, unbound port)", b.is_ok(), format_args!("{b:?}"));
    let Ok(b) = b else { return };
    let (sa, sb) = (evtchn::status(DOMID_SELF, a), evtchn::status(DOMID_SELF, b));
    let linked = |s: Result<EvtchnStatus, i64>, peer: u32| matches!(s, Ok(s) if s.status == EVTCHNSTAT_INTERDOMAIN && s.u_val == u32::from(env.domid) && s.u_port == peer);
    c.check("loopback ends name each other", linked(sa, b) && linked(sb, a), format_args!("{sa:?} / {sb:?}"));
    c.check("bind_interdomain sets the new local port pending", env.pending(b), format_args!("port {b}"));
    c.check("the other end is not pending yet", !env.pending(a), format_args!("port {a}"));
    c.eq("send on the loopback", evtchn::send(b), 0);
    c.check("send sets the peer pending", env.pending(a), format_args!("port {a}"));
    c.eq("close one end", evtchn::close(a), 0);
    c.eq("close it twice: -EINVAL", evtchn::close(a), neg(Errno::EINVAL));
    let sb = evtchn::status(DOMID_SELF, b);
    c.check(
        "the other end is unbound for this domain again",
        matches!(sb, Ok(s) if s.status == EVTCHNSTAT_UNBOUND && s.u_val & 0xffff == u32::from(env.domid)),
        format_args!("{sb:?}"),
    );
    c.eq("send on an unbound port is dropped silently", evtchn::send(b), 0);
    let d = evtchn::bind_interdomain(env.domid, b);
    c.check("rebind to it by own domid", d.is_ok(), format_args!("{d:?}"));
    evtchn::close(b);
    let sd = evtchn::status(DOMID_SELF, d.unwrap_or(0));
    c.check(
        "closing the peer leaves the rebound end unbound",
        matches!(sd, Ok(s) if s.status == EVTCHNSTAT_UNBOUND),
        format_args!("{sd:?}"),
    );
    evtchn::close(d.unwrap_or(0));
}

fn bind_interdomain_errors(c: &mut Checks, env: &Env) {
    c.eq(
        "bind_interdomain to no such domain: -ESRCH",
        evtchn::bind_interdomain(7, 1),
        Err(neg(Errno::ESRCH)),
    );
    c.eq(
        "bind_interdomain to a free port: -EINVAL",
        evtchn::bind_interdomain(DOMID_SELF, 700),
        Err(neg(Errno::EINVAL)),
    );
    c.eq(
        "bind_interdomain to port 0: -EINVAL",
        evtchn::bind_interdomain(DOMID_SELF, 0),
        Err(neg(Errno::EINVAL)),
    );
    c.eq(
        "bind_interdomain to a domain-0 port not offered: -EINVAL",
        evtchn::bind_interdomain(0, 54321),
        Err(neg(Errno::EINVAL)),
    );
    if let Ok(p) = evtchn::alloc_unbound(DOMID_SELF, 0) {
        c.eq(
            "bind_interdomain to a port unbound for domain 0: -EINVAL",
            evtchn::bind_interdomain(env.domid, p),
            Err(neg(Errno::EINVAL)),
        );
        evtchn::close(p);
    }
}

fn virq_checks(c: &mut Checks, env: &Env) {
    let t = evtchn::bind_virq(VIRQ_TIMER, 0);
    c.check("bind_virq(VIRQ_TIMER, vCPU 0)", t.is_ok(), format_args!("{t:?}"));
    let t = t.unwrap_or(0);
    c.eq("bind_virq twice: -EEXIST", evtchn::bind_virq(VIRQ_TIMER, 0), Err(neg(Errno::EEXIST)));
    c.eq("bind_virq(NR_VIRQS): -EINVAL", evtchn::bind_virq(NR_VIRQS, 0), Err(neg(Errno::EINVAL)));
    c.eq("bind_virq(VIRQ_DEBUG, vCPU 1): -ENOENT", evtchn::bind_virq(VIRQ_DEBUG, 1), Err(neg(Errno::ENOENT)));
    c.eq(
        "bind_virq(global VIRQ_CONSOLE, vCPU 1): -EINVAL",
        evtchn::bind_virq(VIRQ_CONSOLE, 1),
        Err(neg(Errno::EINVAL)),
    );
    let d = evtchn::bind_virq(VIRQ_DEBUG, 0);
    c.check("bind_virq(VIRQ_DEBUG, vCPU 0) as Linux does", d.is_ok(), format_args!("{d:?}"));
    let st = evtchn::status(DOMID_SELF, t);
    c.check(
        "status of the timer port: virq 0 on vCPU 0",
        matches!(st, Ok(s) if s.status == EVTCHNSTAT_VIRQ && s.u_val == VIRQ_TIMER && s.vcpu == 0),
        format_args!("{st:?}"),
    );
    c.eq("send on a VIRQ port: -EINVAL", evtchn::send(t), neg(Errno::EINVAL));
    c.check("nothing raised the timer VIRQ", !env.pending(t), format_args!("port {t}"));
    c.eq("close the VIRQ ports", (evtchn::close(t), evtchn::close(d.unwrap_or(0))), (0, 0));
    c.eq("the VIRQ can be bound again, to the same port", evtchn::bind_virq(VIRQ_TIMER, 0), Ok(t));
    evtchn::close(t);
}

fn ipi_checks(c: &mut Checks, env: &Env) {
    c.eq("bind_ipi(vCPU 1): -ENOENT", evtchn::bind_ipi(1), Err(neg(Errno::ENOENT)));
    let p = evtchn::bind_ipi(0);
    c.check("bind_ipi(vCPU 0)", p.is_ok(), format_args!("{p:?}"));
    let p = p.unwrap_or(0);
    let st = evtchn::status(DOMID_SELF, p);
    c.check("status: ipi", matches!(st, Ok(s) if s.status == EVTCHNSTAT_IPI), format_args!("{st:?}"));
    c.check("a fresh IPI port is not pending", !env.pending(p), format_args!("port {p}"));
    env.vi.ack();
    c.eq("send on the IPI port", evtchn::send(p), 0);
    c.check("the IPI port is pending", env.pending(p), format_args!("port {p}"));
    c.eq("...its selector bit is set", env.vi.pending_sel() & (1 << (p / 64)) != 0, true);
    c.eq("...and evtchn_upcall_pending", env.vi.upcall_pending(), 1);
    evtchn::close(p);
}

fn send_close_errors(c: &mut Checks) {
    c.eq("send on port 0: -EINVAL", evtchn::send(0), neg(Errno::EINVAL));
    c.eq("send on a free port: -EINVAL", evtchn::send(60), neg(Errno::EINVAL));
    c.eq("send on port 4095: -EINVAL", evtchn::send(4095), neg(Errno::EINVAL));
    c.eq("close port 0: -EINVAL", evtchn::close(0), neg(Errno::EINVAL));
    c.eq("close a free port: -EINVAL", evtchn::close(60), neg(Errno::EINVAL));
    c.eq("close port 5000: -EINVAL", evtchn::close(5000), neg(Errno::EINVAL));
    c.eq("send with a bad pointer: -EFAULT", evtchn::op_raw(EVTCHNOP_SEND, UNMAPPED), neg(Errno::EFAULT));
}

fn status_checks(c: &mut Checks) {
    c.eq("status of domain 0's port: -EPERM", evtchn::status(0, 1).map(|_| ()), Err(neg(Errno::EPERM)));
    c.eq("status in no such domain: -ESRCH", evtchn::status(9, 1).map(|_| ()), Err(neg(Errno::ESRCH)));
    c.eq(
        "status of port 4000: -EINVAL",
        evtchn::status(DOMID_SELF, 4000).map(|_| ()),
        Err(neg(Errno::EINVAL)),
    );
    let st = evtchn::status(DOMID_SELF, 0);
    c.check(
        "port 0 reads closed",
        matches!(st, Ok(s) if s.status == EVTCHNSTAT_CLOSED),
        format_args!("{st:?}"),
    );
}

fn bind_vcpu_checks(c: &mut Checks) {
    let (Ok(t), Ok(ipi), Ok(u), Ok(g)) = (
        evtchn::bind_virq(VIRQ_TIMER, 0),
        evtchn::bind_ipi(0),
        evtchn::alloc_unbound(DOMID_SELF, 0),
        evtchn::bind_virq(VIRQ_ARCH_0, 0),
    ) else {
        c.check("ports for bind_vcpu", false, format_args!("could not bind"));
        return;
    };
    c.eq("bind_vcpu to vCPU 1: -ENOENT", evtchn::bind_vcpu(u, 1), neg(Errno::ENOENT));
    c.eq("bind_vcpu of a per-vCPU VIRQ: -EINVAL", evtchn::bind_vcpu(t, 0), neg(Errno::EINVAL));
    c.eq("bind_vcpu of an IPI: -EINVAL", evtchn::bind_vcpu(ipi, 0), neg(Errno::EINVAL));
    c.eq("bind_vcpu of a free port: -EINVAL", evtchn::bind_vcpu(60, 0), neg(Errno::EINVAL));
    c.eq("bind_vcpu of an unbound port", evtchn::bind_vcpu(u, 0), 0);
    c.eq("bind_vcpu of a global VIRQ", evtchn::bind_vcpu(g, 0), 0);
    for p in [t, ipi, u, g] {
        evtchn::close(p);
    }
}

/// What the event callback saw, for the checks: upcalls taken, and of the last one the
/// interrupted rip, the mask in its frame, the live mask inside the callback and the ports it
/// found pending and unmasked (a bitmap of ports 0..64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Upcalls {
    count: u32,
    rip: u64,
    saved_mask: u64,
    mask_inside: u8,
    ports: u64,
}

static mut UPCALLS: Upcalls = Upcalls { count: 0, rip: 0, saved_mask: 0, mask_inside: 0, ports: 0 };
/// Where the event callback finds vcpu_info and shared_info.
static mut EVENT_ENV: Option<Env> = None;

fn upcalls() -> Upcalls {
    // SAFETY: single vCPU; a plain copy, volatile as the callback changes it behind our back.
    unsafe { addr_of!(UPCALLS).read_volatile() }
}

/// The event callback, as Linux's `xen_evtchn_do_upcall` for the 2-level ABI: clear
/// `evtchn_upcall_pending`, take the selector, and for each selected word handle (here:
/// record and clear) the ports pending and not masked; then `HYPERVISOR_iret`, which restores
/// the upcall mask from the frame.
fn on_event(f: &TrapFrame, _rax: &mut u64) -> traps::Action {
    // SAFETY: single vCPU, and the callback runs with events masked: nothing else touches
    // these statics meanwhile.
    unsafe {
        let u = &mut *addr_of_mut!(UPCALLS);
        u.count += 1;
        u.rip = f.rip;
        u.saved_mask = (f.cs >> 32) & 0xff;
        u.ports = 0;
        if let Some(env) = *addr_of!(EVENT_ENV) {
            u.mask_inside = env.vi.upcall_mask();
            let sel = env.vi.pending_sel();
            env.vi.ack();
            for w in (0..64).filter(|w| sel & (1 << w) != 0) {
                for port in w * 64..w * 64 + 64 {
                    if env.shinfo.pending(port) && !env.shinfo.is_masked(port) {
                        env.shinfo.clear_pending(port);
                        if port < 64 {
                            u.ports |= 1 << port;
                        }
                    }
                }
            }
        }
    }
    traps::Action::Iret
}

/// The address right after the last [`marked_hypercall`]'s `syscall` (or [`marked_cpuid`]'s
/// forced CPUID): where an upcall delivered on its way out interrupts the kernel.
static mut AFTER: u64 = 0;

fn after() -> u64 {
    // SAFETY: single vCPU; a plain read.
    unsafe { addr_of!(AFTER).read_volatile() }
}

/// A two-argument hypercall whose return address is recorded in [`AFTER`].
///
/// # Safety
/// As [`hypercall3`].
unsafe fn marked_hypercall(nr: u64, a1: u64, a2: u64) -> i64 {
    let rc: i64;
    // SAFETY: the caller vouches for the arguments; every register the hypervisor may change
    // is declared.
    unsafe {
        asm!("lea {t}, [rip + 2f]", "mov [rip + {after}], {t}", "syscall", "2:",
            t = out(reg) _, after = sym AFTER,
            inlateout("rax") nr as i64 => rc, inlateout("rdi") a1 => _, inlateout("rsi") a2 => _,
            out("rdx") _, out("r10") _, out("r8") _, out("r9") _, out("rcx") _, out("r11") _)
    };
    rc
}

/// `xen_version(XENVER_version, NULL)`, Linux's "deliver pending events now" no-op.
fn marked_xen_version() -> i64 {
    // SAFETY: XENVER_version takes no pointer.
    unsafe { marked_hypercall(HYPERVISOR_XEN_VERSION, 0, 0) }
}

fn marked_unmask(port: u32) -> i64 {
    let arg = EvtchnUnmask { port };
    // SAFETY: EVTCHNOP_unmask reads `struct evtchn_unmask`, alive for the call.
    unsafe { marked_hypercall(HYPERVISOR_EVENT_CHANNEL_OP, EVTCHNOP_UNMASK, &arg as *const _ as u64) }
}

/// Xen's forced CPUID (a #UD the hypervisor emulates) with the address after it in [`AFTER`].
fn marked_cpuid() {
    // SAFETY: the hypervisor emulates the 7-byte sequence as `cpuid` (registers only); rbx,
    // which LLVM reserves, is saved in a scratch register and swapped back.
    unsafe {
        asm!("lea {t}, [rip + 2f]", "mov [rip + {after}], {t}", "mov {b}, rbx",
            ".byte 0x0f, 0x0b, 0x78, 0x65, 0x6e", "cpuid", "2:", "xchg {b}, rbx",
            t = out(reg) _, b = out(reg) _, after = sym AFTER,
            inout("eax") 0 => _, inout("ecx") 0 => _, out("edx") _)
    };
}

fn xen_version() -> i64 {
    // SAFETY: XENVER_version takes no pointer.
    unsafe { hypercall3(HYPERVISOR_XEN_VERSION, 0, 0, 0) }
}

/// A port masked in shared_info's `evtchn_mask` is set pending but raises no upcall, even
/// with upcalls enabled, until `EVTCHNOP_unmask`, on whose way out the callback runs.
fn mask_checks(c: &mut Checks, env: &Env) {
    c.eq("unmask port 4000: -EINVAL", evtchn::unmask(4000), neg(Errno::EINVAL));
    // SAFETY: set before the callback can run (events are masked).
    unsafe { *addr_of_mut!(EVENT_ENV) = Some(*env) };
    traps::set_handler(traps::VEC_EVENT, Some(on_event));
    let rc = traps::register_callback(
        CALLBACKTYPE_EVENT,
        CALLBACKF_MASK_EVENTS,
        traps::stub_addr(traps::VEC_EVENT),
    );
    c.eq("callback_op: register the event callback", rc, 0);
    let Ok(p) = evtchn::bind_ipi(0) else {
        c.check("bind_ipi for the masking checks", false, format_args!("failed"));
        return;
    };
    let m = env.shinfo;
    m.set_masked(p, true);
    env.vi.ack();
    env.vi.set_upcall_mask(0);
    let before = upcalls().count;
    xen_version();
    c.eq("upcalls enabled, nothing pending: no upcall", upcalls().count, before);
    c.eq("send on a port masked in evtchn_mask", evtchn::send(p), 0);
    let (pending, sel, up) = (m.pending(p), env.vi.pending_sel(), env.vi.upcall_pending());
    xen_version();
    let u = upcalls();
    c.check("the masked port is pending", pending, format_args!("port {p}"));
    c.eq("...but its selector bit and evtchn_upcall_pending are clear", (sel, up), (0, 0));
    c.eq("...and no upcall came, through two hypercall returns", u.count, before);
    let rc = marked_unmask(p);
    let u = upcalls();
    let after = after();
    c.eq("EVTCHNOP_unmask", rc, 0);
    c.eq("unmask delivers one upcall", u.count, before + 1);
    c.eq("...on the way out of the unmask hypercall", u.rip, after);
    c.eq("...for the unmasked port", u.ports & (1 << p), 1 << p);
    c.eq(
        "...entering the callback with events masked, 0 saved in the frame",
        (u.mask_inside, u.saved_mask),
        (1, 0),
    );
    c.eq("iret from the callback unmasked events again", env.vi.upcall_mask(), 0);
    c.check("the port is unmasked in shared_info", !m.is_masked(p), format_args!("port {p}"));
    // Unmasking a port that is not pending raises nothing.
    m.set_masked(p, true);
    c.eq("unmask of a port not pending", marked_unmask(p), 0);
    c.eq("...delivers no upcall", upcalls().count, before + 1);
    env.vi.set_upcall_mask(1);
    evtchn::close(p);
}

/// `evtchn_upcall_mask` holds an upcall: the port is pending and the selector and
/// `evtchn_upcall_pending` are set, but nothing is delivered until the mask is cleared, and
/// then on the way out of the next hypercall or trap (Linux's `xen_irq_enable` relies on it).
fn upcall_mask_checks(c: &mut Checks, env: &Env) {
    let Ok(p) = evtchn::bind_ipi(0) else {
        c.check("bind_ipi for the upcall-mask checks", false, format_args!("failed"));
        return;
    };
    for via_trap in [false, true] {
        let how = if via_trap { "a trap (forced CPUID)" } else { "a hypercall (xen_version)" };
        env.vi.set_upcall_mask(1);
        env.vi.ack();
        let before = upcalls().count;
        let rc = evtchn::send(p);
        let (pending, sel, up) = (env.pending(p), env.vi.pending_sel(), env.vi.upcall_pending());
        xen_version();
        forced_cpuid(0, 0);
        let held = upcalls().count;
        // Linux's xen_irq_enable: clear the mask, then a hypercall or trap returns.
        env.vi.set_upcall_mask(0);
        let still_held = upcalls().count;
        if via_trap {
            marked_cpuid();
        } else {
            marked_xen_version();
        }
        let u = upcalls();
        let after = after();
        c.eq("send with upcalls masked", rc, 0);
        c.eq(
            "...sets the port, its selector bit and evtchn_upcall_pending",
            (pending, sel & (1 << (p / 64)) != 0, up),
            (true, true, 1),
        );
        c.eq("...but nothing is delivered through a hypercall and a trap", held, before);
        c.eq("...nor by clearing the mask alone", still_held, before);
        c.check(
            "the upcall comes on the way out of the next hypercall or trap",
            u.count == before + 1 && u.rip == after && u.ports & (1 << p) != 0,
            format_args!("via {how}: {u:x?}, want rip {after:#x}, port {p}, {} upcalls before", before),
        );
    }
    env.vi.set_upcall_mask(1);
    env.vi.ack();
    evtchn::close(p);
}

fn unsupported_checks(c: &mut Checks) {
    let mut ic = EvtchnInitControl::default();
    c.eq("init_control (FIFO ABI): -ENOSYS", evtchn::op(EVTCHNOP_INIT_CONTROL, &mut ic), neg(Errno::ENOSYS));
    let mut ea = EvtchnExpandArray::default();
    c.eq("expand_array: -ENOSYS", evtchn::op(EVTCHNOP_EXPAND_ARRAY, &mut ea), neg(Errno::ENOSYS));
    let mut sp = EvtchnSetPriority { port: 0, priority: 7 };
    c.eq("set_priority: -ENOSYS", evtchn::op(EVTCHNOP_SET_PRIORITY, &mut sp), neg(Errno::ENOSYS));
    c.eq("bind_pirq 0 of a domU: -EPERM", evtchn::bind_pirq(0), Err(neg(Errno::EPERM)));
    c.eq("bind_pirq 100000: -EINVAL", evtchn::bind_pirq(100_000), Err(neg(Errno::EINVAL)));
    c.eq("unknown EVTCHNOP 15: -ENOSYS", evtchn::op_raw(15, UNMAPPED), neg(Errno::ENOSYS));
}

fn reset_checks(c: &mut Checks, host: &[(u32, u32); 2]) {
    let t = evtchn::bind_virq(VIRQ_TIMER, 0).unwrap_or(0);
    c.eq("reset domain 0: -EPERM", evtchn::reset(EVTCHNOP_RESET, 0), neg(Errno::EPERM));
    c.eq("reset no such domain: -ESRCH", evtchn::reset(EVTCHNOP_RESET, 9), neg(Errno::ESRCH));
    c.eq(
        "reset_cont with no reset under way: -EBUSY",
        evtchn::reset(EVTCHNOP_RESET_CONT, DOMID_SELF),
        neg(Errno::EBUSY),
    );
    c.eq("reset DOMID_SELF", evtchn::reset(EVTCHNOP_RESET, DOMID_SELF), 0);
    let st = evtchn::status(DOMID_SELF, t);
    c.check(
        "reset closed the VIRQ port",
        matches!(st, Ok(s) if s.status == EVTCHNSTAT_CLOSED),
        format_args!("{st:?}"),
    );
    for &(port, dom0_port) in host.iter().filter(|h| h.0 != 0) {
        let st = evtchn::status(DOMID_SELF, port);
        c.check(
            "reset closed the VMM's port",
            matches!(st, Ok(s) if s.status == EVTCHNSTAT_CLOSED),
            format_args!("{st:?}"),
        );
        let p = evtchn::bind_interdomain(0, dom0_port);
        c.check("domain 0's end can be bound again", p.is_ok(), format_args!("dom0 port {dom0_port}: {p:?}"));
    }
}
