//! Host tests of `memory_op` on the mock machine.
//!
//! The mock domain: 2048 frames; RAM is frames 1..=4 (its L4..L1) and 16..2048; the M2P is in
//! frames 8..=11, shared_info in frame 5. `GUEST_VA + i*4K` maps frame 16 + i (i < 40,
//! writable). Arguments are staged at `ARG` (page 32), extent lists at `LIST` (pages 33..=35,
//! 1536 entries). Frames 56.. are free, unmapped RAM.

use super::*;
use crate::mm::check::check_invariants;
use crate::mm::ops::update_va_mapping;
use crate::testutil::{boot_info, MockMachine, GUEST_VA};
use xen_abi::hostcall::{MfnRange, HC_RELEASE_FRAMES};
use xen_abi::xen::{DOMID_IO, UVMF_INVLPG};
use zerocopy::FromBytes;

const FRAMES: u64 = 2048;
const ARG: u64 = GUEST_VA + 32 * 4096;
const LIST: u64 = GUEST_VA + 33 * 4096;
const FREE: u64 = 56;
const DOMID: u16 = 1;
const UNMAPPED: u64 = 0x1000;

fn shim() -> Shim<MockMachine> {
    let mut m = MockMachine::new(FRAMES);
    let idx = |v: u64, l: u32| mm::table_index(v, l) as u64;
    m.write_u64((1 << 12) + 8 * idx(GUEST_VA, 4), (2 << 12) | 0x67).unwrap();
    m.write_u64((2 << 12) + 8 * idx(GUEST_VA, 3), (3 << 12) | 0x67).unwrap();
    m.write_u64((3 << 12) + 8 * idx(GUEST_VA, 2), (4 << 12) | 0x67).unwrap();
    for i in 0..40u64 {
        m.write_u64((4 << 12) + 8 * i, ((16 + i) << 12) | 0x23).unwrap();
    }
    // The M2P: m2p[16 + i] = i for RAM, ~0 elsewhere.
    for mfn in 0..FRAMES {
        let pfn = if mfn >= 16 { mfn - 16 } else { u64::MAX };
        m.write_u64((8 << 12) + 8 * mfn, pfn).unwrap();
    }
    let mut b = boot_info(FRAMES);
    b.ram[0] = MfnRange { first_mfn: 1, nr_frames: 4 };
    b.ram[1] = MfnRange { first_mfn: 16, nr_frames: FRAMES - 16 };
    b.nr_ram_ranges = 2;
    b.m2p = MfnRange { first_mfn: 8, nr_frames: 4 };
    b.shared_info_mfn = 5;
    b.guest_l4_mfn = 1;
    b.domid = DOMID;
    let mut s = Shim::new(m, b).unwrap();
    s.boot_domain(&[0; 16]).unwrap();
    s
}

const RAM: u64 = 4 + FRAMES - 16;

fn call(s: &mut Shim<MockMachine>, cmd: u64, arg: u64) -> Result<u64, Errno> {
    memory_op(s, Args([cmd, arg, 0, 0, 0, 0]))
}

fn put<T: IntoBytes + zerocopy::Immutable>(s: &mut Shim<MockMachine>, va: u64, v: &T) {
    s.copy_to_guest(va, v.as_bytes()).unwrap();
}

fn get<T: FromBytes + IntoBytes>(s: &Shim<MockMachine>, va: u64) -> T {
    mm::read_guest(&s.m, s.cr3(), va).unwrap()
}

fn list(s: &Shim<MockMachine>, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| get(s, LIST + 8 * i)).collect()
}

fn reservation(extents: u64, order: u32, flags: u32, domid: u16) -> XenMemoryReservation {
    XenMemoryReservation {
        extent_start: LIST,
        nr_extents: extents,
        extent_order: order,
        mem_flags: flags,
        domid,
        _pad: [0; 6],
    }
}

