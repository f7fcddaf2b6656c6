//! The embedding API: configure a domain, run it, learn how it ended.
//!
//! ```no_run
//! use vmm::{Domain, DomainConfig};
//! let mut cfg = DomainConfig::new(std::path::PathBuf::from("vmlinuz"));
//! cfg.mem_bytes = 512 << 20;
//! let domain = Domain::new(&cfg)?;
//! let report = domain.run(&mut std::io::stdout())?;
//! println!("guest ended: {} (exit code {})", report.exit, report.exit.exit_code());
//! # Ok::<(), vmm::Error>(())
//! ```

use crate::block::{self, BlockContext, Vbd};
use crate::builder::{self, DomainSpec};
use crate::config::DomainConfig;
use crate::events::{
    self, Backends, ConsoleInput, EventError, Ports, RingPages, CONSOLE_INPUT_QUEUE, HOST_PORTS,
};
use crate::kvm::interrupt::StopState;
use crate::kvm::{self, EventFds, Vm};
use crate::memory::Layout;
use crate::shim::{self, PlacedShim, ShimImage};
use crate::stats::{DiskStats, ExitCounts, Stats};
use crate::vcpu::VcpuRunner;
use crate::Error;
use devices::block::backend::BlkStats;
use devices::block::disk::Disk;
use devices::grant::GrantTable;
use devices::xenbus::Xenbus;
use devices::xenstore::{self, DomainEntries, Quota, Store};
use kvm_ioctls::VcpuFd;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use xen_abi::hostcall::{CpuRegs, ShimStats};
use xen_abi::sched::*;
use zerocopy::FromBytes;

pub use crate::events::{CONSOLE_EVTCHN, STORE_EVTCHN};

/// Which guest context was running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMode {
    Kernel,
    User,
    /// The shim itself (a xenvmm bug).
    Shim,
}

/// Why the shim killed the domain: an exception the guest had no handler for, or a boot state
/// it refused. Carries the guest's registers.
#[derive(Clone, Debug)]
pub struct Fault {
    pub vector: Option<u32>,
    pub mode: GuestMode,
    pub error_code: u64,
    pub regs: CpuRegs,
    pub message: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.regs;
        let mode = match self.mode {
            GuestMode::Kernel => "guest kernel",
            GuestMode::User => "guest user",
            GuestMode::Shim => "shim",
        };
        writeln!(f, "{} (in {mode} mode, error code {:#x})", self.message, self.error_code)?;
        writeln!(f, "  rip {:016x}  rsp {:016x}  rflags {:016x}", r.rip, r.rsp, r.rflags)?;
        writeln!(f, "  cs  {:016x}  ss  {:016x}  cr2 {:016x}  cr3 {:016x}", r.cs, r.ss, r.cr2, r.cr3)?;
        writeln!(f, "  rax {:016x}  rbx {:016x}  rcx {:016x}  rdx {:016x}", r.rax, r.rbx, r.rcx, r.rdx)?;
        writeln!(f, "  rsi {:016x}  rdi {:016x}  rbp {:016x}  r8  {:016x}", r.rsi, r.rdi, r.rbp, r.r8)?;
        writeln!(f, "  r9  {:016x}  r10 {:016x}  r11 {:016x}  r12 {:016x}", r.r9, r.r10, r.r11, r.r12)?;
        write!(f, "  r13 {:016x}  r14 {:016x}  r15 {:016x}", r.r13, r.r14, r.r15)
    }
}

/// How a domain ended.
#[derive(Clone, Debug)]
pub enum ExitReason {
    /// SCHEDOP_shutdown with SHUTDOWN_poweroff.
    Poweroff,
    Reboot,
    /// SHUTDOWN_suspend: xenvmm cannot save or resume a domain yet, so it ends.
    Suspend,
    /// SHUTDOWN_crash: the guest kernel panicked.
    Crash,
    Watchdog,
    SoftReset,
    /// A shutdown reason Xen does not define.
    OtherShutdown(u32),
    /// The shim killed the domain (Xen's `domain_crash`): an unhandled exception.
    Faulted(Box<Fault>),
    /// The host stopped the domain before it shut down ([`DomainControl::stop`]).
    Stopped,
}

