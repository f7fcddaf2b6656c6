use super::*;
use crate::testutil::{shim_with_guest_boot, MockMachine, GUEST_FIRST_DATA_MFN, GUEST_VA};
use xen_abi::hypercall::HYPERVISOR_UPDATE_VA_MAPPING;

/// RAM is frames 0..48 of the 64-frame mock; the grant table is frames 48..56 (max 8).
const GRANT_MFN: u64 = 48;
const MAX: u32 = 8;
const DOMID: u16 = 1;
/// Guest pages for arguments: ops at OPS, frame lists at LIST; READONLY is mapped read-only.
const OPS: u64 = GUEST_VA;
const LIST: u64 = GUEST_VA + 0x1000;
const READONLY: u64 = GUEST_VA + 31 * 0x1000;
/// A guest address nothing maps.
const UNMAPPED: u64 = GUEST_VA + 40 * 0x1000;

fn shim() -> Shim<MockMachine> {
    shim_with_guest_boot(|b| {
        b.ram[0] = MfnRange { first_mfn: 0, nr_frames: GRANT_MFN };
        b.grant_frames = MfnRange { first_mfn: GRANT_MFN, nr_frames: u64::from(MAX) };
        b.domid = DOMID;
    })
}

fn op(s: &mut Shim<MockMachine>, cmd: u32, uop: u64, count: u32) -> Result<u64, Errno> {
    s.dispatch_counted(HYPERVISOR_GRANT_TABLE_OP, Args([u64::from(cmd), uop, u64::from(count), 0, 0, 0]))
}

fn put<T: IntoBytes + zerocopy::Immutable>(s: &mut Shim<MockMachine>, va: u64, v: &T) {
    s.copy_to_guest(va, v.as_bytes()).unwrap();
}

fn get<T: FromBytes + IntoBytes>(s: &Shim<MockMachine>, va: u64) -> T {
    mm::read_guest(&s.m, s.cr3(), va).unwrap()
}

fn set_entry(s: &mut Shim<MockMachine>, gref: GrantRef, e: GrantEntryV1) {
    let at = s.gnttab.entry_maddr(gref).unwrap();
    s.m.write_phys(at, e.as_bytes()).unwrap();
}

fn entry(s: &Shim<MockMachine>, gref: GrantRef) -> GrantEntryV1 {
    s.grant_entry(gref).unwrap().1
}

fn setup(s: &mut Shim<MockMachine>, dom: u16, nr: u32, list: u64) -> (Result<u64, Errno>, GnttabSetupTable) {
    let st = GnttabSetupTable { dom, nr_frames: nr, status: 0x55, frame_list: list, ..Default::default() };
    put(s, OPS, &st);
    let r = op(s, GNTTABOP_SETUP_TABLE, OPS, 1);
    (r, get(s, OPS))
}

fn query(s: &mut Shim<MockMachine>, dom: u16) -> GnttabQuerySize {
    put(
        s,
        OPS,
        &GnttabQuerySize { dom, nr_frames: 77, max_nr_frames: 77, status: 0x55, ..Default::default() },
    );
    assert_eq!(op(s, GNTTABOP_QUERY_SIZE, OPS, 1), Ok(0));
    get(s, OPS)
}

#[test]
fn query_size_reports_one_frame_of_the_maximum_at_first() {
    let mut s = shim();
    for dom in [DOMID_SELF, DOMID] {
        let q = query(&mut s, dom);
        assert_eq!((q.nr_frames, q.max_nr_frames, q.status), (1, MAX, GNTST_OKAY), "dom {dom:#x}");
    }
}

#[test]
fn query_size_of_other_domains_is_refused_in_the_status() {
    let mut s = shim();
    let q = query(&mut s, 0);
    assert_eq!((q.status, q.nr_frames), (GNTST_PERMISSION_DENIED, 77), "domain 0 exists, not ours");
    let q = query(&mut s, 7);
    assert_eq!((q.status, q.nr_frames), (GNTST_BAD_DOMAIN, 77));
    assert_eq!(query(&mut s, 0x7ff1).status, GNTST_BAD_DOMAIN, "DOMID_IO has no grant table here");
}

