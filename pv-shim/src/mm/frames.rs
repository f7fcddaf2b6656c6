//! The frame table: one word per machine frame (Xen's `struct page_info`, reduced to what a
//! single PV domain needs), kept by the [`Machine`](crate::machine::Machine) in shim memory.
//!
//! A frame the domain owns has a **type** with a **type count** and a **general count**:
//! - the general count is every reference to the frame: each L1 entry that maps it, each
//!   upper-level entry that points at it as a table, each pin, each vCPU base pointer;
//! - the type says what those references may do with it: `Writable` (mapped writable
//!   somewhere), `L1`..`L4` (a validated page table), `SegDesc` (a GDT/LDT frame). A frame
//!   holds one type at a time and may change type only when its type count is zero. That one
//!   rule is what keeps page tables and descriptor tables from ever being writable-mapped.
//!
//! When the type count drops to zero the type bits stay: they remember the frame's last
//! type, so that taking a different one can first flush stale TLB entries (see
//! [`types`](super::types)).
//!
//! Layout of a word (0 = untyped, unreferenced, owned if it is the domain's RAM):
//! `type` bits 0..=2, `pinned` bit 3, `validating` bit 4 (a validation of this frame is in
//! progress: a loop back to it is refused), `released` bit 5 (given back to the host by
//! `XENMEM_decrease_reservation`), type count bits 8..=31, general count bits 32..=63.

/// What a frame is used as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageType {
    None = 0,
    Writable = 1,
    L1 = 2,
    L2 = 3,
    L3 = 4,
    L4 = 5,
    SegDesc = 6,
}

impl PageType {
    fn from_bits(b: u64) -> PageType {
        match b & 7 {
            1 => PageType::Writable,
            2 => PageType::L1,
            3 => PageType::L2,
            4 => PageType::L3,
            5 => PageType::L4,
            6 => PageType::SegDesc,
            _ => PageType::None,
        }
    }

    /// The page-table level (1..=4) of an `Ln` type.
    pub fn level(self) -> Option<u32> {
        match self {
            PageType::L1 => Some(1),
            PageType::L2 => Some(2),
            PageType::L3 => Some(3),
            PageType::L4 => Some(4),
            _ => None,
        }
    }

    /// The type of a page table of `level` (1..=4).
    pub fn table(level: u32) -> PageType {
        match level {
            1 => PageType::L1,
            2 => PageType::L2,
            3 => PageType::L3,
            _ => PageType::L4,
        }
    }

    /// Types whose contents the shim validated and keeps valid: no writable mapping of them
    /// may exist while they hold the type.
    pub fn is_protected(self) -> bool {
        !matches!(self, PageType::None | PageType::Writable)
    }
}

const TYPE_MASK: u64 = 7;
const PINNED: u64 = 1 << 3;
const VALIDATING: u64 = 1 << 4;
const RELEASED: u64 = 1 << 5;
const TYPE_COUNT_SHIFT: u32 = 8;
const TYPE_COUNT_MAX: u64 = (1 << 24) - 1;
const COUNT_SHIFT: u32 = 32;
const COUNT_MAX: u64 = u32::MAX as u64;

/// One frame-table word, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameInfo(pub u64);

impl FrameInfo {
    pub fn page_type(self) -> PageType {
        PageType::from_bits(self.0 & TYPE_MASK)
    }

    pub fn type_count(self) -> u64 {
        (self.0 >> TYPE_COUNT_SHIFT) & TYPE_COUNT_MAX
    }

    pub fn count(self) -> u64 {
        self.0 >> COUNT_SHIFT
    }

    pub fn pinned(self) -> bool {
        self.0 & PINNED != 0
    }

    pub fn validating(self) -> bool {
        self.0 & VALIDATING != 0
    }

    pub fn released(self) -> bool {
        self.0 & RELEASED != 0
    }

    /// The type actually held: `None` whenever the type count is zero.
    pub fn current_type(self) -> PageType {
        if self.type_count() == 0 {
            PageType::None
        } else {
            self.page_type()
        }
    }

    pub fn with_type(self, t: PageType, type_count: u64) -> FrameInfo {
        FrameInfo(
            (self.0 & !(TYPE_MASK | (TYPE_COUNT_MAX << TYPE_COUNT_SHIFT)))
                | t as u64
                | (type_count.min(TYPE_COUNT_MAX) << TYPE_COUNT_SHIFT),
        )
    }

    pub fn with_count(self, count: u64) -> FrameInfo {
        FrameInfo((self.0 & !(COUNT_MAX << COUNT_SHIFT)) | (count.min(COUNT_MAX) << COUNT_SHIFT))
    }

    pub fn with_pinned(self, on: bool) -> FrameInfo {
        FrameInfo(if on { self.0 | PINNED } else { self.0 & !PINNED })
    }

    pub fn with_validating(self, on: bool) -> FrameInfo {
        FrameInfo(if on { self.0 | VALIDATING } else { self.0 & !VALIDATING })
    }

    pub fn with_released(self, on: bool) -> FrameInfo {
        FrameInfo(if on { self.0 | RELEASED } else { self.0 & !RELEASED })
    }

    /// The word with the type bits of a frame that holds no type cleared (they only
    /// remember its last type): for comparing states.
    pub fn canonical(self) -> u64 {
        if self.type_count() == 0 {
            self.with_type(PageType::None, 0).0
        } else {
            self.0
        }
    }

    /// Room for one more type reference.
    pub fn type_count_full(self) -> bool {
        self.type_count() == TYPE_COUNT_MAX
    }

    /// Room for one more general reference.
    pub fn count_full(self) -> bool {
        self.count() == COUNT_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_independent() {
        let f = FrameInfo::default().with_type(PageType::L3, 5).with_count(7).with_pinned(true);
        assert_eq!((f.page_type(), f.type_count(), f.count(), f.pinned()), (PageType::L3, 5, 7, true));
        let f = f.with_count(COUNT_MAX).with_type(PageType::Writable, TYPE_COUNT_MAX);
        assert_eq!(
            (f.page_type(), f.type_count(), f.count(), f.pinned()),
            (PageType::Writable, TYPE_COUNT_MAX, COUNT_MAX, true)
        );
        assert!(f.count_full() && f.type_count_full());
        let f = f.with_type(PageType::L1, 0).with_pinned(false).with_released(true);
        assert_eq!(f.current_type(), PageType::None);
        assert!(f.released() && !f.pinned() && !f.validating());
    }
}
