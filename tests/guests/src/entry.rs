//! What makes a binary a Xen PV kernel: the `.note.Xen` ELF notes, `_start`, the boot stack
//! and the choice of hypercall mechanism, all emitted by [`xen_guest!`](crate::xen_guest).
//!
//! They are generated inside each binary (not in this library) because a linker only pulls
//! archive members that resolve a symbol; notes nobody references would silently vanish.
//!
//! The domain builder (xen-pv-contract.md §2.9) enters `_start` in guest-kernel mode at CPL3
//! (CS = 0xe033) with `rsi` = VA of `start_info`, `rsp` = top of a single 4 KiB boot-stack page,
//! every other GPR 0, events masked and no trap table: any exception now kills the domain.
//! `_start` moves to a 64 KiB stack in `.bss` (zeroed by the builder, which loads `p_memsz`)
//! and calls the kernel's `main(&'static StartInfo) -> !`.

/// Builds one Xen ELF note as assembler text: name `"Xen"`, type `$ty` (an operand such as
/// `"{entry}"`), descriptor `$desc` padded to 4 bytes (`elfnote.h`, Linux's `ELFNOTE`).
#[doc(hidden)]
#[macro_export]
macro_rules! __xen_note {
    ($ty:literal, $desc:literal) => {
        concat!(
            ".pushsection .note.Xen, \"a\", @note\n",
            ".balign 4\n",
            ".long 4\n",       // namesz: "Xen\0"
            ".long 2f - 1f\n", // descsz
            ".long ",
            $ty,
            "\n",
            ".asciz \"Xen\"\n",
            "1: ",
            $desc,
            "\n",
            "2: .balign 4\n",
            ".popsection\n",
        )
    };
}

/// Turns the binary into a Xen PV kernel whose entry calls `main`, issuing hypercalls with
/// `syscall` (Linux ≥ 6.1.123) or through a builder-filled hypercall page (older Linux):
///
/// ```ignore
/// xenvmm_test_guests::xen_guest!(main = main, hypercall = syscall);
/// xenvmm_test_guests::xen_guest!(main = main, hypercall = page);
/// fn main(start_info: &'static StartInfo) -> ! { .. }
/// ```
///
/// `hypercall = page` adds the `XEN_ELFNOTE_HYPERCALL_PAGE` note and a page-aligned,
/// int3-filled `hypercall_page` in `.text` for the builder to fill (§2.12).
#[macro_export]
macro_rules! xen_guest {
    (main = $main:path, hypercall = syscall) => {
        $crate::__xen_guest_common!($main, syscall);
    };
    (main = $main:path, hypercall = page) => {
        $crate::__xen_guest_common!($main, page);
        ::core::arch::global_asm!(
            ".pushsection .text.hypercall_page, \"ax\", @progbits",
            ".balign 4096",
            ".globl hypercall_page",
            ".type hypercall_page, @object",
            "hypercall_page:",
            ".fill 4096, 1, 0xcc",
            ".size hypercall_page, 4096",
            ".popsection",
            $crate::__xen_note!("{hypercall_page}", ".quad hypercall_page"),
            hypercall_page = const $crate::xen_abi::elfnote::XEN_ELFNOTE_HYPERCALL_PAGE,
            options(att_syntax),
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __xen_guest_common {
    ($main:path, $mechanism:ident) => {
        ::core::arch::global_asm!(
            // Entry (§2.9). Nothing but the stack needs setting up: bss is already zero.
            ".pushsection .text.entry, \"ax\", @progbits",
            ".globl _start",
            ".type _start, @function",
            "_start:",
            "    cld",
            "    leaq boot_stack_top(%rip), %rsp",
            "    movq %rsi, %rdi",
            "    call {main}",
            "    ud2",
            ".size _start, . - _start",
            ".popsection",
            ".pushsection .bss.boot_stack, \"aw\", @nobits",
            ".balign 4096",
            "boot_stack:",
            ".skip {stack_size}",
            "boot_stack_top:",
            ".popsection",
            // The notes a Xen domain builder reads (xen-pv-contract.md §2.3).
            $crate::__xen_note!("{guest_os}", ".asciz \"xenvmm-test\""),
            $crate::__xen_note!("{loader}", ".asciz \"generic\""),
            $crate::__xen_note!("{xen_version}", ".asciz \"xen-3.0\""),
            $crate::__xen_note!("{virt_base}", ".quad {virt_base_value}"),
            $crate::__xen_note!("{paddr_offset}", ".quad 0"),
            $crate::__xen_note!("{entry}", ".quad _start"),
            $crate::__xen_note!("{features}", ".asciz \"!writable_page_tables\""),
            $crate::__xen_note!("{pae_mode}", ".asciz \"yes\""),
            $crate::__xen_note!("{mod_start_pfn}", ".long 1"),
            $crate::__xen_note!("{suspend_cancel}", ".long 1"),
            main = sym __xen_guest_main,
            stack_size = const $crate::layout::BOOT_STACK_SIZE,
            virt_base_value = const $crate::layout::VIRT_BASE,
            guest_os = const $crate::xen_abi::elfnote::XEN_ELFNOTE_GUEST_OS,
            loader = const $crate::xen_abi::elfnote::XEN_ELFNOTE_LOADER,
            xen_version = const $crate::xen_abi::elfnote::XEN_ELFNOTE_XEN_VERSION,
            virt_base = const $crate::xen_abi::elfnote::XEN_ELFNOTE_VIRT_BASE,
            paddr_offset = const $crate::xen_abi::elfnote::XEN_ELFNOTE_PADDR_OFFSET,
            entry = const $crate::xen_abi::elfnote::XEN_ELFNOTE_ENTRY,
            features = const $crate::xen_abi::elfnote::XEN_ELFNOTE_FEATURES,
            pae_mode = const $crate::xen_abi::elfnote::XEN_ELFNOTE_PAE_MODE,
            mod_start_pfn = const $crate::xen_abi::elfnote::XEN_ELFNOTE_MOD_START_PFN,
            suspend_cancel = const $crate::xen_abi::elfnote::XEN_ELFNOTE_SUSPEND_CANCEL,
            options(att_syntax),
        );

        extern "C" fn __xen_guest_main(
            start_info: &'static $crate::xen_abi::xen::StartInfo,
        ) -> ! {
            $main(start_info)
        }

        /// The hypercall entry every wrapper in the runtime calls (see `hypercall`).
        #[unsafe(no_mangle)]
        unsafe extern "C" fn xen_hypercall6(
            nr: u64,
            a1: u64,
            a2: u64,
            a3: u64,
            a4: u64,
            a5: u64,
            a6: u64,
        ) -> i64 {
            // SAFETY: forwarded unchanged; our caller upholds `hypercall6`'s contract.
            unsafe { $crate::hypercall::$mechanism::hypercall6(nr, a1, a2, a3, a4, a5, a6) }
        }
    };
}