#[test]
fn single_op_commands_want_a_count_of_one() {
    let mut s = shim();
    for cmd in [GNTTABOP_SETUP_TABLE, GNTTABOP_QUERY_SIZE, GNTTABOP_GET_STATUS_FRAMES] {
        put(&mut s, OPS, &GnttabQuerySize { dom: DOMID_SELF, ..Default::default() });
        assert_eq!(op(&mut s, cmd, OPS, 0), Err(Errno::EINVAL), "cmd {cmd}");
        assert_eq!(op(&mut s, cmd, OPS, 2), Err(Errno::EINVAL), "cmd {cmd}");
    }
}

#[test]
fn negative_counts_and_continuation_bits_are_einval_unknown_commands_enosys() {
    let mut s = shim();
    assert_eq!(op(&mut s, GNTTABOP_QUERY_SIZE, OPS, 0x8000_0000), Err(Errno::EINVAL));
    assert_eq!(op(&mut s, GNTTABOP_MAP_GRANT_REF, OPS, u32::MAX), Err(Errno::EINVAL));
    assert_eq!(op(&mut s, GNTTABOP_QUERY_SIZE | 1 << 12, OPS, 1), Err(Errno::EINVAL));
    assert_eq!(op(&mut s, GNTTABOP_DUMP_TABLE, OPS, 1), Err(Errno::ENOSYS));
    assert_eq!(op(&mut s, 13, OPS, 1), Err(Errno::ENOSYS));
    assert_eq!(op(&mut s, 0xfff, OPS, 1), Err(Errno::ENOSYS));
    // Only the low 32 bits of cmd and count are the C arguments.
    put(&mut s, OPS, &GnttabQuerySize { dom: DOMID_SELF, ..Default::default() });
    let r = s.dispatch_counted(HYPERVISOR_GRANT_TABLE_OP, Args([6 | 1 << 32, OPS, 1 | 1 << 40, 0, 0, 0]));
    assert_eq!(r, Ok(0));
}

#[test]
fn setup_table_grows_the_table_and_lists_its_frames() {
    let mut s = shim();
    // Dirty a frame the guest has not been given: growing zeroes it as Xen's grow does.
    s.m.write_phys((GRANT_MFN + 2) << 12, &[0xee; 64]).unwrap();
    let (r, st) = setup(&mut s, DOMID_SELF, 4, LIST);
    assert_eq!((r, st.status), (Ok(0), GNTST_OKAY));
    let list: [u64; 5] = get(&s, LIST);
    assert_eq!(list[..4], [GRANT_MFN, GRANT_MFN + 1, GRANT_MFN + 2, GRANT_MFN + 3]);
    assert_eq!(list[4], 0, "nothing past nr_frames written");
    let mut b = [1u8; 64];
    s.m.read_phys((GRANT_MFN + 2) << 12, &mut b).unwrap();
    assert_eq!(b, [0; 64]);
    assert_eq!(query(&mut s, DOMID_SELF).nr_frames, 4);
    // Asking for fewer never shrinks it; asking by own id works as DOMID_SELF.
    let (r, st) = setup(&mut s, DOMID, 2, LIST);
    assert_eq!((r, st.status), (Ok(0), GNTST_OKAY));
    assert_eq!(query(&mut s, DOMID_SELF).nr_frames, 4);
    let (r, st) = setup(&mut s, DOMID_SELF, 0, 0);
    assert_eq!((r, st.status), (Ok(0), GNTST_OKAY));
    let (r, st) = setup(&mut s, DOMID_SELF, MAX, LIST);
    assert_eq!((r, st.status), (Ok(0), GNTST_OKAY));
    assert_eq!(query(&mut s, DOMID_SELF).nr_frames, MAX);
}

#[test]
fn setup_table_beyond_the_maximum_is_a_general_error_and_changes_nothing() {
    let mut s = shim();
    let (r, st) = setup(&mut s, DOMID_SELF, MAX + 1, LIST);
    assert_eq!((r, st.status), (Ok(0), GNTST_GENERAL_ERROR));
    assert_eq!(get::<u64>(&s, LIST), 0, "no frame listed");
    assert_eq!(s.gnttab.nr_frames(), 1);
    let (r, st) = setup(&mut s, DOMID_SELF, u32::MAX, LIST);
    assert_eq!((r, st.status), (Err(Errno::EFAULT), 0x55), "frame_list range fails guest_handle_okay first");
}

