//! Host tests of `HYPERVISOR_vcpu_op` for the running vCPU 0 and the ids that do not exist.

use super::*;
use crate::event::tests::{
    ack_upcall, bind_ipi, get, pending_sel, put, shim, TestShim, ARG, RO_PAGE, UNMAPPED,
};
use crate::testutil::{GUEST_FIRST_DATA_MFN, GUEST_VA};
use xen_abi::event::{EVTCHNOP_SEND, VIRQ_TIMER};
use xen_abi::vcpu::RUNSTATE_BLOCKED;
use xen_abi::xen::{VMASST_TYPE_RUNSTATE_UPDATE_FLAG, XEN_PVCLOCK_TSC_STABLE_BIT};

fn call(s: &mut TestShim, cmd: u64, vcpu: u64, arg: u64) -> Result<u64, Errno> {
    vcpu_op(s, Args([cmd, vcpu, arg, 0, 0, 0]))
}

fn with<T: IntoBytes + zerocopy::Immutable>(s: &mut TestShim, cmd: u64, arg: &T) -> Result<u64, Errno> {
    put(s, ARG, arg);
    call(s, cmd, 0, ARG)
}

#[test]
fn every_command_on_a_missing_vcpu_is_enoent() {
    let mut s = shim();
    for cmd in 0..=15 {
        for id in [1u64, 2, 31, 8191, u64::from(u32::MAX)] {
            assert_eq!(call(&mut s, cmd, id, ARG), Err(Errno::ENOENT), "cmd {cmd} vcpu {id}");
        }
    }
    // `unsigned int vcpuid`: high bits are not part of it.
    assert_eq!(call(&mut s, VCPUOP_IS_UP, 1 << 32, 0), Ok(1));
}

#[test]
fn vcpu_0_is_up_initialised_and_powers_off_when_taken_down() {
    let mut s = shim();
    assert_eq!(call(&mut s, VCPUOP_IS_UP, 0, 0), Ok(1));
    assert_eq!(call(&mut s, VCPUOP_UP, 0, 0), Ok(0));
    assert_eq!(call(&mut s, VCPUOP_INITIALISE, 0, GUEST_VA), Err(Errno::EEXIST));
    assert_eq!(
        call(&mut s, VCPUOP_INITIALISE, 0, RO_PAGE + 100),
        Err(Errno::EFAULT),
        "context runs off the map"
    );
    assert_eq!(call(&mut s, VCPUOP_GET_PHYSID, 0, ARG), Err(Errno::EINVAL));
    assert_eq!(call(&mut s, 16, 0, ARG), Err(Errno::ENOSYS));
    assert!(!s.is_dead());
    assert_eq!(call(&mut s, VCPUOP_DOWN, 0, 0), Ok(0));
    assert!(s.is_dead());
    assert_eq!(s.m.hostcalls.last().unwrap().1[0], u64::from(SHUTDOWN_POWEROFF));
}

#[test]
fn send_nmi_takes_no_argument() {
    let mut s = shim();
    assert_eq!(call(&mut s, VCPUOP_SEND_NMI, 0, ARG), Err(Errno::EINVAL));
    assert!(!s.vcpu.nmi_pending);
    assert_eq!(call(&mut s, VCPUOP_SEND_NMI, 0, 0), Ok(0));
    assert!(s.vcpu.nmi_pending);
}

const NEW_MFN: u64 = GUEST_FIRST_DATA_MFN + 2;

fn register(s: &mut TestShim, mfn: u64, offset: u32) -> Result<u64, Errno> {
    with(s, VCPUOP_REGISTER_VCPU_INFO, &VcpuRegisterVcpuInfo { mfn, offset, rsvd: 0 })
}

