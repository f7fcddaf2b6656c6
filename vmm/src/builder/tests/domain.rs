//! Layout, start_info, page tables and the real Debian kernel.

use xen_abi::elfnote::*;

use super::*;

// ---------------------------------------------------------------- layout

#[test]
fn layout_reproduces_the_worked_example_of_the_contract() {
    let info = probe_elf(&debian_like_elf()).unwrap();
    let l = layout::compute(&info, 262_144, Some(30 * MIB)).unwrap();
    let seg = |pfn, pages, va| Segment { pfn, pages, va };
    assert_eq!(l.padding, seg(0, 0x1000, Some(DEBIAN_VIRT_BASE)));
    assert_eq!(l.kernel, seg(0x1000, 14848, Some(0xffff_ffff_8100_0000)));
    assert_eq!(l.start_info_pfn, 0x4a00);
    assert_eq!(l.va_of(l.start_info_pfn), 0xffff_ffff_84a0_0000);
    assert_eq!(l.xenstore_pfn, 0x4a01);
    assert_eq!(l.console_pfn, 0x4a02);
    assert_eq!(l.pgtables, seg(0x4a03, 41, Some(0xffff_ffff_84a0_3000)));
    assert_eq!(l.nr_pt_frames(), 41);
    assert_eq!(l.bootstack_pfn, 0x4a2c);
    assert_eq!(l.va_of(l.bootstack_pfn + 1), 0xffff_ffff_84a2_d000);
    assert_eq!(l.virt_pgtab_end, 0xffff_ffff_84c0_0000);
    assert_eq!(l.initrd, Some(seg(0x4c00, 7680, None)));
    assert_eq!(l.p2m, seg(0x6a00, 512, Some(DEBIAN_INIT_P2M)));
    assert_eq!(l.p2m_segment, Some(seg(0x6a00, 515, Some(DEBIAN_INIT_P2M))));
    assert_eq!(l.pfn_alloc_end, 0x6c03);
    // Main mapping: L4, L3, L2, 38 L1s; P2M mapping: L3, L2, 1 L1.
    let m0 = l.maps[0];
    assert_eq!(m0.lvls.map(|v| (v.pfn, v.pgtables)), [(0x4a06, 38), (0x4a05, 1), (0x4a04, 1), (0x4a03, 1)]);
    let m1 = l.maps[1];
    assert_eq!(m1.lvls.map(|v| v.pgtables), [1, 1, 1, 0]);
    assert_eq!((m1.lvls[2].pfn, m1.lvls[1].pfn, m1.lvls[0].pfn), (0x6c00, 0x6c01, 0x6c02));
}