#[test]
fn setup_table_for_other_domains_is_refused_in_the_status() {
    let mut s = shim();
    assert_eq!(setup(&mut s, 0, 1, LIST).1.status, GNTST_PERMISSION_DENIED);
    assert_eq!(setup(&mut s, 9, 1, LIST).1.status, GNTST_BAD_DOMAIN);
    assert_eq!(get::<u64>(&s, LIST), 0);
}

#[test]
fn setup_table_with_an_unwritable_frame_list_reports_bad_virt_addr() {
    let mut s = shim();
    for list in [UNMAPPED, READONLY, READONLY - 8] {
        let (r, st) = setup(&mut s, DOMID_SELF, 2, list);
        assert_eq!((r, st.status), (Ok(0), GNTST_BAD_VIRT_ADDR), "list {list:#x}");
    }
    // The writable half of a list straddling into the read-only page was still written.
    assert_eq!(get::<u64>(&s, READONLY - 8), GRANT_MFN);
    assert_eq!(s.gnttab.nr_frames(), 2, "the table grew all the same, as in Xen");
}

#[test]
fn setup_table_with_a_frame_list_in_the_hypervisor_hole_is_efault() {
    let mut s = shim();
    for list in [0xffff_8000_0000_0000, 0x0000_8000_0000_0000, 0x0000_7fff_ffff_fffc, u64::MAX - 3] {
        let (r, st) = setup(&mut s, DOMID_SELF, 1, list);
        assert_eq!((r, st.status), (Err(Errno::EFAULT), 0x55), "list {list:#x}");
    }
}

#[test]
fn unreadable_or_unwritable_op_structs_are_efault() {
    let mut s = shim();
    for cmd in [GNTTABOP_SETUP_TABLE, GNTTABOP_QUERY_SIZE, GNTTABOP_SET_VERSION, GNTTABOP_GET_VERSION] {
        assert_eq!(op(&mut s, cmd, UNMAPPED, 1), Err(Errno::EFAULT), "cmd {cmd}");
        assert_eq!(op(&mut s, cmd, 0xffff_8100_0000_0000, 1), Err(Errno::EFAULT), "cmd {cmd}");
    }
    // Readable but not writable: the answer cannot be written back.
    s.m.write_phys((GUEST_FIRST_DATA_MFN + 31) << 12, &DOMID_SELF.to_le_bytes()).unwrap();
    for cmd in [GNTTABOP_SETUP_TABLE, GNTTABOP_QUERY_SIZE, GNTTABOP_SET_VERSION, GNTTABOP_GET_VERSION] {
        assert_eq!(op(&mut s, cmd, READONLY, 1), Err(Errno::EFAULT), "cmd {cmd}");
    }
}

#[test]
fn grant_frames_are_mappable_writable_once_handed_out() {
    let mut s = shim();
    let va = GUEST_VA + 5 * 0x1000;
    let map = |s: &mut Shim<MockMachine>, mfn: u64| {
        s.dispatch_counted(HYPERVISOR_UPDATE_VA_MAPPING, Args([va, (mfn << 12) | 0x67, 0, 0, 0, 0]))
    };
    assert_eq!(map(&mut s, GRANT_MFN), Ok(0), "frame 0 exists from the start");
    assert_eq!(map(&mut s, GRANT_MFN + 1), Err(Errno::EINVAL), "not handed out yet");
    assert_eq!(setup(&mut s, DOMID_SELF, 3, LIST).1.status, GNTST_OKAY);
    assert_eq!(map(&mut s, GRANT_MFN + 2), Ok(0));
    assert_eq!(s.copy_to_guest(va + 8, &[1, 0, 0, 0, 0x20, 0, 0, 0]), Ok(()));
    assert_eq!(entry(&s, 2 * 512 + 1), GrantEntryV1 { flags: 1, domid: 0, frame: 0x20 });
    // Never typed or counted: the frame table has no word for it.
    assert_eq!(s.frame(GRANT_MFN + 2).0, 0);
    assert_eq!(map(&mut s, GRANT_MFN + u64::from(MAX)), Err(Errno::EINVAL), "past the table");
    crate::mm::check::check_invariants(&s, 64).unwrap();
}