impl ExitReason {
    pub(crate) fn from_shutdown(reason: u32) -> ExitReason {
        match reason {
            SHUTDOWN_POWEROFF => ExitReason::Poweroff,
            SHUTDOWN_REBOOT => ExitReason::Reboot,
            SHUTDOWN_SUSPEND => ExitReason::Suspend,
            SHUTDOWN_CRASH => ExitReason::Crash,
            SHUTDOWN_WATCHDOG => ExitReason::Watchdog,
            SHUTDOWN_SOFT_RESET => ExitReason::SoftReset,
            r => ExitReason::OtherShutdown(r),
        }
    }

    /// The `xenvmm` process exit status for this ending (documented in the README):
    /// 0 poweroff, 3 reboot, 4 crash, 5 faulted, 6 watchdog, 7 suspend, 8 soft reset,
    /// 9 unknown reason, 10 stopped by the host. (1 is a xenvmm error, 2 a command-line
    /// error.)
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::Poweroff => 0,
            ExitReason::Reboot => 3,
            ExitReason::Crash => 4,
            ExitReason::Faulted(_) => 5,
            ExitReason::Watchdog => 6,
            ExitReason::Suspend => 7,
            ExitReason::SoftReset => 8,
            ExitReason::OtherShutdown(_) => 9,
            ExitReason::Stopped => 10,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Poweroff => write!(f, "powered off"),
            ExitReason::Reboot => write!(f, "asked to reboot"),
            ExitReason::Suspend => write!(f, "suspended (xenvmm cannot resume a domain yet)"),
            ExitReason::Crash => write!(f, "crashed (the guest reported a crash)"),
            ExitReason::Watchdog => write!(f, "stopped by its watchdog"),
            ExitReason::SoftReset => write!(f, "asked for a soft reset (not supported yet)"),
            ExitReason::OtherShutdown(r) => write!(f, "shut down with unknown reason {r}"),
            ExitReason::Faulted(x) => write!(f, "faulted: {}", x.message),
            ExitReason::Stopped => write!(f, "was stopped by the host before it shut down"),
        }
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct RunReport {
    pub exit: ExitReason,
    pub stats: Stats,
    /// The last few KiB of console output (for a crash report when the console went to a
    /// place nobody watches).
    pub console_tail: Vec<u8>,
}

/// A PV domain, built and ready to run.
pub struct Domain {
    // Field order matters for drop: the vCPU and VM go before the memory they map.
    vcpu: VcpuFd,
    _vm: Vm,
    events: EventFds,
    mem: GuestMemoryMmap,
    placed: PlacedShim,
    /// The PV console and xenstore ring pages.
    rings: RingPages,
    store: Arc<Mutex<Store>>,
    /// Written when another thread left work for the event thread (store changes, input).
    kick: Arc<EventFd>,
    input: ConsoleInput,
    stop: Arc<StopState>,
    /// Where to serve the store to dom0 tools while the domain runs.
    xenstore_socket: Option<std::path::PathBuf>,
    /// The disks, opened and locked, in `xvda` order.
    disks: Vec<Disk>,
    kvm_stats: Option<std::fs::File>,
    started: Instant,
    setup_done: Instant,
    /// The host mapping behind `mem`: declared last, so unmapped after the VM and `mem`.
    _ram: crate::memory::huge::RamMapping,
}

fn load(what: &'static str, src: &crate::config::ImageSource) -> Result<Arc<[u8]>, Error> {
    src.load().map_err(|source| Error::ReadImage { what, path: src.describe(), source })
}

/// Requests to a running domain from other threads, as a toolstack makes them through
/// xenstore. Cheap to clone; stays valid after the domain ended (requests then do nothing).
#[derive(Clone)]
pub struct DomainControl {
    store: Arc<Mutex<Store>>,
    kick: Arc<EventFd>,
    input: ConsoleInput,
    stop: Arc<StopState>,
}

