//! Reading what the domain builder left in `start_info` (xen-pv-contract.md §2.7).
#![allow(unsafe_code)]

use xen_abi::sched::{
    SHUTDOWN_CRASH, SHUTDOWN_MAX, SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT, SHUTDOWN_SOFT_RESET, SHUTDOWN_SUSPEND,
    SHUTDOWN_WATCHDOG,
};
use xen_abi::xen::{StartInfo, PAGE_SHIFT};

use crate::layout::VIRT_BASE;

/// The command line, up to its NUL.
pub fn cmd_line(si: &StartInfo) -> &[u8] {
    let end = si.cmd_line.iter().position(|&b| b == 0).unwrap_or(si.cmd_line.len());
    &si.cmd_line[..end]
}

/// The value of the last `key=value` word of `cmdline`, as Linux's `__setup` would see it.
pub fn cmdline_param<'a>(cmdline: &'a [u8], key: &str) -> Option<&'a [u8]> {
    cmdline
        .split(|&b| b == b' ')
        .filter_map(|word| word.strip_prefix(key.as_bytes())?.strip_prefix(b"="))
        .next_back()
}

/// Parses a `SHUTDOWN_*` reason: `poweroff`, `reboot`, `suspend`, `crash`, `watchdog`,
/// `soft_reset` or a number up to `SHUTDOWN_MAX`.
pub fn parse_shutdown_reason(word: &[u8]) -> Option<u32> {
    Some(match word {
        b"poweroff" => SHUTDOWN_POWEROFF,
        b"reboot" => SHUTDOWN_REBOOT,
        b"suspend" => SHUTDOWN_SUSPEND,
        b"crash" => SHUTDOWN_CRASH,
        b"watchdog" => SHUTDOWN_WATCHDOG,
        b"soft_reset" => SHUTDOWN_SOFT_RESET,
        _ => {
            let n = core::str::from_utf8(word).ok()?.parse().ok()?;
            return (n <= SHUTDOWN_MAX).then_some(n);
        }
    })
}

/// The MFN of the start_info page, looked up in the builder's P2M list (`mfn_list`), which
/// `SHUTDOWN_suspend` wants in its third argument. `None` if the page is outside the P2M.
pub fn start_info_mfn(si: &'static StartInfo) -> Option<u64> {
    let pfn = (si as *const StartInfo as u64).checked_sub(VIRT_BASE)? >> PAGE_SHIFT;
    if pfn >= si.nr_pages || si.mfn_list == 0 {
        return None;
    }
    let entry = (si.mfn_list as *const u64).wrapping_add(pfn as usize);
    // SAFETY: the builder maps the P2M list (`nr_pages` u64 entries) at `mfn_list` and it
    // stays mapped (this kernel never changes page tables); `pfn < nr_pages`.
    Some(unsafe { entry.read_volatile() })
}
