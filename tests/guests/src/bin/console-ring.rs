//! `console-ring`: writes 64 KiB through the PV console ring as `hvc_xen` does (bytes,
//! `out_prod`, `EVTCHNOP_send` on the console port) and waits for the console port the way a
//! Linux kernel waits for an interrupt, so that only the host draining the ring and raising
//! the port (as xenconsoled does) lets it continue:
//!
//! * the first, full ring: in `SCHEDOP_block` with the event callback registered (Linux's
//!   idle loop, `xen_safe_halt`) until the callback sees the console port; a single-shot
//!   timer on VIRQ_TIMER is the watchdog;
//! * the next 480 lines stream, one notification each, waiting only when the ring is full;
//!   each of the last 512 clears the console port's pending bit, writes, notifies and waits
//!   for the port to be raised (which answers the drain of that line at the latest), then
//!   until the ring is empty. All waits are `SCHEDOP_poll` on the console port with upcalls
//!   masked (Linux's `xen_poll_irq_timeout`), the pending bit cleared in shared_info before
//!   the ring is looked at, so that no raise is lost. A wait the timeout ends fails.
//!
//! Whether a wait sleeps depends on who is faster, the host's event thread or this vCPU (in
//! the nested test host the event thread usually is): the checks hold either way.
//!
//! Then: the xenstore port is bound to domain 0 too, ring text comes out before later
//! `console_io` text and draining it raises the console port, a corrupt ring is left alone
//! and not answered, and text written without a notification still comes out when the
//! domain ends.
//!
//! The payload is 1024 lines of 64 bytes: `ring NNNNN ` and 52 letters starting at
//! `'a' + NNNNN % 26`, then `\n` (`vmm/tests/kvm.rs` builds the same text).
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut};
use xenvmm_test_guests::evtchn::{self, SharedInfoMap};
use xenvmm_test_guests::ring::{evtchn_send, ConsoleRing};
use xenvmm_test_guests::time::{self, VcpuInfoArea, MS};
use xenvmm_test_guests::traps::{self, TrapFrame};
use xenvmm_test_guests::xen_abi::callback::{CALLBACKF_MASK_EVENTS, CALLBACKTYPE_EVENT};
use xenvmm_test_guests::xen_abi::event::VIRQ_TIMER;
use xenvmm_test_guests::xen_abi::io::console::XENCONS_OUT_SIZE;
use xenvmm_test_guests::xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};
use xenvmm_test_guests::xen_abi::vcpu::VCPUOP_STOP_PERIODIC_TIMER;
use xenvmm_test_guests::xen_abi::xen::StartInfo;
use xenvmm_test_guests::{println, shutdown, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

const LINES: usize = 1024;
const LINE: usize = 64;
/// How long one wait for the host may take (system time; the nested test host's clock runs
/// at about half speed, so up to ~40 s of wall time).
const BUDGET: u64 = 20_000 * MS;

fn payload_line(i: usize) -> [u8; LINE] {
    let mut l = [0u8; LINE];
    let mut head = [b'r', b'i', b'n', b'g', b' ', b'0', b'0', b'0', b'0', b'0', b' '];
    let mut n = i;
    for d in head[5..10].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    l[..11].copy_from_slice(&head);
    for (j, b) in l[11..LINE - 1].iter_mut().enumerate() {
        *b = b'a' + ((i + j) % 26) as u8;
    }
    l[LINE - 1] = b'\n';
    l
}

/// Notifies the console's backend; counts the call and remembers a failure.
struct Notifier {
    port: u32,
    sends: u64,
    bad: i64,
}

impl Notifier {
    fn send(&mut self) {
        self.sends += 1;
        let r = evtchn_send(self.port);
        if r != 0 && self.bad == 0 {
            self.bad = r;
        }
    }
}

/// This vCPU's event state and the console port, for the waits and the event callback.
#[derive(Clone, Copy)]
struct Events {
    vi: VcpuInfoArea,
    shinfo: SharedInfoMap,
    console: u32,
}

/// What the event callback found: upcalls, console port events, watchdog timer events.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    upcalls: u32,
    console: u32,
    timer: u32,
}

static mut SEEN: Seen = Seen { upcalls: 0, console: 0, timer: 0 };
static mut EVENTS: Option<Events> = None;
static mut TIMER_PORT: u32 = 0;

fn seen() -> Seen {
    // SAFETY: single vCPU; a plain copy, volatile as the callback changes it behind our back.
    unsafe { addr_of!(SEEN).read_volatile() }
}