#[test]
fn worked_example_builds_with_every_start_info_field() {
    const MFN0: u64 = 0x100;
    let (mem, p2m) = domain_memory(&[(MFN0, 262_144)]);
    let kernel = debian_like_elf().build();
    let initrd: Vec<u8> = (0..30 * MIB as usize).map(|i| (i % 251) as u8).collect();
    let cmdline = "console=hvc0 root=/dev/xvda1 ro";
    let d = build_domain(&mem, &p2m, &spec(&kernel, Some(&initrd), cmdline)).unwrap();

    assert_eq!(d.entry, DEBIAN_ENTRY);
    assert_eq!(d.start_info_va, 0xffff_ffff_84a0_0000);
    assert_eq!(d.stack_top, 0xffff_ffff_84a2_d000);
    assert_eq!(d.pt_base, 0xffff_ffff_84a0_3000);
    assert_eq!(d.l4_mfn, MFN0 + 0x4a03);
    assert_eq!(d.nr_pt_frames, 41);
    assert_eq!(d.mfn_list, DEBIAN_INIT_P2M);
    assert_eq!(d.hypercall_page, None);

    let si = StartInfo::read_from_bytes(&read_page(&mem, MFN0 + 0x4a00)[..std::mem::size_of::<StartInfo>()])
        .unwrap();
    assert_eq!(&si.magic[..15], b"xen-3.0-x86_64\0");
    assert_eq!(si.nr_pages, 262_144);
    assert_eq!(si.shared_info, 0x7_7777 << 12);
    assert_eq!(si.flags, SIF_VIRT_P2M_4TOOLS | SIF_MOD_START_PFN);
    assert_eq!(si.flags, 0x18);
    assert_eq!(si.store_mfn, MFN0 + 0x4a01);
    assert_eq!(si.store_evtchn, 1);
    assert_eq!(si.console_mfn, MFN0 + 0x4a02);
    assert_eq!(si.console_evtchn, 2);
    assert_eq!(si.pt_base, 0xffff_ffff_84a0_3000);
    assert_eq!(si.nr_pt_frames, 41);
    assert_eq!(si.mfn_list, 0x80_0000_0000);
    assert_eq!(si.mod_start, 0x4c00);
    assert_eq!(si.mod_len, 0x1e0_0000);
    assert_eq!(&si.cmd_line[..cmdline.len()], cmdline.as_bytes());
    assert!(si.cmd_line[cmdline.len()..].iter().all(|&b| b == 0));
    assert_eq!(si.first_p2m_pfn, 0x6a00);
    assert_eq!(si.nr_p2m_frames, 515);
    assert_eq!(d.start_info.as_bytes(), si.as_bytes());

    // Kernel segments by paddr: file bytes, then zeros (incl. the vaddr-0 per-CPU segment).
    let k = |paddr: u64| (paddr >> 12) - 0x1000 + 0x1000 + MFN0;
    for s in debian_like_elf().segs {
        let page = read_page(&mem, k(s.paddr));
        assert_eq!(&page[..s.data.len().min(4096)], &s.data[..s.data.len().min(4096)]);
        let after = read_page(&mem, k(s.paddr) + 2);
        assert!(after.iter().all(|&b| b == 0));
    }
    // Initrd by PFN, the P2M list at its PFN.
    assert_eq!(read_page(&mem, MFN0 + 0x4c00)[..4096], initrd[..4096]);
    assert_eq!(read_u64(&mem, (MFN0 + 0x6a00) << 12), MFN0);
    assert_eq!(read_u64(&mem, ((MFN0 + 0x6a00 + 511) << 12) + 511 * 8), MFN0 + 262_143);
}

#[test]
fn memory_too_small_names_the_needed_size() {
    let kernel = small_elf().build();
    let (mem, p2m) = domain_memory(&[(0, 16 * 256)]);
    let err = build_domain(&mem, &p2m, &spec(&kernel, None, "")).unwrap_err();
    let BuilderError::MemoryTooSmall { needed_mib, have_mib } = err else { panic!("{err}") };
    assert_eq!(have_mib, 16);
    assert!(err.to_string().starts_with("memory too small: the image needs at least"), "{err}");
    // The needed size is exact to the MiB: it builds with it, not with one MiB less.
    let info = probe_kernel(&kernel).unwrap();
    assert!(layout::compute(&info, needed_mib * 256, None).is_ok());
    assert!(layout::compute(&info, (needed_mib - 1) * 256, None).is_err());
    // And with an initrd the need grows by its size.
    let with_initrd = layout::compute(&info, 16 * 256, Some(64 * MIB)).unwrap_err();
    let BuilderError::MemoryTooSmall { needed_mib: n2, .. } = with_initrd else { panic!() };
    assert!(n2 >= needed_mib + 64);
}

#[test]
fn initial_mapping_beyond_one_gib_is_refused() {
    let mut e = small_elf();
    e.remove_note(XEN_ELFNOTE_MOD_START_PFN);
    let info = probe_elf(&e).unwrap();
    let err = layout::compute(&info, 1 << 20, Some(1100 * MIB)).unwrap_err();
    assert!(matches!(err, BuilderError::InitialMappingTooLarge { .. }), "{err}");
}

