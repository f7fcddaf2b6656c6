//! Time (Xen `arch/x86/time.c`, `common/sched/core.c` timers): `vcpu_time_info` and the
//! wallclock under the version protocol, the vCPU's single-shot and periodic timers and the
//! domain's watchdogs on the local APIC one-shot timer, `set_timer_op`, and the runstate area.
//!
//! System time is nanoseconds since the shim booted the domain, computed from the TSC with
//! Xen's `mul_frac`/`shift` scale (`set_time_scale`), the same numbers the guest reads from
//! `vcpu_time_info`, so the shim and the guest agree on "now" to the nanosecond:
//!
//! ```text
//!   now = system_time(0) + (((tsc - tsc_timestamp) << shift  or  >> -shift) * mul_frac) >> 32
//! ```
//!
//! With KVM's invariant TSC one record, written at boot, stays valid forever; it is written to
//! shared_info's `vcpu_info[0].time` (Linux derives its TSC frequency from that copy, §13.39),
//! to the registered `vcpu_info` and to the secondary area (a guest virtual address).
//!
//! Timers are deadlines in system time. Whenever one changes, [`Shim::rearm_timer`] programs the
//! LAPIC for the earliest (re-arming for deadlines past its 32-bit range); every interrupt
//! runs [`Shim::check_timers`] through `poll_sources`. As in Xen, the periodic timer only
//! ticks while the vCPU runs (Xen stops it when the vCPU is descheduled) and fires at once
//! on wake-up if a period has passed.

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm;
use crate::shim::Shim;
use core::mem::offset_of;
use xen_abi::event::VIRQ_TIMER;
use xen_abi::hostcall::BootInfo;
use xen_abi::vcpu::{VcpuRunstateInfo, RUNSTATE_RUNNING, XEN_RUNSTATE_UPDATE};
use xen_abi::xen::{
    SharedInfo, VcpuInfo, VcpuTimeInfo, VMASST_TYPE_RUNSTATE_UPDATE_FLAG, XEN_PVCLOCK_TSC_STABLE_BIT,
};
use xen_abi::Errno;
use zerocopy::IntoBytes;

pub const NANOSECS_PER_SEC: u64 = 1_000_000_000;
pub const MILLISECS: u64 = 1_000_000;
/// Xen's `STIME_DELTA_MAX`: the longest period a timer may have.
pub const STIME_DELTA_MAX: u64 = u64::MAX >> 2;
/// Every PV vCPU starts with a 100 Hz periodic timer (Xen `pv_vcpu_initialise`).
pub const DEFAULT_PERIOD_NS: u64 = 10 * MILLISECS;
/// `set_timer_op` deadlines this far ahead (2^50 ns, ~13 days) are Linux's wrapped jiffies.
const SET_TIMER_OP_MAX_AHEAD: u64 = 1 << 50;
/// What `set_timer_op` arms instead of such a deadline (Xen: 100 ms).
const SET_TIMER_OP_FALLBACK: u64 = 100 * MILLISECS;
/// Xen's `NR_DOMAIN_WATCHDOG_TIMERS`.
pub const NR_DOMAIN_WATCHDOG_TIMERS: usize = 2;

/// Xen's `struct time_scale`: TSC ticks to nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeScale {
    pub mul_frac: u32,
    pub shift: i8,
}

impl TimeScale {
    /// Xen's `set_time_scale`: normalise the frequency into (1 GHz, 2 GHz] by powers of two
    /// (recorded in `shift`), then `mul_frac` = 10^9 · 2^32 / that, which fits in 32 bits.
    /// Works for any frequency from 1 Hz up.
    pub fn from_hz(ticks_per_sec: u64) -> TimeScale {
        let mut tps = ticks_per_sec.max(1);
        let mut shift: i32 = 0;
        while tps > 2 * NANOSECS_PER_SEC {
            tps >>= 1;
            shift -= 1;
        }
        while tps <= NANOSECS_PER_SEC {
            tps <<= 1;
            shift += 1;
        }
        let mul_frac = ((u128::from(NANOSECS_PER_SEC) << 32) / u128::from(tps)) as u32;
        TimeScale { mul_frac, shift: shift as i8 }
    }

