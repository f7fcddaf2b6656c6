//! Console output through `HYPERVISOR_console_io(CONSOLEIO_write, ..)` (xen-pv-contract.md
//! §4.11), the channel Linux uses for its very first text, and `print!`/`println!` on top.

use core::fmt::{self, Write};

use crate::hypercall;

/// Writes `bytes` to the hypervisor console. Returns the number of bytes written or the
/// hypercall's `-errno` (Xen itself answers 0 for a complete write; any value ≥ 0 is success).
pub fn console_write(bytes: &[u8]) -> i64 {
    if bytes.is_empty() {
        return 0;
    }
    match hypercall::console_io_write(bytes) {
        err if err < 0 => err,
        _ => bytes.len() as i64,
    }
}

/// Collects formatted text on the stack and hands it to the console in few hypercalls.
struct ConsoleBuffer {
    buf: [u8; 128],
    len: usize,
}

impl ConsoleBuffer {
    fn flush(&mut self) {
        console_write(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for ConsoleBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut out = ConsoleBuffer { buf: [0; 128], len: 0 };
    // ConsoleBuffer never fails; a failing Display impl just ends the line early.
    let _ = out.write_fmt(args);
    out.flush();
}

/// `print!` to the hypervisor console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// `println!` to the hypervisor console (lines end in `\n`).
#[macro_export]
macro_rules! println {
    () => { $crate::console::_print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
