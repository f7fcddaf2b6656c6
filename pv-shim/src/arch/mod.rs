//! The only place in the shim that touches the hardware: CPU set-up, entry points, the direct
//! map of machine memory, and the I/O-port door to the VMM. Everything else is safe Rust in the
//! crate's other modules, which this module drives.

pub mod apic;
pub mod desc;
pub mod entry;

use crate::guest::{GuestRegs, VECTOR_SYSCALL};
use crate::machine::Machine;
use crate::shim::{HoleEntries, Outcome, Shim};
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU64, Ordering};
use xen_abi::hostcall::{
    BootInfo, FatalReport, ShimStats, DIRECTMAP_BASE, FATAL_MODE_SHIM, HC_SHIM_PANIC, HOSTCALL_DATA_SIZE,
    HOSTCALL_PORT,
};
use xen_abi::hostcall::{EventMailbox, HostcallPage, DIRECT_DOORBELL_PORT, DOORBELL_PORT, MAILBOX_WORDS};
use xen_abi::Errno;
use zerocopy::{FromZeros, IntoBytes};

const MSR_EFER: u32 = 0xc000_0080;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SFMASK: u32 = 0xc000_0084;
use crate::machine::{MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE};
const MSR_PAT: u32 = 0x277;
const EFER_SCE: u64 = 1 << 0;
const EFER_NXE: u64 = 1 << 11;
/// RFLAGS bits SYSCALL clears: TF, IF, DF, IOPL, NT, AC.
const SYSCALL_MASK: u64 = 0x4_7700;

/// # Safety
/// `msr` must exist; the caller is ring 0.
unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the caller guarantees the MSR exists and we run in ring 0.
    unsafe { core::arch::asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32) };
}

/// # Safety
/// `msr` must exist; the caller is ring 0.
unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists and we run in ring 0.
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi) };
    (u64::from(hi) << 32) | u64::from(lo)
}

fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 has no side effects; the shim runs in ring 0.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) v, options(nomem, nostack)) };
    v
}

fn read_cr3() -> u64 {
    let v;
    // SAFETY: reading CR3 has no side effects; the shim runs in ring 0.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack)) };
    v
}

/// # Safety
/// `v` must be the root of page tables that map the shim (its hole slots are present).
unsafe fn write_cr3(v: u64) {
    // SAFETY: the caller guarantees the new tables map the shim itself.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) v, options(nostack)) };
}

