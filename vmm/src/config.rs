//! What a domain is made of, as the embedding program or the CLI says it.

use std::path::PathBuf;
use std::sync::Arc;

/// A kernel or initrd image: a file, or bytes the embedding program already holds.
#[derive(Clone, Debug)]
pub enum ImageSource {
    Path(PathBuf),
    Bytes(Arc<[u8]>),
}

impl ImageSource {
    /// A short name for messages: the path, or "<in-memory image>".
    pub fn describe(&self) -> String {
        match self {
            ImageSource::Path(p) => p.display().to_string(),
            ImageSource::Bytes(_) => "<in-memory image>".into(),
        }
    }

    pub(crate) fn load(&self) -> std::io::Result<Arc<[u8]>> {
        match self {
            ImageSource::Path(p) => Ok(std::fs::read(p)?.into()),
            ImageSource::Bytes(b) => Ok(b.clone()),
        }
    }
}

impl From<PathBuf> for ImageSource {
    fn from(p: PathBuf) -> Self {
        ImageSource::Path(p)
    }
}

/// Default guest memory: 512 MiB.
pub const DEFAULT_MEM_BYTES: u64 = 512 << 20;
/// Default kernel command line: the PV console as the Linux console.
pub const DEFAULT_CMDLINE: &str = "console=hvc0";
/// Default domain name.
pub const DEFAULT_NAME: &str = "xenvmm";
/// The most memory xenvmm gives a domain (the shim's direct map covers 512 GiB).
pub const MAX_MEM_BYTES: u64 = 256 << 30;

/// Configuration of one PV domain.
#[derive(Clone, Debug)]
pub struct DomainConfig {
    /// A Xen PV kernel: bzImage (XZ, gzip, zstd or lz4 payload) or ELF with Xen notes.
    pub kernel: ImageSource,
    /// An initial ramdisk, handed to the guest as its first module.
    pub initrd: Option<ImageSource>,
    /// The guest kernel's command line (at most 1023 bytes).
    pub cmdline: String,
    /// Guest RAM in bytes, a multiple of 4 KiB.
    pub mem_bytes: u64,
    /// Virtual CPUs. Only 1 is supported until SMP arrives.
    pub vcpus: u32,
    /// The domain's name (xenstore `name`).
    pub name: String,
    /// Serve the domain's xenstore to dom0 tools (xenstore-utils with `XENSTORED_PATH`) on a
    /// Unix socket at this path while it runs.
    pub xenstore_socket: Option<PathBuf>,
    /// Disks, in order: the first is `xvda`, then `xvdb`, … (at most [`MAX_DISKS`]).
    pub disks: Vec<DiskConfig>,
}

/// One disk: an image file and how to open it (`--disk path=FILE,readonly=on,...`).
pub use devices::block::disk::DiskOptions as DiskConfig;

/// The most disks a domain gets: `xvda` to `xvdz`.
pub const MAX_DISKS: usize = 26;

impl DomainConfig {
    /// A configuration with the defaults: 512 MiB, 1 vCPU, `console=hvc0`, no initrd.
    pub fn new(kernel: impl Into<ImageSource>) -> DomainConfig {
        DomainConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.into(),
            mem_bytes: DEFAULT_MEM_BYTES,
            vcpus: 1,
            name: DEFAULT_NAME.into(),
            xenstore_socket: None,
            disks: Vec::new(),
        }
    }
}

/// Why a size string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("'{0}' is not a size: use a number with an optional K, M, G or T suffix, such as 512M or 1G")]
    Syntax(String),
    #[error("'{0}' is not a whole number of 4 KiB pages")]
    NotPageMultiple(String),
    #[error("'{0}' is too small: a PV domain needs at least 16 MiB")]
    TooSmall(String),
    #[error("'{0}' is too large: xenvmm supports at most 256 GiB")]
    TooLarge(String),
}

/// Parses a memory size such as `512M`, `1G`, `1536MiB`, `2g`; a bare number is MiB.
pub fn parse_mem_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| SizeError::Syntax(s.into()))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 20,
        "k" | "kb" | "kib" => 10,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(SizeError::Syntax(s.into())),
    };
    let bytes =
        n.checked_shl(shift).filter(|b| b >> shift == n).ok_or_else(|| SizeError::TooLarge(s.into()))?;
    if !bytes.is_multiple_of(4096) {
        return Err(SizeError::NotPageMultiple(s.into()));
    }
    if bytes < 16 << 20 {
        return Err(SizeError::TooSmall(s.into()));
    }
    if bytes > MAX_MEM_BYTES {
        return Err(SizeError::TooLarge(s.into()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_suffixes() {
        assert_eq!(parse_mem_size("512M"), Ok(512 << 20));
        assert_eq!(parse_mem_size("1G"), Ok(1 << 30));
        assert_eq!(parse_mem_size("1536MiB"), Ok(1536 << 20));
        assert_eq!(parse_mem_size("256"), Ok(256 << 20));
        assert_eq!(parse_mem_size("65536k"), Ok(64 << 20));
        assert_eq!(parse_mem_size("2g"), Ok(2 << 30));
    }

    #[test]
    fn bad_sizes_say_why() {
        assert!(matches!(parse_mem_size("lots"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_mem_size("12X"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_mem_size(""), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_mem_size("-1G"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_mem_size("8M"), Err(SizeError::TooSmall(_))));
        assert!(matches!(parse_mem_size("16385k"), Err(SizeError::NotPageMultiple(_))));
        assert!(matches!(parse_mem_size("1T"), Err(SizeError::TooLarge(_))));
        assert!(matches!(parse_mem_size("99999999999999999G"), Err(SizeError::TooLarge(_))));
    }
}