#[test]
fn command_line_must_fit_start_info() {
    let kernel = small_elf().build();
    let (mem, p2m) = domain_memory(&[(0, 32 * 256)]);
    let long = "x".repeat(1024);
    assert!(matches!(
        build_domain(&mem, &p2m, &spec(&kernel, None, &long)),
        Err(BuilderError::CmdlineTooLong { len: 1024 })
    ));
    let d = build_domain(&mem, &p2m, &spec(&kernel, None, &long[..1023])).unwrap();
    assert_eq!(d.start_info.cmd_line[1022], b'x');
    assert_eq!(d.start_info.cmd_line[1023], 0);
    assert!(matches!(
        build_domain(&mem, &p2m, &spec(&kernel, None, "a\0b")),
        Err(BuilderError::CmdlineHasNul)
    ));
}

// ---------------------------------------------------------------- page tables

/// Follows the guest's page tables from `l4_mfn` for `va`; returns the L1 entry.
fn walk(mem: &GuestMemoryMmap<()>, l4_mfn: u64, va: u64) -> Vec<u64> {
    let mut entries = Vec::new();
    let mut table = l4_mfn;
    for level in (0..4).rev() {
        let idx = (va >> (12 + 9 * level)) & 511;
        let e = read_u64(mem, (table << 12) + idx * 8);
        entries.push(e);
        assert_ne!(e & 1, 0, "level {} entry for {va:#x} not present", level + 1);
        table = (e & 0x000f_ffff_ffff_f000) >> 12;
    }
    entries
}