/// Stops this vCPU for good: the VMM has been told why and will not run it again.
fn halt_forever() -> ! {
    loop {
        // SAFETY: cli/hlt in ring 0 only stop this vCPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Hardware interrupts taken while the shim itself waited in `hlt` (ring 0); they only
/// wake the waiter, which then polls every source.
static RING0_IRQS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Machine memory through the direct map, the hostcall port, the mailbox, and the CPU.
pub struct ArchMachine {
    max_maddr: u64,
    hostcall: *mut HostcallPage,
    stats: *mut ShimStats,
    mailbox: *mut EventMailbox,
    frame_table: *mut u64,
    frame_table_len: u64,
}

fn directmap<T>(maddr: u64) -> *mut T {
    (DIRECTMAP_BASE + maddr) as *mut T
}

impl ArchMachine {
    fn new(b: &BootInfo) -> ArchMachine {
        ArchMachine {
            max_maddr: b.max_mfn << 12,
            hostcall: directmap(b.hostcall_mfn[0] << 12),
            stats: directmap(b.stats_mfn << 12),
            mailbox: directmap(b.mailbox_mfn << 12),
            frame_table: directmap(b.frame_table.first_mfn << 12),
            frame_table_len: b.max_mfn.min(b.frame_table.nr_frames * 512),
        }
    }

    fn check(&self, maddr: u64, len: usize) -> Result<(), Errno> {
        match maddr.checked_add(len as u64) {
            Some(end) if end <= self.max_maddr => Ok(()),
            _ => Err(Errno::EFAULT),
        }
    }
}

impl Machine for ArchMachine {
    fn read_phys(&self, maddr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.check(maddr, buf.len())?;
        // SAFETY: the range lies inside machine memory, which the direct map covers; the copy
        // goes into a buffer we own, so a concurrent writer can only change the values read.
        unsafe { core::ptr::copy_nonoverlapping(directmap::<u8>(maddr), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write_phys(&mut self, maddr: u64, buf: &[u8]) -> Result<(), Errno> {
        self.check(maddr, buf.len())?;
        // SAFETY: as in read_phys; the destination is machine memory, not shim data.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), directmap::<u8>(maddr), buf.len()) };
        Ok(())
    }

    fn hostcall(&mut self, nr: u32, args: [u64; 5], data: &[u8]) -> i64 {
        let n = data.len().min(HOSTCALL_DATA_SIZE);
        let p = self.hostcall;
        // SAFETY: `p` is this vCPU's hostcall page in the direct map, owned by the shim; the
        // VMM only reads it while this vCPU is stopped in the `out` below.
        unsafe {
            addr_of_mut!((*p).nr).write_volatile(nr);
            addr_of_mut!((*p).args).write_volatile(args);
            core::ptr::copy_nonoverlapping(data.as_ptr(), addr_of_mut!((*p).data) as *mut u8, n);
            core::arch::asm!("out dx, eax", in("dx") HOSTCALL_PORT, in("eax") 0u32, options(nostack));
            addr_of!((*p).ret).read_volatile()
        }
    }

    fn stats(&mut self) -> &mut ShimStats {
        // SAFETY: the stats page belongs to the shim; the VMM reads it only once the VM stopped.
        unsafe { &mut *self.stats }
    }

    fn notify_host(&mut self, port: u32) -> bool {
        let (w, bit) = ((port / 64) as usize % MAILBOX_WORDS, port % 64);
        // SAFETY: the mailbox page is shim memory shared only with the VMM, which uses atomic
        // operations on the same words; AtomicU64 has the layout of u64 and the page is aligned.
        unsafe {
            let direct = &*(addr_of_mut!((*self.mailbox).direct[w]) as *const AtomicU64);
            if direct.load(Ordering::Acquire) & (1 << bit) != 0 {
                // The port has its own ioeventfd (datamatch = port): one write wakes the thread
                // that serves it. Every send rings; the ring protocols' event indices keep
                // these rare.
                core::arch::asm!("out dx, eax", in("dx") DIRECT_DOORBELL_PORT, in("eax") port, options(nostack, nomem));
                return true;
            }
            let word = &*(addr_of_mut!((*self.mailbox).to_host[w]) as *const AtomicU64);
            // A word that already had a bit set was rung for, and the VMM has not taken it
            // yet (taking swaps the word to 0): it will see this bit too.
            let ring = word.fetch_or(1 << bit, Ordering::SeqCst) == 0;
            if ring {
                core::arch::asm!("out dx, al", in("dx") DOORBELL_PORT, in("al") 0u8, options(nostack, nomem));
            }
            ring
        }
    }

    fn take_host_events(&mut self, word: usize) -> u64 {
        if word >= MAILBOX_WORDS {
            return 0;
        }
        // SAFETY: as in notify_host.
        unsafe {
            let w = &*(addr_of_mut!((*self.mailbox).to_guest[word]) as *const AtomicU64);
            if w.load(Ordering::Relaxed) == 0 {
                return 0;
            }
            w.swap(0, Ordering::SeqCst)
        }
    }

    fn rdtsc(&self) -> u64 {
        // SAFETY: rdtsc has no side effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    fn arm_timer(&mut self, ticks: Option<u32>) {
        apic::arm(ticks);
    }

    fn timer_running(&self) -> bool {
        apic::running()
    }

    fn wait_for_interrupt(&mut self) {
        let before = RING0_IRQS.load(Ordering::Relaxed);
        // SAFETY: interrupts are taken on the shim stack by `trap_common`, which only
        // acknowledges them when they arrive in ring 0 (see shim_trap); `sti` delays
        // recognition until after `hlt`, so no wake-up is lost between the two.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        let taken = RING0_IRQS.load(Ordering::Relaxed).wrapping_sub(before);
        self.stats().interrupts[2] += taken;
    }

    fn read_msr(&self, msr: u32) -> u64 {
        // SAFETY: the trait contract limits `msr` to MSRs that exist.
        unsafe { rdmsr(msr) }
    }

    fn write_msr(&mut self, msr: u32, v: u64) {
        // SAFETY: the caller validated the value (trait contract); the MSRs allowed here
        // only hold guest state.
        unsafe { wrmsr(msr, v) }
    }

    fn load_user_gs_selector(&mut self, sel: u16) {
        let sel = if desc::loadable_ring3_data_selector(sel) { sel } else { 0 };
        // SAFETY: the selector is null or a present DPL-3 data/readable-code descriptor, so
        // the load cannot fault; the swapgs pair leaves the kernel GS active again.
        unsafe { core::arch::asm!("swapgs", "mov gs, {0:x}", "swapgs", in(reg) sel, options(nostack)) };
    }

    fn swapgs(&mut self) {
        // SAFETY: the shim never uses GS itself; both bases are guest state.
        unsafe { core::arch::asm!("swapgs", options(nomem, nostack)) };
    }

    fn load_cr3(&mut self, cr3: u64) {
        // SAFETY: the trait contract: the table has the shim's hypervisor slots installed.
        unsafe { write_cr3(cr3) };
    }

    fn flush_tlb(&mut self) {
        // SAFETY: reloading CR3 with its own value only flushes the TLB (CR4.PGE is off).
        unsafe { write_cr3(read_cr3()) };
    }

    fn set_cr0_ts(&mut self, ts: bool) {
        // SAFETY: CR0.TS only affects FPU/SSE use, which the shim (soft-float) never makes.
        unsafe {
            if ts {
                let cr0: u64;
                core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
                core::arch::asm!("mov cr0, {}", in(reg) cr0 | 8, options(nostack));
            } else {
                core::arch::asm!("clts", options(nomem, nostack));
            }
        }
    }

    fn read_cr0(&self) -> u64 {
        let v;
        // SAFETY: reading CR0 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr0", out(reg) v, options(nomem, nostack)) };
        v
    }

    fn read_cr4(&self) -> u64 {
        let v;
        // SAFETY: reading CR4 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr4", out(reg) v, options(nomem, nostack)) };
        v
    }

    fn write_cr4(&mut self, v: u64) {
        // SAFETY: the emulator only changes the bits Xen lets a PV guest control
        // (OSXSAVE, TSD, DE); the shim depends on none of them.
        unsafe { core::arch::asm!("mov cr4, {}", in(reg) v, options(nostack)) };
    }

    fn xsetbv(&mut self, index: u32, v: u64) -> Result<(), Errno> {
        // SAFETY: the caller validated `v` against the CPU's XCR0 rules (trait contract) and
        // CR4.OSXSAVE is set before any caller reaches here.
        unsafe {
            core::arch::asm!("xsetbv", in("ecx") index, in("eax") v as u32, in("edx") (v >> 32) as u32,
                options(nomem, nostack))
        };
        Ok(())
    }

    fn xgetbv(&self, index: u32) -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: callers only ask with CR4.OSXSAVE set and index 0 or 1.
        unsafe {
            core::arch::asm!("xgetbv", in("ecx") index, out("eax") lo, out("edx") hi, options(nomem, nostack))
        };
        (u64::from(hi) << 32) | u64::from(lo)
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    fn write_dr(&mut self, n: u32, v: u64) {
        // SAFETY: the caller validated the value; debug registers only affect the guest's
        // own breakpoints (the shim never sets any).
        unsafe {
            match n {
                0 => core::arch::asm!("mov dr0, {}", in(reg) v, options(nomem, nostack)),
                1 => core::arch::asm!("mov dr1, {}", in(reg) v, options(nomem, nostack)),
                2 => core::arch::asm!("mov dr2, {}", in(reg) v, options(nomem, nostack)),
                3 => core::arch::asm!("mov dr3, {}", in(reg) v, options(nomem, nostack)),
                6 => core::arch::asm!("mov dr6, {}", in(reg) v, options(nomem, nostack)),
                7 => core::arch::asm!("mov dr7, {}", in(reg) v, options(nomem, nostack)),
                _ => {}
            }
        }
    }

    fn read_dr(&self, n: u32) -> u64 {
        let v: u64;
        // SAFETY: reading debug registers has no side effects.
        unsafe {
            match n {
                0 => core::arch::asm!("mov {}, dr0", out(reg) v, options(nomem, nostack)),
                1 => core::arch::asm!("mov {}, dr1", out(reg) v, options(nomem, nostack)),
                2 => core::arch::asm!("mov {}, dr2", out(reg) v, options(nomem, nostack)),
                3 => core::arch::asm!("mov {}, dr3", out(reg) v, options(nomem, nostack)),
                6 => core::arch::asm!("mov {}, dr6", out(reg) v, options(nomem, nostack)),
                7 => core::arch::asm!("mov {}, dr7", out(reg) v, options(nomem, nostack)),
                _ => v = 0,
            }
        }
        v
    }

    fn wbinvd(&mut self) {
        // SAFETY: write-back and invalidate has no effect on program state.
        unsafe { core::arch::asm!("wbinvd", options(nostack)) };
    }

    fn invlpg(&mut self, va: u64) {
        // SAFETY: dropping a TLB entry only costs a later page walk.
        unsafe { core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack)) };
    }

    fn write_gdt(&mut self, first: usize, descs: &[u64]) {
        desc::write_guest_gdt(first, descs);
    }

    fn read_gdt(&self, index: usize) -> u64 {
        desc::read_guest_gdt(index)
    }

    fn write_ldt(&mut self, first: usize, descs: &[u64]) {
        desc::write_guest_ldt(first, descs);
    }

    fn read_ldt(&self, index: usize) -> u64 {
        desc::read_guest_ldt(index)
    }

    fn load_ldt(&mut self, ents: u32) {
        desc::load_ldt(ents);
    }

    fn loaded_ldt_ents(&self) -> u32 {
        desc::loaded_ldt_ents()
    }

    fn frame_info(&self, mfn: u64) -> u64 {
        if mfn >= self.frame_table_len {
            return 0;
        }
        // SAFETY: the VMM gave the shim `frame_table_len` words of private memory, inside the
        // direct map; single vCPU, so nothing else writes them.
        unsafe { self.frame_table.add(mfn as usize).read() }
    }

    fn set_frame_info(&mut self, mfn: u64, v: u64) {
        if mfn < self.frame_table_len {
            // SAFETY: as in frame_info.
            unsafe { self.frame_table.add(mfn as usize).write(v) }
        }
    }
}

/// The one domain this shim runs. Single vCPU: only the boot path and `shim_trap` (which runs
/// with interrupts off) touch it.
static mut SHIM: Option<Shim<ArchMachine>> = None;
/// Where panics are reported before `SHIM` exists.
static mut PANIC_PAGE: *mut HostcallPage = core::ptr::null_mut();

/// Called by `shim_entry` on the shim stack with `rdi` = the direct-map address of `BootInfo`.
#[unsafe(no_mangle)]
extern "C" fn shim_start(boot_va: u64) -> ! {
    // SAFETY: the VMM placed a BootInfo at `boot_va` inside the direct map; we copy it once.
    let boot: BootInfo = unsafe { core::ptr::read_unaligned(boot_va as *const BootInfo) };
    // SAFETY: single-threaded boot; the page is only used for reporting.
    unsafe { PANIC_PAGE = directmap(boot.hostcall_mfn[0] << 12) };
    // SAFETY: boot CPU, once, before the guest runs.
    unsafe { desc::init() };
    apic::init();
    // SAFETY: architectural MSRs of every x86_64 CPU; ring 0.
    unsafe {
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE | EFER_NXE);
        wrmsr(
            MSR_STAR,
            (u64::from(xen_abi::xen::FLAT_RING3_CS32) << 48) | (u64::from(desc::HYPERVISOR_CS) << 32),
        );
        wrmsr(MSR_LSTAR, entry::syscall_entry as *const () as u64);
        wrmsr(MSR_CSTAR, entry::syscall_entry as *const () as u64);
        wrmsr(MSR_SFMASK, SYSCALL_MASK);
        wrmsr(MSR_PAT, xen_abi::xen::XEN_MSR_PAT);
        wrmsr(MSR_FS_BASE, 0);
        wrmsr(MSR_GS_BASE, 0);
        wrmsr(MSR_KERNEL_GS_BASE, 0);
    }

    let m = ArchMachine::new(&boot);
    let mut shim = match Shim::new(m, boot) {
        Ok(s) => s,
        Err(e) => panic!("bad boot information from the VMM: {e:?}"),
    };
    // The shim's own hypervisor-hole entries, to be written into every guest L4.
    let mut hole: HoleEntries = [0; 16];
    let own_l4 = read_cr3() & crate::mm::PADDR_MASK;
    for (i, e) in hole.iter_mut().enumerate() {
        *e = shim.m.read_u64(own_l4 + 8 * (xen_abi::xen::HYPERVISOR_L4_FIRST + i) as u64).unwrap_or(0);
    }
    let frame = match shim.boot_domain(&hole) {
        Ok(f) => f,
        Err(e) => {
            let regs = GuestRegs::default();
            shim.crash_domain(
                &regs,
                0,
                xen_abi::hostcall::FATAL_NO_VECTOR,
                format_args!("initial page tables refused: {e:?}"),
            );
            halt_forever();
        }
    };
    let cr3 = shim.vcpu.guest_table;
    // SAFETY: single-threaded boot; from here on only shim_trap uses SHIM.
    unsafe { *addr_of_mut!(SHIM) = Some(shim) };
    // SAFETY: adopt_initial_tables installed the shim's hole entries into this L4, so the
    // shim stays mapped; the frame is a valid ring-3 return frame built by boot_domain.
    unsafe {
        write_cr3(cr3);
        entry::enter_frame(&frame)
    }
}

/// Every trap and SYSCALL from `trap_common`, with interrupts off, on the shim stack.
#[unsafe(no_mangle)]
extern "C" fn shim_trap(regs: &mut GuestRegs) {
    if !regs.from_guest() {
        if regs.vector >= 32 && regs.vector != VECTOR_SYSCALL {
            // An interrupt that woke `wait_for_interrupt`: acknowledge it; the waiter polls.
            apic::eoi(regs.vector);
            RING0_IRQS.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if matches!(regs.vector, 11..=13) && regs.rip == entry::guest_iretq as *const () as u64 {
            return bad_iret(regs);
        }
        panic!(
            "{} in the shim at rip {:#x}, error {:#x}, cr2 {:#x}",
            crate::shim::exception_name(regs.vector as u32),
            regs.rip,
            regs.error_code,
            read_cr2()
        );
    }
    // SAFETY: one vCPU, interrupts off, and the ring-0 path above never gets here: nothing
    // else holds a reference to SHIM.
    let shim = match unsafe { (*addr_of_mut!(SHIM)).as_mut() } {
        Some(s) => s,
        None => panic!("trap {} before the domain started, rip {:#x}", regs.vector, regs.rip),
    };
    let cr2 = if regs.vector == 14 { read_cr2() } else { 0 };
    if regs.vector >= 32 && regs.vector != VECTOR_SYSCALL {
        apic::eoi(regs.vector);
    }
    if shim.entry(regs, cr2) == Outcome::Dead {
        halt_forever();
    }
}

/// The CPU refused the frame `return_to_guest` gave to `iretq` (a bad CS/SS or RIP from the
/// guest's `iret`): hand the guest its failsafe callback instead, as Xen does. `regs` is the
/// fault's frame; its general registers are the guest's (already popped), and `regs.rsp`
/// points at the refused hardware frame.
fn bad_iret(regs: &mut GuestRegs) {
    // SAFETY: regs.rsp points at the 5-word iretq frame on the shim stack that
    // `return_to_guest` just tried to use; it is intact (the fault pushed below it).
    let f = unsafe { core::ptr::read(regs.rsp as *const [u64; 5]) };
    if f[1] & 3 != 3 {
        panic!("iretq to ring {} refused at {:#x}", f[1] & 3, f[0]);
    }
    // SAFETY: this shim_trap call is the only user of SHIM now: the previous one returned
    // before `return_to_guest` ran.
    let Some(shim) = (unsafe { (*addr_of_mut!(SHIM)).as_mut() }) else {
        panic!("bad guest frame before the domain started");
    };
    let mut g = GuestRegs { rip: f[0], cs: f[1], rflags: f[2], rsp: f[3], ss: f[4], vector: 13, ..*regs };
    let sel: [u16; 4];
    // SAFETY: reading segment selectors has no side effects.
    unsafe {
        let (ds, es, fs, gs): (u16, u16, u16, u16);
        core::arch::asm!("mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, options(nomem, nostack));
        sel = [ds, es, fs, gs];
    }
    if shim.failsafe(&mut g, sel) == Outcome::Dead {
        halt_forever();
    }
    *regs = g;
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut r = FatalReport::new_zeroed();
    r.vector = xen_abi::hostcall::FATAL_NO_VECTOR;
    r.mode = FATAL_MODE_SHIM;
    let mut w = crate::console::ByteWriter::new(&mut r.message);
    let _ = core::fmt::write(&mut w, format_args!("{}", info.message()));
    if let Some(l) = info.location() {
        let _ = core::fmt::write(&mut w, format_args!(" at {}:{}", l.file(), l.line()));
    }
    // SAFETY: PANIC_PAGE is null or this vCPU's hostcall page; we are about to halt for good.
    unsafe {
        let p = PANIC_PAGE;
        if !p.is_null() {
            let bytes = r.as_bytes();
            addr_of_mut!((*p).nr).write_volatile(HC_SHIM_PANIC);
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr_of_mut!((*p).data) as *mut u8, bytes.len());
            core::arch::asm!("out dx, eax", in("dx") HOSTCALL_PORT, in("eax") 0u32, options(nostack));
        }
    }
    halt_forever()
}

// The shim state is built on the boot stack before it moves into `SHIM` (Rust may not
// construct it in place): it must leave most of that stack free.
const _: () = assert!(core::mem::size_of::<Shim<ArchMachine>>() <= entry::STACK_SIZE / 4);