#[test]
fn register_vcpu_info_validates_then_moves_and_forces_a_rescan() {
    let mut s = shim();
    assert_eq!(register(&mut s, NEW_MFN, 4096 - 63), Err(Errno::EINVAL), "crosses the page");
    assert_eq!(register(&mut s, 1 << 40, 0), Err(Errno::EINVAL), "not the domain's RAM");
    assert_eq!(call(&mut s, VCPUOP_REGISTER_VCPU_INFO, 0, UNMAPPED), Err(Errno::EFAULT));
    s.set_upcall_mask(1);
    s.set_guest_cr2(0xabcd);
    ack_upcall(&mut s);
    let shared = s.vcpu.vcpu_info;
    assert_eq!(register(&mut s, NEW_MFN, 4096 - 64), Ok(0));
    let new = (NEW_MFN << 12) + 4096 - 64;
    assert_eq!(s.vcpu.vcpu_info, new);
    assert!(s.vcpu.vcpu_info_registered);
    let vi: VcpuInfo = get(&s, GUEST_VA + 2 * 4096 + 4096 - 64);
    assert_eq!((vi.evtchn_upcall_mask, vi.arch.cr2), (1, 0xabcd), "contents moved");
    assert_eq!((vi.evtchn_upcall_pending, vi.evtchn_pending_sel), (1, u64::MAX), "forced rescan");
    assert_eq!(vi.time.tsc_to_system_mul, s.time.scale.mul_frac, "time record moved too");
    assert_eq!(vi.time.flags, XEN_PVCLOCK_TSC_STABLE_BIT);
    assert_eq!(register(&mut s, NEW_MFN, 0), Err(Errno::EINVAL), "only once");
    // From now on raises go to the new copy; shared_info's time record stays valid.
    ack_upcall(&mut s);
    let p = bind_ipi(&mut s, 0).unwrap();
    crate::event::tests::port_op(&mut s, EVTCHNOP_SEND, p).unwrap();
    assert_eq!(pending_sel(&s), 1);
    assert!(s.upcall_pending());
    let old: VcpuInfo = {
        let mut v = VcpuInfo::default();
        s.m.read_phys(shared, v.as_mut_bytes()).unwrap();
        v
    };
    assert_eq!(old.evtchn_pending_sel, 0, "the shared_info copy is no longer used");
    s.update_vcpu_system_time();
    let vi: VcpuInfo = get(&s, GUEST_VA + 2 * 4096 + 4096 - 64);
    assert_eq!(vi.time.version, old.time.version + 2, "both copies are kept up to date");
}

#[test]
fn runstate_area_is_written_at_registration_and_around_blocking() {
    let mut s = shim();
    let area = GUEST_VA + 3 * 4096;
    assert_eq!(
        with(&mut s, VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, &0xffff_8000_0000_0000u64),
        Err(Errno::EFAULT)
    );
    assert_eq!(call(&mut s, VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, 0, UNMAPPED), Err(Errno::EFAULT));
    // An unmapped area is accepted (Xen writes later, when it can).
    assert_eq!(with(&mut s, VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, &UNMAPPED), Ok(0));
    s.vm_assist |= 1 << VMASST_TYPE_RUNSTATE_UPDATE_FLAG;
    s.m.tsc += 100;
    assert_eq!(with(&mut s, VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, &area), Ok(0));
    let r: VcpuRunstateInfo = get(&s, area);
    assert_eq!((r.state, r.time[0]), (RUNSTATE_RUNNING, 100));
    s.set_periodic(0);
    ack_upcall(&mut s);
    let t = crate::event::tests::bind_virq(&mut s, VIRQ_TIMER, 0).unwrap();
    s.set_singleshot(s.now_ns() + 1_000);
    crate::sched::sched_op(&mut s, Args([xen_abi::sched::SCHEDOP_BLOCK, 0, 0, 0, 0, 0])).unwrap();
    assert!(s.evtchn_is_pending(t));
    let r: VcpuRunstateInfo = get(&s, area);
    assert_eq!(r.state, RUNSTATE_RUNNING);
    assert_eq!(r.time[RUNSTATE_BLOCKED as usize], 1_000);
    assert_eq!(r.state_entry_time & XEN_RUNSTATE_UPDATE, 0, "update flag cleared again");
    assert_eq!(call(&mut s, VCPUOP_GET_RUNSTATE_INFO, 0, ARG), Ok(0));
    let r: VcpuRunstateInfo = get(&s, ARG);
    assert_eq!(r.time[RUNSTATE_BLOCKED as usize], 1_000);
    assert_eq!(call(&mut s, VCPUOP_GET_RUNSTATE_INFO, 0, RO_PAGE), Err(Errno::EFAULT));
}

