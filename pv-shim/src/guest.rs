//! The guest register frame the entry stubs save, and per-vCPU PV state.

/// Saved guest registers, in the order the entry stubs push them (lowest address first).
///
/// ```text
///  rsp after the stubs ─► r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi
///                         vector error_code │ rip cs rflags rsp ss  ◄─ hardware (or SYSCALL
///                                           │                          stub) frame
/// ```
/// `vector` is the exception vector, or [`VECTOR_SYSCALL`] for a SYSCALL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GuestRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// `GuestRegs::vector` of a frame built by the SYSCALL entry stub.
pub const VECTOR_SYSCALL: u64 = 0x100;

impl GuestRegs {
    /// True when the frame was saved from ring 3 (guest kernel or guest user).
    pub fn from_guest(&self) -> bool {
        self.cs & 3 == 3
    }

    pub fn to_report(&self, cr2: u64, cr3: u64) -> xen_abi::hostcall::CpuRegs {
        xen_abi::hostcall::CpuRegs {
            rax: self.rax,
            rbx: self.rbx,
            rcx: self.rcx,
            rdx: self.rdx,
            rsi: self.rsi,
            rdi: self.rdi,
            rbp: self.rbp,
            rsp: self.rsp,
            r8: self.r8,
            r9: self.r9,
            r10: self.r10,
            r11: self.r11,
            r12: self.r12,
            r13: self.r13,
            r14: self.r14,
            r15: self.r15,
            rip: self.rip,
            rflags: self.rflags,
            cs: self.cs,
            ss: self.ss,
            cr2,
            cr3,
            fs_base: 0,
            gs_base: 0,
        }
    }
}

/// Per-vCPU PV state (Xen's `struct pv_vcpu`). Each area module owns its part.
#[derive(Clone, Debug)]
pub struct Vcpu {
    pub id: u32,
    /// Guest kernel mode (Xen's `TF_kernel_mode`); guest user mode otherwise.
    pub kernel_mode: bool,
    /// Machine address of the kernel L4 (`guest_table`).
    pub guest_table: u64,
    /// Machine address of the user L4 (`guest_table_user`), 0 when none.
    pub guest_table_user: u64,
    /// Stack for entering the kernel from user mode (`stack_switch`); `kernel_ss` has RPL 3.
    pub kernel_ss: u16,
    pub kernel_sp: u64,
    /// Virtual IDT and callbacks (`traps`).
    pub traps: crate::traps::TrapState,
    /// Machine address of this vCPU's `vcpu_info` (in shared_info until the guest registers
    /// its own with VCPUOP_register_vcpu_info).
    pub vcpu_info: u64,
    /// True once VCPUOP_register_vcpu_info moved `vcpu_info`.
    pub vcpu_info_registered: bool,
    /// Virtual CR0.TS (`fpu_taskswitch`, `clts`, `mov cr0`).
    pub virt_ts: bool,
    /// Guest-controlled CR4 bits (Xen `pv_fixup_guest_cr4`), as the guest last wrote them.
    pub virt_cr4: u64,
    /// Virtual I/O privilege level (PHYSDEVOP_set_iopl), 0..=3.
    pub iopl: u32,
    /// Virtual debug registers DR0-DR7 (`set_debugreg`); DR4/5 unused.
    pub dr: [u64; 8],
    /// DR7 enable bits of I/O breakpoints (emulated, never loaded into the real DR7).
    pub dr7_emul: u64,
    /// I/O permission bitmap (`PHYSDEVOP_set_iobitmap`): guest address and port count.
    pub iobitmap: (u64, u32),
    /// The guest's GDT (`set_gdt`, `desc`).
    pub gdt: crate::desc::GdtState,
    /// The LDT (`MMUEXT_SET_LDT`): guest linear address and entry count.
    pub ldt: (u64, u32),
    /// The LDT pages mapped so far (`desc::ldt`).
    pub ldt_shadow: crate::desc::ldt::LdtShadow,
    /// Emulator state (`emul`).
    pub emul: crate::emul::EmulState,
    /// Timers and runstate (`time`).
    pub time: crate::time::VcpuTime,
    /// `VCPUOP_send_nmi` raised an NMI for the guest's NMI callback (`traps` delivers it).
    pub nmi_pending: bool,
}

impl Vcpu {
    pub fn new(id: u32, guest_table: u64, vcpu_info: u64) -> Vcpu {
        Vcpu {
            id,
            kernel_mode: true,
            guest_table,
            guest_table_user: 0,
            kernel_ss: 0,
            kernel_sp: 0,
            traps: Default::default(),
            vcpu_info,
            vcpu_info_registered: false,
            virt_ts: false,
            virt_cr4: 0,
            iopl: 0,
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            dr7_emul: 0,
            iobitmap: (0, 0),
            gdt: Default::default(),
            ldt: (0, 0),
            ldt_shadow: Default::default(),
            emul: Default::default(),
            time: Default::default(),
            nmi_pending: false,
        }
    }

    /// The L4 the hardware uses now.
    pub fn current_cr3(&self) -> u64 {
        if self.kernel_mode {
            self.guest_table
        } else {
            self.guest_table_user
        }
    }
}
