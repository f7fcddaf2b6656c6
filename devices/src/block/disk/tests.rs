use super::*;
use crate::block::engine::testutil::{opts, Scratch};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

fn parse_err(spec: &str) -> DiskError {
    DiskOptions::parse(spec).expect_err(spec)
}

fn open_err(opts: &DiskOptions) -> DiskError {
    Disk::open(opts).expect_err("open must fail")
}

#[test]
fn parses_every_key() {
    let o = DiskOptions::parse("path=/img/a.qcow2,readonly=on,format=qcow2,cache=none").unwrap();
    assert_eq!(
        o,
        DiskOptions {
            path: "/img/a.qcow2".into(),
            readonly: true,
            format: Some(Format::Qcow2),
            cache: CacheMode::None,
        }
    );
    let o: DiskOptions = "cache=writeback,format=raw,readonly=off,path=b.img".parse().unwrap();
    assert_eq!(o.path, PathBuf::from("b.img"));
    assert!(!o.readonly);
    assert_eq!(o.format, Some(Format::Raw));
    assert_eq!(o.cache, CacheMode::Writeback);
}

#[test]
fn defaults_are_writable_probed_and_writeback() {
    let o = DiskOptions::parse("path=disk.img").unwrap();
    assert!(!o.readonly);
    assert_eq!(o.format, None);
    assert_eq!(o.cache, CacheMode::Writeback);
}

#[test]
fn accepts_a_bare_file_as_the_first_item() {
    let o = DiskOptions::parse("disk.img,readonly=on").unwrap();
    assert_eq!(o.path, PathBuf::from("disk.img"));
    assert!(o.readonly);
    assert!(matches!(
        parse_err("readonly=on,disk.img"),
        DiskError::NotKeyValue { item } if item == "disk.img"
    ));
    assert!(matches!(parse_err("disk.img,path=other.img"), DiskError::RepeatedKey { key: "path" }));
}

#[test]
fn double_comma_is_a_comma_in_a_value() {
    let o = DiskOptions::parse("path=a,,b.img,readonly=on").unwrap();
    assert_eq!(o.path, PathBuf::from("a,b.img"));
    assert!(o.readonly);
}

#[test]
fn rejects_an_unknown_key() {
    let e = parse_err("path=a.img,rw=on");
    assert!(matches!(&e, DiskError::UnknownKey { key } if key == "rw"));
    assert!(e.to_string().contains("path, readonly, format and cache"), "{e}");
}

#[test]
fn rejects_bad_values() {
    for (spec, key) in [
        ("path=a.img,readonly=yes please", "readonly"),
        ("path=a.img,format=vmdk", "format"),
        ("path=a.img,cache=unsafe", "cache"),
        ("path=,readonly=on", "path"),
    ] {
        match parse_err(spec) {
            DiskError::BadValue { key: k, .. } => assert_eq!(k, key, "{spec}"),
            e => panic!("{spec}: {e}"),
        }
    }
    let e = parse_err("path=a.img,cache=unsafe");
    assert_eq!(e.to_string(), "bad value \"unsafe\" for disk option cache; expected writeback or none");
}

#[test]
fn rejects_a_missing_path() {
    let e = parse_err("readonly=on,format=raw");
    assert!(matches!(e, DiskError::MissingPath { .. }));
    assert!(e.to_string().contains("add path=FILE"), "{e}");
}

#[test]
fn rejects_a_repeated_key() {
    assert!(matches!(
        parse_err("path=a.img,readonly=on,readonly=off"),
        DiskError::RepeatedKey { key: "readonly" }
    ));
}

#[test]
fn rejects_empty_items() {
    assert!(matches!(parse_err(""), DiskError::EmptyItem { .. }));
    assert!(matches!(parse_err("path=a.img,"), DiskError::EmptyItem { .. }));
}

#[test]
fn open_reports_a_missing_file() {
    let dir = Scratch::new();
    let path = dir.path("nope.img");
    let e = open_err(&opts(&path));
    assert!(matches!(&e, DiskError::NotFound { path: p } if *p == path));
    assert_eq!(e.to_string(), format!("disk image {} does not exist; check path=", path.display()));
}

#[test]
fn open_reports_an_unreadable_file() {
    let dir = Scratch::new();
    let path = dir.raw("secret.img", 4096);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything; a file system uid other than 0 drops CAP_DAC_OVERRIDE for this
    // thread only (setfsuid is per thread), so the permission check is real either way.
    let p = path.clone();
    let (rw, ro) = std::thread::spawn(move || {
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(65534));
        let rw = Disk::open(&opts(&p)).map(|_| ());
        let ro = Disk::open(&DiskOptions { readonly: true, ..opts(&p) }).map(|_| ());
        (rw, ro)
    })
    .join()
    .unwrap();
    let e = rw.expect_err("open of an unreadable file");
    assert!(matches!(e, DiskError::PermissionDenied { readonly: false, .. }), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(e.to_string().contains("read and write it"), "{e}");
    let e = ro.expect_err("read-only open of an unreadable file");
    assert!(matches!(e, DiskError::PermissionDenied { readonly: true, .. }), "{e}");
}