#[test]
fn secondary_time_area_gets_the_record_with_an_even_version() {
    let mut s = shim();
    let area = GUEST_VA + 4 * 4096 + 8;
    put(&mut s, area, &7u32);
    assert_eq!(with(&mut s, VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA, &area), Ok(0));
    let t: VcpuTimeInfo = get(&s, area);
    assert_eq!(t.version, 10, "after guest garbage 7: begin (7 + 1) | 1 = 9, end 10");
    assert_eq!((t.tsc_timestamp, t.tsc_to_system_mul), (s.time.tsc_at_boot, s.time.scale.mul_frac));
    assert_eq!(with(&mut s, VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA, &(1u64 << 63)), Err(Errno::EFAULT));
}

#[test]
fn periodic_timer_limits_are_xens() {
    let mut s = shim();
    let set = |p| VcpuSetPeriodicTimer { period_ns: p };
    assert_eq!(with(&mut s, VCPUOP_SET_PERIODIC_TIMER, &set(999_999)), Err(Errno::EINVAL));
    assert_eq!(
        with(&mut s, VCPUOP_SET_PERIODIC_TIMER, &set(crate::time::STIME_DELTA_MAX + 1)),
        Err(Errno::EINVAL)
    );
    assert_eq!(with(&mut s, VCPUOP_SET_PERIODIC_TIMER, &set(1_000_000)), Ok(0));
    assert_eq!(s.vcpu.time.periodic_period, 1_000_000);
    assert_eq!(call(&mut s, VCPUOP_STOP_PERIODIC_TIMER, 0, 0), Ok(0));
    assert_eq!(s.vcpu.time.periodic_period, 0);
    assert_eq!(call(&mut s, VCPUOP_SET_PERIODIC_TIMER, 0, UNMAPPED), Err(Errno::EFAULT));
}

#[test]
fn singleshot_future_flag_refuses_a_past_deadline() {
    let mut s = shim();
    s.set_periodic(0);
    let t = crate::event::tests::bind_virq(&mut s, VIRQ_TIMER, 0).unwrap();
    s.m.tsc += 1_000;
    let set = |timeout_abs_ns, flags| VcpuSetSingleshotTimer { timeout_abs_ns, flags, _pad: 0 };
    assert_eq!(with(&mut s, VCPUOP_SET_SINGLESHOT_TIMER, &set(500, VCPU_SSHOTTMR_FUTURE)), Err(Errno::ETIME));
    assert!(!s.evtchn_is_pending(t));
    assert_eq!(with(&mut s, VCPUOP_SET_SINGLESHOT_TIMER, &set(5_000, VCPU_SSHOTTMR_FUTURE)), Ok(0));
    assert_eq!(call(&mut s, VCPUOP_STOP_SINGLESHOT_TIMER, 0, 0), Ok(0));
    assert_eq!(s.vcpu.time.singleshot, None);
    assert_eq!(with(&mut s, VCPUOP_SET_SINGLESHOT_TIMER, &set(500, 0)), Ok(0), "Linux's flags 0");
    assert!(s.evtchn_is_pending(t), "a past deadline fires at once");
    assert_eq!(call(&mut s, VCPUOP_SET_SINGLESHOT_TIMER, 0, UNMAPPED), Err(Errno::EFAULT));
}
