//! `HYPERVISOR_xen_version` (Xen `common/kernel.c`), answered as Xen 4.17 answers a 64-bit PV
//! domU, including the XSM default policy that denies `commandline` and `build_id` to a domU.

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm;
use crate::shim::Shim;
use xen_abi::version::*;
use xen_abi::xen::HYPERVISOR_VIRT_START;
use xen_abi::Errno;
use zerocopy::{FromZeros, IntoBytes};

/// The Xen version whose ABI the shim implements.
pub const XEN_MAJOR: u64 = 4;
pub const XEN_MINOR: u64 = 17;
pub const EXTRAVERSION: &[u8] = b".0-xenvmm";
/// Xen's reply to a domU that may not see a string.
const DENIED: &[u8] = b"<denied>";

/// XENFEAT bits of submap 0 for a 64-bit PV domU (Xen `kernel.c`): `pae_pgdir_above_4gb` is
/// reported once the guest enables `VMASST_TYPE_pae_extended_cr3`.
pub fn pv_features(pae_extended_cr3: bool) -> u32 {
    let mut f = (1u32 << XENFEAT_MEMORY_OP_VNODE_SUPPORTED)
        | (1 << XENFEAT_MMU_PT_UPDATE_PRESERVE_AD)
        | (1 << XENFEAT_HIGHMEM_ASSIST)
        | (1 << XENFEAT_GNTTAB_MAP_AVAIL_BITS);
    if pae_extended_cr3 {
        f |= 1 << XENFEAT_PAE_PGDIR_ABOVE_4GB;
    }
    f
}

pub fn xen_version<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let arg = a.0[1];
    match a.0[0] {
        XENVER_VERSION => Ok((XEN_MAJOR << 16) | XEN_MINOR),
        XENVER_EXTRAVERSION => put_string::<_, XEN_EXTRAVERSION_LEN>(s, arg, EXTRAVERSION),
        XENVER_COMPILE_INFO => {
            let mut ci = XenCompileInfo::new_zeroed();
            fill(&mut ci.compiler, b"rustc");
            fill(&mut ci.compile_by, b"xenvmm");
            fill(&mut ci.compile_domain, b"xenvmm");
            fill(&mut ci.compile_date, b"");
            put(s, arg, ci.as_bytes())
        }
        XENVER_CAPABILITIES => put_string::<_, XEN_CAPABILITIES_INFO_LEN>(s, arg, b"xen-3.0-x86_64"),
        XENVER_CHANGESET => put_string::<_, XEN_CHANGESET_INFO_LEN>(s, arg, b"xenvmm"),
        XENVER_PLATFORM_PARAMETERS => {
            put(s, arg, XenPlatformParameters { virt_start: HYPERVISOR_VIRT_START }.as_bytes())
        }
        XENVER_GET_FEATURES => {
            let mut fi: XenFeatureInfo = mm::read_guest(&s.m, s.cr3(), arg)?;
            if fi.submap_idx != 0 {
                return Err(Errno::EINVAL);
            }
            fi.submap = pv_features(false);
            put(s, arg, fi.as_bytes())
        }
        XENVER_PAGESIZE => {
            if arg != 0 {
                Err(Errno::EINVAL)
            } else {
                Ok(4096)
            }
        }
        // The domain handle (UUID) libxl would have set; xenvmm domains have none yet.
        XENVER_GUEST_HANDLE => put(s, arg, &[0u8; 16]),
        XENVER_COMMANDLINE => {
            let mut d = [0u8; 9];
            d[..DENIED.len()].copy_from_slice(DENIED);
            put(s, arg, &d)
        }
        XENVER_BUILD_ID => Err(Errno::EPERM),
        _ => Err(Errno::ENOSYS),
    }
}

fn fill(dst: &mut [u8], src: &[u8]) {
    let n = src.len().min(dst.len().saturating_sub(1));
    dst[..n].copy_from_slice(&src[..n]);
}

fn put<M: Machine>(s: &mut Shim<M>, va: u64, bytes: &[u8]) -> Result<u64, Errno> {
    let cr3 = s.cr3();
    mm::copy_to_guest(&mut s.m, cr3, va, bytes)?;
    Ok(0)
}

/// Copies `text` NUL-padded to `N` bytes, as Xen copies its fixed-size string types.
fn put_string<M: Machine, const N: usize>(s: &mut Shim<M>, va: u64, text: &[u8]) -> Result<u64, Errno> {
    let mut buf = [0u8; N];
    fill(&mut buf, text);
    put(s, va, &buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{shim_with_guest, GUEST_VA};

    fn call(s: &mut Shim<crate::testutil::MockMachine>, cmd: u64, arg: u64) -> Result<u64, Errno> {
        xen_version(s, Args([cmd, arg, 0, 0, 0, 0]))
    }

    #[test]
    fn version_and_features_match_xen_for_a_pv_domu() {
        let mut s = shim_with_guest();
        assert_eq!(call(&mut s, XENVER_VERSION, 0), Ok(0x0004_0011));
        let cr3 = s.cr3();
        mm::copy_to_guest(&mut s.m, cr3, GUEST_VA, XenFeatureInfo { submap_idx: 0, submap: 0 }.as_bytes())
            .unwrap();
        assert_eq!(call(&mut s, XENVER_GET_FEATURES, GUEST_VA), Ok(0));
        let fi: XenFeatureInfo = mm::read_guest(&s.m, cr3, GUEST_VA).unwrap();
        assert_ne!(fi.submap & (1 << XENFEAT_MMU_PT_UPDATE_PRESERVE_AD), 0);
        assert_ne!(fi.submap & (1 << XENFEAT_GNTTAB_MAP_AVAIL_BITS), 0);
        assert_eq!(fi.submap & (1 << XENFEAT_WRITABLE_PAGE_TABLES), 0);
        assert_eq!(fi.submap & (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP), 0);
        mm::copy_to_guest(&mut s.m, cr3, GUEST_VA, XenFeatureInfo { submap_idx: 1, submap: 0 }.as_bytes())
            .unwrap();
        assert_eq!(call(&mut s, XENVER_GET_FEATURES, GUEST_VA), Err(Errno::EINVAL));
    }

    #[test]
    fn strings_are_nul_padded_and_bad_pointers_fault() {
        let mut s = shim_with_guest();
        let cr3 = s.cr3();
        mm::copy_to_guest(&mut s.m, cr3, GUEST_VA, &[0xaa; 16]).unwrap();
        assert_eq!(call(&mut s, XENVER_EXTRAVERSION, GUEST_VA), Ok(0));
        let mut out = [0u8; 16];
        mm::copy_from_guest(&s.m, cr3, GUEST_VA, &mut out).unwrap();
        assert_eq!(&out[..EXTRAVERSION.len()], EXTRAVERSION);
        assert!(out[EXTRAVERSION.len()..].iter().all(|&b| b == 0));
        assert_eq!(call(&mut s, XENVER_EXTRAVERSION, 0x1000), Err(Errno::EFAULT));
        // Page 31 of the test guest is read-only.
        assert_eq!(call(&mut s, XENVER_EXTRAVERSION, GUEST_VA + 31 * 4096), Err(Errno::EFAULT));
        assert_eq!(call(&mut s, XENVER_PAGESIZE, 0), Ok(4096));
        assert_eq!(call(&mut s, XENVER_PAGESIZE, GUEST_VA), Err(Errno::EINVAL));
        assert_eq!(call(&mut s, XENVER_BUILD_ID, 0), Err(Errno::EPERM));
        assert_eq!(call(&mut s, 99, 0), Err(Errno::ENOSYS));
    }
}
