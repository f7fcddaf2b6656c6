//! Host tests of the time scale, the time records, the timers and `set_timer_op`.

use super::*;
use crate::event::tests::{bind_virq, shim, TestShim, SHARED_INFO_MFN};
use xen_abi::xen::SharedInfo;

fn read<T: zerocopy::FromBytes + IntoBytes>(s: &TestShim, maddr: u64) -> T {
    let mut v = T::new_zeroed();
    s.m.read_phys(maddr, v.as_mut_bytes()).unwrap();
    v
}

fn shared_time(s: &TestShim) -> VcpuTimeInfo {
    read(s, (SHARED_INFO_MFN << 12) + offset_of!(VcpuInfo, time) as u64)
}

/// A shim whose TSC runs at `tsc_khz` and whose LAPIC timer at 1 GHz; the mock's
/// `wait_for_interrupt` advances the TSC accordingly.
fn shim_at(tsc_khz: u64) -> TestShim {
    let mut s = shim();
    s.boot.tsc_khz = tsc_khz;
    s.boot.lapic_timer_hz = NANOSECS_PER_SEC;
    s.time = DomainTime::new(&s.boot);
    assert_eq!(tsc_khz % 1_000_000, 0, "mock needs whole TSC ticks per LAPIC tick");
    s.m.tsc_per_timer_tick = tsc_khz / 1_000_000;
    s.init_time();
    s
}

/// A timer port and no periodic ticks: only the single-shot timer raises it.
fn timer_port(s: &mut TestShim) -> u32 {
    s.set_periodic(0);
    bind_virq(s, VIRQ_TIMER, 0).unwrap()
}

#[test]
fn time_scale_matches_xens_set_time_scale() {
    assert_eq!(TimeScale::from_hz(1_000_000_000), TimeScale { mul_frac: 1 << 31, shift: 1 });
    assert_eq!(TimeScale::from_hz(2_000_000_000), TimeScale { mul_frac: 1 << 31, shift: 0 });
    assert_eq!(TimeScale::from_hz(500_000_000), TimeScale { mul_frac: 1 << 31, shift: 2 });
    // 3 GHz: normalised to 1.5 GHz, shift -1, mul = 2/3 of 2^32.
    assert_eq!(TimeScale::from_hz(3_000_000_000), TimeScale { mul_frac: 0xaaaa_aaaa, shift: -1 });
    let s = TimeScale::from_hz(2_494_222_000);
    assert_eq!(s.shift, -1);
    assert_eq!(TimeScale::from_hz(0), TimeScale::from_hz(1), "no division by zero");
}

#[test]
fn one_second_of_ticks_is_one_second_at_any_tsc_frequency() {
    for hz in [
        1_000u64,
        32_768,
        999_999_999,
        1_000_000_000,
        1_000_000_001,
        2_494_222_000,
        3_000_000_000,
        5_800_000_000,
    ] {
        let s = TimeScale::from_hz(hz);
        let ns = s.ticks_to_ns(hz);
        assert!(ns.abs_diff(NANOSECS_PER_SEC) <= 2, "{hz} Hz: 1 s of ticks is {ns} ns ({s:?})");
        let ns = s.ticks_to_ns(hz * 3600);
        assert!(ns.abs_diff(3600 * NANOSECS_PER_SEC) <= 3600 * 2, "{hz} Hz: 1 h is {ns} ns");
    }
}

#[test]
fn ns_to_ticks_is_the_least_tick_count_reaching_ns() {
    for hz in [1_000u64, 999_999_999, 1_000_000_000, 2_494_222_000, 3_000_000_000] {
        let s = TimeScale::from_hz(hz);
        for ns in [1u64, 7, 999, 1_000_000, 123_456_789, 10 * NANOSECS_PER_SEC, 1 << 50] {
            let t = s.ns_to_ticks(ns);
            assert!(s.ticks_to_ns(t) >= ns, "{hz} Hz, {ns} ns: {t} ticks are too few");
            assert!(t == 0 || s.ticks_to_ns(t - 1) < ns, "{hz} Hz, {ns} ns: {t} ticks are not the least");
        }
    }
    assert_eq!(TimeScale::from_hz(1).ns_to_ticks(u64::MAX), 18_446_744_074);
}

