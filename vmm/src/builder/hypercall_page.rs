//! The hypercall page of kernels with a HYPERCALL_PAGE note (Debian 12 before 6.1.123;
//! xen-pv-contract.md §1.1, §2.12; Xen `hypercall_page_initialise_ring3_kernel`).
//!
//! 128 stubs of 32 bytes; stub *i* enters the shim with `syscall` and `eax = i`, saving the
//! registers `syscall` clobbers. Stub 23 (`iret`) is jumped to, never called: it also pushes
//! `rax` and does not return. Unused bytes are `int3`.

use xen_abi::hypercall::{HYPERCALL_STUB_SIZE, HYPERVISOR_IRET};

use super::layout::PAGE_SIZE;

const INT3: u8 = 0xcc;

/// The 4096 bytes of the hypercall page.
pub fn hypercall_page() -> Vec<u8> {
    let mut page = vec![INT3; PAGE_SIZE as usize];
    for (i, stub) in page.chunks_exact_mut(HYPERCALL_STUB_SIZE).enumerate() {
        let nr = (i as u32).to_le_bytes();
        let code: &[u8] = if i as u64 == HYPERVISOR_IRET {
            &[
                0x51, // push %rcx
                0x41, 0x53, // push %r11
                0x50, // push %rax
                0xb8, nr[0], nr[1], nr[2], nr[3], // mov $23, %eax
                0x0f, 0x05, // syscall
            ]
        } else {
            &[
                0x51, // push %rcx
                0x41, 0x53, // push %r11
                0xb8, nr[0], nr[1], nr[2], nr[3], // mov $i, %eax
                0x0f, 0x05, // syscall
                0x41, 0x5b, // pop %r11
                0x59, // pop %rcx
                0xc3, // ret
            ]
        };
        stub[..code.len()].copy_from_slice(code);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypercall_page_has_syscall_stubs_and_iret_variant() {
        let page = hypercall_page();
        assert_eq!(page.len(), 4096);
        // Slot 0 (set_trap_table).
        assert_eq!(&page[0..14], &[0x51, 0x41, 0x53, 0xb8, 0, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3]);
        assert!(page[14..32].iter().all(|&b| b == 0xcc));
        // Slot 29 (sched_op).
        assert_eq!(
            &page[29 * 32..29 * 32 + 14],
            &[0x51, 0x41, 0x53, 0xb8, 29, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3]
        );
        // Slot 127, the last one.
        assert_eq!(&page[127 * 32 + 3..127 * 32 + 8], &[0xb8, 127, 0, 0, 0]);
        // Slot 23 (iret) at 0x2e0.
        assert_eq!(&page[0x2e0..0x2e0 + 11], &[0x51, 0x41, 0x53, 0x50, 0xb8, 0x17, 0, 0, 0, 0x0f, 0x05]);
        assert!(page[0x2e0 + 11..0x300].iter().all(|&b| b == 0xcc));
    }
}