/// Runs reservation command `op` over `frames` (staged at LIST) with `order` and `flags`.
fn memop(s: &mut Shim<MockMachine>, op: u64, frames: &[u64], order: u32, flags: u32) -> Result<u64, Errno> {
    s.copy_to_guest(LIST, frames.as_bytes()).unwrap();
    put(s, ARG, &reservation(frames.len() as u64, order, flags, DOMID_SELF));
    call(s, op, ARG)
}

fn decrease(s: &mut Shim<MockMachine>, frames: &[u64]) -> Result<u64, Errno> {
    memop(s, XENMEM_DECREASE_RESERVATION, frames, 0, 0)
}

fn populate(s: &mut Shim<MockMachine>, gpfns: &[u64]) -> Result<u64, Errno> {
    memop(s, XENMEM_POPULATE_PHYSMAP, gpfns, 0, 0)
}

fn query(s: &mut Shim<MockMachine>, op: u64, domid: u16) -> Result<u64, Errno> {
    put(s, ARG, &domid);
    call(s, op, ARG)
}

fn m2p(s: &Shim<MockMachine>, mfn: u64) -> u64 {
    s.m.read_u64((8 << 12) + 8 * mfn).unwrap()
}

fn releases(s: &Shim<MockMachine>) -> Vec<Vec<MfnRange>> {
    s.m.hostcalls
        .iter()
        .filter(|h| h.0 == HC_RELEASE_FRAMES)
        .map(|h| {
            assert_eq!(h.2.len(), 16 * h.1[0] as usize);
            h.2.chunks_exact(16).map(|c| MfnRange::read_from_bytes(c).unwrap()).collect()
        })
        .collect()
}

fn ok(s: &Shim<MockMachine>) {
    check_invariants(s, FRAMES).unwrap();
}

fn fill(s: &mut Shim<MockMachine>, mfn: u64, byte: u8) {
    s.m.write_phys(mfn << 12, &[byte; 4096]).unwrap();
}

fn is_zero(s: &Shim<MockMachine>, mfn: u64) -> bool {
    let mut b = [1u8; 4096];
    s.m.read_phys(mfn << 12, &mut b).unwrap();
    b.iter().all(|&x| x == 0)
}

// ---- Queries ----

#[test]
fn maximum_ram_page_is_the_top_of_machine_memory() {
    let mut s = shim();
    assert_eq!(call(&mut s, XENMEM_MAXIMUM_RAM_PAGE, 0), Ok(FRAMES));
    assert_eq!(call(&mut s, XENMEM_MAXIMUM_RAM_PAGE | (1 << 6), 0), Err(Errno::EINVAL));
}

#[test]
fn reservations_are_answered_for_this_domain_only() {
    let mut s = shim();
    for d in [DOMID_SELF, DOMID] {
        assert_eq!(query(&mut s, XENMEM_CURRENT_RESERVATION, d), Ok(RAM));
        assert_eq!(query(&mut s, XENMEM_MAXIMUM_RESERVATION, d), Ok(RAM));
    }
    assert_eq!(query(&mut s, XENMEM_CURRENT_RESERVATION, 0), Err(Errno::EPERM), "dom0 exists");
    for d in [2, DOMID_IO, 0x7fff] {
        assert_eq!(query(&mut s, XENMEM_MAXIMUM_RESERVATION, d), Err(Errno::ESRCH), "domain {d}");
    }
    assert_eq!(call(&mut s, XENMEM_CURRENT_RESERVATION, UNMAPPED), Err(Errno::EFAULT));
    assert_eq!(call(&mut s, XENMEM_CURRENT_RESERVATION, 0xffff_8000_0000_0000), Err(Errno::EFAULT));
    put(&mut s, ARG, &DOMID_SELF);
    assert_eq!(call(&mut s, XENMEM_CURRENT_RESERVATION | (3 << 6), ARG), Err(Errno::EINVAL));
}