#[test]
fn open_reports_a_directory() {
    let dir = Scratch::new();
    let path = dir.path("d");
    std::fs::create_dir(&path).unwrap();
    for readonly in [false, true] {
        let e = open_err(&DiskOptions { readonly, ..opts(&path) });
        assert!(matches!(e, DiskError::IsDirectory { .. }), "{e}");
    }
}

#[test]
fn open_reports_a_device_that_is_no_disk() {
    let e = open_err(&opts(Path::new("/dev/null")));
    assert!(matches!(e, DiskError::NotAFile { .. }), "{e}");
}

#[test]
fn open_reports_a_raw_size_that_is_not_a_multiple_of_512() {
    let dir = Scratch::new();
    let path = dir.raw("odd.img", 1000);
    let e = open_err(&opts(&path));
    assert!(matches!(e, DiskError::UnalignedSize { size: 1000, .. }), "{e}");
    assert!(e.to_string().contains("truncate -s %512"), "{e}");
}

#[test]
fn open_reports_a_corrupt_qcow2() {
    let dir = Scratch::new();
    let path = dir.path("corrupt.qcow2");
    let mut head = QCOW2_MAGIC.to_vec();
    head.resize(65536, 0);
    std::fs::write(&path, head).unwrap();
    let e = open_err(&opts(&path));
    assert!(matches!(e, DiskError::Qcow2 { .. }), "{e}");
    assert!(e.to_string().contains("qemu-img check"), "{e}");
}

/// Sets incompatible feature bits in a qcow2 v3 header (big-endian u64 at offset 72).
fn set_incompatible_bits(path: &Path, bits: u64) {
    let mut image = std::fs::read(path).unwrap();
    let old = u64::from_be_bytes(image[72..80].try_into().unwrap());
    image[72..80].copy_from_slice(&(old | bits).to_be_bytes());
    std::fs::write(path, image).unwrap();
}

#[test]
fn open_reports_qcow2_features_imago_does_not_support() {
    let dir = Scratch::new();
    // Bit 3: compression type (zstd); bit 4: extended L2 entries (subclusters).
    for (name, bit) in [("zstd.qcow2", 1 << 3), ("extl2.qcow2", 1 << 4)] {
        let path = dir.qcow2(name, 1 << 20, None);
        set_incompatible_bits(&path, bit);
        let e = open_err(&opts(&path));
        let DiskError::Qcow2 { source, .. } = &e else {
            panic!("{name}: {e}");
        };
        assert!(source.to_string().contains("incompatible"), "{name}: {source}");
    }
}

#[test]
fn qcow2_magic_makes_a_probed_image_qcow2() {
    let dir = Scratch::new();
    let path = dir.qcow2("a.qcow2", 1 << 20, None);
    let disk = Disk::open(&opts(&path)).unwrap();
    assert_eq!(disk.format(), Format::Qcow2);
    assert!(!disk.probed_raw());
    assert_eq!(disk.sectors(), (1 << 20) / 512);
    assert!(!disk.discard_supported());
}

#[test]
fn anything_else_probes_as_raw_and_says_so() {
    let dir = Scratch::new();
    let path = dir.raw("a.img", 8192);
    let disk = Disk::open(&opts(&path)).unwrap();
    assert_eq!(disk.format(), Format::Raw);
    assert!(disk.probed_raw());
    assert_eq!(disk.sectors(), 16);
    drop(disk);
    // Told to be raw, it is not "probed" raw, even when it starts with the qcow2 magic.
    let q = dir.qcow2("b.qcow2", 1 << 20, None);
    for path in [path, q] {
        let disk = Disk::open(&DiskOptions { format: Some(Format::Raw), ..opts(&path) }).unwrap();
        assert_eq!(disk.format(), Format::Raw);
        assert!(!disk.probed_raw());
    }
}

#[test]
fn only_images_probed_as_raw_say_so() {
    // The backend refuses guest writes of the qcow2 magic at offset 0 of these only
    // (backend tests); an image the user called raw may be written anything.
    let dir = Scratch::new();
    let path = dir.raw("a.img", 8192);
    let probed = Disk::open(&opts(&path)).unwrap();
    assert!(probed.probed_raw());
    drop(probed);
    let told = Disk::open(&DiskOptions { format: Some(Format::Raw), ..opts(&path) }).unwrap();
    assert!(!told.probed_raw());
}

#[test]
fn an_empty_file_is_an_empty_raw_disk() {
    let dir = Scratch::new();
    let path = dir.raw("empty.img", 0);
    let disk = Disk::open(&opts(&path)).unwrap();
    assert_eq!((disk.format(), disk.sectors()), (Format::Raw, 0));
}

#[test]
fn writable_raw_on_a_hole_punching_file_system_supports_discard() {
    // /tmp here is ext4, which punches holes.
    let dir = Scratch::new();
    let path = dir.raw("a.img", 1 << 20);
    let before = std::fs::metadata(&path).unwrap().len();
    let disk = Disk::open(&opts(&path)).unwrap();
    assert!(disk.discard_supported());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), before, "probe kept the size");
    drop(disk);
    let disk = Disk::open(&DiskOptions { readonly: true, ..opts(&path) }).unwrap();
    assert!(!disk.discard_supported(), "read-only disks never discard");
    assert!(disk.readonly());
}