/// What `control/shutdown` asks of the guest (libxl's `xl shutdown` / `xl reboot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownRequest {
    Poweroff,
    Reboot,
    Halt,
}

impl DomainControl {
    /// Asks the guest to shut down: writes `control/shutdown`, which a Linux guest watches
    /// (it acknowledges by clearing it, then shuts down in an orderly way). The guest may
    /// ignore it; callers that must stop it use a deadline and then drop the run.
    pub fn request_shutdown(&self, what: ShutdownRequest) {
        let value: &[u8] = match what {
            ShutdownRequest::Poweroff => b"poweroff",
            ShutdownRequest::Reboot => b"reboot",
            ShutdownRequest::Halt => b"halt",
        };
        let path = format!("{}/control/shutdown", xenstore::path::domain_path(shim::GUEST_DOMID));
        {
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = store.host_write(&path, value) {
                log::warn!("cannot write {path}: {e:?}");
            }
        }
        self.kick_store();
    }

    /// Whether the guest said it acts on `control/shutdown = poweroff` (Linux writes
    /// `control/feature-poweroff = 1` once its xenbus is up).
    pub fn guest_can_power_off(&self) -> bool {
        let path = format!("{}/control/feature-poweroff\0", xenstore::path::domain_path(shim::GUEST_DOMID));
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        store.host(xen_abi::io::xs_wire::XS_READ, path.as_bytes()).is_ok_and(|v| v == b"1")
    }

    /// The store shared with the guest's xenstore connection. Whoever changes it must call
    /// [`Self::kick_store`] afterwards so that the guest's watch events are delivered.
    pub fn store(&self) -> Arc<Mutex<Store>> {
        self.store.clone()
    }

    /// Tells the event thread the store changed.
    pub fn kick_store(&self) {
        // Fails only when the counter is full, and then a wake-up is pending anyway.
        let _ = self.kick.write(1);
    }

    /// Queues keyboard input for the guest's console (`hvc0`). Returns how many bytes were
    /// taken: fewer than given when [`CONSOLE_INPUT_QUEUE`] bytes already wait because the
    /// guest is not reading; the caller retries the rest later.
    pub fn console_input(&self, bytes: &[u8]) -> usize {
        let n = {
            let mut q = self.input.lock().unwrap_or_else(|e| e.into_inner());
            let n = bytes.len().min(CONSOLE_INPUT_QUEUE.saturating_sub(q.len()));
            q.extend(&bytes[..n]);
            n
        };
        if n > 0 {
            self.kick_store();
        }
        n
    }

    /// Stops the domain now, without asking the guest ([`ExitReason::Stopped`]): interrupts
    /// the vCPU and waits up to `wait` for its run loop to end. Returns whether it ended.
    /// Before the run starts, the run then ends at once.
    pub fn stop(&self, wait: std::time::Duration) -> bool {
        self.stop.stop(wait)
    }
}

impl Domain {
    /// A handle for requests to the domain while it runs (shutdown, the store).
    pub fn control(&self) -> DomainControl {
        DomainControl {
            store: self.store.clone(),
            kick: self.kick.clone(),
            input: self.input.clone(),
            stop: self.stop.clone(),
        }
    }