#[test]
fn maximum_gpfn_is_the_p2m_size_the_guest_stated_less_one() {
    let mut s = shim();
    assert_eq!(query(&mut s, XENMEM_MAXIMUM_GPFN, DOMID_SELF), Ok(0), "nothing stated yet");
    let at = (5 << 12) + core::mem::offset_of!(SharedInfo, arch) as u64;
    s.m.write_u64(at, 0x4000).unwrap();
    assert_eq!(query(&mut s, XENMEM_MAXIMUM_GPFN, DOMID_SELF), Ok(0x3fff));
}

#[test]
fn machphys_mapping_covers_every_machine_frame() {
    let mut s = shim();
    assert_eq!(call(&mut s, XENMEM_MACHPHYS_MAPPING, ARG), Ok(0));
    let m: XenMachphysMapping = get(&s, ARG);
    assert_eq!((m.v_start, m.v_end, m.max_mfn), (MACH2PHYS_VIRT_START, MACH2PHYS_VIRT_END, FRAMES - 1));
    assert_eq!(call(&mut s, XENMEM_MACHPHYS_MAPPING, GUEST_VA + 40 * 4096), Err(Errno::EFAULT));
}

#[test]
fn machphys_mfn_list_names_each_2mib_of_the_m2p() {
    let mut s = shim();
    let ask = |s: &mut Shim<MockMachine>, max: u32, list: u64| {
        put(
            s,
            ARG,
            &XenMachphysMfnList {
                max_extents: max,
                extent_start: list,
                nr_extents: 99,
                ..Default::default()
            },
        );
        call(s, XENMEM_MACHPHYS_MFN_LIST, ARG)
    };
    // 2048 frames: a 16 KiB M2P, one 2 MiB piece.
    assert_eq!(ask(&mut s, 8, LIST), Ok(0));
    assert_eq!(get::<XenMachphysMfnList>(&s, ARG).nr_extents, 1);
    assert_eq!(list(&s, 1), [8]);
    assert_eq!(ask(&mut s, 0, UNMAPPED), Ok(0), "nothing asked, nothing written");
    assert_eq!(get::<XenMachphysMfnList>(&s, ARG).nr_extents, 0);
    assert_eq!(ask(&mut s, 1, UNMAPPED), Err(Errno::EFAULT));
    assert_eq!(call(&mut s, XENMEM_MACHPHYS_MFN_LIST, UNMAPPED), Err(Errno::EFAULT));
    // A bigger machine: one extent per 2 MiB, 512 frames apart.
    s.boot.max_mfn = 300_000;
    assert_eq!(ask(&mut s, 100, LIST), Ok(0));
    assert_eq!(get::<XenMachphysMfnList>(&s, ARG).nr_extents, 2);
    assert_eq!(list(&s, 2), [8, 8 + 512]);
}

#[test]
fn memory_map_is_one_ram_entry_of_the_boot_reservation() {
    let mut s = shim();
    let buf = LIST;
    put(&mut s, ARG, &XenMemoryMap { nr_entries: 8, _pad: 0, buffer: buf });
    assert_eq!(call(&mut s, XENMEM_MEMORY_MAP, ARG), Ok(0));
    assert_eq!(get::<XenMemoryMap>(&s, ARG).nr_entries, 1);
    let e: [u8; 20] = get(&s, buf);
    assert_eq!(u64::from_le_bytes(e[..8].try_into().unwrap()), 0);
    assert_eq!(u64::from_le_bytes(e[8..16].try_into().unwrap()), RAM * 4096);
    assert_eq!(u32::from_le_bytes(e[16..].try_into().unwrap()), E820_RAM);
    // Ballooning does not change the map.
    decrease(&mut s, &[FREE]).unwrap();
    put(&mut s, ARG, &XenMemoryMap { nr_entries: 1, _pad: 0, buffer: buf });
    assert_eq!(call(&mut s, XENMEM_MEMORY_MAP, ARG), Ok(0));
    assert_eq!(u64::from_le_bytes(get::<[u8; 20]>(&s, buf)[8..16].try_into().unwrap()), RAM * 4096);
    put(&mut s, ARG, &XenMemoryMap { nr_entries: 0, _pad: 0, buffer: UNMAPPED });
    assert_eq!(call(&mut s, XENMEM_MEMORY_MAP, ARG), Ok(0), "no room: nothing written");
    assert_eq!(get::<XenMemoryMap>(&s, ARG).nr_entries, 0);
    put(&mut s, ARG, &XenMemoryMap { nr_entries: 1, _pad: 0, buffer: UNMAPPED });
    assert_eq!(call(&mut s, XENMEM_MEMORY_MAP, ARG), Err(Errno::EFAULT));
    assert_eq!(call(&mut s, XENMEM_MEMORY_MAP, UNMAPPED), Err(Errno::EFAULT));
}

