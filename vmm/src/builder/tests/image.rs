//! Image formats, hostile images, Xen notes and kernel addresses.

use xen_abi::elfnote::*;

use super::*;

// ---------------------------------------------------------------- image formats

#[test]
fn every_supported_compressor_unpacks_to_the_original_elf() {
    let elf = small_elf().build();
    for c in ALL {
        let img = bzimage(&compress(c, &elf), 1000);
        let (out, format) = bzimage::unpack(&img).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert_eq!(format, ImageFormat::BzImage(c));
        assert_eq!(&*out, &elf[..], "{c:?}");
        let info = probe_kernel(&img).unwrap();
        assert_eq!(info.format, ImageFormat::BzImage(c));
        assert_eq!(info.entry, 0xffff_ffff_8100_0040);
    }
}

#[test]
fn xz_with_bcj_x86_filter_decodes_x86_like_code() {
    // Lots of E8/E9 (call/jmp rel32) bytes: the BCJ filter rewrites their operands.
    let mut e = small_elf();
    e.segs[0].data = (0..0x8000u32).map(|i| if i % 5 == 0 { 0xe8 } else { (i >> 3) as u8 }).collect();
    let elf = e.build();
    let img = bzimage(&compress(Compression::Xz, &elf), 0);
    assert_eq!(&*bzimage::unpack(&img).unwrap().0, &elf[..]);
}

#[test]
fn lz4_stream_followed_by_trailing_bytes_is_accepted() {
    let elf = small_elf().build();
    let mut payload = compress(Compression::Lz4, &elf);
    let size = payload.split_off(payload.len() - 4);
    payload.extend_from_slice(&[0x55; 7]);
    payload.extend_from_slice(&size);
    let img = bzimage(&payload, 0);
    assert_eq!(&*bzimage::unpack(&img).unwrap().0, &elf[..]);
}

#[test]
fn plain_and_gzipped_elf_are_accepted() {
    let elf = small_elf().build();
    assert_eq!(probe_kernel(&elf).unwrap().format, ImageFormat::Elf);
    let gz = compress(Compression::Gzip, &elf);
    assert_eq!(probe_kernel(&gz).unwrap().format, ImageFormat::GzipElf);
}

#[test]
fn unsupported_compressions_are_named() {
    for (magic, name) in
        [(&b"BZh91AY"[..], "bzip2"), (&[0x5d, 0, 0, 0x80, 0][..], "lzma"), (&b"\x89LZO\0\r\n"[..], "lzo")]
    {
        let mut payload = magic.to_vec();
        payload.extend_from_slice(&[0; 64]);
        let err = probe_kernel(&bzimage(&payload, 0)).unwrap_err();
        assert_eq!(err.to_string().split(" (").next().unwrap(), format!("unsupported compression: {name}"));
    }
}

#[test]
fn non_kernel_files_are_rejected() {
    for junk in [&b""[..], b"hello world", &[0u8; 4096][..], b"\x7fEL"] {
        assert!(matches!(probe_kernel(junk), Err(BuilderError::NotAKernelImage)), "{junk:?}");
    }
}

#[test]
fn payload_that_is_not_an_elf_is_rejected() {
    let img = bzimage(&compress(Compression::Gzip, b"not an elf at all"), 0);
    assert!(matches!(probe_kernel(&img), Err(BuilderError::CorruptImage(_))));
}

#[test]
fn bad_bzimage_headers_are_rejected() {
    let elf = small_elf().build();
    let good = bzimage(&compress(Compression::Zstd, &elf), 16);
    let patch = |off: usize, bytes: &[u8]| {
        let mut img = good.clone();
        img[off..off + bytes.len()].copy_from_slice(bytes);
        probe_kernel(&img)
    };
    assert!(matches!(patch(0x206, &0x0207u16.to_le_bytes()), Err(BuilderError::UnsupportedImage(_))));
    assert!(matches!(patch(0x248, &u32::MAX.to_le_bytes()), Err(BuilderError::TruncatedImage(_))));
    assert!(matches!(patch(0x24c, &u32::MAX.to_le_bytes()), Err(BuilderError::TruncatedImage(_))));
    assert!(patch(0x1f1, &[0xff]).is_err());
    // Payload shifted by one byte: unknown magic.
    assert!(matches!(patch(0x248, &0x3cdu32.to_le_bytes()), Err(BuilderError::CorruptImage(_))));
    // Payload length cut: the size trailer no longer matches / the stream is truncated.
    let len = u32::from_le_bytes(good[0x24c..0x250].try_into().unwrap());
    assert!(patch(0x24c, &(len - 9).to_le_bytes()).is_err());
    // Size trailer claims more than the limit.
    let mut img = good.clone();
    let end = 4 * 512 + 0x3cc + len as usize;
    img[end - 4..end].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(probe_kernel(&img), Err(BuilderError::UnpackedTooLarge { .. })));
}

