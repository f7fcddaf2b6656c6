//! The domain's physical-to-machine map: which machine frame (KVM guest-physical frame) backs
//! each pseudo-physical frame the guest kernel sees. The only place that translates PFN <-> MFN
//! on the host side.

use xen_abi::hostcall::MfnRange;

/// PFN -> MFN for a PV domain: its RAM as an ordered list of machine-frame ranges; PFN 0 is the
/// first frame of the first range, and PFNs continue through each range in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct P2m {
    ranges: Vec<MfnRange>,
    nr_pages: u64,
}

impl P2m {
    /// A P2M over `ranges` (in PFN order). Empty ranges are dropped.
    pub fn new(ranges: impl IntoIterator<Item = MfnRange>) -> P2m {
        let ranges: Vec<MfnRange> = ranges.into_iter().filter(|r| r.nr_frames > 0).collect();
        let nr_pages = ranges.iter().map(|r| r.nr_frames).sum();
        P2m { ranges, nr_pages }
    }

    /// Pages of RAM the domain owns (`start_info.nr_pages`).
    pub fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// The machine-frame ranges, in PFN order.
    pub fn ranges(&self) -> &[MfnRange] {
        &self.ranges
    }

    /// The machine frame behind `pfn`, or `None` past the end of RAM.
    pub fn pfn_to_mfn(&self, pfn: u64) -> Option<u64> {
        let mut base = 0u64;
        for r in &self.ranges {
            if pfn - base < r.nr_frames && pfn >= base {
                return Some(r.first_mfn + (pfn - base));
            }
            base += r.nr_frames;
        }
        None
    }

    /// The pseudo-physical frame of `mfn`, or `None` when `mfn` is not the domain's RAM.
    pub fn mfn_to_pfn(&self, mfn: u64) -> Option<u64> {
        let mut base = 0u64;
        for r in &self.ranges {
            if r.contains(mfn) {
                return Some(base + (mfn - r.first_mfn));
            }
            base += r.nr_frames;
        }
        None
    }

    /// Iterates `(pfn, mfn)` over all of the domain's RAM, in PFN order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges
            .iter()
            .flat_map(|r| r.first_mfn..r.first_mfn + r.nr_frames)
            .enumerate()
            .map(|(pfn, mfn)| (pfn as u64, mfn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_ranges() -> P2m {
        P2m::new([
            MfnRange { first_mfn: 0x100, nr_frames: 4 },
            MfnRange { first_mfn: 0, nr_frames: 0 },
            MfnRange { first_mfn: 0x1000, nr_frames: 2 },
        ])
    }

    #[test]
    fn translates_across_ranges_both_ways() {
        let p2m = two_ranges();
        assert_eq!(p2m.nr_pages(), 6);
        assert_eq!(p2m.pfn_to_mfn(0), Some(0x100));
        assert_eq!(p2m.pfn_to_mfn(3), Some(0x103));
        assert_eq!(p2m.pfn_to_mfn(4), Some(0x1000));
        assert_eq!(p2m.pfn_to_mfn(6), None);
        assert_eq!(p2m.mfn_to_pfn(0x1001), Some(5));
        assert_eq!(p2m.mfn_to_pfn(0x104), None);
        let all: Vec<_> = p2m.iter().collect();
        assert_eq!(all.len(), 6);
        assert!(all.iter().all(|&(pfn, mfn)| p2m.pfn_to_mfn(pfn) == Some(mfn)));
    }
}