#[test]
fn other_commands_answer_as_xen_answers_a_pv_domu() {
    let mut s = shim();
    let xatp = |space, domid| XenAddToPhysmap { domid, size: 0, space, idx: 0, gpfn: 0 };
    put(&mut s, ARG, &xatp(XENMAPSPACE_GMFN, DOMID_SELF));
    assert_eq!(call(&mut s, XENMEM_ADD_TO_PHYSMAP, ARG), Err(Errno::EACCES), "PV is not translated");
    assert_eq!(call(&mut s, XENMEM_ADD_TO_PHYSMAP | (1 << 22), ARG), Err(Errno::EDOM));
    put(&mut s, ARG, &xatp(XENMAPSPACE_GMFN_FOREIGN, DOMID_SELF));
    assert_eq!(call(&mut s, XENMEM_ADD_TO_PHYSMAP, ARG), Err(Errno::ENOSYS));
    put(&mut s, ARG, &xatp(XENMAPSPACE_SHARED_INFO, 9));
    assert_eq!(call(&mut s, XENMEM_ADD_TO_PHYSMAP, ARG), Err(Errno::ESRCH));
    assert_eq!(call(&mut s, XENMEM_ADD_TO_PHYSMAP, UNMAPPED), Err(Errno::EFAULT));

    let batch = |space, idxs| XenAddToPhysmapBatch {
        domid: DOMID_SELF,
        space,
        size: 4,
        u: 0,
        idxs,
        gpfns: LIST,
        errs: LIST,
    };
    put(&mut s, ARG, &batch(XENMAPSPACE_GMFN as u16, LIST));
    assert_eq!(call(&mut s, XENMEM_ADD_TO_PHYSMAP_BATCH, ARG), Err(Errno::EACCES));
    put(&mut s, ARG, &batch(XENMAPSPACE_GMFN_RANGE as u16, LIST));
    assert_eq!(call(&mut s, XENMEM_ADD_TO_PHYSMAP_BATCH, ARG), Err(Errno::EOPNOTSUPP));
    put(&mut s, ARG, &batch(XENMAPSPACE_GMFN as u16, 0xffff_8000_0000_0000));
    assert_eq!(call(&mut s, XENMEM_ADD_TO_PHYSMAP_BATCH, ARG), Err(Errno::EFAULT));

    put(&mut s, ARG, &XenRemoveFromPhysmap { domid: DOMID_SELF, _pad: [0; 6], gpfn: 3 });
    assert_eq!(call(&mut s, XENMEM_REMOVE_FROM_PHYSMAP, ARG), Err(Errno::EACCES));
    assert_eq!(call(&mut s, XENMEM_REMOVE_FROM_PHYSMAP, UNMAPPED), Err(Errno::EFAULT));

    put(&mut s, ARG, &XenPodTarget { domid: DOMID_SELF, ..Default::default() });
    assert_eq!(call(&mut s, XENMEM_SET_POD_TARGET, ARG), Err(Errno::EPERM));
    assert_eq!(call(&mut s, XENMEM_GET_POD_TARGET, ARG), Err(Errno::EPERM));
    put(&mut s, ARG, &XenPodTarget { domid: 77, ..Default::default() });
    assert_eq!(call(&mut s, XENMEM_GET_POD_TARGET, ARG), Err(Errno::ESRCH));

    put(&mut s, ARG, &XenVnumaTopologyInfo { domid: DOMID_SELF, ..Default::default() });
    assert_eq!(call(&mut s, XENMEM_GET_VNUMAINFO, ARG), Err(Errno::EOPNOTSUPP));
    put(&mut s, ARG, &XenVnumaTopologyInfo { domid: DOMID_SELF, pad: 1, ..Default::default() });
    assert_eq!(call(&mut s, XENMEM_GET_VNUMAINFO, ARG), Err(Errno::EINVAL));

    put(&mut s, ARG, &XenMemAcquireResource { domid: DOMID, ..Default::default() });
    assert_eq!(call(&mut s, XENMEM_ACQUIRE_RESOURCE, ARG), Err(Errno::EPERM));
    put(&mut s, ARG, &XenMemAcquireResource { domid: DOMID_SELF, ..Default::default() });
    assert_eq!(call(&mut s, XENMEM_ACQUIRE_RESOURCE, ARG), Err(Errno::ESRCH));

    assert_eq!(call(&mut s, XENMEM_MACHINE_MEMORY_MAP, ARG), Err(Errno::EPERM));
    for op in [XENMEM_EXCHANGE, XENMEM_MACHPHYS_COMPAT_MFN_LIST, 18, 19, 24, 40, 63] {
        assert_eq!(call(&mut s, op, ARG), Err(Errno::ENOSYS), "op {op}");
    }
    assert!(s.m.hostcalls.is_empty());
}