#[test]
fn truncated_images_fail_cleanly_at_every_length() {
    let elf = small_elf().build();
    let mut images = vec![elf.clone(), compress(Compression::Gzip, &elf)];
    images.extend(ALL.map(|c| bzimage(&compress(c, &elf), 0)));
    for img in images {
        let step = (img.len() / 400).max(1);
        for len in (0..img.len()).step_by(step).chain(img.len().saturating_sub(16)..img.len()) {
            assert!(probe_kernel(&img[..len]).is_err(), "prefix of {len} bytes accepted");
        }
    }
}

#[test]
fn corrupted_images_never_panic() {
    let elf = small_elf().build();
    let mut images = vec![elf.clone()];
    images.extend(ALL.map(|c| bzimage(&compress(c, &elf), 0)));
    let mut seed = 0x1234_5678_9abc_def1u64;
    let (mem, p2m) = domain_memory(&[(0x10, 8192)]);
    for img in images {
        for _ in 0..300 {
            let mut bad = img.clone();
            for _ in 0..1 + rng(&mut seed) % 4 {
                let pos = (rng(&mut seed) % bad.len() as u64) as usize;
                bad[pos] = rng(&mut seed) as u8;
            }
            if probe_kernel(&bad).is_ok() {
                let _ = build_domain(&mem, &p2m, &spec(&bad, None, ""));
            }
        }
    }
}

// ---------------------------------------------------------------- notes and addresses

#[test]
fn debian_like_notes_parse_to_the_measured_values() {
    let info = probe_elf(&debian_like_elf()).unwrap();
    assert_eq!(info.entry, DEBIAN_ENTRY);
    assert_eq!(info.virt_base, DEBIAN_VIRT_BASE);
    assert_eq!((info.pstart, info.pend), (0x100_0000, 0x4a0_0000));
    assert_eq!((info.virt_kstart, info.virt_kend), (0xffff_ffff_8100_0000, 0xffff_ffff_84a0_0000));
    assert_eq!(info.init_p2m, Some(DEBIAN_INIT_P2M));
    assert_eq!(info.p2m_base(), Some(DEBIAN_INIT_P2M));
    assert!(info.mod_start_pfn);
    assert_eq!(info.hypercall_page, None);
    assert_eq!(info.features_supported, 0x8801 | 1 << 4);
    assert_eq!(info.features_required, 1);
    assert_eq!(info.phys32_entry, Some(0x0100_0850));
    assert!(!info.notes_from_sections);
}

#[test]
fn phys32_entry_never_replaces_the_pv_entry() {
    let mut e = debian_like_elf();
    e.remove_note(XEN_ELFNOTE_ENTRY);
    e.e_entry = 0xffff_ffff_8100_1000;
    let info = probe_elf(&e).unwrap();
    assert_eq!(info.entry, 0xffff_ffff_8100_1000, "ELF e_entry, not PHYS32_ENTRY");
}

#[test]
fn notes_are_read_from_sections_when_no_note_segment_exists() {
    let mut e = small_elf();
    e.notes_in_section_only = true;
    let info = probe_elf(&e).unwrap();
    assert!(info.notes_from_sections);
    assert_eq!(info.virt_base, DEBIAN_VIRT_BASE);
}

#[test]
fn kernel_without_xen_notes_is_not_a_pv_kernel() {
    let mut e = small_elf();
    e.notes.retain(|n| n.0 != b"Xen\0");
    assert!(matches!(probe_elf(&e), Err(BuilderError::NoXenNotes)));
    e.notes.clear();
    let err = probe_elf(&e).unwrap_err();
    assert_eq!(err.to_string(), "not a Xen PV kernel (no Xen ELF notes)");
}

#[test]
fn malformed_notes_are_rejected() {
    let mut e = small_elf();
    e.set_note((b"Xen\0".to_vec(), XEN_ELFNOTE_ENTRY, vec![1, 2, 3]));
    assert!(matches!(probe_elf(&e), Err(BuilderError::BadXenNote { note: "ENTRY", .. })));

    // Linux emits FEATURES with `.ascii`: a string may fill its descriptor without a NUL.
    let mut e = small_elf();
    e.set_note((b"Xen\0".to_vec(), XEN_ELFNOTE_GUEST_OS, b"linux".to_vec()));
    assert_eq!(probe_elf(&e).unwrap().guest_os, "linux");

    let mut e = small_elf();
    e.set_note((b"Xen\0".to_vec(), XEN_ELFNOTE_SUPPORTED_FEATURES, vec![1, 2]));
    assert!(probe_elf(&e).is_err());

    // A descriptor size running past the note segment.
    let mut img = small_elf().build();
    let notes_off = 64 + 56 * 2;
    img[notes_off + 4..notes_off + 8].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    assert!(matches!(probe_kernel(&img), Err(BuilderError::CorruptImage(_))));
}

