//! What `--stats` reports: VM exits by reason (userspace exits counted here, all exits as KVM
//! counts them), hypercalls by number and the shim's other counters, the event channels' host
//! side, and where the time went.

use crate::kvm::stats::KvmStats;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use xen_abi::hostcall::{EmulKind, ShimStats};
use xen_abi::hypercall::{name, NR_HYPERCALLS};

/// VM exits that reached this process, by kind.
#[derive(Clone, Debug, Default)]
pub struct ExitCounts(pub BTreeMap<&'static str, u64>);

impl ExitCounts {
    pub fn count(&mut self, what: &'static str) {
        *self.0.entry(what).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// The host side of the event channels (`crate::events`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Times the event thread woke for the doorbell (or a doorbell exit reached userspace).
    pub doorbell_wakeups: u64,
    /// Guest notifications taken from the mailbox (several sends of one port between two
    /// wake-ups count once).
    pub ports_notified: u64,
    /// Of those, notifications of ports no backend serves.
    pub notified_unserved: u64,
    /// Guest ports the VMM raised.
    pub ports_raised: u64,
    /// irqfd writes (raises that found their mailbox word empty).
    pub irqs: u64,
    /// Bytes taken from the PV console ring.
    pub console_ring_bytes: u64,
    /// Notifications of ports served by their own thread (a block ring) that came through
    /// the mailbox and were forwarded by the event thread (the direct doorbell was not set up
    /// yet, or already taken down).
    pub ports_forwarded: u64,
    /// Passes over the xenstore ring (store-port notifications and store changes).
    pub store_passes: u64,
}

/// One disk's block backend counters (Linux blkback's `st_*`), over all its rings and
/// connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// `xvda`, `xvdb`, …
    pub name: String,
    pub counters: devices::block::backend::BlkStats,
}

/// Statistics of one run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// From process start of `Domain::new` until the first KVM_RUN.
    pub setup: Duration,
    /// From the first KVM_RUN until the domain ended.
    pub run: Duration,
    /// Exits that returned to userspace.
    pub userspace_exits: ExitCounts,
    /// KVM's own counters for vCPU 0 (all exits); empty if the kernel lacks KVM_GET_STATS_FD.
    pub kvm: KvmStats,
    /// The shim's counters.
    pub shim: Option<ShimStats>,
    /// The VMM's side of the event channels.
    pub events: EventStats,
    /// Per disk, in `xvda` order.
    pub disks: Vec<DiskStats>,
}