// ---- Giving frames back ----

#[test]
fn decrease_releases_unreferenced_frames_to_the_host() {
    let mut s = shim();
    for f in FREE..FREE + 4 {
        fill(&mut s, f, 0xaa);
    }
    assert_eq!(decrease(&mut s, &[FREE, FREE + 1, FREE + 3]), Ok(3));
    for f in [FREE, FREE + 1, FREE + 3] {
        assert!(s.frame(f).released() && !s.owned(f));
        assert_eq!(m2p(&s, f), INVALID_M2P_ENTRY);
        assert!(is_zero(&s, f), "the host dropped frame {f}");
    }
    assert!(!s.frame(FREE + 2).released());
    assert_eq!(
        releases(&s),
        [vec![MfnRange { first_mfn: FREE, nr_frames: 2 }, MfnRange { first_mfn: FREE + 3, nr_frames: 1 }]]
    );
    assert_eq!(query(&mut s, XENMEM_CURRENT_RESERVATION, DOMID_SELF), Ok(RAM - 3));
    assert_eq!(query(&mut s, XENMEM_MAXIMUM_RESERVATION, DOMID_SELF), Ok(RAM));
    assert_eq!((s.m.stats.frames_released, s.m.stats.release_hostcalls), (3, 1));
    ok(&s);
}

#[test]
fn a_released_frame_can_no_longer_be_mapped_typed_or_named() {
    let mut s = shim();
    decrease(&mut s, &[FREE]).unwrap();
    // Page 39 maps frame 55; point it at the released frame instead.
    let uvm = |s: &mut Shim<MockMachine>, flags| {
        update_va_mapping(s, Args([GUEST_VA + 39 * 4096, (FREE << 12) | flags, UVMF_INVLPG, 0, 0, 0]))
    };
    assert_eq!(uvm(&mut s, 0x23), Err(Errno::EINVAL));
    assert_eq!(uvm(&mut s, 0x21), Err(Errno::EINVAL), "read-only neither");
    assert_eq!(s.get_page(FREE), Err(Errno::EINVAL));
    assert_eq!(s.pin_table(FREE, PageType::L1), Err(Errno::EINVAL));
    ok(&s);
}

