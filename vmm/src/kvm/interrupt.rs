//! Stopping a vCPU thread that sits in `KVM_RUN`: a real-time signal with an empty handler
//! makes the ioctl return `EINTR`, and the run loop then sees the stop request.
//!
//! A signal that arrives while the thread is outside `KVM_RUN` is lost, so [`StopState::stop`]
//! repeats it until the run loop says it has ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// The signal used: the first real-time signal after those the C library reserves.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

static INSTALL: Once = Once::new();

/// Installs the empty handler (once per process). Without a handler the signal would kill
/// the process.
fn install() {
    INSTALL.call_once(|| {
        // The handler does nothing, which is async-signal-safe.
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
            log::warn!("cannot install the vCPU stop signal handler: {e}");
        }
    });
}

/// A request to stop a domain before it shuts down, and who to interrupt for it.
#[derive(Default)]
pub struct StopState {
    requested: AtomicBool,
    ended: AtomicBool,
    vcpu_thread: Mutex<Option<libc::pthread_t>>,
}

impl StopState {
    /// Called on the vCPU thread before its first `KVM_RUN`.
    pub(crate) fn enter(&self) {
        install();
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        *self.vcpu_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(me);
    }

    /// Called on the vCPU thread when its run loop returned: no more signals to it.
    pub(crate) fn leave(&self) {
        self.ended.store(true, Ordering::SeqCst);
        *self.vcpu_thread.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether a stop was requested (the run loop checks this after every exit).
    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Asks the run loop to stop and interrupts its `KVM_RUN`, repeating until it has ended
    /// (at most `wait`). Returns whether it ended. Before the run starts, the request makes the
    /// run end at once.
    pub fn stop(&self, wait: Duration) -> bool {
        self.requested.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + wait;
        loop {
            if self.ended.load(Ordering::SeqCst) {
                return true;
            }
            {
                let thread = self.vcpu_thread.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(t) = *thread {
                    // SAFETY: `t` is a live thread: it is cleared under this lock before the
                    // vCPU thread's run loop returns, and the thread outlives its run loop.
                    unsafe { libc::pthread_kill(t, kick_signal()) };
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