#[test]
fn set_version_accepts_1_and_answers_2_as_xen_without_v2() {
    let mut s = shim();
    for (v, want) in [(1, Ok(0)), (2, Err(Errno::ENOSYS)), (0, Err(Errno::EINVAL)), (3, Err(Errno::EINVAL))] {
        put(&mut s, OPS, &GnttabSetVersion { version: v });
        assert_eq!(op(&mut s, GNTTABOP_SET_VERSION, OPS, 1), want, "version {v}");
        assert_eq!(get::<GnttabSetVersion>(&s, OPS).version, 1, "the version in force is written back");
    }
    // The count is not looked at.
    put(&mut s, OPS, &GnttabSetVersion { version: 1 });
    assert_eq!(op(&mut s, GNTTABOP_SET_VERSION, OPS, 0), Ok(0));
}

#[test]
fn get_version_answers_errnos_for_other_domains() {
    let mut s = shim();
    for dom in [DOMID_SELF, DOMID] {
        put(&mut s, OPS, &GnttabGetVersion { dom, pad: 0x1234, version: 9 });
        assert_eq!(op(&mut s, GNTTABOP_GET_VERSION, OPS, 1), Ok(0));
        let g: GnttabGetVersion = get(&s, OPS);
        assert_eq!((g.dom, g.pad, g.version), (dom, 0x1234, 1), "only the version written");
    }
    put(&mut s, OPS, &GnttabGetVersion { dom: 0, pad: 0, version: 9 });
    assert_eq!(op(&mut s, GNTTABOP_GET_VERSION, OPS, 1), Err(Errno::EPERM));
    put(&mut s, OPS, &GnttabGetVersion { dom: 3, pad: 0, version: 9 });
    assert_eq!(op(&mut s, GNTTABOP_GET_VERSION, OPS, 1), Err(Errno::ESRCH));
    assert_eq!(get::<GnttabGetVersion>(&s, OPS).version, 9);
}

#[test]
fn get_status_frames_of_a_v1_table_is_a_general_error() {
    let mut s = shim();
    let gs = |s: &mut Shim<MockMachine>, dom, nr| {
        put(s, OPS, &GnttabGetStatusFrames { nr_frames: nr, dom, status: 0x55, frame_list: LIST });
        assert_eq!(op(s, GNTTABOP_GET_STATUS_FRAMES, OPS, 1), Ok(0));
        get::<GnttabGetStatusFrames>(s, OPS).status
    };
    assert_eq!(gs(&mut s, DOMID_SELF, 1), GNTST_GENERAL_ERROR);
    assert_eq!(gs(&mut s, DOMID_SELF, 0), GNTST_OKAY);
    assert_eq!(gs(&mut s, 0, 1), GNTST_PERMISSION_DENIED);
    assert_eq!(gs(&mut s, 42, 1), GNTST_BAD_DOMAIN);
    assert_eq!(get::<u64>(&s, LIST), 0);
}

