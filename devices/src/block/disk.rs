//! Disk images: the `--disk` option, opening and locking image files, and handing each ring
//! an I/O engine ([`Disk::engine`]).
//!
//! An image is opened once per VMM. Raw images are used as they are; qcow2 images (and their
//! backing chains) through imago. Every file is locked with an open file description lock
//! (`F_OFD_SETLK`), exclusive when writable and shared when read-only, as QEMU and Cloud
//! Hypervisor do, so that two VMMs never write one image. OFD locks belong to the open file,
//! not the process: two opens conflict even inside one process, and closing some other
//! descriptor of the same file does not drop them (POSIX `F_SETLK` locks have both flaws).

use super::engine::qcow2::Qcow2Image;
use super::engine::{self, DirectAlign, EngineKind, FlushHealth, RawImage};
use super::{BlockIo, SECTOR_SIZE};
use imago::format::gate::ImplicitOpenGate;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, StorageOpenOptions};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use std::cell::RefCell;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

#[cfg(test)]
mod tests;

/// The first four bytes of every qcow2 image ("QFI\xfb"). The backend refuses a guest write
/// that would put them at offset 0 of a probed raw image ([`Disk::probed_raw`]): the next open
/// would probe it as qcow2 and follow a backing file name the guest chose (QEMU's rule).
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Image file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
}

/// Whether the host page cache sits between the guest and the image (QEMU's `cache=`).
/// Either way a guest flush is an `fdatasync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Through the page cache, like QEMU's default.
    #[default]
    Writeback,
    /// `O_DIRECT`: around the page cache, no double caching of guest data.
    None,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        })
    }
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheMode::Writeback => "writeback",
            CacheMode::None => "none",
        })
    }
}