#[test]
fn referenced_frames_stay_and_end_the_batch() {
    let mut s = shim();
    // Mapped data (16), the L1 (4, typed), the pinned L4 (1), the M2P and shared_info (not
    // RAM), a frame beyond memory: each stops the batch where it stands.
    for (frame, why) in [
        (16, "mapped"),
        (4, "a page table"),
        (1, "pinned"),
        (8, "the M2P"),
        (5, "shared_info"),
        (1 << 40, "no such frame"),
    ] {
        let before = s.m.frame_info(frame);
        assert_eq!(decrease(&mut s, &[FREE, frame, FREE + 1]), Ok(1), "{why}");
        assert_eq!(s.m.frame_info(frame), before, "{why}: unchanged");
        assert!(!s.frame(FREE + 1).released());
        // Give FREE back for the next round.
        assert_eq!(populate(&mut s, &[0]), Ok(1));
    }
    assert_eq!(decrease(&mut s, &[FREE, FREE]), Ok(1), "twice in one batch");
    assert_eq!(decrease(&mut s, &[FREE]), Ok(0), "already released");
    ok(&s);
}

#[test]
fn registered_vcpu_info_frame_stays() {
    let mut s = shim();
    s.register_vcpu_info(FREE, 0).unwrap();
    assert_eq!(decrease(&mut s, &[FREE]), Ok(0));
}

#[test]
fn malformed_reservations_answer_the_start_extent() {
    let mut s = shim();
    put(&mut s, LIST, &[FREE, FREE + 1]);
    let run = |s: &mut Shim<MockMachine>, cmd: u64, r: XenMemoryReservation| {
        put(s, ARG, &r);
        call(s, cmd, ARG)
    };
    let d = XENMEM_DECREASE_RESERVATION;
    assert_eq!(run(&mut s, d, reservation(2, 0, 0, 0)), Ok(0), "dom0's");
    assert_eq!(run(&mut s, d, reservation(2, 0, 0, 42)), Ok(0), "no such domain");
    assert_eq!(run(&mut s, d, reservation(2, DOMU_MAX_ORDER + 1, 0, DOMID_SELF)), Ok(0), "order");
    assert_eq!(run(&mut s, d, reservation(1 << 26, 0, 0, DOMID_SELF)), Ok(0), "too many to continue");
    assert_eq!(run(&mut s, d | (5 << 6), reservation(2, 0, 0, DOMID_SELF)), Ok(5), "start beyond the end");
    let mut r = reservation(2, 0, 0, DOMID_SELF);
    r.extent_start = UNMAPPED;
    assert_eq!(run(&mut s, d, r), Ok(0), "unreadable list");
    r.extent_start = 0xffff_8000_0000_0000 - 8;
    assert_eq!(run(&mut s, d, r), Ok(0), "list into the hypervisor hole");
    let last = GUEST_VA + 40 * 4096 - 8;
    put(&mut s, last, &FREE);
    r.extent_start = last;
    assert_eq!(run(&mut s, d, r), Ok(1), "list runs off the mapping: the readable part is done");
    assert_eq!(call(&mut s, d, UNMAPPED), Ok(0), "unreadable argument");
    assert_eq!(call(&mut s, d | (7 << 6), UNMAPPED), Ok(7));
    let p = XENMEM_POPULATE_PHYSMAP;
    assert_eq!(run(&mut s, p, reservation(1, 0, 12, DOMID_SELF)), Ok(0), "address bits <= page");
    assert!(s.m.hostcalls.iter().all(|h| h.0 == HC_RELEASE_FRAMES));
    ok(&s);
}

#[test]
fn large_batches_continue_themselves_and_count_on() {
    let mut s = shim();
    let frames: Vec<u64> = (FREE..FREE + 600).collect();
    assert_eq!(decrease(&mut s, &frames), Ok(MEMOP_BATCH));
    let (nr, args) = s.take_continuation().expect("continued");
    assert_eq!(nr, xen_abi::hypercall::HYPERVISOR_MEMORY_OP);
    assert_eq!(args[0], XENMEM_DECREASE_RESERVATION | (MEMOP_BATCH << 6));
    assert_eq!(args[1], ARG);
    assert_eq!(releases(&s).len(), 1, "flushed before continuing");
    assert_eq!(call(&mut s, args[0], args[1]), Ok(600));
    assert!(s.take_continuation().is_none());
    assert_eq!(
        releases(&s),
        [
            vec![MfnRange { first_mfn: FREE, nr_frames: 512 }],
            vec![MfnRange { first_mfn: FREE + 512, nr_frames: 88 }]
        ]
    );
    assert_eq!(s.mem.current(), RAM - 600);
    ok(&s);
}