    /// Xen's and the guest's `scale_delta`: nanoseconds in `ticks` TSC ticks (saturating
    /// where the guest's 64-bit shift would overflow).
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        let d = if self.shift < 0 {
            ticks >> (-i32::from(self.shift)).min(63)
        } else {
            ticks.checked_shl(self.shift as u32).filter(|v| v >> self.shift == ticks).unwrap_or(u64::MAX)
        };
        ((u128::from(d) * u128::from(self.mul_frac)) >> 32) as u64
    }

    /// The fewest TSC ticks in which at least `ns` nanoseconds pass by
    /// [`ticks_to_ns`](Self::ticks_to_ns); saturates at `u64::MAX`.
    pub fn ns_to_ticks(&self, ns: u64) -> u64 {
        if ns == 0 || self.mul_frac == 0 {
            return 0;
        }
        // Smallest d with (d * mul) >> 32 >= ns.
        let d = (u128::from(ns) << 32).div_ceil(u128::from(self.mul_frac));
        let ticks = if self.shift < 0 {
            d << (-i32::from(self.shift))
        } else {
            let s = self.shift as u32;
            d.div_ceil(1u128 << s)
        };
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }
}

/// Domain-wide time state.
#[derive(Clone, Debug)]
pub struct DomainTime {
    /// TSC → system time, from the VMM's `tsc_khz`.
    pub scale: TimeScale,
    /// The TSC at system time 0 (`init_time`).
    pub tsc_at_boot: u64,
    /// LAPIC timer ticks per second.
    pub lapic_hz: u64,
    /// UNIX time at system time 0.
    pub wc_sec: u64,
    pub wc_nsec: u32,
    /// `SCHEDOP_watchdog` timers.
    pub watchdogs: [Watchdog; NR_DOMAIN_WATCHDOG_TIMERS],
}

impl DomainTime {
    /// A VMM that could not tell the TSC or LAPIC frequency (0) gets 1 GHz, KVM's usual.
    pub fn new(boot: &BootInfo) -> DomainTime {
        let tsc_hz = boot.tsc_khz.checked_mul(1000).filter(|&hz| hz != 0).unwrap_or(NANOSECS_PER_SEC);
        DomainTime {
            scale: TimeScale::from_hz(tsc_hz),
            tsc_at_boot: 0,
            lapic_hz: if boot.lapic_timer_hz == 0 { NANOSECS_PER_SEC } else { boot.lapic_timer_hz },
            wc_sec: boot.wallclock_sec,
            wc_nsec: boot.wallclock_nsec,
            watchdogs: [Watchdog::default(); NR_DOMAIN_WATCHDOG_TIMERS],
        }
    }

    /// LAPIC ticks covering at least `ns`.
    pub fn ns_to_lapic_ticks(&self, ns: u64) -> u64 {
        let t = (u128::from(ns) * u128::from(self.lapic_hz)).div_ceil(u128::from(NANOSECS_PER_SEC));
        u64::try_from(t).unwrap_or(u64::MAX)
    }
}

/// One domain watchdog (`SCHEDOP_watchdog`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watchdog {
    /// Allocated (Xen's `watchdog_inuse_map` bit).
    pub in_use: bool,
    /// When it bites (system time); `None` once it has.
    pub deadline: Option<u64>,
}

/// Per-vCPU timers and runstate registration.
#[derive(Clone, Debug)]
pub struct VcpuTime {
    /// Single-shot deadline (`set_singleshot_timer`, `set_timer_op`).
    pub singleshot: Option<u64>,
    /// Periodic timer period, 0 = stopped.
    pub periodic_period: u64,
    /// When the periodic timer last fired (`periodic_last_event`).
    pub periodic_last: u64,
    /// `SCHEDOP_poll` timeout while polling.
    pub poll_deadline: Option<u64>,
    /// In `SCHEDOP_block`/`SCHEDOP_poll`, asleep.
    pub blocked: bool,
    /// The deadline the LAPIC timer was last programmed for (`None`: stopped).
    pub armed: Option<u64>,
    /// Xen's `v->runstate`.
    pub runstate: VcpuRunstateInfo,
    /// Guest virtual address of the runstate area.
    pub runstate_area: Option<u64>,
    /// Guest virtual address of the secondary `vcpu_time_info`.
    pub time_area: Option<u64>,
}