/// The event callback of the 2-level ABI (Linux's `xen_evtchn_do_upcall`): clear
/// `evtchn_upcall_pending`, take the selector, handle each pending unmasked port of the
/// selected words (count and clear it), `HYPERVISOR_iret`.
fn on_event(_f: &TrapFrame, _rax: &mut u64) -> traps::Action {
    // SAFETY: single vCPU, events masked while the callback runs.
    unsafe {
        let s = &mut *addr_of_mut!(SEEN);
        s.upcalls += 1;
        if let Some(ev) = *addr_of!(EVENTS) {
            let sel = ev.vi.pending_sel();
            ev.vi.ack();
            for w in (0..64u32).filter(|w| sel & (1 << w) != 0) {
                for port in w * 64..w * 64 + 64 {
                    if ev.shinfo.pending(port) && !ev.shinfo.is_masked(port) {
                        ev.shinfo.clear_pending(port);
                        if port == ev.console {
                            s.console += 1;
                        } else if port == *addr_of!(TIMER_PORT) {
                            s.timer += 1;
                        }
                    }
                }
            }
        }
    }
    traps::Action::Iret
}

/// Waits in `SCHEDOP_block` until the event callback has seen the console port, events
/// masked whenever the count is looked at (a raise in between leaves an upcall pending, which
/// ends the block at once). `false` if the watchdog timer fired first.
fn block_for_console(ev: &Events) -> bool {
    let Ok(tp) = evtchn::bind_virq(VIRQ_TIMER, 0) else { return false };
    // SAFETY: set while events are masked: the callback cannot run yet.
    unsafe { TIMER_PORT = tp };
    let before = seen().console;
    time::set_timer_op(ev.vi.now() + BUDGET);
    let ok = loop {
        ev.vi.set_upcall_mask(1);
        if seen().console != before {
            break true;
        }
        if seen().timer != 0 {
            break false;
        }
        time::block();
    };
    ev.vi.set_upcall_mask(1);
    time::set_timer_op(0);
    evtchn::close(tp);
    ok
}

/// Polls on the console port until `done(ring)`; `false` when a poll had to run into its
/// timeout (the host did not raise the port after making progress, or made none). Counts
/// the polls.
fn poll_until(ev: &Events, ring: &ConsoleRing, polls: &mut u64, done: impl Fn(&ConsoleRing) -> bool) -> bool {
    loop {
        if done(ring) {
            return true;
        }
        // Clear, then look: a raise after the clear stays pending and ends the poll at once.
        ev.shinfo.clear_pending(ev.console);
        if done(ring) {
            return true;
        }
        let deadline = ev.vi.now() + BUDGET;
        time::poll(&[ev.console], deadline);
        *polls += 1;
        if !ev.shinfo.pending(ev.console) && ev.vi.now() >= deadline {
            return false;
        }
    }
}

/// One `SCHEDOP_poll` on the console port: whether it ended with the port raised (not by its
/// timeout).
fn poll_raised(ev: &Events, polls: &mut u64) -> bool {
    time::poll(&[ev.console], ev.vi.now() + BUDGET);
    *polls += 1;
    ev.shinfo.pending(ev.console)
}

fn has_space(r: &ConsoleRing) -> bool {
    r.space() != 0
}

fn drained(r: &ConsoleRing) -> bool {
    r.out_cons() == r.out_prod()
}

/// Polls on the console port for up to `ns`: whether it was raised.
fn raised_within(ev: &Events, ns: u64) -> bool {
    time::poll(&[ev.console], ev.vi.now() + ns);
    ev.shinfo.pending(ev.console)
}