#[test]
fn ticks_to_ns_saturates_instead_of_wrapping() {
    let s = TimeScale::from_hz(500_000_000);
    assert!(s.ticks_to_ns(u64::MAX) >= s.ticks_to_ns(u64::MAX / 8));
}

#[test]
fn init_time_publishes_a_stable_record_and_the_wallclock() {
    let mut s = shim();
    s.m.tsc = 5_000_000;
    s.time.wc_sec = 0x1_2345_6789;
    s.time.wc_nsec = 999;
    s.init_time();
    let t = shared_time(&s);
    assert_eq!(t.version % 2, 0);
    assert!(t.version >= 2);
    assert_eq!((t.tsc_timestamp, t.system_time), (5_000_000, 0));
    assert_eq!((t.tsc_to_system_mul, t.tsc_shift), (s.time.scale.mul_frac, s.time.scale.shift));
    assert_eq!(t.flags, XEN_PVCLOCK_TSC_STABLE_BIT);
    let si: SharedInfo = read(&s, SHARED_INFO_MFN << 12);
    assert_eq!(si.wc_version % 2, 0);
    assert!(si.wc_version >= 2);
    assert_eq!((si.wc_sec, si.wc_sec_hi, si.wc_nsec), (0x2345_6789, 1, 999));
    s.m.tsc += 1_234;
    assert_eq!(s.now_ns(), 1_234);
}

#[test]
fn version_stays_even_and_grows_on_every_update() {
    let mut s = shim();
    let v0 = shared_time(&s).version;
    s.update_vcpu_system_time();
    assert_eq!(shared_time(&s).version, v0 + 2);
}

#[test]
fn singleshot_fires_on_time_and_only_once() {
    let mut s = shim_at(2_000_000);
    let p = timer_port(&mut s);
    s.set_singleshot(s.now_ns() + 1_000);
    assert_eq!(s.m.timer, Some(1_000), "LAPIC armed for the deadline");
    assert!(!s.evtchn_is_pending(p));
    s.m.tsc += 1_998;
    s.poll_sources();
    assert!(!s.evtchn_is_pending(p), "1 ns early");
    s.m.wait_for_interrupt();
    s.poll_sources();
    assert!(s.evtchn_is_pending(p));
    assert_eq!(s.m.stats.timer_fired, 1);
    assert_eq!(s.vcpu.time.singleshot, None);
    assert_eq!(s.m.timer, None, "nothing else to wait for");
}

#[test]
fn past_singleshot_deadline_fires_at_once() {
    let mut s = shim();
    let p = timer_port(&mut s);
    s.m.tsc += 10_000;
    s.set_singleshot(5);
    assert!(s.evtchn_is_pending(p));
}

#[test]
fn timer_without_a_bound_port_raises_nothing() {
    let mut s = shim();
    s.set_singleshot(0);
    assert_eq!(s.m.stats.timer_fired, 0);
    assert_eq!(s.ev.raised, 0);
}

#[test]
fn far_deadlines_rearm_in_steps_of_the_lapic_range() {
    let mut s = shim();
    timer_port(&mut s);
    s.set_singleshot(s.now_ns() + 10 * NANOSECS_PER_SEC);
    assert_eq!(s.m.timer, Some(u32::MAX));
    for _ in 0..2 {
        s.m.wait_for_interrupt();
        s.poll_sources();
        assert!(s.vcpu.time.singleshot.is_some(), "an early interrupt only re-arms");
    }
    assert_eq!(s.m.timer, Some((10 * NANOSECS_PER_SEC - 2 * u64::from(u32::MAX)) as u32));
}

