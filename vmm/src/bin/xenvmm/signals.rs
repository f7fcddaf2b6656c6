//! Termination signals (SIGINT, SIGTERM, SIGHUP) are blocked in every thread and taken by one
//! thread with `sigwait`, so their handling is ordinary code: ask the guest to power off,
//! then stop it when the grace period ends or the signal comes again.

use std::time::Duration;

pub const TERMINATION: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut s: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `s` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut s);
        for sig in TERMINATION {
            libc::sigaddset(&mut s, sig);
        }
    }
    s
}

/// Blocks the termination signals in the calling thread, and so in every thread it starts
/// afterwards. Call first thing in `main`.
pub fn block() {
    let s = set();
    // SAFETY: `s` is a valid set; the old mask is not wanted.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut()) };
}

/// Waits for a termination signal, at most `timeout` if given. Returns the signal, or `None`
/// on timeout.
pub fn wait(timeout: Option<Duration>) -> Option<libc::c_int> {
    let s = set();
    loop {
        let r = match timeout {
            None => {
                let mut sig = 0;
                // SAFETY: `s` and `sig` are valid for the call.
                match unsafe { libc::sigwait(&s, &mut sig) } {
                    0 => sig,
                    _ => -1,
                }
            }
            Some(t) => {
                let ts = libc::timespec {
                    tv_sec: t.as_secs() as libc::time_t,
                    tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
                };
                // SAFETY: `s` and `ts` are valid; the siginfo is not wanted.
                unsafe { libc::sigtimedwait(&s, std::ptr::null_mut(), &ts) }
            }
        };
        if r > 0 {
            return Some(r);
        }
        let err = std::io::Error::last_os_error().raw_os_error();
        if timeout.is_some() && err == Some(libc::EAGAIN) {
            return None;
        }
        // EINTR (another signal, e.g. the vCPU kick): wait again.
    }
}

pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