#[test]
fn scattered_frames_fill_a_hostcall_before_the_next() {
    let mut s = shim();
    let frames: Vec<u64> = (0..300).map(|i| FREE + 2 * i).collect();
    assert_eq!(decrease(&mut s, &frames), Ok(300));
    let r = releases(&s);
    assert_eq!(r.iter().map(Vec::len).collect::<Vec<_>>(), [RELEASE_RANGES_MAX, 300 - RELEASE_RANGES_MAX]);
    assert!(r.iter().flatten().all(|x| x.nr_frames == 1));
}

#[test]
fn larger_extents_release_and_populate_aligned_runs() {
    let mut s = shim();
    // Order 2: frames 64..=67 go; 60 is not aligned, so its extent covers 60..=63.
    assert_eq!(memop(&mut s, XENMEM_DECREASE_RESERVATION, &[64, 68], 2, 0), Ok(2));
    assert_eq!(releases(&s), [vec![MfnRange { first_mfn: 64, nr_frames: 8 }]]);
    assert_eq!(memop(&mut s, XENMEM_POPULATE_PHYSMAP, &[0x100, 0x104, 0x108], 2, 0), Ok(2));
    assert_eq!(list(&s, 2), [64, 68]);
    assert_eq!((m2p(&s, 64), m2p(&s, 67), m2p(&s, 71)), (0x100, 0x103, 0x107));
    assert_eq!(memop(&mut s, XENMEM_DECREASE_RESERVATION, &[52], 2, 0), Ok(0));
    assert!(!s.frame(52).released());
    // A partly referenced extent: unmap 54 (page 38); 55 stays mapped. 54 goes, the extent
    // fails, as Xen's loop over the extent's frames stops at the first it cannot remove.
    let r = update_va_mapping(&mut s, Args([GUEST_VA + 38 * 4096, 0, UVMF_INVLPG, 0, 0, 0]));
    assert_eq!(r, Ok(0));
    assert_eq!(memop(&mut s, XENMEM_DECREASE_RESERVATION, &[54], 1, 0), Ok(0), "55 is mapped, 54 is not");
    assert!(s.frame(54).released() && !s.frame(55).released());
    ok(&s);
}

// ---- Handing frames out again ----

#[test]
fn populate_hands_back_zeroed_released_frames_and_sets_the_m2p() {
    let mut s = shim();
    fill(&mut s, FREE + 1, 0x55);
    decrease(&mut s, &[FREE + 1, FREE]).unwrap();
    assert_eq!(populate(&mut s, &[0x700, 0x701, 0x702]), Ok(2), "only two were released");
    let got = list(&s, 3);
    assert_eq!(&got[..2], [FREE, FREE + 1], "lowest first");
    assert_eq!(got[2], 0x702, "the failed extent's slot is untouched");
    assert_eq!((m2p(&s, FREE), m2p(&s, FREE + 1)), (0x700, 0x701));
    assert!(is_zero(&s, FREE + 1));
    assert!(s.owned(FREE) && s.owned(FREE + 1));
    assert_eq!(s.mem.current(), RAM);
    assert_eq!(s.m.stats.frames_populated, 2);
    // Mappable again.
    let r =
        update_va_mapping(&mut s, Args([GUEST_VA + 39 * 4096, (FREE << 12) | 0x23, UVMF_INVLPG, 0, 0, 0]));
    assert_eq!(r, Ok(0));
    assert_eq!(populate(&mut s, &[1]), Ok(0), "nothing beyond the boot reservation");
    assert_eq!(s.m.hostcalls.len(), 1, "handing out costs no exit");
    ok(&s);
}

