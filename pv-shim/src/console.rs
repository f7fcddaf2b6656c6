//! `HYPERVISOR_console_io` (Xen `drivers/char/console.c`): the emergency console. Text goes to
//! the VMM through a hostcall, so each write is a VM exit; it is meant for early boot only
//! (Linux's `xen_raw_console_write`), the PV console ring is the real console.

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm;
use crate::shim::Shim;
use xen_abi::console::{CONSOLEIO_READ, CONSOLEIO_WRITE};
use xen_abi::hostcall::HC_CONSOLE_WRITE;
use xen_abi::Errno;

/// Bytes copied from the guest per hostcall.
const CHUNK: usize = 2048;

/// `console_io(cmd, count, buffer)`.
pub fn console_io<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    // `count` is a C int in Xen's prototype.
    let count = a.0[1] as u32 as i32;
    match a.0[0] {
        CONSOLEIO_WRITE => write(s, a.0[2], count),
        // No input is routed to a domU's emergency console: Xen answers 0 bytes read.
        CONSOLEIO_READ => Ok(0),
        _ => Err(Errno::ENOSYS),
    }
}

fn write<M: Machine>(s: &mut Shim<M>, buf: u64, count: i32) -> Result<u64, Errno> {
    let mut left = u64::try_from(count).unwrap_or(0);
    let mut va = buf;
    let mut chunk = [0u8; CHUNK];
    while left > 0 {
        let n = (left as usize).min(CHUNK);
        // As in Xen, text before a bad byte is still printed; the call then fails.
        mm::copy_from_guest(&s.m, s.cr3(), va, &mut chunk[..n])?;
        s.hostcall(HC_CONSOLE_WRITE, [n as u64, 0, 0, 0, 0], &chunk[..n]);
        left -= n as u64;
        va = va.wrapping_add(n as u64);
    }
    Ok(0)
}

/// A `core::fmt::Write` into a fixed byte buffer that drops what does not fit.
pub struct ByteWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> ByteWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> ByteWriter<'a> {
        ByteWriter { buf, len: 0 }
    }

    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{shim_with_guest, GUEST_VA};

    #[test]
    fn write_copies_text_across_pages_and_chunks() {
        let mut s = shim_with_guest();
        let text: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let cr3 = s.cr3();
        mm::copy_to_guest(&mut s.m, cr3, GUEST_VA + 100, &text).unwrap();
        let r = console_io(&mut s, Args([CONSOLEIO_WRITE, 5000, GUEST_VA + 100, 0, 0, 0]));
        assert_eq!(r, Ok(0));
        assert_eq!(s.m.console().as_bytes(), &text[..]);
        assert_eq!(s.m.hostcalls.len(), 3);
    }

    #[test]
    fn write_with_bad_buffer_is_efault_and_nonpositive_count_is_noop() {
        let mut s = shim_with_guest();
        assert_eq!(console_io(&mut s, Args([CONSOLEIO_WRITE, 16, 0x1000, 0, 0, 0])), Err(Errno::EFAULT));
        assert_eq!(
            console_io(&mut s, Args([CONSOLEIO_WRITE, 16, 0xffff_8000_0000_0000, 0, 0, 0])),
            Err(Errno::EFAULT)
        );
        // Runs off the end of the mapping: the mapped part is printed, then EFAULT.
        let end = GUEST_VA + 32 * 4096;
        assert_eq!(console_io(&mut s, Args([CONSOLEIO_WRITE, 4096, end - 10, 0, 0, 0])), Err(Errno::EFAULT));
        assert_eq!(console_io(&mut s, Args([CONSOLEIO_WRITE, 0xffff_ffff, GUEST_VA, 0, 0, 0])), Ok(0));
        assert_eq!(console_io(&mut s, Args([CONSOLEIO_WRITE, 0, 0, 0, 0, 0])), Ok(0));
        assert_eq!(console_io(&mut s, Args([7, 1, GUEST_VA, 0, 0, 0])), Err(Errno::ENOSYS));
        assert_eq!(console_io(&mut s, Args([CONSOLEIO_READ, 10, GUEST_VA, 0, 0, 0])), Ok(0));
    }
}
