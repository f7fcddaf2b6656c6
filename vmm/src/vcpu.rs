//! Running a vCPU: the KVM_RUN loop and the hostcalls the shim makes through it. Everything
//! read from the hostcall page is treated as untrusted (the bytes come from the guest).

use crate::api::{ExitReason, Fault, GuestMode};
use crate::events::Backends;
use crate::kvm::interrupt::StopState;
use crate::stats::ExitCounts;
use crate::Error;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use xen_abi::hostcall::*;
use zerocopy::FromBytes;

pub(crate) struct VcpuRunner<'a, 'b> {
    pub vcpu: &'a mut VcpuFd,
    pub mem: &'a GuestMemoryMmap,
    pub hostcall_gpa: u64,
    pub backends: &'a Backends<'b>,
    pub exits: &'a mut ExitCounts,
    /// The domain's RAM: the only frames `HC_RELEASE_FRAMES` may drop.
    pub ram: &'a [MfnRange],
    pub stop: &'a StopState,
}

impl VcpuRunner<'_, '_> {
    /// Runs until the domain ends or the host stops it; returns why.
    pub fn run(&mut self) -> Result<ExitReason, Error> {
        self.stop.enter();
        let r = self.run_loop();
        self.stop.leave();
        r
    }

    fn run_loop(&mut self) -> Result<ExitReason, Error> {
        loop {
            if self.stop.requested() {
                return Ok(ExitReason::Stopped);
            }
            let exit = match self.vcpu.run() {
                Ok(e) => e,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.exits.count("intr");
                    continue;
                }
                Err(e) => return Err(Error::Vcpu(format!("KVM_RUN failed: {e}"))),
            };
            match exit {
                VcpuExit::IoOut(HOSTCALL_PORT, _) => {
                    self.exits.count("io_out (hostcall)");
                    if let Some(r) = self.hostcall()? {
                        return Ok(r);
                    }
                }
                // KVM's ioeventfd takes these; one reaching userspace means it is missing, and
                // the notification is served here so that the guest still makes progress.
                VcpuExit::IoOut(DOORBELL_PORT, _) => {
                    self.exits.count("io_out (doorbell)");
                    self.backends.doorbell()?;
                }
                // A direct doorbell whose ioeventfd was just removed (its backend is
                // disconnecting): served as a mailbox notification, which drops or forwards it.
                VcpuExit::IoOut(DIRECT_DOORBELL_PORT, data) => {
                    self.exits.count("io_out (direct doorbell)");
                    if let Ok(b) = <[u8; 4]>::try_from(data) {
                        self.backends.notified(u32::from_le_bytes(b))?;
                    }
                }
                VcpuExit::IoOut(..) => self.exits.count("io_out"),
                VcpuExit::IoIn(_, data) => {
                    data.fill(0xff);
                    self.exits.count("io_in");
                }
                VcpuExit::MmioRead(_, data) => {
                    data.fill(0xff);
                    self.exits.count("mmio_read");
                }
                VcpuExit::MmioWrite(..) => self.exits.count("mmio_write"),
                VcpuExit::Hlt => {
                    self.exits.count("hlt");
                    return Err(Error::Vcpu(
                        "the PV shim halted without reporting why (it may have failed to start)".into(),
                    ));
                }
                VcpuExit::Shutdown => {
                    self.exits.count("shutdown");
                    let rip = self.vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                    return Err(Error::Vcpu(format!(
                        "the VM triple-faulted at rip {rip:#x} (a PV shim failure)"
                    )));
                }
                VcpuExit::FailEntry(reason, cpu) => {
                    return Err(Error::Vcpu(format!(
                        "KVM could not enter the vCPU {cpu}: hardware reason {reason:#x}"
                    )))
                }
                VcpuExit::InternalError => return Err(Error::Vcpu("KVM internal error".into())),
                other => return Err(Error::Vcpu(format!("unexpected VM exit: {other:?}"))),
            }
        }
    }

    fn hostcall(&mut self) -> Result<Option<ExitReason>, Error> {
        let mut raw = vec![0u8; core::mem::size_of::<HostcallPage>()];
        self.mem.read_slice(&mut raw, GuestAddress(self.hostcall_gpa)).map_err(Error::GuestMemory)?;
        let page = HostcallPage::read_from_bytes(&raw).expect("size matches");
        let mut ret: i64 = 0;
        let outcome = match page.nr {
            HC_CONSOLE_WRITE => {
                let n = (page.args[0] as usize).min(HOSTCALL_DATA_SIZE);
                self.backends.console_write(&page.data[..n])?;
                None
            }
            HC_SHUTDOWN => Some(ExitReason::from_shutdown(page.args[0] as u32)),
            HC_DOMAIN_CRASH => Some(ExitReason::Faulted(Box::new(fault_from(&page.data)))),
            HC_SHIM_PANIC => {
                let f = fault_from(&page.data);
                return Err(Error::Vcpu(format!("internal error in the PV shim: {}", f.message)));
            }
            HC_LOG => {
                let n = (page.args[0] as usize).min(HOSTCALL_DATA_SIZE);
                log::info!("shim: {}", String::from_utf8_lossy(&page.data[..n]).trim_end());
                None
            }
            HC_RELEASE_FRAMES => {
                let n = (page.args[0] as usize).min(RELEASE_RANGES_MAX);
                let ranges: Vec<MfnRange> = page
                    .data
                    .chunks_exact(16)
                    .take(n)
                    .filter_map(|c| MfnRange::read_from_bytes(c).ok())
                    .collect();
                if let Err(e) = crate::memory::release::release_frames(self.mem, self.ram, &ranges) {
                    log::warn!("the shim asked to release frames outside the domain's RAM");
                    ret = -i64::from(e.0);
                }
                None
            }
            HC_SET_XCR0 => {
                let mut xcrs = kvm_bindings::kvm_xcrs { nr_xcrs: 1, ..Default::default() };
                xcrs.xcrs[0].xcr = 0;
                xcrs.xcrs[0].value = page.args[0];
                if let Err(e) = self.vcpu.set_xcrs(&xcrs) {
                    log::warn!("KVM_SET_XCRS({:#x}) failed: {e}", page.args[0]);
                    ret = -i64::from(xen_abi::Errno::EINVAL.0);
                }
                None
            }
            nr => {
                log::warn!("unknown hostcall {nr} from the shim");
                ret = -i64::from(xen_abi::Errno::ENOSYS.0);
                None
            }
        };
        if outcome.is_none() {
            let at = self.hostcall_gpa + core::mem::offset_of!(HostcallPage, ret) as u64;
            self.mem.write_obj(ret, GuestAddress(at)).map_err(Error::GuestMemory)?;
        }
        Ok(outcome)
    }
}

fn fault_from(data: &[u8]) -> Fault {
    let r = FatalReport::read_from_prefix(data)
        .map(|(r, _)| r)
        .unwrap_or_else(|_| zerocopy::FromZeros::new_zeroed());
    let msg_len = r.message.iter().position(|&b| b == 0).unwrap_or(r.message.len());
    Fault {
        vector: (r.vector != FATAL_NO_VECTOR).then_some(r.vector),
        mode: match r.mode {
            FATAL_MODE_GUEST_USER => GuestMode::User,
            FATAL_MODE_GUEST_KERNEL => GuestMode::Kernel,
            _ => GuestMode::Shim,
        },
        error_code: r.error_code,
        regs: r.regs,
        message: String::from_utf8_lossy(&r.message[..msg_len]).into_owned(),
    }
}
