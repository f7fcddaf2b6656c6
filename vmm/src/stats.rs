//! What `--stats` reports: VM exits by reason (userspace exits counted here, all exits as KVM
//! counts them), hypercalls by number as the shim counts them, and where the time went.

use crate::kvm::stats::KvmStats;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use xen_abi::hostcall::ShimStats;
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
        }
        Ok(())
    }
}
