//! KVM's binary statistics (`KVM_GET_STATS_FD`, Linux 5.14+): per-vCPU counters such as
//! `exits`, `halt_exits`, `io_exits`, kept by KVM for every VM exit, including the ones it
//! handles without returning to userspace.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use vmm_sys_util::ioctl::ioctl;
use vmm_sys_util::ioctl_io_nr;

ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);

/// A snapshot of one vCPU's KVM statistics: (name, value) of every cumulative counter.
#[derive(Clone, Debug, Default)]
pub struct KvmStats(pub Vec<(String, u64)>);

impl KvmStats {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// The statistics file of a vCPU, or `None` when the kernel has none.
pub fn open(vcpu: &impl AsRawFd) -> Option<File> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1.
    let fd = unsafe { ioctl(vcpu, KVM_GET_STATS_FD()) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor that we own from here on.
    Some(unsafe { File::from_raw_fd(fd) })
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Reads every cumulative counter from a stats file (the format of
/// Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD").
pub fn read(f: &mut File) -> Option<KvmStats> {
    use std::io::{Seek, SeekFrom};
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(0)).ok()?;
    f.read_to_end(&mut buf).ok()?;
    parse(&buf)
}

/// Parses a stats file image. Bounds-checked: a short or odd file gives `None` or fewer stats.
pub fn parse(buf: &[u8]) -> Option<KvmStats> {
    let name_size = u32_at(buf, 4)? as usize;
    let num_desc = u32_at(buf, 8)? as usize;
    let desc_offset = u32_at(buf, 16)? as usize;
    let data_offset = u32_at(buf, 20)? as usize;
    let desc_size = 16usize.checked_add(name_size)?;
    let mut out = Vec::new();
    for i in 0..num_desc.min(4096) {
        let d = desc_offset.checked_add(i.checked_mul(desc_size)?)?;
        let flags = u32_at(buf, d)?;
        let size = u16::from_le_bytes(buf.get(d + 6..d + 8)?.try_into().ok()?) as usize;
        let offset = u32_at(buf, d + 8)? as usize;
        let name_bytes = buf.get(d + 16..d + 16 + name_size)?;
        let name = String::from_utf8_lossy(name_bytes.split(|&b| b == 0).next().unwrap_or(&[])).into_owned();
        // Type (bits 0-3) 0 = cumulative; unit bits 4-7: 0 none. Take single-value counters.
        if flags & 0xf != 0 || size != 1 {
            continue;
        }
        let at = data_offset.checked_add(offset)?;
        let v = u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?);
        out.push((name, v));
    }
    Some(KvmStats(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(names: &[(&str, u32, u64)]) -> Vec<u8> {
        let name_size = 48usize;
        let desc_offset = 24 + 16;
        let desc_size = 16 + name_size;
        let data_offset = desc_offset + names.len() * desc_size;
        let mut b = vec![0u8; data_offset + names.len() * 8];
        b[4..8].copy_from_slice(&(name_size as u32).to_le_bytes());
        b[8..12].copy_from_slice(&(names.len() as u32).to_le_bytes());
        b[16..20].copy_from_slice(&(desc_offset as u32).to_le_bytes());
        b[20..24].copy_from_slice(&(data_offset as u32).to_le_bytes());
        for (i, (n, flags, v)) in names.iter().enumerate() {
            let d = desc_offset + i * desc_size;
            b[d..d + 4].copy_from_slice(&flags.to_le_bytes());
            b[d + 6..d + 8].copy_from_slice(&1u16.to_le_bytes());
            b[d + 8..d + 12].copy_from_slice(&((i * 8) as u32).to_le_bytes());
            b[d + 16..d + 16 + n.len()].copy_from_slice(n.as_bytes());
            b[data_offset + i * 8..data_offset + i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_cumulative_counters_and_skips_others() {
        let s = parse(&image(&[("exits", 0, 42), ("halt_exits", 0, 7), ("max_mmu", 2, 9)])).unwrap();
        assert_eq!(s.get("exits"), Some(42));
        assert_eq!(s.get("halt_exits"), Some(7));
        assert_eq!(s.get("max_mmu"), None);
    }

    #[test]
    fn truncated_or_garbage_input_never_panics() {
        let img = image(&[("exits", 0, 42), ("io_exits", 0, 3)]);
        for n in 0..img.len() {
            let _ = parse(&img[..n]);
        }
        let mut bad = img.clone();
        bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let _ = parse(&bad);
    }
}