#[test]
fn default_periodic_tick_is_100_hz_and_stops_on_request() {
    let mut s = shim();
    let p = bind_virq(&mut s, VIRQ_TIMER, 0).unwrap();
    assert_eq!(s.m.timer, Some(DEFAULT_PERIOD_NS as u32));
    s.m.wait_for_interrupt();
    s.poll_sources();
    assert!(s.evtchn_is_pending(p));
    assert_eq!(s.m.timer, Some(DEFAULT_PERIOD_NS as u32), "next period");
    s.set_periodic(0);
    assert_eq!(s.m.timer, None);
}

#[test]
fn set_periodic_fires_at_once_when_a_period_has_passed() {
    let mut s = shim();
    s.set_periodic(0);
    let p = bind_virq(&mut s, VIRQ_TIMER, 0).unwrap();
    s.m.tsc += 5 * MILLISECS;
    s.set_periodic(MILLISECS);
    assert!(s.evtchn_is_pending(p));
    assert_eq!(s.vcpu.time.periodic_last, 5 * MILLISECS);
}

#[test]
fn set_timer_op_cancels_clamps_and_fires_like_xen() {
    let mut s = shim();
    let p = timer_port(&mut s);
    let call = |s: &mut TestShim, t: u64| set_timer_op(s, Args([t, 0, 0, 0, 0, 0]));
    s.m.tsc += 1_000;
    assert_eq!(call(&mut s, 50_000), Ok(0));
    assert_eq!(s.vcpu.time.singleshot, Some(50_000));
    assert_eq!(call(&mut s, 0), Ok(0));
    assert_eq!(s.vcpu.time.singleshot, None);
    assert_eq!(call(&mut s, u64::MAX), Ok(0), "negative: wrapped jiffies");
    assert_eq!(s.vcpu.time.singleshot, Some(1_000 + SET_TIMER_OP_FALLBACK));
    assert_eq!(call(&mut s, 1_000 + (1 << 50)), Ok(0), "2^50 ns ahead");
    assert_eq!(s.vcpu.time.singleshot, Some(1_000 + SET_TIMER_OP_FALLBACK));
    assert_eq!(call(&mut s, 1_000 + (1 << 50) - 1), Ok(0));
    assert_eq!(s.vcpu.time.singleshot, Some(1_000 + (1 << 50) - 1));
    assert!(!s.evtchn_is_pending(p));
    assert_eq!(call(&mut s, 999), Ok(0), "past");
    assert!(s.evtchn_is_pending(p));
}

#[test]
fn lapic_ticks_round_up() {
    let mut b = crate::testutil::boot_info(1);
    b.lapic_timer_hz = 3;
    let t = DomainTime::new(&b);
    assert_eq!(t.ns_to_lapic_ticks(1), 1);
    assert_eq!(t.ns_to_lapic_ticks(NANOSECS_PER_SEC), 3);
    assert_eq!(t.ns_to_lapic_ticks(NANOSECS_PER_SEC + 1), 4);
    assert_eq!(
        DomainTime::new(&crate::testutil::boot_info(1)).ns_to_lapic_ticks(77),
        77,
        "1 GHz when unknown"
    );
}

#[test]
fn a_deadline_already_counting_down_is_not_programmed_again() {
    let mut s = shim();
    let _p = timer_port(&mut s);
    s.set_periodic(0);
    let d = s.now_ns() + 1_000_000;
    s.set_singleshot(d);
    let arms = s.m.timer_arms;
    // Linux moves its timer to the same tick again on idle entry and exit.
    s.set_singleshot(d);
    s.set_singleshot(d);
    assert_eq!(s.m.timer_arms, arms, "the LAPIC was left alone");
    // Once the timer fired (early: the deadline is not reached yet), the same deadline is
    // programmed again, or nothing would ever wake the guest for it.
    s.m.timer = None;
    s.set_singleshot(d);
    assert_eq!(s.m.timer_arms, arms + 1);
    assert!(s.m.timer.is_some());
    // A new deadline is programmed.
    s.set_singleshot(d + 1);
    assert_eq!(s.m.timer_arms, arms + 2);
    // Stopping twice stops once.
    s.stop_singleshot();
    s.stop_singleshot();
    assert_eq!(s.m.timer_arms, arms + 3);
    assert_eq!(s.m.timer, None);
}
