//! `xenvmm`: the command-line front end of the `vmm` library.

mod signals;
mod term;

use clap::Parser;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vmm::{Domain, DomainConfig, DomainControl, ExitReason, ImageSource, ShutdownRequest};

const AFTER_HELP: &str = "\
Console:
  The guest's console (hvc0) is connected to stdin and stdout. On a terminal, the terminal is
  put in raw mode so that the guest does the line editing and Ctrl-C reaches it; it is restored
  whenever xenvmm exits. Escape sequence: Ctrl-] then
    q  stop the guest now (exit status 10)     s  ask the guest to power off
    Ctrl-]  send a Ctrl-] to the guest          ?  this list
  Without a terminal, stdin and stdout are plain byte streams (no escape sequence).

Signals:
  SIGINT, SIGTERM or SIGHUP ask the guest to power off (xenstore control/shutdown), as
  `xl shutdown` does; a second signal, or the end of --shutdown-grace, stops it (status 10).

Exit status:
  0  the guest powered off          5  the VM faulted (the guest hit an exception it had
  1  xenvmm could not run the guest    no handler for; registers are printed on stderr)
  2  bad command line               6  the guest's watchdog fired
  3  the guest asked to reboot      7  the guest suspended (resume is not supported yet)
  4  the guest crashed (panic)      8  soft reset asked     9  unknown shutdown reason
 10  stopped by xenvmm before the guest shut down (signal grace period ended, or escape q)

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
    /// Also write the guest's console output to FILE (created or truncated)
    #[arg(long, value_name = "FILE")]
    console_log: Option<PathBuf>,
    /// Seconds the guest gets to power off after SIGINT/SIGTERM/SIGHUP before it is stopped
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    shutdown_grace: u64,
    /// A disk for the guest, repeatable: the first is xvda, then xvdb, ... SPEC is
    /// path=FILE[,readonly=on][,format=raw|qcow2][,cache=writeback|none]; without format=, a
    /// file with the qcow2 magic is qcow2 and anything else raw
    #[arg(long = "disk", value_name = "SPEC")]
    disks: Vec<String>,
    /// Print VM exits, hypercalls and timings on stderr when the guest ends
    #[arg(long)]
    stats: bool,
}

fn parse_mem(s: &str) -> Result<u64, String> {
    vmm::parse_mem_size(s).map_err(|e| e.to_string())
}

/// Console output to stdout and, with `--console-log`, to a file too.
struct Tee {
    out: std::io::Stdout,
    log: Option<std::fs::File>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &mut self.log {
            // A full disk must not stop the guest; the terminal still gets the text.
            let _ = f.write_all(buf);
        }
        self.out.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(f) = &mut self.log {
            let _ = f.flush();
        }
        self.out.flush()
    }
}

/// How long a forced stop waits for the vCPU to leave KVM_RUN.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The signal thread: the first termination signal asks for a power-off, the second (or the
/// grace period's end) stops the guest.
fn handle_signals(control: DomainControl, grace: Duration) {
    let Some(sig) = signals::wait(None) else { return };
    if control.guest_can_power_off() {
        term::notice(&format!(
            "{}: asking the guest to power off; it is stopped in {} s or at the next signal",
            signals::name(sig),
            grace.as_secs()
        ));
        control.request_shutdown(ShutdownRequest::Poweroff);
        if let Some(again) = signals::wait(Some(grace)) {
            term::notice(&format!("{}: stopping the guest now", signals::name(again)));
        } else {
            term::notice("the guest did not power off in time: stopping it");
        }
    } else {
        term::notice(&format!(
            "{}: the guest has not said it can power off on request (control/feature-poweroff): stopping it",
            signals::name(sig)
        ));
    }
    control.stop(STOP_WAIT);
}

const ESCAPE: u8 = 0x1d; // Ctrl-]