impl Stats {
    /// Hypercalls as (number, count, answered -ENOSYS), numbers with a non-zero count only.
    pub fn hypercalls(&self) -> Vec<(usize, u64, u64)> {
        let Some(s) = &self.shim else { return Vec::new() };
        (0..NR_HYPERCALLS)
            .filter(|&i| s.hypercalls[i] > 0)
            .map(|i| (i, s.hypercalls[i], s.enosys[i]))
            .collect()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "xenvmm stats:")?;
        writeln!(
            f,
            "  time: set-up {:.3} ms, guest run {:.3} ms, total {:.3} ms",
            self.setup.as_secs_f64() * 1e3,
            self.run.as_secs_f64() * 1e3,
            (self.setup + self.run).as_secs_f64() * 1e3
        )?;
        writeln!(f, "  VM exits to userspace: {}", self.userspace_exits.total())?;
        for (k, v) in &self.userspace_exits.0 {
            writeln!(f, "    {k:<24} {v}")?;
        }
        if self.kvm.0.is_empty() {
            writeln!(f, "  KVM exit counters: unavailable (no KVM_GET_STATS_FD)")?;
        } else {
            writeln!(f, "  VM exits (KVM counters, vCPU 0): {}", self.kvm.get("exits").unwrap_or(0))?;
            for (k, v) in self.kvm.0.iter().filter(|(k, v)| *v > 0 && k.ends_with("_exits")) {
                writeln!(f, "    {k:<24} {v}")?;
            }
            let other: Vec<String> = self
                .kvm
                .0
                .iter()
                .filter(|(k, v)| *v > 0 && k != "exits" && !k.ends_with("_exits"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !other.is_empty() {
                writeln!(f, "  other KVM counters: {}", other.join(" "))?;
            }
        }
        let hc = self.hypercalls();
        writeln!(f, "  hypercalls: {}", hc.iter().map(|h| h.1).sum::<u64>())?;
        for (nr, n, enosys) in hc {
            let label = if nr == NR_HYPERCALLS - 1 { "(other numbers)" } else { name(nr as u64) };
            if enosys > 0 {
                writeln!(f, "    {nr:>3} {label:<22} {n}  ({enosys} answered -ENOSYS)")?;
            } else {
                writeln!(f, "    {nr:>3} {label:<22} {n}")?;
            }
        }
        if let Some(s) = &self.shim {
            let exc: u64 = s.exceptions.iter().sum();
            writeln!(f, "  guest exceptions: {exc}; hostcalls: {}", s.hostcalls)?;
            let emulated: Vec<String> = EmulKind::NAMES
                .iter()
                .zip(s.emulated.iter())
                .filter(|(_, n)| **n > 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            if !emulated.is_empty() {
                writeln!(f, "  emulated instructions: {}", emulated.join(", "))?;
            }
            let ports: Vec<String> = s
                .io_ports
                .iter()
                .zip(s.io_port_counts.iter())
                .filter(|(_, &n)| n > 0)
                .map(|(p, n)| format!("{p:#x} {n}"))
                .collect();
            if !ports.is_empty() {
                writeln!(f, "  port I/O by port: {}", ports.join(", "))?;
            }
            let [host, timer, other] = s.interrupts;
            let shim: Vec<String> = [
                ("event upcalls", s.upcalls),
                ("guest syscalls", s.syscalls),
                ("host-event interrupts", host),
                ("timer interrupts", timer),
                ("other interrupts", other),
                ("sends to the host", s.host_sends),
                ("doorbells", s.doorbells),
                ("ports raised by the host", s.host_raised),
                ("timer events", s.timer_fired),
                ("frames released", s.frames_released),
                ("release hostcalls", s.release_hostcalls),
                ("frames populated", s.frames_populated),
            ]
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
            if !shim.is_empty() {
                writeln!(f, "  shim: {}", shim.join(", "))?;
            }
        }
        let e = &self.events;
        if *e != EventStats::default() {
            writeln!(
                f,
                "  host events: {} doorbell wake-ups, {} notifications ({} unserved), {} raises ({} irqfd writes), {} console ring bytes, {} xenstore ring passes, {} forwarded to backend threads",
                e.doorbell_wakeups,
                e.ports_notified,
                e.notified_unserved,
                e.ports_raised,
                e.irqs,
                e.console_ring_bytes,
                e.store_passes,
                e.ports_forwarded
            )?;
        }
        for d in &self.disks {
            let c = &d.counters;
            writeln!(
                f,
                "  {}: {} reads ({} sectors), {} writes ({} sectors), {} flushes, {} discards, {} indirect, {} other; {} errors, {} not supported, {} qcow2 headers refused; {} I/O batches, {} notifications",
                d.name,
                c.rd_req,
                c.rd_sect,
                c.wr_req,
                c.wr_sect,
                c.f_req,
                c.ds_req,
                c.indirect_req,
                c.other_req,
                c.err_rsp,
                c.notsupp_rsp,
                c.qcow2_refused,
                c.batches,
                c.notifications
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn shim_and_event_counters_are_printed_only_when_non_zero() {
        let mut shim = ShimStats::new_zeroed();
        let mut stats = Stats { shim: Some(shim), ..Default::default() };
        let quiet = stats.to_string();
        for word in ["emulated", "shim:", "host events", "doorbells"] {
            assert!(!quiet.contains(word), "{word} in\n{quiet}");
        }
        shim.emulated[EmulKind::Rdmsr as usize] = 3;
        shim.doorbells = 7;
        shim.interrupts[1] = 2;
        stats.shim = Some(shim);
        stats.events.console_ring_bytes = 100;
        let s = stats.to_string();
        assert!(s.contains("emulated instructions: rdmsr 3\n"), "{s}");
        assert!(s.contains("shim: timer interrupts 2, doorbells 7\n"), "{s}");
        assert!(s.contains("100 console ring bytes"), "{s}");
        assert!(!s.contains("upcalls") && !s.contains("wrmsr"), "{s}");
    }
}
