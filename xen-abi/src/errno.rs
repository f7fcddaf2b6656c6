//! Xen error numbers (`errno.h`, `XEN_ERRNO(name, value)`). Hypercalls return `-errno` in `rax`.

/// A Xen errno value (positive); a hypercall returns its negation (`enum xen_errno`, `errno.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(1);
    pub const ENOENT: Errno = Errno(2);
    pub const ESRCH: Errno = Errno(3);
    /// Xen-internal (`#ifdef __XEN__`): never returned to a guest.
    pub const EINTR: Errno = Errno(4);
    pub const EIO: Errno = Errno(5);
    pub const ENXIO: Errno = Errno(6);
    pub const E2BIG: Errno = Errno(7);
    pub const ENOEXEC: Errno = Errno(8);
    pub const EBADF: Errno = Errno(9);
    pub const ECHILD: Errno = Errno(10);
    pub const EAGAIN: Errno = Errno(11);
    /// Alias of `EAGAIN`.
    pub const EWOULDBLOCK: Errno = Errno(11);
    pub const ENOMEM: Errno = Errno(12);
    pub const EACCES: Errno = Errno(13);
    pub const EFAULT: Errno = Errno(14);
    pub const EBUSY: Errno = Errno(16);
    pub const EEXIST: Errno = Errno(17);
    pub const EXDEV: Errno = Errno(18);
    pub const ENODEV: Errno = Errno(19);
    pub const ENOTDIR: Errno = Errno(20);
    pub const EISDIR: Errno = Errno(21);
    pub const EINVAL: Errno = Errno(22);
    pub const ENFILE: Errno = Errno(23);
    pub const EMFILE: Errno = Errno(24);
    pub const ENOSPC: Errno = Errno(28);
    pub const EROFS: Errno = Errno(30);
    pub const EMLINK: Errno = Errno(31);
    pub const EDOM: Errno = Errno(33);
    pub const ERANGE: Errno = Errno(34);
    pub const EDEADLK: Errno = Errno(35);
    /// Alias of `EDEADLK`.
    pub const EDEADLOCK: Errno = Errno(35);
    pub const ENAMETOOLONG: Errno = Errno(36);
    pub const ENOLCK: Errno = Errno(37);
    pub const ENOSYS: Errno = Errno(38);
    pub const ENOTEMPTY: Errno = Errno(39);
    pub const ENODATA: Errno = Errno(61);
    pub const ETIME: Errno = Errno(62);
    pub const EBADMSG: Errno = Errno(74);
    pub const EOVERFLOW: Errno = Errno(75);
    pub const EILSEQ: Errno = Errno(84);
    /// Xen-internal (`#ifdef __XEN__`): "restart the hypercall", never returned to a guest.
    pub const ERESTART: Errno = Errno(85);
    pub const ENOTSOCK: Errno = Errno(88);
    pub const EMSGSIZE: Errno = Errno(90);
    pub const EOPNOTSUPP: Errno = Errno(95);
    pub const EADDRINUSE: Errno = Errno(98);
    pub const EADDRNOTAVAIL: Errno = Errno(99);
    pub const ENOBUFS: Errno = Errno(105);
    pub const EISCONN: Errno = Errno(106);
    pub const ENOTCONN: Errno = Errno(107);
    pub const ETIMEDOUT: Errno = Errno(110);
    pub const ECONNREFUSED: Errno = Errno(111);

    /// The value a hypercall leaves in `rax` for this error: `-errno` as a 64-bit word.
    pub const fn to_rax(self) -> u64 {
        (-(self.0 as i64)) as u64
    }

    /// Decodes a hypercall return value: `Some(errno)` when `rax` is in `-4095..=-1`.
    pub const fn from_rax(rax: u64) -> Option<Errno> {
        let v = rax as i64;
        if v < 0 && v >= -4095 {
            Some(Errno((-v) as i32))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Errno;

    #[test]
    fn to_rax_is_the_negated_errno_as_a_64_bit_word() {
        assert_eq!(Errno::EPERM.to_rax(), u64::MAX);
        assert_eq!(Errno::ENOSYS.to_rax(), (-38i64) as u64);
        assert_eq!(Errno::ENOSYS.to_rax(), 0xffff_ffff_ffff_ffda);
    }

    #[test]
    fn from_rax_decodes_every_errno_it_encodes() {
        for e in [Errno::EPERM, Errno::EINVAL, Errno::ENOSYS, Errno::ECONNREFUSED, Errno(4095)] {
            assert_eq!(Errno::from_rax(e.to_rax()), Some(e));
        }
    }

    #[test]
    fn from_rax_accepts_exactly_minus_4095_to_minus_1() {
        assert_eq!(Errno::from_rax((-1i64) as u64), Some(Errno(1)));
        assert_eq!(Errno::from_rax((-4095i64) as u64), Some(Errno(4095)));
        assert_eq!(Errno::from_rax((-4096i64) as u64), None);
        assert_eq!(Errno::from_rax(i64::MIN as u64), None);
    }

    #[test]
    fn from_rax_treats_zero_and_positive_results_as_success() {
        assert_eq!(Errno::from_rax(0), None);
        assert_eq!(Errno::from_rax(1), None);
        assert_eq!(Errno::from_rax(i64::MAX as u64), None);
        // A kernel virtual address returned as a value is not an error unless it is in the top
        // 4095 values.
        assert_eq!(Errno::from_rax(0xffff_8000_0000_0000), None);
    }
}