fn map_status(s: &mut Shim<MockMachine>, flags: u32, dom: u16, gref: u32) -> i16 {
    put(s, OPS, &GnttabMapGrantRef { flags, dom, r#ref: gref, status: 0x55, ..Default::default() });
    assert_eq!(op(s, GNTTABOP_MAP_GRANT_REF, OPS, 1), Ok(0));
    get::<GnttabMapGrantRef>(s, OPS).status
}

#[test]
fn map_grant_ref_finds_nothing_to_map() {
    let mut s = shim();
    assert_eq!(map_status(&mut s, 0, 0, 8), GNTST_BAD_GNTREF, "neither host nor device map");
    assert_eq!(map_status(&mut s, GNTMAP_READONLY, 0, 8), GNTST_BAD_GNTREF);
    assert_eq!(map_status(&mut s, GNTMAP_HOST_MAP, 0, 8), GNTST_GENERAL_ERROR, "domain 0 grants nothing");
    assert_eq!(map_status(&mut s, GNTMAP_DEVICE_MAP, 0, 511), GNTST_GENERAL_ERROR);
    assert_eq!(map_status(&mut s, GNTMAP_HOST_MAP, 0, 512), GNTST_BAD_GNTREF);
    assert_eq!(map_status(&mut s, GNTMAP_HOST_MAP, DOMID_SELF, 8), GNTST_BAD_DOMAIN, "by id only");
    assert_eq!(map_status(&mut s, GNTMAP_HOST_MAP, 5, 8), GNTST_BAD_DOMAIN);
    assert_eq!(map_status(&mut s, GNTMAP_HOST_MAP, DOMID, 8), GNTST_PERMISSION_DENIED);
}

#[test]
fn unmap_ops_know_no_handle() {
    let mut s = shim();
    let u = GnttabUnmapGrantRef { handle: 0, status: 0x55, ..Default::default() };
    put(&mut s, OPS, &[u, u]);
    assert_eq!(op(&mut s, GNTTABOP_UNMAP_GRANT_REF, OPS, 2), Ok(0));
    let got: [GnttabUnmapGrantRef; 2] = get(&s, OPS);
    assert!(got.iter().all(|u| u.status == GNTST_BAD_HANDLE));
    put(&mut s, OPS, &GnttabUnmapAndReplace { status: 0x55, ..Default::default() });
    assert_eq!(op(&mut s, GNTTABOP_UNMAP_AND_REPLACE, OPS, 1), Ok(0));
    assert_eq!(get::<GnttabUnmapAndReplace>(&s, OPS).status, GNTST_BAD_HANDLE);
}

#[test]
fn batches_check_the_whole_array_first_and_stop_at_a_fault() {
    let mut s = shim();
    assert_eq!(op(&mut s, GNTTABOP_MAP_GRANT_REF, 0xffff_8000_0000_0000, 1), Err(Errno::EFAULT));
    assert_eq!(op(&mut s, GNTTABOP_COPY, u64::MAX - 100, 3), Err(Errno::EFAULT));
    // Two ops on the last mapped-writable page, the third beyond it: two done, then -EFAULT.
    let size = size_of::<GnttabMapGrantRef>() as u64;
    let at = READONLY - 2 * size;
    put(&mut s, at, &[GnttabMapGrantRef { flags: GNTMAP_HOST_MAP, status: 0x55, ..Default::default() }; 2]);
    assert_eq!(op(&mut s, GNTTABOP_MAP_GRANT_REF, at, 3), Err(Errno::EFAULT));
    let got: [GnttabMapGrantRef; 2] = get(&s, at);
    assert!(got.iter().all(|m| m.status == GNTST_GENERAL_ERROR));
    // Zero ops: nothing read.
    assert_eq!(op(&mut s, GNTTABOP_MAP_GRANT_REF, UNMAPPED, 0), Ok(0));
}

#[test]
fn long_batches_continue_themselves() {
    let mut s = shim();
    let n = BATCH + 6;
    let ops = vec![GnttabUnmapGrantRef { status: 0x55, ..Default::default() }; n as usize];
    s.copy_to_guest(OPS, ops.as_bytes()).unwrap();
    assert_eq!(op(&mut s, GNTTABOP_UNMAP_GRANT_REF, OPS, n), Ok(0));
    let size = size_of::<GnttabUnmapGrantRef>() as u64;
    let (nr, a) = s.take_continuation().expect("continued");
    assert_eq!(nr, HYPERVISOR_GRANT_TABLE_OP);
    assert_eq!(a[..3], [u64::from(GNTTABOP_UNMAP_GRANT_REF), OPS + u64::from(BATCH) * size, 6]);
    let last: GnttabUnmapGrantRef = get(&s, OPS + u64::from(BATCH) * size);
    assert_eq!(last.status, 0x55, "not yet handled");
    assert_eq!(s.dispatch_counted(nr, Args(a)), Ok(0));
    assert!(s.take_continuation().is_none());
    let all: Vec<i16> =
        (0..u64::from(n)).map(|i| get::<GnttabUnmapGrantRef>(&s, OPS + i * size).status).collect();
    assert!(all.iter().all(|&st| st == GNTST_BAD_HANDLE));
}

fn copy_op(src: (u64, u16, u16), dst: (u64, u16, u16), len: u16, flags: u16) -> GnttabCopy {
    GnttabCopy {
        source: GnttabCopyPtr { u: src.0, domid: src.1, offset: src.2, _pad: 0 },
        dest: GnttabCopyPtr { u: dst.0, domid: dst.1, offset: dst.2, _pad: 0 },
        len,
        flags,
        status: 0x55,
        _pad: 0,
    }
}

fn copy_status(s: &mut Shim<MockMachine>, c: GnttabCopy) -> i16 {
    put(s, OPS, &c);
    assert_eq!(op(s, GNTTABOP_COPY, OPS, 1), Ok(0));
    get::<GnttabCopy>(s, OPS).status
}

#[test]
fn copy_between_own_frames_by_mfn() {
    let mut s = shim();
    let (a, b) = (GUEST_FIRST_DATA_MFN + 4, GUEST_FIRST_DATA_MFN + 5);
    s.m.write_phys((a << 12) + 100, b"granted bytes").unwrap();
    let before = (s.frame(a), s.frame(b));
    let c = copy_op((a, DOMID_SELF, 100), (b, DOMID_SELF, 4000), 13, 0);
    assert_eq!(copy_status(&mut s, c), GNTST_OKAY);
    let mut got = [0u8; 13];
    s.m.read_phys((b << 12) + 4000, &mut got).unwrap();
    assert_eq!(&got, b"granted bytes");
    assert_eq!((s.frame(a), s.frame(b)), before, "the references taken for the copy are dropped again");
}

#[test]
fn copy_refuses_bad_frames_domains_and_ranges() {
    let mut s = shim();
    let (a, b) = (GUEST_FIRST_DATA_MFN + 4, GUEST_FIRST_DATA_MFN + 5);
    let cases = [
        (copy_op((a, DOMID_SELF, 100), (b, DOMID_SELF, 4000), 97, 0), GNTST_BAD_COPY_ARG),
        (copy_op((a, DOMID_SELF, 4095), (b, DOMID_SELF, 0), 2, 0), GNTST_BAD_COPY_ARG),
        (copy_op((GRANT_MFN, DOMID_SELF, 0), (b, DOMID_SELF, 0), 8, 0), GNTST_BAD_PAGE),
        (copy_op((a, DOMID_SELF, 0), (60, DOMID_SELF, 0), 8, 0), GNTST_BAD_PAGE),
        (copy_op((u64::MAX, DOMID_SELF, 0), (b, DOMID_SELF, 0), 8, 0), GNTST_BAD_PAGE),
        // A page table is never a copy destination.
        (copy_op((a, DOMID_SELF, 0), (4, DOMID_SELF, 0), 8, 0), GNTST_GENERAL_ERROR),
        // Only DOMID_SELF names frames directly.
        (copy_op((a, DOMID, 0), (b, DOMID_SELF, 0), 8, 0), GNTST_PERMISSION_DENIED),
        (copy_op((a, DOMID_SELF, 0), (b, 0, 0), 8, 0), GNTST_PERMISSION_DENIED),
        (copy_op((3, 9, 0), (b, DOMID_SELF, 0), 8, GNTCOPY_SOURCE_GREF), GNTST_BAD_DOMAIN),
        (copy_op((3, 0, 0), (b, DOMID_SELF, 0), 8, GNTCOPY_SOURCE_GREF), GNTST_GENERAL_ERROR),
        (copy_op((a, DOMID_SELF, 0), (600, 0, 0), 8, GNTCOPY_DEST_GREF), GNTST_BAD_GNTREF),
        (copy_op((512, DOMID, 0), (b, DOMID_SELF, 0), 8, GNTCOPY_SOURCE_GREF), GNTST_BAD_GNTREF),
        (copy_op((10, DOMID, 0), (b, DOMID_SELF, 0), 8, GNTCOPY_SOURCE_GREF), GNTST_GENERAL_ERROR),
    ];
    for (i, (c, want)) in cases.into_iter().enumerate() {
        assert_eq!(copy_status(&mut s, c), want, "case {i}");
    }
    let mut got = [0u8; 8];
    s.m.read_phys(b << 12, &mut got).unwrap();
    assert_eq!(got, [0; 8], "nothing copied");
    crate::mm::check::check_invariants(&s, 64).unwrap();
}

#[test]
fn copy_through_own_grants_follows_the_entry_and_restores_its_flags() {
    let mut s = shim();
    let (a, b) = (GUEST_FIRST_DATA_MFN + 4, GUEST_FIRST_DATA_MFN + 5);
    s.m.write_phys(a << 12, b"abcdefgh").unwrap();
    set_entry(
        &mut s,
        8,
        GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READONLY, domid: DOMID, frame: a as u32 },
    );
    set_entry(&mut s, 9, GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: DOMID, frame: b as u32 });
    let c = copy_op((8, DOMID, 0), (9, DOMID_SELF, 0), 8, GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF);
    assert_eq!(copy_status(&mut s, c), GNTST_OKAY);
    let mut got = [0u8; 8];
    s.m.read_phys(b << 12, &mut got).unwrap();
    assert_eq!(&got, b"abcdefgh");
    assert_eq!(entry(&s, 8).flags, GTF_PERMIT_ACCESS | GTF_READONLY);
    assert_eq!(entry(&s, 9).flags, GTF_PERMIT_ACCESS);
    // A read-only grant is no destination; a grant to domain 0 is not ours to use.
    let c = copy_op((9, DOMID, 0), (8, DOMID, 0), 8, GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF);
    assert_eq!(copy_status(&mut s, c), GNTST_GENERAL_ERROR);
    assert_eq!(entry(&s, 9).flags, GTF_PERMIT_ACCESS, "source released after the failure");
    set_entry(&mut s, 10, GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 0, frame: b as u32 });
    let c = copy_op((10, DOMID, 0), (b, DOMID_SELF, 0), 8, GNTCOPY_SOURCE_GREF);
    assert_eq!(copy_status(&mut s, c), GNTST_GENERAL_ERROR);
    // A grant of a frame that is not the domain's.
    set_entry(&mut s, 11, GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: DOMID, frame: 60 });
    let c = copy_op((11, DOMID, 0), (b, DOMID_SELF, 0), 8, GNTCOPY_SOURCE_GREF);
    assert_eq!(copy_status(&mut s, c), GNTST_BAD_PAGE);
    assert_eq!(entry(&s, 11).flags, GTF_PERMIT_ACCESS);
    // Bits a backend holds stay set.
    set_entry(
        &mut s,
        12,
        GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READING, domid: DOMID, frame: a as u32 },
    );
    let c = copy_op((12, DOMID, 0), (b, DOMID_SELF, 0), 8, GNTCOPY_SOURCE_GREF);
    assert_eq!(copy_status(&mut s, c), GNTST_OKAY);
    assert_eq!(entry(&s, 12).flags, GTF_PERMIT_ACCESS | GTF_READING);
}