#[test]
fn page_tables_map_the_initial_image_and_the_p2m_with_libxc_flags() {
    // 64 MiB in two machine ranges, so PFN != MFN and the P2M is not contiguous.
    let (mem, p2m) = domain_memory(&[(0x400, 0x1000), (0x3000, 0x3000)]);
    let kernel = small_elf().build();
    let initrd = vec![0x5a; 10_000];
    let d = build_domain(&mem, &p2m, &spec(&kernel, Some(&initrd), "")).unwrap();
    let l = &d.layout;
    let mfn = |pfn| p2m.pfn_to_mfn(pfn).unwrap();

    // L4: exactly slots 1 (P2M) and 511 (kernel); no hypervisor slots, no _PAGE_USER forcing.
    let l4 = read_page(&mem, d.l4_mfn);
    let l4e: Vec<u64> = l4.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    let present: Vec<usize> = (0..512).filter(|&i| l4e[i] != 0).collect();
    assert_eq!(present, [1, 511]);
    let pt = l.pgtables.pfn;
    assert_eq!(l4e[511], mfn(pt + 1) << 12 | 0x67);
    let m1 = l.maps[1];
    assert_eq!(l4e[1], mfn(m1.lvls[2].pfn) << 12 | 0x67);
    // L3[510] -> L2 -> L1s.
    assert_eq!(read_u64(&mem, (mfn(pt + 1) << 12) + 510 * 8), mfn(pt + 2) << 12 | 0x67);
    assert_eq!(read_u64(&mem, mfn(pt + 2) << 12), mfn(pt + 3) << 12 | 0x67);
    assert_eq!(l.nr_pt_frames(), 3 + l.maps[0].lvls[0].pgtables);

    // Every PFN of the initial mapping maps to its MFN; page tables read-only.
    let first_l1 = l.maps[0].lvls[0].pfn;
    for pfn in 0..(l.virt_pgtab_end - l.virt_base) >> 12 {
        let e = walk(&mem, d.l4_mfn, l.va_of(pfn));
        assert!(e[..3].iter().all(|&x| x & 0xfff == 0x67));
        let flags =
            if l.pgtables.pfn <= pfn && pfn < l.pgtables.pfn + l.pgtables.pages { 0x21 } else { 0x23 };
        assert_eq!(e[3], mfn(pfn) << 12 | flags, "pfn {pfn:#x}");
    }
    assert_eq!(first_l1, pt + 3);
    // The first unmapped L1 slot after the mapping is empty.
    let end_idx = ((l.virt_pgtab_end - l.virt_base) >> 12) as usize;
    if !end_idx.is_multiple_of(512) {
        let l1 = first_l1 + end_idx as u64 / 512;
        assert_eq!(read_u64(&mem, (mfn(l1) << 12) + (end_idx as u64 % 512) * 8), 0);
    }

    // The P2M mapping at INIT_P2M: RW entries for the list pages, nothing beyond.
    for i in 0..l.p2m.pages {
        let e = walk(&mem, d.l4_mfn, DEBIAN_INIT_P2M + i * 4096);
        assert_eq!(e[3], mfn(l.p2m.pfn + i) << 12 | 0x23);
    }
    // The P2M list content: p2m[pfn] = mfn for every PFN.
    assert_eq!(l.p2m.pages, 0x4000 * 8 / 4096);
    let mut list = Vec::new();
    for i in 0..l.p2m.pages {
        let page = read_page(&mem, mfn(l.p2m.pfn + i));
        list.extend(page.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())));
    }
    assert_eq!(list, p2m.iter().map(|(_, m)| m).collect::<Vec<_>>());
    assert_eq!((list[0], list[0xfff], list[0x1000], list[0x3fff]), (0x400, 0x13ff, 0x3000, 0x5fff));
    // nr_pages is a multiple of 512 here; check a non-multiple domain for the ~0 tail.
    let (mem2, p2m2) = domain_memory(&[(0, 0x2345)]);
    let d2 = build_domain(&mem2, &p2m2, &spec(&kernel, None, "")).unwrap();
    let tail_page = read_page(&mem2, d2.layout.p2m.pfn + d2.layout.p2m.pages - 1);
    let tail: Vec<u64> = tail_page.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(tail[0x2344 % 512], 0x2344);
    assert!(tail[0x2345 % 512..].iter().all(|&x| x == u64::MAX));

    // Unmapped initrd, page-rounded, zero tail; store/console rings zeroed.
    let seg = l.initrd.unwrap();
    assert_eq!(seg.va, None);
    assert_eq!(d.start_info.mod_start, seg.pfn);
    assert_eq!(d.start_info.mod_len, 3 * 4096);
    let third = read_page(&mem, mfn(seg.pfn + 2));
    assert!(third[..10_000 - 8192].iter().all(|&b| b == 0x5a));
    assert!(third[10_000 - 8192..].iter().all(|&b| b == 0));
    assert!(read_page(&mem, d.store_mfn).iter().all(|&b| b == 0));
    assert!(read_page(&mem, d.console_mfn).iter().all(|&b| b == 0));
}

#[test]
fn kernel_without_init_p2m_or_mod_start_pfn_gets_everything_mapped() {
    let mut e = small_elf();
    e.remove_note(XEN_ELFNOTE_INIT_P2M);
    e.remove_note(XEN_ELFNOTE_MOD_START_PFN);
    let kernel = e.build();
    let (mem, p2m) = domain_memory(&[(0x80, 0x4000)]);
    let initrd = vec![0xa5u8; 5000];
    let d = build_domain(&mem, &p2m, &spec(&kernel, Some(&initrd), "")).unwrap();
    let l = &d.layout;
    // libxc order: kernel, initrd (mapped module), P2M, magic pages, page tables.
    let kernel_end = l.kernel.pfn + l.kernel.pages;
    let initrd_seg = l.initrd.unwrap();
    assert_eq!(initrd_seg.pfn, kernel_end);
    assert_eq!(l.p2m.pfn, kernel_end + 2);
    assert_eq!(l.start_info_pfn, l.p2m.pfn + l.p2m.pages);
    assert_eq!(l.maps.len(), 1);
    assert_eq!(d.start_info.flags, SIF_VIRT_P2M_4TOOLS);
    assert_eq!(d.start_info.mod_start, l.va_of(initrd_seg.pfn));
    assert_eq!(d.start_info.mod_len, 2 * 4096);
    assert_eq!(d.mfn_list, l.va_of(l.p2m.pfn));
    assert_eq!((d.start_info.first_p2m_pfn, d.start_info.nr_p2m_frames), (0, 0));
    let e = walk(&mem, d.l4_mfn, d.start_info.mod_start);
    assert_eq!(e[3], (0x80 + initrd_seg.pfn) << 12 | 0x23);
    assert_eq!(read_page(&mem, 0x80 + initrd_seg.pfn)[..16], [0xa5; 16]);
}

