//! `console-ring`: writes 64 KiB through the PV console ring as `hvc_xen` does (bytes,
//! `out_prod`, `EVTCHNOP_send` on the console port), waiting with `SCHEDOP_yield` whenever the
//! ring is full, so that only the host's event thread, woken through the doorbell, can let
//! it continue. Then: the xenstore port is bound to domain 0 too, ring text comes out before
//! later `console_io` text, a corrupt ring is left alone, and text written without a
//! notification still comes out when the domain ends.
//!
//! The payload is 1024 lines of 64 bytes: `ring NNNNN ` and 52 letters starting at
//! `'a' + NNNNN % 26`, then `\n` (`vmm/tests/kvm.rs` builds the same text).
#![no_std]
#![no_main]

use xenvmm_test_guests::ring::{evtchn_send, rdtsc, sched_yield, ConsoleRing};
use xenvmm_test_guests::xen_abi::io::console::XENCONS_OUT_SIZE;
use xenvmm_test_guests::xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};
use xenvmm_test_guests::xen_abi::xen::StartInfo;
use xenvmm_test_guests::{println, shutdown, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

const LINES: usize = 1024;
const LINE: usize = 64;
/// How long to wait for the host: about 20-30 s of TSC on the machines we run on.
const TSC_BUDGET: u64 = 1 << 36;

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

fn wait_until_drained(ring: &ConsoleRing) -> bool {
    let start = rdtsc();
    while ring.out_cons() != ring.out_prod() {
        if rdtsc().wrapping_sub(start) > TSC_BUDGET {
            return false;
        }
        sched_yield();
    }
    true
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
    let mut tx = Notifier { port: si.console_evtchn, sends: 0, bad: 0 };

    // A full ring and one notification: the host must drain it while this vCPU only yields.
    // (Results are checked after the payload: a console_io line now would split it.)
    for i in 0..XENCONS_OUT_SIZE / LINE {
        ring.write(&payload_line(i));
    }
    let space_when_full = ring.space();
    tx.send();
    let mut waits = 1;
    let first_drain = ring.wait_for_space(TSC_BUDGET);

    // The rest one line and one notification at a time, waiting whenever the ring is full.
    let mut stalled = !first_drain;
    let rest = if first_drain { XENCONS_OUT_SIZE / LINE..LINES } else { 0..0 };
    'lines: for i in rest {
        let line = payload_line(i);
        let mut off = 0;
        while off < LINE {
            if ring.space() == 0 {
                waits += 1;
                if !ring.wait_for_space(TSC_BUDGET) {
                    stalled = true;
                    break 'lines;
                }
            }
            off += ring.write(&line[off..]);
            tx.send();
        }
    }
    let drained = !stalled && wait_until_drained(&ring);
    c.eq("32 lines fill the ring", space_when_full, 0);
    c.check(
        "the host frees a full ring after one notification",
        first_drain,
        format_args!("no space after the TSC budget"),
    );
    c.check("64 KiB went through the ring", drained, format_args!("the host stopped draining"));
    c.eq("every EVTCHNOP_send on the console port returned 0", tx.bad, 0);
    c.eq("the ring holds 64 KiB in all", ring.out_prod(), (LINES * LINE) as u32);

    c.eq("EVTCHNOP_send on the xenstore port (bound to domain 0) returns 0", evtchn_send(si.store_evtchn), 0);
    tx.sends += 1;

    // Ring text before a console_io call comes out before that call's text.
    ring.write(b"console-ring: ring text before console_io\n");
    println!("console-ring: console_io text after it");
    c.eq("console_io took the ring's text first", ring.space(), XENCONS_OUT_SIZE);

    // A ring claiming more than it holds is left alone, then works again once repaired.
    let cons = ring.out_cons();
    ring.set_out_prod(cons.wrapping_add(2 * XENCONS_OUT_SIZE as u32));
    tx.send();
    println!("console-ring: corrupt ring notified");
    c.eq("the host leaves a corrupt ring's out_cons alone", ring.out_cons(), cons);
    ring.set_out_prod(cons);
    ring.write(b"console-ring: ring repaired\n");
    tx.send();
    c.check("the host drains a repaired ring", wait_until_drained(&ring), format_args!("no progress"));

    println!("console-ring: {} notifications, {waits} waits for space", tx.sends);
    let failed = c.summary();
    // Written without a notification: the host drains it when the domain ends.
    ring.write(b"console-ring: unnotified tail\n");
    shutdown(if failed == 0 { SHUTDOWN_POWEROFF } else { SHUTDOWN_CRASH })
}