#[test]
fn transfer_loses_the_frame_unless_it_is_a_bad_page() {
    let mut s = shim();
    let xfer = |s: &mut Shim<MockMachine>, mfn: u64, domid: u16, gref: u32| {
        put(s, OPS, &GnttabTransfer { mfn, domid, r#ref: gref, status: 0x55, ..Default::default() });
        assert_eq!(op(s, GNTTABOP_TRANSFER, OPS, 1), Ok(0));
        get::<GnttabTransfer>(s, OPS).status
    };
    assert_eq!(xfer(&mut s, 1000, 0, 8), GNTST_BAD_PAGE, "no such frame");
    assert_eq!(xfer(&mut s, GRANT_MFN, 0, 8), GNTST_BAD_PAGE, "not RAM");
    assert_eq!(xfer(&mut s, GUEST_FIRST_DATA_MFN, 0, 8), GNTST_BAD_PAGE, "still mapped");
    assert_eq!(xfer(&mut s, 1, 0, 8), GNTST_BAD_PAGE, "the pinned L4");
    assert!(s.owned(GUEST_FIRST_DATA_MFN));
    assert_eq!(xfer(&mut s, 6, 9, 8), GNTST_BAD_DOMAIN);
    assert!(!s.owned(6), "stolen before the domain was looked up");
    assert_eq!(xfer(&mut s, 7, 0, 8), GNTST_GENERAL_ERROR, "domain 0 accepts no transfer");
    assert!(!s.owned(7));
    assert_eq!(xfer(&mut s, 7, 0, 8), GNTST_BAD_PAGE, "gone");
    // Into an own entry that accepts it: the frame comes back, named in the entry.
    set_entry(&mut s, 20, GrantEntryV1 { flags: GTF_ACCEPT_TRANSFER, domid: DOMID, frame: 0x99 });
    assert_eq!(xfer(&mut s, 8, DOMID, 20), GNTST_OKAY);
    assert!(s.owned(8));
    let e = entry(&s, 20);
    assert_eq!(e.frame, 8);
    assert_eq!(e.flags, GTF_ACCEPT_TRANSFER | GTF_TRANSFER_COMMITTED | GTF_TRANSFER_COMPLETED);
    // An entry that does not accept it, or one out of range: lost.
    assert_eq!(xfer(&mut s, 9, DOMID, 21), GNTST_GENERAL_ERROR);
    assert_eq!(xfer(&mut s, 10, DOMID, 4096), GNTST_GENERAL_ERROR);
    assert!(!s.owned(9) && !s.owned(10));
}

#[test]
fn swap_grant_ref_swaps_idle_entries_in_range() {
    let mut s = shim();
    let a = GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 0, frame: 0x11 };
    let b = GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READONLY, domid: 0, frame: 0x22 };
    set_entry(&mut s, 8, a);
    set_entry(&mut s, 9, b);
    let swap = |s: &mut Shim<MockMachine>, ra, rb| {
        put(s, OPS, &GnttabSwapGrantRef { ref_a: ra, ref_b: rb, status: 0x55, _pad: 0 });
        assert_eq!(op(s, GNTTABOP_SWAP_GRANT_REF, OPS, 1), Ok(0));
        get::<GnttabSwapGrantRef>(s, OPS).status
    };
    assert_eq!(swap(&mut s, 8, 9), GNTST_OKAY);
    assert_eq!((entry(&s, 8), entry(&s, 9)), (b, a));
    assert_eq!(swap(&mut s, 8, 8), GNTST_OKAY);
    assert_eq!(swap(&mut s, 8, 512), GNTST_BAD_GNTREF);
    assert_eq!(swap(&mut s, u32::MAX, 8), GNTST_BAD_GNTREF);
    set_entry(&mut s, 9, GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READING, ..a });
    assert_eq!(swap(&mut s, 8, 9), GNTST_EAGAIN, "in use by a backend");
    assert_eq!(entry(&s, 8), b);
}