#[test]
fn physical_sector_size_is_the_file_system_block() {
    let dir = Scratch::new();
    let path = dir.raw("a.img", 4096);
    let disk = Disk::open(&opts(&path)).unwrap();
    assert_eq!(disk.physical_sector_size(), 4096);
}

#[test]
fn a_second_writer_finds_the_image_locked() {
    let dir = Scratch::new();
    let path = dir.raw("a.img", 4096);
    let ro = |path: &Path| DiskOptions { readonly: true, ..opts(path) };
    let first = Disk::open(&opts(&path)).unwrap();
    // OFD locks conflict between two open file descriptions, even in one process.
    let e = open_err(&opts(&path));
    assert!(matches!(&e, DiskError::Locked { path: p } if *p == path), "{e}");
    assert!(e.to_string().contains("is in use by another process (locked)"), "{e}");
    assert!(matches!(open_err(&ro(&path)), DiskError::Locked { .. }));
    drop(first);

    let readers = [Disk::open(&ro(&path)).unwrap(), Disk::open(&ro(&path)).unwrap()];
    assert!(matches!(open_err(&opts(&path)), DiskError::Locked { .. }));
    drop(readers);
    Disk::open(&opts(&path)).expect("free again once the readers are gone");
}

#[test]
fn a_qcow2_overlay_holds_its_backing_file_shared() {
    let dir = Scratch::new();
    let base = dir.raw("base.img", 1 << 20);
    let overlay = dir.qcow2("overlay.qcow2", 1 << 20, Some(("base.img", "raw")));
    let disk = Disk::open(&opts(&overlay)).unwrap();
    let e = open_err(&opts(&base));
    assert!(matches!(&e, DiskError::Locked { path } if *path == base), "{e}");
    let reader = Disk::open(&DiskOptions { readonly: true, ..opts(&base) })
        .expect("backing files are shared with readers");
    drop((disk, reader));

    // And an overlay whose backing file someone writes cannot open.
    let writer = Disk::open(&opts(&base)).unwrap();
    let e = open_err(&opts(&overlay));
    assert!(matches!(&e, DiskError::Locked { path } if *path == base), "{e}");
    drop(writer);
}

#[test]
fn open_reports_a_missing_backing_file() {
    let dir = Scratch::new();
    let overlay = dir.qcow2("overlay.qcow2", 1 << 20, Some(("gone.img", "raw")));
    let e = open_err(&opts(&overlay));
    let DiskError::Qcow2 { source, .. } = &e else {
        panic!("{e}");
    };
    assert!(source.to_string().contains("gone.img"), "{source}");
}

#[test]
fn a_backing_chain_that_loops_is_refused() {
    let dir = Scratch::new();
    let path = dir.qcow2("self.qcow2", 1 << 20, Some(("self.qcow2", "qcow2")));
    let e = open_err(&DiskOptions { readonly: true, ..opts(&path) });
    let DiskError::Qcow2 { source, .. } = &e else {
        panic!("{e}");
    };
    assert!(source.to_string().contains("does it loop?"), "{source}");
}

#[test]
fn cache_none_opens_with_the_probed_alignment() {
    let dir = Scratch::new();
    let path = dir.raw("a.img", 1 << 20);
    let disk = Disk::open(&DiskOptions { cache: CacheMode::None, ..opts(&path) }).unwrap();
    assert!(disk.physical_sector_size() >= 512);
    let Image::Raw(raw) = &disk.image else { panic!("raw") };
    let align = raw.direct.expect("O_DIRECT alignment");
    assert!(align.offset <= 512 && align.mem.is_power_of_two(), "{align:?}");
}

#[test]
fn cache_none_is_refused_where_sectors_would_need_read_modify_write() {
    let path = Path::new("/dev/4kn");
    let ok = DirectAlign { mem: 4096, offset: 512 };
    assert_eq!(check_direct_alignment(path, ok).unwrap(), ok);
    let e = check_direct_alignment(path, DirectAlign { mem: 512, offset: 4096 }).unwrap_err();
    assert!(matches!(e, DiskError::DirectAlignment { align: 4096, .. }));
    assert!(e.to_string().contains("use cache=writeback"), "{e}");
}

#[test]
fn qcow2_cache_none_opens() {
    let dir = Scratch::new();
    let path = dir.qcow2("a.qcow2", 1 << 20, None);
    let disk = Disk::open(&DiskOptions { cache: CacheMode::None, ..opts(&path) }).unwrap();
    assert_eq!(disk.format(), Format::Qcow2);
}

#[test]
fn errors_are_one_line() {
    let dir = Scratch::new();
    let mut f = std::fs::File::create(dir.path("odd.img")).unwrap();
    f.write_all(&[0; 3]).unwrap();
    for e in [
        open_err(&opts(&dir.path("missing"))),
        open_err(&opts(&dir.path("odd.img"))),
        parse_err("path=x,foo=bar"),
    ] {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
