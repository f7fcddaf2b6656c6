//! `xenvmm`: the command-line front end of the `vmm` library.

use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use vmm::{Domain, DomainConfig, ExitReason, ImageSource};

const AFTER_HELP: &str = "\
Exit status:
  0  the guest powered off          5  the VM faulted (the guest hit an exception it had
  1  xenvmm could not run the guest    no handler for; registers are printed on stderr)
  2  bad command line               6  the guest's watchdog fired
  3  the guest asked to reboot      7  the guest suspended (resume is not supported yet)
  4  the guest crashed (panic)      8  soft reset asked     9  unknown shutdown reason

xenvmm needs a /dev/kvm with hardware virtualization (Intel VT-x or AMD-V). Where there is
none (e.g. KVM-PVM), run it in the nested test host: scripts/nested-host xenvmm ...";

/// Run an unmodified Xen PV guest on Linux KVM.
#[derive(Parser, Debug)]
#[command(name = "xenvmm", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Xen PV kernel to boot: a bzImage (XZ, gzip, zstd or lz4) or an ELF with Xen notes
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,
    /// Initial ramdisk for the guest
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Guest kernel command line
    #[arg(long, value_name = "TEXT", default_value = vmm::config::DEFAULT_CMDLINE)]
    cmdline: String,
    /// Guest memory, e.g. 512M or 1G (a bare number means MiB)
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_mem)]
    mem: u64,
    /// Virtual CPUs (only 1 until SMP support lands)
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u32,
    /// The domain's name, as the guest reads it from xenstore
    #[arg(long, value_name = "NAME", default_value = vmm::config::DEFAULT_NAME)]
    name: String,
    /// Serve the guest's xenstore on a Unix socket at PATH for dom0 tools, e.g.
    /// `XENSTORED_PATH=PATH xenstore-ls` (removed when xenvmm exits)
    #[arg(long, value_name = "PATH")]
    xenstore_socket: Option<PathBuf>,
    /// Print VM exits, hypercalls and timings on stderr when the guest ends
    #[arg(long)]
    stats: bool,
}

fn parse_mem(s: &str) -> Result<u64, String> {
    vmm::parse_mem_size(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = DomainConfig {
        kernel: ImageSource::Path(cli.kernel),
        initrd: cli.initrd.map(ImageSource::Path),
        cmdline: cli.cmdline,
        mem_bytes: cli.mem,
        vcpus: cli.cpus,
        name: cli.name,
        xenstore_socket: cli.xenstore_socket,
    };
    let domain = match Domain::new(&cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("xenvmm: error: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout();
    let report = match domain.run(&mut out) {
        Ok(r) => r,
        Err(e) => {
            let _ = out.flush();
            eprintln!("xenvmm: error: {e}");
            return ExitCode::from(1);
        }
    };
    let _ = out.flush();
    match &report.exit {
        ExitReason::Poweroff => {}
        ExitReason::Faulted(f) => eprintln!("xenvmm: the VM faulted: {f}"),
        other => eprintln!("xenvmm: the guest {other}"),
    }
    if cli.stats {
        eprint!("{}", report.stats);
    }
    ExitCode::from(report.exit.exit_code() as u8)
}