#[test]
fn hypercall_page_is_filled_when_the_note_asks_for_it() {
    let mut e = small_elf();
    e.set_note(xen_u64(XEN_ELFNOTE_HYPERCALL_PAGE, 0xffff_ffff_8100_2000));
    let kernel = e.build();
    let (mem, p2m) = domain_memory(&[(0x20, 0x2000)]);
    let d = build_domain(&mem, &p2m, &spec(&kernel, None, "")).unwrap();
    assert_eq!(d.hypercall_page, Some(0xffff_ffff_8100_2000));
    let page = read_page(&mem, 0x20 + 0x1002);
    assert_eq!(page, hypercall_page::hypercall_page());
    // The neighbouring kernel page is untouched ELF data.
    assert_eq!(read_page(&mem, 0x20 + 0x1001)[..16], e.segs[0].data[4096..4112]);
}

// ---------------------------------------------------------------- the real Debian kernel

#[test]
fn debian_kernel_unpacks_and_has_expected_notes() {
    // The kernel scripts/setup fetched, under XENVMM_CACHE as the scripts place it.
    let path = std::env::var("XENVMM_DEBIAN_KERNEL").unwrap_or_else(|_| {
        let cache = std::env::var("XENVMM_CACHE")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/cache").to_string());
        format!("{cache}/nested-kernel/current/vmlinuz")
    });
    let image = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("Debian kernel not found at {path} ({e}); run scripts/setup or set XENVMM_DEBIAN_KERNEL")
    });
    // One build (the XZ unpack dominates: ~1 s optimised, ~8 s in a debug build).
    const MFN0: u64 = 0x100;
    let (mem, p2m) = domain_memory(&[(MFN0, 262_144)]);
    let initrd = vec![0x42u8; 30 * MIB as usize];
    let d = build_domain(&mem, &p2m, &spec(&image, Some(&initrd), "console=hvc0")).unwrap();
    let info = &d.info;
    assert_eq!(info.format, ImageFormat::BzImage(Compression::Xz));
    // Version-independent values of xen-pv-contract.md §1.2 / §2.3.
    assert_eq!(info.virt_base, 0xffff_ffff_8000_0000);
    assert_eq!(info.elf_paddr_offset, 0);
    assert_eq!(info.pstart, 0x100_0000);
    assert_eq!(info.virt_kstart, 0xffff_ffff_8100_0000);
    assert_eq!(info.virt_kend, info.pend + 0xffff_ffff_8000_0000);
    assert!(info.virt_kstart <= info.entry && info.entry < info.virt_kend);
    assert_eq!(info.xen_version, "xen-3.0");
    assert_eq!(info.guest_os, "linux");
    assert_eq!(info.loader, "generic");
    assert_eq!(info.init_p2m, Some(0x80_0000_0000));
    assert_eq!(info.p2m_base(), Some(0x80_0000_0000));
    assert!(info.mod_start_pfn);
    assert_eq!(info.hv_start_low, Some(0xffff_8000_0000_0000));
    assert_eq!(info.features_required, 1 << 0, "!writable_page_tables");
    assert_eq!(info.features_supported & 0x8801, 0x8801);
    assert!(info.phys32_entry.is_some());
    assert_eq!(info.suspend_cancel, Some(1));
    // 6.1.123+ dropped the hypercall page; older kernels have it inside the kernel.
    if let Some(hp) = info.hypercall_page {
        assert!(info.virt_kstart <= hp && hp < info.virt_kend);
    }
    // The measured image (6.1.0-56) exactly, and then the worked example of §2.4 exactly.
    if image.len() == 8_247_232 {
        assert_eq!(info.elf_size, 65_906_612);
        assert_eq!(info.pend, 0x4a0_0000);
        assert_eq!(info.entry, 0xffff_ffff_8307_91c0);
        assert_eq!(info.hypercall_page, None);
        assert_eq!(info.phys32_entry, Some(0x0100_0850));
        let si = &d.start_info;
        assert_eq!(d.start_info_va, 0xffff_ffff_84a0_0000);
        assert_eq!(d.stack_top, 0xffff_ffff_84a2_d000);
        assert_eq!((si.pt_base, si.nr_pt_frames), (0xffff_ffff_84a0_3000, 41));
        assert_eq!((si.store_mfn, si.console_mfn), (MFN0 + 0x4a01, MFN0 + 0x4a02));
        assert_eq!((si.mod_start, si.mod_len, si.flags), (0x4c00, 0x1e0_0000, 0x18));
        assert_eq!((si.mfn_list, si.first_p2m_pfn, si.nr_p2m_frames), (0x80_0000_0000, 0x6a00, 515));
    }
    // Whatever the version: the kernel at 16 MiB, the initrd unmapped, the P2M at INIT_P2M,
    // and the entry point mapped.
    assert_eq!(d.layout.kernel.pfn, 0x1000);
    assert_eq!(d.layout.initrd.unwrap().va, None);
    assert_eq!(d.mfn_list, 0x80_0000_0000);
    let e = walk(&mem, d.l4_mfn, d.entry);
    assert_eq!(e[3] >> 12, MFN0 + ((d.entry - d.virt_base) >> 12));
    // startup_xen begins with `cld` (arch/x86/xen/xen-head.S): the ELF really was loaded by paddr.
    let entry_gpa = (MFN0 << 12) + (d.entry - d.virt_base);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(entry_gpa)).unwrap(), 0xfc);
}