/// One `--disk` option: `path=FILE[,readonly=on|off][,format=raw|qcow2][,cache=writeback|none]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskOptions {
    pub path: PathBuf,
    pub readonly: bool,
    /// `None`: probe (qcow2 if the file starts with [`QCOW2_MAGIC`], else raw).
    pub format: Option<Format>,
    pub cache: CacheMode,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("empty item in disk option {spec:?}; write ',,' for a comma inside a value")]
    EmptyItem { spec: String },
    #[error("disk option item {item:?} is not key=value; expected path=FILE[,readonly=on|off][,format=raw|qcow2][,cache=writeback|none]")]
    NotKeyValue { item: String },
    #[error("unknown disk option key {key:?}; the keys are path, readonly, format and cache")]
    UnknownKey { key: String },
    #[error("bad value {value:?} for disk option {key}; expected {expected}")]
    BadValue { key: &'static str, value: String, expected: &'static str },
    #[error("disk option key {key} is given twice; give it once")]
    RepeatedKey { key: &'static str },
    #[error("disk option {spec:?} names no image; add path=FILE")]
    MissingPath { spec: String },

    #[error("disk image {} does not exist; check path=", .path.display())]
    NotFound { path: PathBuf },
    #[error("disk image {} is not accessible (permission denied); let this user {}, or use readonly=on", .path.display(), if *.readonly { "read it" } else { "read and write it" })]
    PermissionDenied { path: PathBuf, readonly: bool },
    #[error("disk image {} is on a read-only file system; use readonly=on", .path.display())]
    ReadOnlyFileSystem { path: PathBuf },
    #[error("disk image {} is a directory; path= must name an image file or a block device", .path.display())]
    IsDirectory { path: PathBuf },
    #[error("disk image {} is neither a regular file nor a block device", .path.display())]
    NotAFile { path: PathBuf },
    #[error("disk image {} is in use by another process (locked); stop that process first, or open the image readonly=on in every process", .path.display())]
    Locked { path: PathBuf },
    #[error("raw disk image {} is {size} bytes, not a multiple of 512; round it up with `truncate -s %512 {}`", .path.display(), .path.display())]
    UnalignedSize { path: PathBuf, size: u64 },
    #[error("cannot use qcow2 image {} (inspect it with `qemu-img info --backing-chain` and `qemu-img check`, or convert it with `qemu-img convert -O qcow2`)", .path.display())]
    Qcow2 {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("disk image {} does not support cache=none (O_DIRECT); use cache=writeback", .path.display())]
    DirectUnsupported {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("disk image {} needs {align}-byte aligned direct I/O, but guests write 512-byte sectors; use cache=writeback", .path.display())]
    DirectAlignment { path: PathBuf, align: usize },
    #[error("cannot open disk image {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up I/O on disk image {}", .path.display())]
    Engine {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

const KEYS: [&str; 4] = ["path", "readonly", "format", "cache"];

impl DiskOptions {
    /// Parses `path=FILE[,readonly=on|off][,format=raw|qcow2][,cache=writeback|none]`.
    ///
    /// A comma inside a value is written `,,` (QEMU's escape). A bare `FILE` is accepted as
    /// the first item (`--disk disk.img,readonly=on`), as QEMU's `-hda disk.img` is: an item
    /// without `=` can only mean the file, so nothing is ever misread; a file name containing
    /// `=` needs `path=`, and a mistake there ends in an "unknown key" error, never in the
    /// wrong file.
    pub fn parse(spec: &str) -> Result<DiskOptions, DiskError> {
        let mut values: [Option<String>; 4] = Default::default();
        for (i, item) in split_items(spec).into_iter().enumerate() {
            if item.is_empty() {
                return Err(DiskError::EmptyItem { spec: spec.into() });
            }
            let (key, value) = match item.split_once('=') {
                Some(kv) => kv,
                None if i == 0 => ("path", item.as_str()),
                None => return Err(DiskError::NotKeyValue { item }),
            };
            let Some(k) = KEYS.iter().position(|k| *k == key) else {
                return Err(DiskError::UnknownKey { key: key.into() });
            };
            if values[k].is_some() {
                return Err(DiskError::RepeatedKey { key: KEYS[k] });
            }
            values[k] = Some(value.into());
        }
        let [path, readonly, format, cache] = values;
        let path = match path {
            None => return Err(DiskError::MissingPath { spec: spec.into() }),
            Some(p) if p.is_empty() => return Err(bad_value("path", p, "a file name")),
            Some(p) => PathBuf::from(p),
        };
        let readonly = match readonly.as_deref() {
            None | Some("off") | Some("false") => false,
            Some("on") | Some("true") => true,
            Some(_) => return Err(bad_value("readonly", readonly.unwrap(), "on or off")),
        };
        let format = match format.as_deref() {
            None => None,
            Some("raw") => Some(Format::Raw),
            Some("qcow2") => Some(Format::Qcow2),
            Some(_) => return Err(bad_value("format", format.unwrap(), "raw or qcow2")),
        };
        let cache = match cache.as_deref() {
            None | Some("writeback") => CacheMode::Writeback,
            Some("none") => CacheMode::None,
            Some(_) => return Err(bad_value("cache", cache.unwrap(), "writeback or none")),
        };
        Ok(DiskOptions { path, readonly, format, cache })
    }
}

impl FromStr for DiskOptions {
    type Err = DiskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DiskOptions::parse(s)
    }
}

fn bad_value(key: &'static str, value: String, expected: &'static str) -> DiskError {
    DiskError::BadValue { key, value, expected }
}

/// Splits at single commas; `,,` is a literal comma.
fn split_items(spec: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                items.last_mut().unwrap().push(',');
            }
            ',' => items.push(String::new()),
            c => items.last_mut().unwrap().push(c),
        }
    }
    items
}

/// An open, locked disk image.
#[derive(Debug)]
pub struct Disk {
    path: PathBuf,
    format: Format,
    readonly: bool,
    probed_raw: bool,
    sectors: u64,
    physical_sector_size: u32,
    image: Image,
}

#[derive(Debug)]
enum Image {
    Raw(Arc<RawImage>),
    Qcow2(Arc<Qcow2Image>),
}

