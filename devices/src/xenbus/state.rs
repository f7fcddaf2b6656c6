//! `enum xenbus_state` (`io/xenbus.h`) and the lenient number scanning Linux applies to the
//! values peers write (`xenbus_scanf`, which is the kernel's `sscanf`).

/// `enum xenbus_state` (`xen/include/public/io/xenbus.h`): a device end's state, written as a
/// decimal string in its `state` node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum XenbusState {
    /// `XenbusStateUnknown`: also what an absent or unreadable `state` node means.
    Unknown = 0,
    Initialising = 1,
    /// Finished early initialisation; waiting for information from the peer or hotplug scripts.
    InitWait = 2,
    /// Waiting for a connection from the peer.
    Initialised = 3,
    Connected = 4,
    /// The device is being closed because of an error or an unplug event.
    Closing = 5,
    Closed = 6,
    /// Reconfiguring (netback uses it for XDP headroom).
    Reconfiguring = 7,
    Reconfigured = 8,
}

impl XenbusState {
    /// Every state, by value.
    pub const ALL: [XenbusState; 9] = [
        XenbusState::Unknown,
        XenbusState::Initialising,
        XenbusState::InitWait,
        XenbusState::Initialised,
        XenbusState::Connected,
        XenbusState::Closing,
        XenbusState::Closed,
        XenbusState::Reconfiguring,
        XenbusState::Reconfigured,
    ];

    /// The state numbered `n`, if there is one.
    pub fn from_number(n: i64) -> Option<XenbusState> {
        usize::try_from(n).ok().and_then(|i| XenbusState::ALL.get(i).copied())
    }

    /// Reads a `state` node's value as Linux's `xenbus_read_driver_state` does (`sscanf "%d"`,
    /// see [`scan_int`]): a value without a number reads as [`XenbusState::Unknown`], and so
    /// does a missing node (the caller passes `None`). `Err(n)` is a number that names no
    /// state; Linux's backends answer it with `xenbus_dev_fatal(... "saw state %d at
    /// frontend")`.
    pub fn parse(value: Option<&[u8]>) -> Result<XenbusState, i64> {
        match value.and_then(scan_int) {
            None => Ok(XenbusState::Unknown),
            Some(n) => XenbusState::from_number(n).ok_or(n),
        }
    }

    /// The value written in a `state` node.
    pub fn as_value(self) -> &'static str {
        ["0", "1", "2", "3", "4", "5", "6", "7", "8"][self as usize]
    }
}

impl std::fmt::Display for XenbusState {
    /// `xenbus_strstate` names, which is what Linux logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XenbusState::Unknown => "Unknown",
            XenbusState::Initialising => "Initialising",
            XenbusState::InitWait => "InitWait",
            XenbusState::Initialised => "Initialised",
            XenbusState::Connected => "Connected",
            XenbusState::Closing => "Closing",
            XenbusState::Closed => "Closed",
            XenbusState::Reconfiguring => "Reconfiguring",
            XenbusState::Reconfigured => "Reconfigured",
        })
    }
}

/// The kernel's `sscanf(value, "%d")`: leading white space, an optional `-`, then decimal
/// digits up to the first other byte (a NUL ends the string); the rest is ignored. `None` when
/// there are no digits. Numbers beyond `i64` saturate (the kernel wraps; either way they name
/// no state).
pub fn scan_int(value: &[u8]) -> Option<i64> {
    let s = skip_space(value);
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let n = digits(s)?;
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    Some(if neg { -n } else { n })
}

/// The kernel's `sscanf(value, "%u")` into a 32-bit `unsigned int`, as `xenbus_scanf` reads
/// `ring-ref`, `event-channel` and the like: leading white space, decimal digits up to the
/// first other byte. `None` when there are no digits or the number does not fit (the kernel
/// would truncate it; a value that large is no grant reference or port anyway).
pub fn scan_u32(value: &[u8]) -> Option<u32> {
    digits(skip_space(value)).and_then(|n| u32::try_from(n).ok())
}

/// `isspace` as the kernel's `skip_spaces` sees it.
fn skip_space(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')).count();
    &s[n..]
}

/// The leading decimal digits of `s` as a number (saturating), `None` without any.
fn digits(s: &[u8]) -> Option<u64> {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    Some(s[..n].iter().fold(0u64, |acc, c| acc.saturating_mul(10).saturating_add(u64::from(c - b'0'))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_like_xenbus_read_driver_state() {
        let p = |v: &[u8]| XenbusState::parse(Some(v));
        assert_eq!(p(b"4"), Ok(XenbusState::Connected));
        assert_eq!(p(b" \t3"), Ok(XenbusState::Initialised), "leading white space is skipped");
        assert_eq!(p(b"6abc"), Ok(XenbusState::Closed), "trailing bytes are ignored");
        assert_eq!(p(b"5\0junk"), Ok(XenbusState::Closing));
        assert_eq!(p(b"0004"), Ok(XenbusState::Connected));
        for unparsable in [&b""[..], b"abc", b"-", b"+1", b"\xff\xfe", b" ", b"x4"] {
            assert_eq!(p(unparsable), Ok(XenbusState::Unknown), "{unparsable:?}");
        }
        assert_eq!(XenbusState::parse(None), Ok(XenbusState::Unknown), "a missing node");
        assert_eq!(p(b"9"), Err(9));
        assert_eq!(p(b"-1"), Err(-1));
        assert_eq!(p(b"99999999999999999999999"), Err(i64::MAX));
        assert_eq!(p(&[b'7'; 2048]), Err(i64::MAX), "a huge value costs one linear scan");
    }

    #[test]
    fn every_state_round_trips_through_its_value() {
        for s in XenbusState::ALL {
            assert_eq!(XenbusState::parse(Some(s.as_value().as_bytes())), Ok(s));
            assert_eq!(XenbusState::from_number(s as i64), Some(s));
        }
        assert_eq!(XenbusState::from_number(9), None);
        assert_eq!(XenbusState::InitWait.to_string(), "InitWait");
    }

    #[test]
    fn unsigned_keys_scan_like_percent_u() {
        assert_eq!(scan_u32(b"8"), Some(8));
        assert_eq!(scan_u32(b" 42\n"), Some(42));
        assert_eq!(scan_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(scan_u32(b"4294967296"), None);
        assert_eq!(scan_u32(b"-1"), None);
        assert_eq!(scan_u32(b""), None);
        assert_eq!(scan_u32(b"12ab"), Some(12));
    }
}