/// The input thread: stdin to the guest's console. On a terminal, also the escape sequence.
fn forward_input(control: DomainControl, tty: bool) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 1024];
    let mut escaped = false;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return, // end of input: the guest keeps running
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if !tty {
                out.push(b);
            } else if escaped {
                escaped = false;
                match b {
                    b'q' | b'Q' | b'.' => {
                        term::notice("escape: stopping the guest");
                        control.stop(STOP_WAIT);
                        return;
                    }
                    b's' | b'S' => {
                        term::notice("escape: asking the guest to power off");
                        control.request_shutdown(ShutdownRequest::Poweroff);
                    }
                    ESCAPE => out.push(ESCAPE),
                    _ => term::notice(
                        "escape: Ctrl-] then q stops the guest, s asks it to power off, Ctrl-] sends Ctrl-]",
                    ),
                }
            } else if b == ESCAPE {
                escaped = true;
            } else {
                out.push(b);
            }
        }
        let mut rest = &out[..];
        while !rest.is_empty() {
            let taken = control.console_input(rest);
            rest = &rest[taken..];
            if !rest.is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The library's log messages on stderr, as `xenvmm: warning: ...`: warnings and errors by
/// default (a guest's misbehaviour, a disk used without a lock, an engine fallback), more with
/// `XENVMM_LOG=info` or `XENVMM_LOG=debug`.
struct StderrLog(log::LevelFilter);

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.0
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let level = r.level().as_str().to_ascii_lowercase();
            term::notice(&format!("{level}: {}", r.args()));
        }
    }

    fn flush(&self) {}
}

fn init_log() {
    let level = match std::env::var("XENVMM_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        Ok("info") => log::LevelFilter::Info,
        Ok("error") => log::LevelFilter::Error,
        Ok("off") => log::LevelFilter::Off,
        _ => log::LevelFilter::Warn,
    };
    let logger: &'static StderrLog = Box::leak(Box::new(StderrLog(level)));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

fn main() -> ExitCode {
    // Before any thread exists, so that every thread inherits the mask.
    signals::block();
    init_log();
    let cli = Cli::parse();
    let mut disks = Vec::new();
    for spec in &cli.disks {
        match vmm::DiskConfig::parse(spec) {
            Ok(d) => disks.push(d),
            Err(e) => {
                eprintln!("xenvmm: error: --disk {spec}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let cfg = DomainConfig {
        kernel: ImageSource::Path(cli.kernel),
        initrd: cli.initrd.map(ImageSource::Path),
        cmdline: cli.cmdline,
        mem_bytes: cli.mem,
        vcpus: cli.cpus,
        name: cli.name,
        xenstore_socket: cli.xenstore_socket,
        disks,
    };
    let domain = match Domain::new(&cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("xenvmm: error: {e}");
            return ExitCode::from(1);
        }
    };
    let log = match cli.console_log.as_ref().map(std::fs::File::create).transpose() {
        Ok(f) => f,
        Err(e) => {
            let path = cli.console_log.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            eprintln!("xenvmm: error: cannot create the console log {path}: {e}");
            return ExitCode::from(1);
        }
    };
    let control = domain.control();
    let grace = Duration::from_secs(cli.shutdown_grace);
    {
        let c = control.clone();
        std::thread::Builder::new()
            .name("xenvmm-signals".into())
            .spawn(move || handle_signals(c, grace))
            .ok();
    }
    let stdin_fd = std::io::stdin().as_raw_fd();
    let tty = term::is_tty(stdin_fd);
    let raw = if tty {
        match term::RawMode::enter(stdin_fd) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!(
                    "xenvmm: warning: cannot put the terminal in raw mode ({e}); line editing stays local"
                );
                None
            }
        }
    } else {
        None
    };
    {
        let c = control.clone();
        std::thread::Builder::new().name("xenvmm-input".into()).spawn(move || forward_input(c, tty)).ok();
    }
    let mut out = Tee { out: std::io::stdout(), log };
    let result = domain.run(&mut out);
    let _ = out.flush();
    drop(raw);
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xenvmm: error: {e}");
            return ExitCode::from(1);
        }
    };
    match &report.exit {
        ExitReason::Poweroff => {}
        ExitReason::Faulted(f) => eprintln!("xenvmm: the VM faulted: {f}"),
        other => eprintln!("xenvmm: the guest {other}"),
    }
    if matches!(report.exit, ExitReason::Crash | ExitReason::Faulted(_))
        && !term::is_tty(std::io::stdout().as_raw_fd())
    {
        // The kept tail (a few KiB: a panic message with its stack trace), whole lines only.
        let tail = String::from_utf8_lossy(&report.console_tail);
        let lines: Vec<&str> = tail.lines().collect();
        let skip = usize::from(report.console_tail.len() >= vmm::events::CONSOLE_TAIL_BYTES);
        eprintln!("xenvmm: the guest's last console lines:");
        for l in lines.iter().skip(skip) {
            eprintln!("  | {l}");
        }
    }
    if cli.stats {
        eprint!("{}", report.stats);
    }
    ExitCode::from(report.exit.exit_code() as u8)
}
