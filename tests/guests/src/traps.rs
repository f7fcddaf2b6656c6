//! Catching what the hypervisor bounces to the guest kernel: trap-table handlers, the
//! syscall, event and failsafe callbacks, all through one assembly stub that records the Xen
//! bounce frame and then either returns with `HYPERVISOR_iret` or jumps back out of
//! [`catch`].
//!
//! Frame at handler entry (xen-pv-contract.md §3.5), lowest address first:
//! `rcx r11 [error code | ds es fs gs] rip cs rflags rsp ss`.
#![allow(unsafe_code)]

use core::arch::global_asm;
use core::ptr::{addr_of, addr_of_mut};
use xen_abi::callback::{CallbackRegister, CALLBACKOP_REGISTER, CALLBACKTYPE_FAILSAFE, CALLBACKTYPE_SYSCALL};
use xen_abi::hypercall::{HYPERVISOR_CALLBACK_OP, HYPERVISOR_SET_TRAP_TABLE};
use xen_abi::xen::{TrapInfo, FLAT_KERNEL_CS, VGCF_IN_SYSCALL};

use crate::hypercall::hypercall6;

/// Pseudo-vectors of the callbacks.
pub const VEC_SYSCALL: u32 = 0x100;
pub const VEC_EVENT: u32 = 0x101;
pub const VEC_FAILSAFE: u32 = 0x102;

/// One bounce frame as the handler saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapFrame {
    pub vector: u32,
    pub rcx: u64,
    pub r11: u64,
    /// The error code (exceptions that have one).
    pub error_code: Option<u64>,
    /// DS, ES, FS, GS (failsafe callback only).
    pub selectors: Option<[u64; 4]>,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
    /// Where the frame was (the handler's rsp on entry).
    pub frame_at: u64,
}

/// What the handler does after recording the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Return to the interrupted context with `HYPERVISOR_iret` (flags 0).
    Iret,
    /// Return with `HYPERVISOR_iret` and `VGCF_in_syscall`, as Linux returns from a system
    /// call: the hypervisor does not restore rcx and r11 from the context.
    IretInSyscall,
    /// Abandon the interrupted context and return from the active [`catch`] with the frame.
    Escape,
}

/// A handler: sees the frame and the interrupted `rax` (which it may change).
pub type Handler = fn(&TrapFrame, &mut u64) -> Action;

static mut HANDLERS: [Option<Handler>; 0x103] = [None; 0x103];
static mut LAST: Option<TrapFrame> = None;
static mut CATCH_RSP: u64 = 0;
static mut CATCHING: bool = false;

const TRAP_HAVE_EC: u32 =
    (1 << 8) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 17) | (1 << 21);

// Stub for vector N: push N and the number of words between r11 and rip, then the common part.
macro_rules! stubs {
    ($($n:literal $extra:literal),* $(,)?) => {
        global_asm!(
            $(
                concat!(".globl trap_stub_", stringify!($n)),
                concat!("trap_stub_", stringify!($n), ":"),
                concat!("    push ", stringify!($n)),
                concat!("    push ", stringify!($extra)),
                "    jmp trap_common",
            )*
        );
    };
}

stubs!(0 0, 1 0, 3 0, 4 0, 5 0, 6 0, 7 0, 8 1, 10 1, 11 1, 12 1, 13 1, 14 1, 16 0, 17 1, 19 0, 21 1,
       0x80 0, 0x81 0, 0x82 0, 0x100 0, 0x101 0, 0x102 4);

global_asm!(
    r#"
    // Stack: [extra] [vector] | rcx r11 ...frame
trap_common:
    push rax
    push rdi
    push rsi
    push rdx
    push r8
    push r9
    push r10
    push rbp
    mov rbp, rsp
    lea rdi, [rsp + 80]          // the Xen frame
    mov rsi, [rsp + 72]          // vector
    mov rdx, [rsp + 64]          // extra words
    lea rcx, [rsp + 56]          // saved rax
    and rsp, -16
    call {dispatch}
    mov rsp, rbp
    test eax, eax
    jnz 2f
    // Iret: turn the frame into an iret_context in place (Linux's xen_iret does the same).
    mov rax, [rsp + 56]
    mov [rip + {scratch_rax}], rax
    mov rax, [rsp + 64]
    mov [rip + {scratch_extra}], rax
    pop rbp
    pop r10
    pop r9
    pop r8
    pop rdx
    pop rsi
    pop rdi
    add rsp, 24                  // saved rax, extra, vector
    pop rcx
    pop r11
    mov rax, [rip + {scratch_extra}]
    lea rsp, [rsp + 8 * rax]     // error code or selectors
    push qword ptr [rip + {scratch_flags}]  // flags
    push rcx
    push r11
    mov rax, [rip + {scratch_rax}]
    push rax
    mov eax, 23
    syscall
    ud2
2:  mov rsp, [rip + {catch_rsp}]
    mov eax, 1
    jmp catch_out

    .globl guest_catch
    // u64 guest_catch(fn(*mut u8), *mut u8): 0 if fn returned, 1 if a handler escaped.
guest_catch:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    mov [rip + {catch_rsp}], rsp
    mov rax, rdi
    mov rdi, rsi
    call rax
    xor eax, eax
catch_out:
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    "#,
    dispatch = sym trap_dispatch,
    catch_rsp = sym CATCH_RSP,
    scratch_rax = sym SCRATCH_RAX,
    scratch_extra = sym SCRATCH_EXTRA,
    scratch_flags = sym SCRATCH_FLAGS,
);