#[test]
fn cache_flush_checks_its_arguments_and_the_frame_owner() {
    let mut s = shim();
    let own = (GUEST_FIRST_DATA_MFN + 3) << 12;
    let cf = |s: &mut Shim<MockMachine>, cmd: u32, a: u64, offset: u16, length: u16, o: u32| {
        put(s, OPS, &GnttabCacheFlush { a, offset, length, op: o });
        op(s, cmd, OPS, 1)
    };
    let c = GNTTABOP_CACHE_FLUSH;
    assert_eq!(cf(&mut s, c, own, 0, 4096, GNTTAB_CACHE_CLEAN), Ok(0));
    assert_eq!(cf(&mut s, c, own, 0, 64, GNTTAB_CACHE_CLEAN | GNTTAB_CACHE_INVAL), Ok(0));
    assert_eq!(cf(&mut s, c, own, 0, 64, GNTTAB_CACHE_INVAL), Err(Errno::EOPNOTSUPP));
    assert_eq!(cf(&mut s, c, own, 4096, 0, GNTTAB_CACHE_CLEAN), Err(Errno::EINVAL));
    assert_eq!(cf(&mut s, c, own, 1, 4096, GNTTAB_CACHE_CLEAN), Err(Errno::EINVAL));
    assert_eq!(cf(&mut s, c, own, 0, 8, GNTTAB_CACHE_SOURCE_GREF), Err(Errno::EINVAL));
    assert_eq!(cf(&mut s, c, own, 0, 0, GNTTAB_CACHE_CLEAN), Ok(0));
    assert_eq!(cf(&mut s, c | 5 << 12, own, 0, 0, GNTTAB_CACHE_CLEAN), Err(Errno::EILSEQ));
    assert_eq!(cf(&mut s, c, 60 << 12, 0, 8, GNTTAB_CACHE_CLEAN), Err(Errno::EPERM));
    assert_eq!(cf(&mut s, c, 1 << 40, 0, 8, GNTTAB_CACHE_CLEAN), Err(Errno::EINVAL));
    assert_eq!(cf(&mut s, c, GRANT_MFN << 12, 0, 8, GNTTAB_CACHE_CLEAN), Ok(0));
}

#[test]
fn grant_table_without_frames_has_no_entries() {
    let mut s = shim_with_guest_boot(|b| b.domid = DOMID);
    assert_eq!(s.gnttab.nr_frames(), 0);
    let q = query(&mut s, DOMID_SELF);
    assert_eq!((q.nr_frames, q.max_nr_frames), (0, 0));
    assert_eq!(setup(&mut s, DOMID_SELF, 1, LIST).1.status, GNTST_GENERAL_ERROR);
    assert!(s.grant_entry(0).is_none());
}