    /// Checks the configuration and images, opens KVM, and builds the domain: memory, shim,
    /// start-of-day layout, vCPU 0. Nothing runs yet.
    pub fn new(cfg: &DomainConfig) -> Result<Domain, Error> {
        let started = Instant::now();
        if cfg.vcpus != 1 {
            return Err(Error::Config(format!(
                "{} vCPUs asked for, but xenvmm runs 1 vCPU per domain until SMP support lands; use --cpus 1",
                cfg.vcpus
            )));
        }
        if !cfg.mem_bytes.is_multiple_of(4096)
            || cfg.mem_bytes < (16 << 20)
            || cfg.mem_bytes > crate::config::MAX_MEM_BYTES
        {
            return Err(Error::Config(format!(
                "memory size {} bytes is out of range (16 MiB to 256 GiB, whole pages)",
                cfg.mem_bytes
            )));
        }
        if cfg.disks.len() > crate::config::MAX_DISKS {
            return Err(Error::Config(format!(
                "{} disks asked for; a domain gets at most {} (xvda to xvdz)",
                cfg.disks.len(),
                crate::config::MAX_DISKS
            )));
        }
        // Images first: a wrong file is reported the same way with or without KVM.
        let kernel = load("kernel", &cfg.kernel)?;
        let unpacked = builder::unpack_kernel(&kernel)
            .map_err(|source| Error::Kernel { path: cfg.kernel.describe(), source })?;
        let initrd = cfg.initrd.as_ref().map(|s| load("initrd", s)).transpose()?;
        // Opened (and locked) before anything else is set up; nothing is written to them
        // until the guest writes.
        let disks = cfg.disks.iter().map(Disk::open).collect::<Result<Vec<_>, _>>()?;

        let kvm = kvm::open()?;
        let img = ShimImage::parse(shim::SHIM_ELF)?;
        let layout = Layout::plan(cfg.mem_bytes, img.frames(), shim::fixed_frames(cfg.vcpus))?;
        let (mem, ram) = layout.map_ram()?;
        let mut alloc = layout.shim_frames();
        let mut placed = shim::place(&mem, &layout, &img, &mut alloc, cfg.vcpus)?;

        let spec = DomainSpec {
            kernel: &kernel,
            initrd: initrd.as_deref(),
            cmdline: &cfg.cmdline,
            shared_info_mfn: placed.shared_info_mfn,
            store_evtchn: STORE_EVTCHN,
            console_evtchn: CONSOLE_EVTCHN,
        };
        let built = builder::build_domain_unpacked(&mem, &layout.p2m, &spec, &unpacked)
            .map_err(|source| Error::Kernel { path: cfg.kernel.describe(), source })?;

        let mut store = Store::new(Quota::default());
        xenstore::introduce(
            &mut store,
            &DomainEntries {
                domid: shim::GUEST_DOMID,
                name: cfg.name.clone(),
                mem_kib: cfg.mem_bytes >> 10,
                vcpus: cfg.vcpus,
            },
        )
        .map_err(|e| Error::Config(format!("cannot write the domain's xenstore entries: {e:?}")))?;
        let store = Arc::new(Mutex::new(store));
        let kick = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Events(EventError::Spawn(e)))?;