static mut SCRATCH_RAX: u64 = 0;
static mut SCRATCH_EXTRA: u64 = 0;
static mut SCRATCH_FLAGS: u64 = 0;

unsafe extern "C" {
    fn guest_catch(f: extern "C" fn(*mut u8), ctx: *mut u8) -> u64;
}

/// Called by `trap_common`: records the frame, runs the handler. 0 = iret, 1 = escape.
extern "C" fn trap_dispatch(frame: *const u64, vector: u64, extra: u64, rax: *mut u64) -> u64 {
    let extra = extra as usize;
    // SAFETY: `frame` points at the hypervisor's bounce frame on our stack: 7 + extra words.
    let w = |i: usize| unsafe { frame.add(i).read() };
    let mut f = TrapFrame {
        vector: vector as u32,
        rcx: w(0),
        r11: w(1),
        error_code: None,
        selectors: None,
        rip: w(2 + extra),
        cs: w(3 + extra),
        rflags: w(4 + extra),
        rsp: w(5 + extra),
        ss: w(6 + extra),
        frame_at: frame as u64,
    };
    if extra == 1 {
        f.error_code = Some(w(2));
    } else if extra == 4 {
        f.selectors = Some([w(2), w(3), w(4), w(5)]);
    }
    // SAFETY: single vCPU; handlers run with nothing else touching these statics.
    unsafe {
        *addr_of_mut!(LAST) = Some(f);
        let h = (*addr_of!(HANDLERS)).get(vector as usize).copied().flatten();
        let action = match h {
            Some(h) => h(&f, &mut *rax),
            None if *addr_of!(CATCHING) => Action::Escape,
            None => panic!("unexpected trap {:#x} at rip {:#x} error {:?}", vector, f.rip, f.error_code),
        };
        *addr_of_mut!(SCRATCH_FLAGS) = match action {
            Action::IretInSyscall => VGCF_IN_SYSCALL,
            _ => 0,
        };
        match action {
            Action::Iret | Action::IretInSyscall => 0,
            Action::Escape if *addr_of!(CATCHING) => 1,
            Action::Escape => panic!("trap {:#x}: escape outside catch", vector),
        }
    }
}

/// The stub address of `vector` (0 when there is no stub for it).
pub fn stub_addr(vector: u32) -> u64 {
    unsafe extern "C" {
        static trap_stub_0: u8;
        static trap_stub_1: u8;
        static trap_stub_3: u8;
        static trap_stub_4: u8;
        static trap_stub_5: u8;
        static trap_stub_6: u8;
        static trap_stub_7: u8;
        static trap_stub_8: u8;
        static trap_stub_10: u8;
        static trap_stub_11: u8;
        static trap_stub_12: u8;
        static trap_stub_13: u8;
        static trap_stub_14: u8;
        static trap_stub_16: u8;
        static trap_stub_17: u8;
        static trap_stub_19: u8;
        static trap_stub_21: u8;
        static trap_stub_0x80: u8;
        static trap_stub_0x81: u8;
        static trap_stub_0x82: u8;
        static trap_stub_0x100: u8;
        static trap_stub_0x101: u8;
        static trap_stub_0x102: u8;
    }
    {
        (match vector {
            0 => addr_of!(trap_stub_0),
            1 => addr_of!(trap_stub_1),
            3 => addr_of!(trap_stub_3),
            4 => addr_of!(trap_stub_4),
            5 => addr_of!(trap_stub_5),
            6 => addr_of!(trap_stub_6),
            7 => addr_of!(trap_stub_7),
            8 => addr_of!(trap_stub_8),
            10 => addr_of!(trap_stub_10),
            11 => addr_of!(trap_stub_11),
            12 => addr_of!(trap_stub_12),
            13 => addr_of!(trap_stub_13),
            14 => addr_of!(trap_stub_14),
            16 => addr_of!(trap_stub_16),
            17 => addr_of!(trap_stub_17),
            19 => addr_of!(trap_stub_19),
            21 => addr_of!(trap_stub_21),
            0x80 => addr_of!(trap_stub_0x80),
            0x81 => addr_of!(trap_stub_0x81),
            0x82 => addr_of!(trap_stub_0x82),
            0x100 => addr_of!(trap_stub_0x100),
            0x101 => addr_of!(trap_stub_0x101),
            0x102 => addr_of!(trap_stub_0x102),
            _ => core::ptr::null(),
        }) as u64
    }
}