#[test]
fn p2m_in_the_kernels_l3_shares_tables_as_libxc_does() {
    // INIT_P2M 2 GiB below VIRT_BASE: same L4 slot and same L3 as the kernel mapping, so the
    // P2M mapping needs only its own L2 and L1 (libxc count_pgtables trimming).
    let mut e = small_elf();
    e.set_note(xen_u64(XEN_ELFNOTE_INIT_P2M, 0xffff_ffff_0000_0000));
    let kernel = e.build();
    let (mem, p2m) = domain_memory(&[(0x40, 0x3000)]);
    let d = build_domain(&mem, &p2m, &spec(&kernel, None, "")).unwrap();
    let m1 = d.layout.maps[1];
    assert_eq!(m1.lvls.map(|v| v.pgtables), [1, 1, 0, 0]);
    assert_eq!(d.start_info.nr_p2m_frames, d.layout.p2m.pages + 2);
    let l3 = d.layout.maps[0].lvls[2].pfn;
    assert_eq!(read_u64(&mem, ((0x40 + l3) << 12) + 508 * 8), (0x40 + m1.lvls[1].pfn) << 12 | 0x67);
    for i in 0..d.layout.p2m.pages {
        let e = walk(&mem, d.l4_mfn, 0xffff_ffff_0000_0000 + i * 4096);
        assert_eq!(e[3], (0x40 + d.layout.p2m.pfn + i) << 12 | 0x23);
    }
    assert_eq!(read_u64(&mem, (0x40 + d.layout.p2m.pfn) << 12), 0x40);
}

#[test]
fn p2m_overlapping_the_kernel_mapping_is_refused() {
    let mut e = small_elf();
    e.set_note(xen_u64(XEN_ELFNOTE_INIT_P2M, DEBIAN_VIRT_BASE - 0x1000));
    let info = probe_kernel(&e.build()).unwrap();
    let err = layout::compute(&info, 0x3000, None).unwrap_err();
    assert!(matches!(err, BuilderError::BadKernelAddresses(_)), "{err}");
}
