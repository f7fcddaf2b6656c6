//! The terminal side of the console: raw mode while the guest owns the terminal, restored on
//! every way out (normal return, error, panic, termination signal handled by us).

use std::io::Write;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The terminal settings to restore, if raw mode is on.
static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);
/// Whether raw mode is on (stderr messages then need `\r\n`).
static RAW: AtomicBool = AtomicBool::new(false);

pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Raw mode on `fd` until dropped.
pub struct RawMode(());

impl RawMode {
    /// Puts the terminal at `fd` into raw mode (as `cfmakeraw`): no line editing, echo, signal
    /// keys or output processing, so the guest's own line discipline does all of that.
    pub fn enter(fd: RawFd) -> std::io::Result<RawMode> {
        // SAFETY: termios is plain data; tcgetattr overwrites it and its result is checked.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid termios to write to.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let saved = t;
        // SAFETY: cfmakeraw only edits the struct.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: `t` is a valid termios, read only.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some((fd, saved));
        RAW.store(true, Ordering::SeqCst);
        install_panic_restore();
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as it was (idempotent).
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((fd, t)) = saved {
        // SAFETY: `t` is the termios tcgetattr gave for this descriptor.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
        RAW.store(false, Ordering::SeqCst);
    }
}

fn install_panic_restore() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let next = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            next(info);
        }));
    });
}

/// A message from xenvmm on stderr while the guest may own the terminal: on a line of its own
/// in raw mode.
pub fn notice(msg: &str) {
    let mut e = std::io::stderr().lock();
    if RAW.load(Ordering::SeqCst) {
        let _ = write!(e, "\r\nxenvmm: {msg}\r\n");
    } else {
        let _ = writeln!(e, "xenvmm: {msg}");
    }
}