#[test]
fn kernels_for_other_environments_are_refused() {
    let cases: Vec<(RawNote, &str)> = vec![
        (xen_str(XEN_ELFNOTE_XEN_VERSION, "xen-2.0"), "xen-3.0"),
        (xen_str(XEN_ELFNOTE_FEATURES, "!dom0"), "dom0"),
        (xen_str(XEN_ELFNOTE_FEATURES, "!auto_translated_physmap"), "auto_translated"),
        (xen_str(XEN_ELFNOTE_FEATURES, "!no_such_feature"), "no_such_feature"),
    ];
    for (note, needle) in cases {
        let mut e = small_elf();
        e.set_note(note);
        let err = probe_elf(&e).unwrap_err();
        assert!(matches!(err, BuilderError::IncompatibleKernel(_)), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    let mut e = small_elf();
    e.set_note(xen_str(XEN_ELFNOTE_GUEST_OS, "netbsd"));
    e.set_note(xen_str(XEN_ELFNOTE_LOADER, "bsdloader"));
    assert!(matches!(probe_elf(&e), Err(BuilderError::IncompatibleKernel(_))));
    // "generic" loader accepts any GUEST_OS; optional dom0 support is fine.
    e.set_note(xen_str(XEN_ELFNOTE_LOADER, "generic"));
    e.set_note(xen_str(XEN_ELFNOTE_FEATURES, "dom0|writable_page_tables"));
    assert!(probe_elf(&e).is_ok());
}

#[test]
fn inconsistent_addresses_are_rejected() {
    let bad = |f: &dyn Fn(&mut TestElf)| {
        let mut e = small_elf();
        f(&mut e);
        probe_elf(&e)
    };
    let is_addr_err =
        |r: Result<XenElfInfo, BuilderError>| matches!(r, Err(BuilderError::BadKernelAddresses(_)));
    // Entry before / after the kernel.
    assert!(is_addr_err(bad(&|e| e.set_note(xen_u64(XEN_ELFNOTE_ENTRY, 0xffff_ffff_8000_0000)))));
    assert!(is_addr_err(bad(&|e| e.set_note(xen_u64(XEN_ELFNOTE_ENTRY, 0xffff_ffff_8101_0001)))));
    // VIRT_BASE above the kernel.
    assert!(is_addr_err(bad(&|e| e.set_note(xen_u64(XEN_ELFNOTE_VIRT_BASE, 0xffff_ffff_8200_0000)))));
    // PADDR_OFFSET without VIRT_BASE.
    assert!(is_addr_err(bad(&|e| e.remove_note(XEN_ELFNOTE_VIRT_BASE))));
    // INIT_P2M inside the kernel.
    assert!(is_addr_err(bad(&|e| e.set_note(xen_u64(XEN_ELFNOTE_INIT_P2M, 0xffff_ffff_8100_2000)))));
    // HYPERCALL_PAGE outside the kernel.
    assert!(is_addr_err(bad(&|e| e.set_note(xen_u64(XEN_ELFNOTE_HYPERCALL_PAGE, 0xffff_ffff_8000_0000)))));
    // Segment with filesz > memsz, segment data past the end of the file, no segments.
    assert!(bad(&|e| e.segs[0].memsz = 16).is_err());
    assert!(bad(&|e| e.segs.clear()).is_err());
    let mut img = small_elf().build();
    img[64 + 32..64 + 40].copy_from_slice(&0x10_0000u64.to_le_bytes()); // p_filesz
    img[64 + 40..64 + 48].copy_from_slice(&0x10_0000u64.to_le_bytes()); // p_memsz
    assert!(matches!(probe_kernel(&img), Err(BuilderError::TruncatedImage(_))));
}

#[test]
fn elf_of_the_wrong_kind_is_rejected() {
    let mut e = small_elf();
    e.class = 1;
    assert!(matches!(probe_elf(&e), Err(BuilderError::UnsupportedElf(_))));
    let mut e = small_elf();
    e.machine = 3;
    assert!(matches!(probe_elf(&e), Err(BuilderError::UnsupportedElf(_))));
}