impl Disk {
    /// Opens and locks the image `opts` names. Every failure is one sentence naming the file
    /// and what to do.
    pub fn open(opts: &DiskOptions) -> Result<Disk, DiskError> {
        let path = opts.path.clone();
        let direct = opts.cache == CacheMode::None;
        let file = open_file(&path, !opts.readonly, direct).map_err(|e| match e {
            OpenError::Locked => DiskError::Locked { path: path.clone() },
            OpenError::Io(e) => open_error(&path, opts.readonly, direct, e),
        })?;
        let meta = file.metadata().map_err(|source| DiskError::Open { path: path.clone(), source })?;
        let is_block = meta.file_type().is_block_device();
        if meta.is_dir() {
            return Err(DiskError::IsDirectory { path });
        }
        if !meta.is_file() && !is_block {
            return Err(DiskError::NotAFile { path });
        }
        let io_err = |source| DiskError::Open { path: path.clone(), source };
        let format = match opts.format {
            Some(format) => format,
            None if read_head(&file).map_err(io_err)?.starts_with(&QCOW2_MAGIC) => Format::Qcow2,
            None => Format::Raw,
        };
        let physical_sector_size = physical_sector_size(&file, is_block);
        let (sectors, image) = match format {
            Format::Raw => {
                let size = (&file).seek(SeekFrom::End(0)).map_err(io_err)?;
                if size % SECTOR_SIZE != 0 {
                    return Err(DiskError::UnalignedSize { path, size });
                }
                let direct = if direct {
                    let align = direct_alignment(&file, is_block)
                        .map_err(|source| DiskError::DirectUnsupported { path: path.clone(), source })?;
                    Some(check_direct_alignment(&path, align)?)
                } else {
                    None
                };
                let discard = !opts.readonly && can_punch_holes(&file, size);
                let raw = RawImage {
                    file: Arc::new(file),
                    path: path.clone(),
                    readonly: opts.readonly,
                    direct,
                    discard,
                    health: FlushHealth::default(),
                    uring_fallback_logged: AtomicBool::new(false),
                };
                (size / SECTOR_SIZE, Image::Raw(Arc::new(raw)))
            }
            Format::Qcow2 => {
                let access = open_qcow2(&path, file, opts.readonly, direct)?;
                let size = access.size();
                if size % SECTOR_SIZE != 0 {
                    return Err(DiskError::Qcow2 {
                        path,
                        source: io::Error::other(format!("virtual size {size} is not a multiple of 512")),
                    });
                }
                let qcow2 = Qcow2Image {
                    access,
                    path: path.clone(),
                    readonly: opts.readonly,
                    health: FlushHealth::default(),
                    #[cfg(test)]
                    fail_next_flush: AtomicBool::new(false),
                };
                (size / SECTOR_SIZE, Image::Qcow2(Arc::new(qcow2)))
            }
        };
        Ok(Disk {
            path,
            format,
            readonly: opts.readonly,
            probed_raw: opts.format.is_none() && format == Format::Raw,
            sectors,
            physical_sector_size,
            image,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in 512-byte sectors (blkif's `sectors`).
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    pub fn readonly(&self) -> bool {
        self.readonly
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the format was probed as raw (no `format=`): the backend must then refuse guest
    /// writes that put [`QCOW2_MAGIC`] at offset 0.
    pub fn probed_raw(&self) -> bool {
        self.probed_raw
    }

    /// Whether to advertise `feature-discard`: a writable raw image on a file system that can
    /// punch holes. qcow2 images do not offer discard (see the qcow2 engine).
    pub fn discard_supported(&self) -> bool {
        match &self.image {
            Image::Raw(raw) => raw.discard,
            Image::Qcow2(_) => false,
        }
    }

    /// `physical-sector-size` to advertise: the host's block size (the block device's
    /// physical sector, or the file system block), between 512 and 4096. Guests align their
    /// I/O to it, which avoids read-modify-write below us.
    pub fn physical_sector_size(&self) -> u32 {
        self.physical_sector_size
    }

    /// An engine for one ring: io_uring for raw images where the host has it, else
    /// synchronous; imago for qcow2. Engines of one disk share its files and its
    /// "broken after a failed flush" state.
    pub fn engine(&self, mem: GuestMemoryMmap) -> Result<Box<dyn BlockIo>, DiskError> {
        self.engine_with(mem, EngineKind::Auto)
    }

    /// [`Disk::engine`] with a choice of raw engine (`kind` is ignored for qcow2).
    pub fn engine_with(&self, mem: GuestMemoryMmap, kind: EngineKind) -> Result<Box<dyn BlockIo>, DiskError> {
        let mem = Arc::new(mem);
        match &self.image {
            Image::Raw(raw) => engine::raw_engine(raw, mem, kind)
                .map_err(|source| DiskError::Engine { path: self.path.clone(), source }),
            Image::Qcow2(q) => {
                Ok(Box::new(engine::Inline::new(engine::qcow2::Qcow2Engine::new(Arc::clone(q), mem))))
            }
        }
    }

    /// A raw disk over an already open file, without the checks of [`Disk::open`]: lets tests
    /// use files whose `fdatasync` fails (`/dev/null`) or force `O_DIRECT` alignments.
    #[cfg(test)]
    pub(crate) fn raw_for_test(
        file: File,
        readonly: bool,
        direct: Option<DirectAlign>,
        discard: bool,
    ) -> Disk {
        let size = (&file).seek(SeekFrom::End(0)).unwrap_or(0);
        let path = PathBuf::from(format!("test-{}", std::process::id()));
        Disk {
            path: path.clone(),
            format: Format::Raw,
            readonly,
            probed_raw: false,
            sectors: size / SECTOR_SIZE,
            physical_sector_size: 4096,
            image: Image::Raw(Arc::new(RawImage {
                file: Arc::new(file),
                path,
                readonly,
                direct,
                discard,
                health: FlushHealth::default(),
                uring_fallback_logged: AtomicBool::new(false),
            })),
        }
    }

    /// The shared raw image behind this disk, for tests that build engines directly.
    #[cfg(test)]
    pub(crate) fn raw_image(&self) -> Arc<RawImage> {
        match &self.image {
            Image::Raw(raw) => Arc::clone(raw),
            Image::Qcow2(_) => panic!("not a raw disk"),
        }
    }

    /// Test hook: the next flush of this qcow2 disk fails as if `fsync` returned `EIO`.
    #[cfg(test)]
    pub(crate) fn fail_next_qcow2_flush(&self) {
        if let Image::Qcow2(q) = &self.image {
            q.fail_next_flush.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

enum OpenError {
    Locked,
    Io(io::Error),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// Opens `path` and locks it: exclusively when `writable`, shared otherwise.
fn open_file(path: &Path, writable: bool, direct: bool) -> Result<File, OpenError> {
    let mut options = OpenOptions::new();
    options.read(true).write(writable);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    let file = options.open(path)?;
    lock(&file, path, writable)?;
    Ok(file)
}

/// Takes an OFD lock on the whole file. Where the file system has no such locks (some
/// network and FUSE file systems), the image is used unlocked with a warning, as QEMU's
/// `locking=auto` does.
fn lock(file: &File, path: &Path, exclusive: bool) -> Result<(), OpenError> {
    let kind = if exclusive { libc::F_WRLCK } else { libc::F_RDLCK };
    let request = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match fcntl(file, FcntlArg::F_OFD_SETLK(&request)) {
        Ok(_) => Ok(()),
        Err(Errno::EAGAIN | Errno::EACCES) => Err(OpenError::Locked),
        Err(e) => {
            log::warn!("{}: cannot lock the image ({e}); another process could open it too", path.display());
            Ok(())
        }
    }
}

fn open_error(path: &Path, readonly: bool, direct: bool, e: io::Error) -> DiskError {
    let path = path.to_path_buf();
    match e.raw_os_error() {
        Some(libc::ENOENT) => DiskError::NotFound { path },
        Some(libc::EACCES | libc::EPERM) => DiskError::PermissionDenied { path, readonly },
        Some(libc::EROFS) => DiskError::ReadOnlyFileSystem { path },
        Some(libc::EISDIR) => DiskError::IsDirectory { path },
        Some(libc::EINVAL) if direct => DiskError::DirectUnsupported { path, source: e },
        _ => DiskError::Open { path, source: e },
    }
}

/// The first 4 KiB (or less) of the file, read through a page-aligned buffer so that it works
/// with `O_DIRECT` too.
fn read_head(file: &File) -> io::Result<Vec<u8>> {
    let mut block = vec![0u8; 2 * 4096];
    let at = block.as_ptr().align_offset(4096);
    let n = rustix::io::pread(file, &mut block[at..at + 4096], 0)?;
    Ok(block[at..at + n].to_vec())
}

/// The alignment `O_DIRECT` needs: `statx(STATX_DIOALIGN)` (Linux 6.1, on file systems that
/// report it), `BLKSSZGET` for block devices, and else two reads, as QEMU probes: 512 bytes at
/// offset 512 into a page-aligned buffer, and into a buffer aligned only to 512.
fn direct_alignment(file: &File, is_block: bool) -> io::Result<DirectAlign> {
    use rustix::fs::{AtFlags, StatxFlags};
    if let Ok(stx) = rustix::fs::statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN) {
        if StatxFlags::from_bits_retain(stx.stx_mask).contains(StatxFlags::DIOALIGN) {
            if stx.stx_dio_offset_align == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the file system does not support direct I/O on this file",
                ));
            }
            return Ok(DirectAlign {
                mem: (stx.stx_dio_mem_align as usize).max(1),
                offset: stx.stx_dio_offset_align as usize,
            });
        }
    }
    if is_block {
        if let Ok(n) = rustix::fs::ioctl_blksszget(file) {
            return Ok(DirectAlign { mem: n as usize, offset: n as usize });
        }
    }
    let mut block = vec![0u8; 3 * 4096];
    let at = block.as_ptr().align_offset(4096);
    let reads = |buf: &mut [u8]| match rustix::io::pread(file, buf, 512) {
        Err(rustix::io::Errno::INVAL) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
        Ok(_) => Ok(true),
    };
    let offset = if reads(&mut block[at..at + 512])? { 512 } else { 4096 };
    let mem = if reads(&mut block[at + 512..at + 512 + offset])? { 512 } else { 4096 };
    Ok(DirectAlign { mem, offset })
}

/// Refuses `cache=none` on files that need offsets aligned to more than a sector (4Kn disks):
/// guests send 512-byte sector runs, and sub-block writes would need a read-modify-write that
/// can lose a concurrent write to the other half of the block unless every ring serialises on
/// it (QEMU's request serialisation). Page-cache mode does that correctly in the kernel, so
/// the user is sent there. Memory alignment, by contrast, costs only a copy (the engines
/// bounce), so any value is accepted.
fn check_direct_alignment(path: &Path, align: DirectAlign) -> Result<DirectAlign, DiskError> {
    if align.offset > SECTOR_SIZE as usize {
        return Err(DiskError::DirectAlignment { path: path.to_path_buf(), align: align.offset });
    }
    Ok(align)
}

/// Whether the file system can punch holes in this file. A zero-length punch proves nothing
/// (`fallocate` rejects the length before asking the file system), so punch one real page
/// 1 MiB past the end of the file: file systems that cannot punch refuse the mode
/// (`EOPNOTSUPP`) before looking at the range, those that can find nothing to free there
/// (`KEEP_SIZE`: the size stays), and block devices refuse a range past their end. Nothing
/// the guest can read changes.
fn can_punch_holes(file: &File, size: u64) -> bool {
    use rustix::fs::FallocateFlags;
    const MIB: u64 = 1 << 20;
    let Some(at) = size
        .checked_next_multiple_of(MIB)
        .and_then(|s| s.checked_add(MIB))
        .filter(|&at| at < i64::MAX as u64 - 4096)
    else {
        return false;
    };
    let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    rustix::fs::fallocate(file, mode, at, 4096).is_ok()
}

fn physical_sector_size(file: &File, is_block: bool) -> u32 {
    let size = if is_block {
        rustix::fs::ioctl_blkpbszget(file).ok()
    } else {
        rustix::fs::fstat(file).ok().map(|st| st.st_blksize as u32)
    };
    size.filter(|s| s.is_power_of_two()).unwrap_or(4096).clamp(512, 4096)
}

/// Opens a qcow2 image and its backing chain, as recorded in the image, through
/// [`LockingGate`].
fn open_qcow2(
    path: &Path,
    file: File,
    readonly: bool,
    direct: bool,
) -> Result<FormatAccess<imago::file::File>, DiskError> {
    let opts = StorageOpenOptions::new().filename(path).write(!readonly).direct(direct);
    let qcow2_err = |source| DiskError::Qcow2 { path: path.to_path_buf(), source };
    let storage = imago::file::File::from_open_file(file, opts.clone()).map_err(qcow2_err)?;
    let gate = LockingGate { readonly, depth: 0, locked: Rc::default() };
    let qcow2 = Qcow2::<imago::file::File>::builder(storage)
        .write(!readonly)
        .storage_open_options(opts)
        .open(gate.clone())
        .map_err(|source| match gate.locked.borrow_mut().take() {
            Some(path) => DiskError::Locked { path },
            None => qcow2_err(source),
        })?;
    Ok(FormatAccess::new(qcow2))
}

/// Longest backing chain opened (QEMU has no limit; real chains are a few images long).
const MAX_BACKING_DEPTH: usize = 64;

/// Opens what a qcow2 image refers to (backing images, an external data file) the way the
/// image itself is opened: locked, shared for backing files, which imago opens read-only.
/// Remembers a lock conflict so that it becomes [`DiskError::Locked`] and not a qcow2 error.
#[derive(Clone)]
struct LockingGate {
    /// A read-only image's data file is opened read-only too (imago asks for write access).
    readonly: bool,
    /// Backing images above this one: a chain that refers back to itself would otherwise
    /// recurse until the stack overflows.
    depth: usize,
    locked: Rc<RefCell<Option<PathBuf>>>,
}

impl ImplicitOpenGate<imago::file::File> for LockingGate {
    fn open_format<F: FormatDriverBuilder<imago::file::File>>(
        &mut self,
        builder: F,
    ) -> io::Result<FormatAccess<imago::file::File>> {
        if self.depth >= MAX_BACKING_DEPTH {
            return Err(io::Error::other(format!(
                "the backing chain is longer than {MAX_BACKING_DEPTH} images (does it loop?)"
            )));
        }
        let gate = LockingGate { depth: self.depth + 1, ..self.clone() };
        Ok(FormatAccess::new(builder.open(gate)?))
    }

    fn open_storage(&mut self, opts: StorageOpenOptions) -> io::Result<imago::file::File> {
        let path = opts
            .get_filename()
            .ok_or_else(|| io::Error::other("a referenced file has no name"))?
            .to_path_buf();
        let opts = opts.clone().write(opts.get_writable() && !self.readonly);
        let file = open_file(&path, opts.get_writable(), opts.get_direct()).map_err(|e| match e {
            OpenError::Io(e) => e,
            OpenError::Locked => {
                let msg = format!("{} is in use by another process (locked)", path.display());
                *self.locked.borrow_mut() = Some(path.clone());
                io::Error::new(io::ErrorKind::WouldBlock, msg)
            }
        })?;
        imago::file::File::from_open_file(file, opts)
    }
}
