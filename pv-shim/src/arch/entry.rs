//! Entry and exit stubs: where the CPU enters the shim (boot, SYSCALL, exceptions) and how it
//! leaves for the guest. Every entry builds a [`crate::guest::GuestRegs`] frame on the shim
//! stack and calls `shim_trap`; every exit pops one and runs `iretq`.
//!
//! SYSCALL does not switch stacks, and the guest's `rsp` is untrusted: the stub parks it in a
//! scratch word and loads the shim stack before touching memory through `rsp`. SFMASK clears
//! IF, so nothing can interrupt the few instructions in between. (One vCPU: one scratch word
//! and one stack; SMP gets per-vCPU stubs as in Xen.)

use core::arch::global_asm;

pub const STACK_SIZE: usize = 64 * 1024;
pub const IST_STACK_SIZE: usize = 16 * 1024;

global_asm!(
    r#"
    .section .bss.shim_stacks, "aw", @nobits
    .balign 4096
    .global SHIM_STACK_BOTTOM
SHIM_STACK_BOTTOM:
    .skip {stack}
    .global SHIM_STACK_TOP
SHIM_STACK_TOP:
    .skip {ist}
    .global DF_STACK_TOP
DF_STACK_TOP:
    .skip {ist}
    .global NMI_STACK_TOP
NMI_STACK_TOP:
SYSCALL_SCRATCH:
    .skip 8

    .section .text.entry, "ax"
    .global shim_entry
shim_entry:
    lea rsp, [rip + SHIM_STACK_TOP]
    xor ebp, ebp
    call shim_start
    ud2

    .text
    .balign 16
    .global syscall_entry
syscall_entry:
    mov [rip + SYSCALL_SCRATCH], rsp
    lea rsp, [rip + SHIM_STACK_TOP]
    push {user_ss}
    push qword ptr [rip + SYSCALL_SCRATCH]
    push r11
    push {user_cs}
    push rcx
    push 0
    push {vsyscall}
    jmp trap_common

    .balign 16
    .global trap_common
trap_common:
    push rdi
    push rsi
    push rdx
    push rcx
    push rax
    push r8
    push r9
    push r10
    push r11
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call shim_trap
    .global return_to_guest
return_to_guest:
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    pop r11
    pop r10
    pop r9
    pop r8
    pop rax
    pop rcx
    pop rdx
    pop rsi
    pop rdi
    add rsp, 16
    .global guest_iretq
guest_iretq:
    iretq

    .global enter_frame
enter_frame:
    mov rsp, rdi
    jmp return_to_guest

    // Exceptions 0..31: the CPU pushes an error code for 8, 10-14, 17, 21, 29, 30.
    .macro EXC_NOERR n
    .balign 16
exc_\n:
    push 0
    push \n
    jmp trap_common
    .endm
    .macro EXC_ERR n
    .balign 16
exc_\n:
    push \n
    jmp trap_common
    .endm
    EXC_NOERR 0
    EXC_NOERR 1
    EXC_NOERR 2
    EXC_NOERR 3
    EXC_NOERR 4
    EXC_NOERR 5
    EXC_NOERR 6
    EXC_NOERR 7
    EXC_ERR 8
    EXC_NOERR 9
    EXC_ERR 10
    EXC_ERR 11
    EXC_ERR 12
    EXC_ERR 13
    EXC_ERR 14
    EXC_NOERR 15
    EXC_NOERR 16
    EXC_ERR 17
    EXC_NOERR 18
    EXC_NOERR 19
    EXC_NOERR 20
    EXC_ERR 21
    EXC_NOERR 22
    EXC_NOERR 23
    EXC_NOERR 24
    EXC_NOERR 25
    EXC_NOERR 26
    EXC_NOERR 27
    EXC_NOERR 28
    EXC_ERR 29
    EXC_ERR 30
    EXC_NOERR 31

    // Vectors 32..255: 16-byte stubs at irq_stubs + (vector - 32) * 16.
    .balign 16
    .global irq_stubs
irq_stubs:
    .set vec, 32
    .rept 224
    .balign 16
    push 0
    push vec
    jmp trap_common
    .set vec, vec + 1
    .endr

    .section .rodata
    .balign 8
    .global exception_stubs
exception_stubs:
    .quad exc_0, exc_1, exc_2, exc_3, exc_4, exc_5, exc_6, exc_7
    .quad exc_8, exc_9, exc_10, exc_11, exc_12, exc_13, exc_14, exc_15
    .quad exc_16, exc_17, exc_18, exc_19, exc_20, exc_21, exc_22, exc_23
    .quad exc_24, exc_25, exc_26, exc_27, exc_28, exc_29, exc_30, exc_31
    "#,
    stack = const STACK_SIZE,
    ist = const IST_STACK_SIZE,
    user_ss = const xen_abi::xen::FLAT_KERNEL_SS as u32,
    user_cs = const xen_abi::xen::FLAT_KERNEL_CS as u32,
    vsyscall = const crate::guest::VECTOR_SYSCALL as u32,
);

unsafe extern "C" {
    pub static SHIM_STACK_TOP: u8;
    pub static DF_STACK_TOP: u8;
    pub static NMI_STACK_TOP: u8;
    pub static exception_stubs: [u64; 32];
    pub fn syscall_entry();
    /// The `iretq` that returns to the guest; a fault there means the guest's frame was bad.
    pub fn guest_iretq();
    pub fn irq_stubs();
    /// Loads `rsp` with `frame` and returns to the guest through it.
    pub fn enter_frame(frame: *const crate::guest::GuestRegs) -> !;
}