fn guest_main(si: &'static StartInfo) -> ! {
    println!("console-ring: start");
    let mut c = Checks::new("console-ring");
    c.eq("start_info.console.domU.evtchn is port 2", si.console_evtchn, 2);
    let Some(mut ring) = ConsoleRing::from_start_info(si) else {
        c.check("the console page is a domain page (M2P)", false, format_args!("mfn {:#x}", si.console_mfn));
        c.summary();
        shutdown(SHUTDOWN_CRASH)
    };
    c.eq("the console ring starts empty", (ring.out_cons(), ring.out_prod()), (0, 0));
    // As Linux at boot: no periodic tick, this vCPU's vcpu_info registered, shared_info
    // mapped, events masked, the event callback in place.
    c.eq("VCPUOP_stop_periodic_timer", time::vcpu_op(VCPUOP_STOP_PERIODIC_TIMER, 0, 0), 0);
    let (vi, shinfo) = match (VcpuInfoArea::register(si), SharedInfoMap::map(si)) {
        (Ok(vi), Ok(m)) => (vi, m),
        (vi, m) => {
            c.check(
                "register_vcpu_info and map shared_info",
                false,
                format_args!("{:?} {:?}", vi.err(), m.err()),
            );
            c.summary();
            shutdown(SHUTDOWN_CRASH)
        }
    };
    vi.set_upcall_mask(1);
    vi.ack();
    let ev = Events { vi, shinfo, console: si.console_evtchn };
    // SAFETY: set while events are masked: the callback cannot run yet.
    unsafe { EVENTS = Some(ev) };
    traps::set_handler(traps::VEC_EVENT, Some(on_event));
    let rc = traps::register_callback(
        CALLBACKTYPE_EVENT,
        CALLBACKF_MASK_EVENTS,
        traps::stub_addr(traps::VEC_EVENT),
    );
    c.eq("callback_op: register the event callback", rc, 0);
    let mut tx = Notifier { port: si.console_evtchn, sends: 0, bad: 0 };

    // A full ring and one notification: the host must drain it while this vCPU is blocked.
    // (Results are checked after the payload: a console_io line now would split it.)
    for i in 0..XENCONS_OUT_SIZE / LINE {
        ring.write(&payload_line(i));
    }
    let space_when_full = ring.space();
    tx.send();
    let mut waits = 1;
    let woken = block_for_console(&ev);
    let after_block = seen();
    let space_after_block = ring.space();

    // The rest one line and one notification at a time: streaming (polling whenever the ring
    // is full), then each line drained before the next.
    let mut polls = 0;
    let mut stalled = !woken;
    let rest = if woken { XENCONS_OUT_SIZE / LINE..LINES } else { 0..0 };
    let sync_from = LINES / 2;
    'lines: for i in rest {
        let line = payload_line(i);
        if i >= sync_from {
            ev.shinfo.clear_pending(ev.console);
        }
        let mut off = 0;
        while off < LINE {
            if ring.space() == 0 {
                waits += 1;
                if !poll_until(&ev, &ring, &mut polls, has_space) {
                    stalled = true;
                    break 'lines;
                }
            }
            off += ring.write(&line[off..]);
            tx.send();
        }
        if i >= sync_from {
            waits += 1;
            if !poll_raised(&ev, &mut polls) || !poll_until(&ev, &ring, &mut polls, drained) {
                stalled = true;
                break;
            }
        }
    }
    let drained_all = !stalled && poll_until(&ev, &ring, &mut polls, drained);
    c.eq("32 lines fill the ring", space_when_full, 0);
    c.check(
        "one notification of a full ring wakes SCHEDOP_block with the console port's upcall",
        woken && after_block.console == 1 && after_block.timer == 0,
        format_args!("the watchdog timer fired first: {after_block:?}"),
    );
    c.check(
        "...raised after the host freed the ring",
        space_after_block != 0,
        format_args!("no space after the upcall"),
    );
    c.check(
        "64 KiB went through the ring, every SCHEDOP_poll ended by the console port raised",
        drained_all && polls >= (LINES - sync_from) as u64,
        format_args!("stalled: {stalled}, {polls} polls"),
    );
    c.eq("every EVTCHNOP_send on the console port returned 0", tx.bad, 0);
    c.eq("the ring holds 64 KiB in all", ring.out_prod(), (LINES * LINE) as u32);
    c.eq("upcalls stayed masked while polling", (seen().upcalls, vi.upcall_mask()), (after_block.upcalls, 1));

    c.eq("EVTCHNOP_send on the xenstore port (bound to domain 0) returns 0", evtchn_send(si.store_evtchn), 0);
    tx.sends += 1;

    // Ring text before a console_io call comes out before that call's text, and the host
    // raises the console port for it as for a notified drain. (Late raises of the payload's
    // drains are let in first.)
    raised_within(&ev, 100 * MS);
    shinfo.clear_pending(ev.console);
    ring.write(b"console-ring: ring text before console_io\n");
    println!("console-ring: console_io text after it");
    c.eq("console_io took the ring's text first", ring.space(), XENCONS_OUT_SIZE);
    c.check(
        "...and raised the console port for it",
        raised_within(&ev, BUDGET),
        format_args!("port {} not pending", ev.console),
    );

    // A ring claiming more than it holds is left alone and not answered, then works again
    // once repaired.
    shinfo.clear_pending(ev.console);
    let cons = ring.out_cons();
    ring.set_out_prod(cons.wrapping_add(2 * XENCONS_OUT_SIZE as u32));
    tx.send();
    println!("console-ring: corrupt ring notified");
    c.eq("the host leaves a corrupt ring's out_cons alone", ring.out_cons(), cons);
    c.check(
        "...and does not raise the console port for it",
        !raised_within(&ev, 200 * MS),
        format_args!("port {} pending", ev.console),
    );
    ring.set_out_prod(cons);
    shinfo.clear_pending(ev.console);
    ring.write(b"console-ring: ring repaired\n");
    tx.send();
    c.check(
        "the host drains a repaired ring and raises the port",
        poll_raised(&ev, &mut polls) && poll_until(&ev, &ring, &mut polls, drained),
        format_args!("no raise, or no progress"),
    );

    println!("console-ring: {} notifications, {waits} waits, {polls} polls", tx.sends);
    let failed = c.summary();
    // Written without a notification: the host drains it when the domain ends.
    ring.write(b"console-ring: unnotified tail\n");
    shutdown(if failed == 0 { SHUTDOWN_POWEROFF } else { SHUTDOWN_CRASH })
}