impl Default for VcpuTime {
    fn default() -> Self {
        VcpuTime {
            singleshot: None,
            periodic_period: DEFAULT_PERIOD_NS,
            periodic_last: 0,
            poll_deadline: None,
            blocked: false,
            armed: None,
            runstate: VcpuRunstateInfo { state: RUNSTATE_RUNNING, ..Default::default() },
            runstate_area: None,
            time_area: None,
        }
    }
}

fn read_u32<M: Machine>(m: &M, at: u64) -> Result<u32, Errno> {
    let mut b = [0u8; 4];
    m.read_phys(at, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Xen's `version_update_begin`: odd while the writer is at work.
fn version_update_begin(v: u32) -> u32 {
    v.wrapping_add(1) | 1
}

/// `HYPERVISOR_set_timer_op(timeout_abs_ns)` (Xen `do_set_timer_op`): 0 cancels; negative or
/// absurdly far deadlines (Linux's wrapped jiffies) become 100 ms from now; a past one fires
/// at once.
pub fn set_timer_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let timeout = a.0[0];
    let now = s.now_ns();
    if timeout == 0 {
        s.stop_singleshot();
    } else if (timeout as i64) < 0
        || timeout.checked_sub(now).is_some_and(|ahead| ahead >= SET_TIMER_OP_MAX_AHEAD)
    {
        s.set_singleshot(now.saturating_add(SET_TIMER_OP_FALLBACK));
    } else {
        s.set_singleshot(timeout);
    }
    Ok(0)
}

impl<M: Machine> Shim<M> {
    /// System time: nanoseconds since `init_time`.
    pub fn now_ns(&self) -> u64 {
        let ticks = self.m.rdtsc().saturating_sub(self.time.tsc_at_boot);
        self.time.scale.ticks_to_ns(ticks)
    }

    /// Called once at boot before the guest runs: system time 0 is now; the time record of
    /// vCPU 0 and the wallclock go into shared_info.
    pub fn init_time(&mut self) {
        self.time.tsc_at_boot = self.m.rdtsc();
        self.vcpu.time.runstate = VcpuRunstateInfo { state: RUNSTATE_RUNNING, ..Default::default() };
        self.update_vcpu_system_time();
        self.update_wallclock();
    }

    /// The vCPU's `vcpu_time_info` (version left 0 for the writer).
    pub fn time_record(&self) -> VcpuTimeInfo {
        VcpuTimeInfo {
            tsc_timestamp: self.time.tsc_at_boot,
            system_time: 0,
            tsc_to_system_mul: self.time.scale.mul_frac,
            tsc_shift: self.time.scale.shift,
            flags: XEN_PVCLOCK_TSC_STABLE_BIT,
            ..Default::default()
        }
    }

    /// Writes `rec` at machine address `at` under the version protocol.
    fn write_time_info(&mut self, at: u64, rec: &VcpuTimeInfo) {
        let Ok(old) = read_u32(&self.m, at) else { return };
        let mut r = *rec;
        r.version = version_update_begin(old);
        let _ = self.m.write_phys(at, &r.version.to_le_bytes());
        let _ = self.m.write_phys(at, r.as_bytes());
        let _ = self.m.write_phys(at, &r.version.wrapping_add(1).to_le_bytes());
    }

    /// Xen's `force_update_vcpu_system_time`: shared_info's `vcpu_info[0].time`, the registered
    /// `vcpu_info` and the secondary area.
    pub fn update_vcpu_system_time(&mut self) {
        let rec = self.time_record();
        let time = offset_of!(VcpuInfo, time) as u64;
        let shared = (self.boot.shared_info_mfn << 12) + offset_of!(SharedInfo, vcpu_info) as u64;
        self.write_time_info(shared + time, &rec);
        if self.vcpu.vcpu_info_registered {
            self.write_time_info(self.vcpu.vcpu_info + time, &rec);
        }
        self.update_secondary_system_time(&rec);
    }

    /// Xen's `update_secondary_system_time`, through the kernel page tables; a fault is
    /// ignored, as in Xen.
    fn update_secondary_system_time(&mut self, rec: &VcpuTimeInfo) {
        let Some(va) = self.vcpu.time.time_area else { return };
        let cr3 = self.vcpu.guest_table;
        let mut old = [0u8; 4];
        if mm::copy_from_guest(&self.m, cr3, va, &mut old).is_err() {
            return;
        }
        let mut r = *rec;
        r.version = version_update_begin(u32::from_le_bytes(old));
        let _ = mm::copy_to_guest(&mut self.m, cr3, va, &r.version.to_le_bytes());
        let _ = mm::copy_to_guest(&mut self.m, cr3, va, r.as_bytes());
        let _ = mm::copy_to_guest(&mut self.m, cr3, va, &r.version.wrapping_add(1).to_le_bytes());
    }

    /// Writes the wallclock (UNIX time at system time 0) into shared_info under `wc_version`.
    fn update_wallclock(&mut self) {
        let si = self.boot.shared_info_mfn << 12;
        let at = |off: usize| si + off as u64;
        let Ok(old) = read_u32(&self.m, at(offset_of!(SharedInfo, wc_version))) else { return };
        let v = version_update_begin(old);
        let _ = self.m.write_phys(at(offset_of!(SharedInfo, wc_version)), &v.to_le_bytes());
        let _ =
            self.m.write_phys(at(offset_of!(SharedInfo, wc_sec)), &(self.time.wc_sec as u32).to_le_bytes());
        let _ = self.m.write_phys(at(offset_of!(SharedInfo, wc_nsec)), &self.time.wc_nsec.to_le_bytes());
        let hi = (self.time.wc_sec >> 32) as u32;
        let _ = self.m.write_phys(at(offset_of!(SharedInfo, wc_sec_hi)), &hi.to_le_bytes());
        let _ = self.m.write_phys(at(offset_of!(SharedInfo, wc_version)), &v.wrapping_add(1).to_le_bytes());
    }

    // ---- Timers ----

    /// Arms the single-shot timer for `deadline` (system time); one already due fires now.
    pub fn set_singleshot(&mut self, deadline: u64) {
        self.vcpu.time.singleshot = Some(deadline);
        self.check_timers();
    }

    pub fn stop_singleshot(&mut self) {
        self.vcpu.time.singleshot = None;
        self.rearm_timer();
    }

    /// Xen's `vcpu_set_periodic_timer`: 0 stops it; otherwise it fires at once if a period
    /// passed since it last fired.
    pub fn set_periodic(&mut self, period: u64) {
        self.vcpu.time.periodic_period = period;
        self.check_timers();
    }

    /// Xen's `send_timer_event`: VIRQ_TIMER on the vCPU, if a port is bound to it.
    fn send_timer_event(&mut self) {
        let port = self.ev.virq_port(VIRQ_TIMER);
        if port != 0 {
            self.m.stats().timer_fired += 1;
            self.evtchn_set_pending(port);
        }
    }

    /// Runs every timer whose deadline passed, then re-arms the LAPIC.
    pub fn check_timers(&mut self) {
        let now = self.now_ns();
        if self.vcpu.time.singleshot.is_some_and(|d| now >= d) {
            self.vcpu.time.singleshot = None;
            self.send_timer_event();
        }
        let t = &self.vcpu.time;
        if t.periodic_period != 0 && !t.blocked && now >= t.periodic_last.saturating_add(t.periodic_period) {
            self.vcpu.time.periodic_last = now;
            self.send_timer_event();
        }
        for i in 0..NR_DOMAIN_WATCHDOG_TIMERS {
            if self.time.watchdogs[i].deadline.is_some_and(|d| now >= d) {
                // Xen's `domain_watchdog_timeout`; the watchdog stays allocated.
                self.time.watchdogs[i].deadline = None;
                if !self.is_dead() {
                    self.domain_shutdown(xen_abi::sched::SHUTDOWN_WATCHDOG as u8);
                }
            }
        }
        self.rearm_timer();
    }

    /// The earliest deadline of anything the LAPIC must wake us for.
    fn next_deadline(&self) -> Option<u64> {
        let t = &self.vcpu.time;
        // The periodic timer only matters while the vCPU runs and someone listens.
        let periodic = (t.periodic_period != 0 && !t.blocked && self.ev.virq_port(VIRQ_TIMER) != 0)
            .then(|| t.periodic_last.saturating_add(t.periodic_period));
        [t.singleshot, periodic, t.poll_deadline]
            .into_iter()
            .chain(self.time.watchdogs.iter().map(|w| w.deadline))
            .flatten()
            .min()
    }

    /// Programs the LAPIC one-shot timer for the next deadline (at most its 32-bit range away:
    /// an early interrupt just re-arms).
    ///
    /// The guest moves its timer several times per idle period, often to where it already is
    /// (Linux re-programs the same tick on every idle entry and exit), and every LAPIC write is
    /// a VM exit: a deadline that is already counting down is left alone.
    pub fn rearm_timer(&mut self) {
        let next = self.next_deadline();
        if next == self.vcpu.time.armed && (next.is_none() || self.m.timer_running()) {
            return;
        }
        let ticks = next.map(|d| {
            let ns = d.saturating_sub(self.now_ns());
            self.time.ns_to_lapic_ticks(ns).clamp(1, u64::from(u32::MAX)) as u32
        });
        self.m.arm_timer(ticks);
        self.vcpu.time.armed = next;
    }

    // ---- Runstate ----

    /// The runstate with the time in the current state accrued up to now
    /// (`vcpu_runstate_get`).
    pub fn runstate_now(&self) -> VcpuRunstateInfo {
        let mut r = self.vcpu.time.runstate;
        let now = self.now_ns();
        if let Some(t) = r.time.get_mut(r.state as usize) {
            *t = t.wrapping_add(now.saturating_sub(r.state_entry_time));
        }
        r
    }

    /// Xen's `vcpu_runstate_change`, then `update_runstate_area`.
    pub fn runstate_change(&mut self, state: i32) {
        let now = self.now_ns();
        let r = &mut self.vcpu.time.runstate;
        if let Some(t) = r.time.get_mut(r.state as usize) {
            *t = t.wrapping_add(now.saturating_sub(r.state_entry_time));
        }
        r.state = state;
        r.state_entry_time = now;
        self.update_runstate_area();
    }

    /// Xen's `update_runstate_area` through the kernel page tables (the area is a kernel
    /// virtual address, valid whatever mode the vCPU is in); faults are ignored. With
    /// `VMASST_TYPE_runstate_update_flag` the top byte of `state_entry_time` carries
    /// `XEN_RUNSTATE_UPDATE` while the record is rewritten.
    pub fn update_runstate_area(&mut self) {
        let Some(va) = self.vcpu.time.runstate_area else { return };
        let cr3 = self.vcpu.guest_table;
        let r = self.vcpu.time.runstate;
        let flag = self.vm_assist & (1 << VMASST_TYPE_RUNSTATE_UPDATE_FLAG) != 0;
        let top = va.wrapping_add(offset_of!(VcpuRunstateInfo, state_entry_time) as u64 + 7);
        if flag {
            let b = ((r.state_entry_time | XEN_RUNSTATE_UPDATE) >> 56) as u8;
            let _ = mm::copy_to_guest(&mut self.m, cr3, top, &[b]);
        }
        let _ = mm::copy_to_guest(&mut self.m, cr3, va, r.as_bytes());
        if flag {
            let _ = mm::copy_to_guest(&mut self.m, cr3, top, &[(r.state_entry_time >> 56) as u8]);
        }
    }
}

#[cfg(test)]
mod tests;