#[test]
fn populate_on_demand_and_unwritable_lists_stop_early() {
    let mut s = shim();
    decrease(&mut s, &[FREE]).unwrap();
    assert_eq!(memop(&mut s, XENMEM_POPULATE_PHYSMAP, &[3], 0, XENMEMF_POPULATE_ON_DEMAND), Ok(0));
    assert!(s.frame(FREE).released());
    assert_eq!(
        memop(&mut s, XENMEM_POPULATE_PHYSMAP, &[3], DOMU_MAX_ORDER + 1, XENMEMF_POPULATE_ON_DEMAND),
        Ok(0)
    );
}

#[test]
fn address_bits_limit_which_frames_are_handed_out() {
    let mut s = shim();
    decrease(&mut s, &[1000, 60]).unwrap();
    // 2^18 bytes = frames below 64.
    assert_eq!(memop(&mut s, XENMEM_POPULATE_PHYSMAP, &[1, 2], 0, 18), Ok(1));
    assert_eq!(list(&s, 1), [60]);
    assert!(s.frame(1000).released());
    // Bits covering all of memory are no limit.
    assert_eq!(memop(&mut s, XENMEM_POPULATE_PHYSMAP, &[2], 0, 40), Ok(1));
    assert_eq!(list(&s, 1), [1000]);
}

#[test]
fn increase_reservation_reports_mfns_and_leaves_the_m2p_to_the_guest() {
    let mut s = shim();
    decrease(&mut s, &[FREE, FREE + 7]).unwrap();
    put(&mut s, ARG, &XenMemoryReservation { extent_start: 0, ..reservation(1, 0, 0, DOMID_SELF) });
    assert_eq!(call(&mut s, XENMEM_INCREASE_RESERVATION, ARG), Ok(1), "no list: frames unnamed");
    assert_eq!(memop(&mut s, XENMEM_INCREASE_RESERVATION, &[0, 0], 0, 0), Ok(1));
    assert_eq!(list(&s, 1), [FREE + 7]);
    assert_eq!(m2p(&s, FREE + 7), INVALID_M2P_ENTRY);
    // The guest sets the M2P itself.
    let req = xen_abi::xen::MmuUpdate { ptr: ((FREE + 7) << 12) | xen_abi::xen::MMU_MACHPHYS_UPDATE, val: 9 };
    put(&mut s, ARG, &req);
    let r = crate::mm::ops::mmu_update(&mut s, Args([ARG, 1, 0, u64::from(DOMID_SELF), 0, 0]));
    assert_eq!(r, Ok(0));
    assert_eq!(m2p(&s, FREE + 7), 9);
}

#[test]
fn frames_the_host_did_not_drop_are_zeroed_by_the_shim() {
    let mut s = shim();
    s.m.release_answer = -(Errno::EINVAL.0 as i64);
    fill(&mut s, FREE, 0x77);
    assert_eq!(decrease(&mut s, &[FREE]), Ok(1));
    assert!(is_zero(&s, FREE));
    assert!(s.frame(FREE).released());
}

#[test]
fn random_balloon_cycles_keep_the_counts_and_invariants() {
    let mut s = shim();
    let mut seed = 0x1234_5678u64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..50 {
        let frames: Vec<u64> = (0..rnd(40)).map(|_| rnd(FRAMES)).collect();
        let before = s.mem.current();
        let done = decrease(&mut s, &frames).unwrap();
        assert_eq!(s.mem.current(), before - done);
        let want = rnd(40);
        let gpfns: Vec<u64> = (0..want).collect();
        let before = s.mem.current();
        let got = populate(&mut s, &gpfns).unwrap();
        assert_eq!(got, want.min(RAM - before));
        assert_eq!(s.mem.current(), before + got);
        let released = (0..FRAMES).filter(|&f| s.frame(f).released()).count() as u64;
        assert_eq!(released, s.mem.released);
        ok(&s);
    }
}