/// Sets `handler` for `vector` (or a `VEC_*` callback); `None` = record and escape from
/// [`catch`] (or panic outside one).
pub fn set_handler(vector: u32, handler: Option<Handler>) {
    // SAFETY: single vCPU; no trap is being handled while the table changes.
    unsafe {
        if let Some(h) = (*addr_of_mut!(HANDLERS)).get_mut(vector as usize) {
            *h = handler;
        }
    }
}

/// The last frame any handler recorded.
pub fn last() -> Option<TrapFrame> {
    // SAFETY: single vCPU; a plain copy.
    unsafe { *addr_of!(LAST) }
}

/// The trap_info entry of `vector` for our stub, with `flags` (DPL, TI_SET_IF).
pub fn entry(vector: u8, flags: u8) -> TrapInfo {
    TrapInfo { vector, flags, cs: FLAT_KERNEL_CS, _pad: 0, address: stub_addr(u32::from(vector)) }
}

/// `set_trap_table(table)` (the table must end with an entry whose address is 0).
pub fn set_trap_table(table: &[TrapInfo]) -> i64 {
    // SAFETY: the table is readable memory of ours.
    unsafe { hypercall6(HYPERVISOR_SET_TRAP_TABLE, table.as_ptr() as u64, 0, 0, 0, 0, 0) }
}

/// Registers our stubs for every exception vector that has one (DPL 0), plus `int 0x80`
/// (DPL 3), `int 0x81` (DPL 1) and `int 0x82` (DPL 0).
pub fn install() -> i64 {
    let mut t = [TrapInfo::default(); 24];
    let mut n = 0;
    for v in [0u8, 1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 19, 21] {
        t[n] = entry(v, 0);
        n += 1;
    }
    for (v, dpl) in [(0x80u8, 3u8), (0x81, 1), (0x82, 0)] {
        t[n] = entry(v, dpl);
        n += 1;
    }
    set_trap_table(&t[..=n])
}

/// `callback_op(CALLBACKOP_register, {type, flags, address})`.
pub fn register_callback(type_: u16, flags: u16, address: u64) -> i64 {
    let r = CallbackRegister { type_, flags, _pad: 0, address };
    // SAFETY: `r` is readable memory of ours.
    unsafe { hypercall6(HYPERVISOR_CALLBACK_OP, CALLBACKOP_REGISTER, &r as *const _ as u64, 0, 0, 0, 0) }
}

/// Registers our stubs as the syscall and failsafe callbacks.
pub fn install_callbacks(syscall_flags: u16, failsafe_flags: u16) -> (i64, i64) {
    (
        register_callback(CALLBACKTYPE_SYSCALL, syscall_flags, stub_addr(VEC_SYSCALL)),
        register_callback(CALLBACKTYPE_FAILSAFE, failsafe_flags, stub_addr(VEC_FAILSAFE)),
    )
}

/// Runs `f`; if a handler escapes (the default for a trap while catching), returns the
/// frame of that trap, else `None`.
pub fn catch<F: FnOnce()>(f: F) -> Option<TrapFrame> {
    extern "C" fn tramp<F: FnOnce()>(ctx: *mut u8) {
        // SAFETY: ctx is the `Option<F>` below, taken exactly once.
        let f = unsafe { (*(ctx as *mut Option<F>)).take() };
        if let Some(f) = f {
            f();
        }
    }
    let mut slot = Some(f);
    // SAFETY: single vCPU; guest_catch calls tramp with our slot and restores every
    // callee-saved register when a handler escapes. A closure that escapes is abandoned
    // without running destructors, which is fine for the plain data tests use.
    unsafe {
        *addr_of_mut!(LAST) = None;
        *addr_of_mut!(CATCHING) = true;
        let escaped = guest_catch(tramp::<F>, &mut slot as *mut Option<F> as *mut u8);
        *addr_of_mut!(CATCHING) = false;
        if escaped != 0 {
            *addr_of!(LAST)
        } else {
            None
        }
    }
}

/// True when `vector` pushes an error code.
pub fn has_error_code(vector: u32) -> bool {
    vector < 32 && TRAP_HAVE_EC & (1 << vector) != 0
}