        let vm = Vm::new(kvm, &mem)?;
        let events = vm.connect_events()?;
        for (port, remote, _) in HOST_PORTS {
            placed.bind_host_port(port, remote)?;
        }
        let vcpu = vm.create_vcpu(0, placed.entry, placed.boot_info_va(), placed.l4_gpa)?;
        let tsc_khz = vcpu.get_tsc_khz().map(u64::from).unwrap_or(0);
        placed.write_boot_info(
            &mem,
            built.l4_mfn,
            built.entry,
            built.stack_top,
            built.start_info_va,
            tsc_khz,
        )?;
        let kvm_stats = kvm::stats::open(&vcpu);
        Ok(Domain {
            vcpu,
            _vm: vm,
            events,
            mem,
            placed,
            rings: RingPages { console: built.console_mfn << 12, store: built.store_mfn << 12 },
            store,
            kick: Arc::new(kick),
            input: ConsoleInput::default(),
            stop: Arc::default(),
            xenstore_socket: cfg.xenstore_socket.clone(),
            disks,
            kvm_stats,
            started,
            setup_done: Instant::now(),
            _ram: ram,
        })
    }

    /// Runs the domain to its end, writing its console output to `console`: what the guest
    /// writes to its PV console ring (`hvc0`) and with `console_io`, in the order the guest
    /// wrote it. The vCPU runs on the calling thread; an event thread started here serves the
    /// guest's event-channel notifications (the console ring) and writes to `console` too,
    /// never at the same time.
    pub fn run(mut self, console: &mut (dyn Write + Send)) -> Result<RunReport, Error> {
        let exit_evt = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Events(EventError::Spawn(e)))?;
        // Dom0 tools on the socket: after their requests the event thread re-serves the ring
        // (a kick), and after the guest's requests it wakes the server for their watch events.
        // Dropped (stopped, socket removed) when `run` returns.
        let xs_server = match &self.xenstore_socket {
            Some(path) => {
                let kick = self.kick.clone();
                Some(devices::xenstore::socket::Server::start(path, self.store.clone(), move || {
                    let _ = kick.write(1);
                })?)
            }
            None => None,
        };
        let ports = Ports::new(&self.mem, self.placed.mailbox_gpa, &self.events.irq, Some(&self._vm));
        let backends = Backends::new(
            &self.mem,
            &ports,
            self.rings,
            console,
            events::Shared { store: self.store.clone(), domid: shim::GUEST_DOMID, input: self.input.clone() },
        )
        .with_store_waker(xs_server.as_ref().map(|s| s.waker()));
        let block = BlockContext {
            mem: &self.mem,
            ports: &ports,
            grants: Arc::new(Mutex::new(GrantTable::new(self.placed.grant_frames, self.placed.ram()))),
        };
        // Each disk's counters, summed over its rings and connections.
        let disk_stats: Vec<Arc<Mutex<BlkStats>>> = self.disks.iter().map(|_| Arc::default()).collect();
        let mut exits = ExitCounts::default();
        let run_start = Instant::now();
        let disks = &self.disks;
        let store = &self.store;
        let (result, served) = std::thread::scope(|s| {
            // The devices' xenstore directories exist before the guest looks for them.
            let mut xenbus = {
                let mut st = store.lock().unwrap_or_else(|e| e.into_inner());
                let mut xb = Xenbus::new(&mut st, shim::GUEST_DOMID);
                for (i, disk) in disks.iter().enumerate() {
                    let name = block::disk_name(i);
                    let vbd = Vbd::new(s, &block, disk, name.clone(), disk_stats[i].clone());
                    let added = xb.add(&mut st, block::device_spec(i, disk), Box::new(vbd));
                    if let Err(e) = added {
                        return (Err(Error::Config(format!("cannot add {name}: {e}"))), Ok(()));
                    }
                }
                xb
            };
            let (backends, exit_evt) = (&backends, &exit_evt);
            let (doorbell, kick) = (&self.events.doorbell, &self.kick);
            let thread =
                std::thread::Builder::new().name("xenvmm-events".into()).spawn_scoped(s, move || {
                    events::event_loop(backends, doorbell, exit_evt, kick, Some(&mut xenbus))
                });
            let thread = match thread {
                Ok(t) => t,
                Err(e) => return (Err(Error::Events(EventError::Spawn(e))), Ok(())),
            };
            let result = VcpuRunner {
                vcpu: &mut self.vcpu,
                mem: &self.mem,
                hostcall_gpa: self.placed.hostcall_gpa[0],
                backends,
                exits: &mut exits,
                ram: self.placed.ram(),
                stop: &self.stop,
            }
            .run();
            // If this write failed the thread would never stop and the scope would hang; an
            // eventfd write only fails when its counter is full, which one write cannot do.
            exit_evt.write(1).expect("signalling the event thread to stop");
            let served = thread.join().unwrap_or(Err(EventError::Panicked));
            (result, served)
        });
        backends.final_drain();
        let run = run_start.elapsed();
        let exit = result?;
        served?;
        let mut raw = vec![0u8; core::mem::size_of::<ShimStats>()];
        let shim = self
            .mem
            .read_slice(&mut raw, GuestAddress(self.placed.stats_gpa))
            .ok()
            .and_then(|_| ShimStats::read_from_bytes(&raw).ok());
        let kvm = self.kvm_stats.as_mut().and_then(kvm::stats::read).unwrap_or_default();
        let stats = Stats {
            setup: self.setup_done - self.started,
            run,
            userspace_exits: exits,
            kvm,
            shim,
            events: backends.stats(),
            disks: disk_stats
                .iter()
                .enumerate()
                .map(|(i, c)| DiskStats {
                    name: block::disk_name(i),
                    counters: *c.lock().unwrap_or_else(|e| e.into_inner()),
                })
                .collect(),
        };
        Ok(RunReport { exit, stats, console_tail: backends.console_tail() })
    }
}
