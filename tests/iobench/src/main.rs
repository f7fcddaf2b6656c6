//! iobench: a fixed amount of block I/O on a raw device, for timing from outside the guest.
//!
//! ```text
//! iobench seqread  DEV [--bytes SIZE] [--bs SIZE]                      (1 MiB reads)
//! iobench randread DEV [--ops N] [--threads N] [--bs SIZE] [--seed N]  (4 KiB reads, QD1 each)
//! iobench seqwrite DEV [--bytes SIZE] [--bs SIZE] [--seed N]           (1 MiB writes, fdatasync)
//!   common: [--name NAME] [--settle-ms MS] [--buffered]
//! ```
//!
//! Every request is `O_DIRECT` (the guest's page cache stays out of the way) unless `--buffered`
//! is given. Sequential modes go from offset 0 up and wrap at the end of the device; random
//! reads pick block-aligned offsets uniformly over the device from a SplitMix64 stream seeded by
//! `--seed` and the thread's index, so that the same options read the same blocks every time.
//! Each thread has one request in flight (QD1); `--threads` only applies to `randread`.
//!
//! Output, one line each on stdout:
//!
//! ```text
//! iobench: NAME: MODE on DEV (SIZE bytes), bs=B, threads=T, ops=N, seed=S, direct
//! iobench: start NAME
//! iobench: end NAME ops=N bytes=M guest_us=U
//! iobench: NAME: guest clock X MB/s, Y IOPS
//! ```
//!
//! The start line is printed and drained to the console (`tcdrain`) after every thread is
//! ready and before the first request; the end line right after the last request completed
//! (for `seqwrite`, after `fdatasync`). An observer outside the guest times the work between
//! the two lines on its own clock, since guest clocks in the nested test host run slow.
//! `guest_us` is the guest's own measurement (monotonic clock), for reference only. No clock is
//! read per request: in a Xen PV guest under the test host a system call is costly, and reading
//! the clock around every request would weigh on one VMM more than on the other.
//!
//! `--settle-ms` idles that long after the start line and after the end line (a traced run
//! samples exit counters when the lines arrive; the idle keeps those samples out of the I/O).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Buffer alignment for O_DIRECT: a page, which satisfies every logical block size.
const ALIGN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    SeqRead,
    RandRead,
    SeqWrite,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "seqread" => Some(Mode::SeqRead),
            "randread" => Some(Mode::RandRead),
            "seqwrite" => Some(Mode::SeqWrite),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::SeqRead => "seqread",
            Mode::RandRead => "randread",
            Mode::SeqWrite => "seqwrite",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Options {
    mode: Mode,
    dev: String,
    name: String,
    bs: u64,
    /// Total requests over all threads.
    ops: u64,
    threads: u64,
    seed: u64,
    settle: Duration,
    direct: bool,
}

const USAGE: &str = "usage: iobench seqread|randread|seqwrite DEV [--bytes SIZE] [--ops N] [--threads N] \
[--bs SIZE] [--seed N] [--name NAME] [--settle-ms MS] [--buffered]";

#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error(msg.into()))
}

/// `4096`, `4K`, `1M`, `2G` (binary units; a `B` or `iB` suffix is allowed).
fn parse_size(s: &str) -> Result<u64, Error> {
    let t = s.trim_end_matches("iB").trim_end_matches('B');
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => KIB,
                'M' => MIB,
                'G' => 1024 * MIB,
                _ => return err(format!("bad size '{s}' (a number with K, M or G)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| Error(format!("bad size '{s}' (a number with K, M or G)")))
}

fn parse_num(opt: &str, s: &str) -> Result<u64, Error> {
    s.parse::<u64>().map_err(|_| Error(format!("{opt} takes a number, not '{s}'")))
}

fn parse_args(args: &[String]) -> Result<Options, Error> {
    let mut it = args.iter();
    let mode = match it.next() {
        Some(m) => Mode::parse(m).ok_or_else(|| Error(format!("unknown mode '{m}'\n{USAGE}")))?,
        None => return err(USAGE),
    };
    let dev = match it.next() {
        Some(d) if !d.starts_with("--") => d.clone(),
        _ => return err(format!("no device given\n{USAGE}")),
    };
    let (mut bytes, mut ops, mut bs) = (None, None, None);
    let (mut threads, mut seed, mut name, mut settle, mut direct) = (1, 1, None, 0, true);
    while let Some(opt) = it.next() {
        let mut value = || it.next().ok_or_else(|| Error(format!("{opt} needs a value")));
        match opt.as_str() {
            "--bytes" => bytes = Some(parse_size(value()?)?),
            "--ops" => ops = Some(parse_num(opt, value()?)?),
            "--bs" => bs = Some(parse_size(value()?)?),
            "--threads" => threads = parse_num(opt, value()?)?,
            "--seed" => seed = parse_num(opt, value()?)?,
            "--name" => name = Some(value()?.clone()),
            "--settle-ms" => settle = parse_num(opt, value()?)?,
            "--buffered" => direct = false,
            _ => return err(format!("unknown option '{opt}'\n{USAGE}")),
        }
    }
    let bs = bs.unwrap_or(if mode == Mode::RandRead { 4 * KIB } else { MIB });
    if bs == 0 || bs % 512 != 0 || bs > 64 * MIB {
        return err(format!("--bs {bs}: a multiple of 512 up to 64 MiB"));
    }
    if threads == 0 || threads > 256 {
        return err("--threads: 1 to 256");
    }
    if mode != Mode::RandRead && threads != 1 {
        return err("--threads is for randread only (sequential modes run one stream)");
    }
    let ops = match (bytes, ops) {
        (Some(_), Some(_)) => return err("give --bytes or --ops, not both"),
        (Some(b), None) if b % bs == 0 => b / bs,
        (Some(b), None) => return err(format!("--bytes {b} is not a multiple of the block size {bs}")),
        (None, Some(n)) => n,
        (None, None) => match mode {
            Mode::RandRead => 1000,
            _ => 64 * MIB / bs,
        },
    };
    if ops == 0 {
        return err("nothing to do (0 requests)");
    }
    Ok(Options {
        mode,
        dev,
        name: name.unwrap_or_else(|| mode.name().to_string()),
        bs,
        ops,
        threads,
        seed,
        settle: Duration::from_millis(settle),
        direct,
    })
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough for picking offsets.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64, stream: u64) -> SplitMix64 {
        SplitMix64(seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift (bias below 2^-32 for our n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The byte offsets one thread visits, in order.
fn offsets(mode: Mode, blocks: u64, bs: u64, ops: u64, seed: u64, thread: u64) -> impl Iterator<Item = u64> {
    let mut rng = SplitMix64::new(seed, thread);
    (0..ops).map(move |i| match mode {
        Mode::RandRead => rng.below(blocks) * bs,
        Mode::SeqRead | Mode::SeqWrite => (i % blocks) * bs,
    })
}

/// Requests per thread: `ops` split as evenly as possible, the first threads taking the rest.
fn share(ops: u64, threads: u64, thread: u64) -> u64 {
    ops / threads + u64::from(thread < ops % threads)
}

/// A heap buffer whose `bytes` start on an `ALIGN` boundary (O_DIRECT needs that).
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        AlignedBuf { storage, start, len }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Prints a line and waits until the console has sent it.
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    drop(out);
    // SAFETY: tcdrain only reads the descriptor number; on a descriptor that is not a terminal
    // it fails with ENOTTY, which is harmless here.
    unsafe {
        libc::tcdrain(libc::STDOUT_FILENO);
    }
}

fn worker(opts: &Options, file: &File, blocks: u64, thread: u64, start: &Barrier) -> io::Result<()> {
    let mut buf = AlignedBuf::new(opts.bs as usize);
    if opts.mode == Mode::SeqWrite {
        // Deterministic, non-zero data (nothing on the path compresses or skips zeroes, but a
        // reader of the image can tell written blocks from the fresh ones).
        let mut rng = SplitMix64::new(opts.seed, thread);
        for chunk in buf.bytes().chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()]);
        }
    }
    let ops = share(opts.ops, opts.threads, thread);
    let offs = offsets(opts.mode, blocks, opts.bs, ops, opts.seed, thread);
    start.wait();
    let buf = buf.bytes();
    for off in offs {
        match opts.mode {
            Mode::SeqRead | Mode::RandRead => file.read_exact_at(buf, off)?,
            Mode::SeqWrite => file.write_all_at(buf, off)?,
        }
    }
    Ok(())
}

fn run(opts: Options) -> Result<(), Error> {
    let mut oo = OpenOptions::new();
    oo.read(true).write(opts.mode == Mode::SeqWrite);
    if opts.direct {
        oo.custom_flags(libc::O_DIRECT);
    }
    let mut file = oo.open(&opts.dev).map_err(|e| Error(format!("cannot open {}: {e}", opts.dev)))?;
    let size = file.seek(SeekFrom::End(0)).map_err(|e| Error(format!("cannot size {}: {e}", opts.dev)))?;
    let blocks = size / opts.bs;
    if blocks == 0 {
        return err(format!("{} has {size} bytes, less than one {}-byte block", opts.dev, opts.bs));
    }
    let file = Arc::new(file);
    let opts = Arc::new(opts);
    let name = &opts.name;
    say(&format!(
        "iobench: {name}: {} on {} ({size} bytes), bs={}, threads={}, ops={}, seed={}, {}",
        opts.mode.name(),
        opts.dev,
        opts.bs,
        opts.threads,
        opts.ops,
        opts.seed,
        if opts.direct { "direct" } else { "buffered" }
    ));

    let start = Arc::new(Barrier::new(opts.threads as usize + 1));
    let handles: Vec<_> = (0..opts.threads)
        .map(|t| {
            let (opts, file, start) = (opts.clone(), file.clone(), start.clone());
            thread::Builder::new()
                .name(format!("iobench-{t}"))
                .spawn(move || worker(&opts, &file, blocks, t, &start))
                .map_err(|e| Error(format!("cannot start thread {t}: {e}")))
        })
        .collect::<Result<_, _>>()?;

    say(&format!("iobench: start {name}"));
    thread::sleep(opts.settle);
    start.wait();
    let t0 = Instant::now();
    let mut failure = None;
    for (t, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(format!("thread {t}: {e}"))),
            Err(_) => failure = failure.or(Some(format!("thread {t} panicked"))),
        }
    }
    if let Some(f) = failure {
        return err(format!("{name}: I/O on {} failed: {f}", opts.dev));
    }
    if opts.mode == Mode::SeqWrite {
        file.sync_data().map_err(|e| Error(format!("{name}: fdatasync on {} failed: {e}", opts.dev)))?;
    }
    let us = t0.elapsed().as_micros().max(1);
    let bytes = opts.ops * opts.bs;
    say(&format!("iobench: end {name} ops={} bytes={bytes} guest_us={us}", opts.ops));
    say(&format!(
        "iobench: {name}: guest clock {:.1} MB/s, {:.0} IOPS",
        bytes as f64 / us as f64,
        opts.ops as f64 * 1e6 / us as f64
    ));
    thread::sleep(opts.settle);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match parse_args(&args).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iobench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_sizes_in_binary_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("1M").unwrap(), MIB);
        assert_eq!(parse_size("256MiB").unwrap(), 256 * MIB);
        assert_eq!(parse_size("2g").unwrap(), 2048 * MIB);
        assert!(parse_size("1T").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn fills_in_defaults_per_mode() {
        let o = parse_args(&args("randread /dev/xvda --threads 8")).unwrap();
        assert_eq!((o.bs, o.ops, o.threads, o.seed, o.direct), (4096, 1000, 8, 1, true));
        assert_eq!(o.name, "randread");
        let o = parse_args(&args("seqread /dev/vda --bytes 256M --name sr")).unwrap();
        assert_eq!((o.bs, o.ops, o.name.as_str()), (MIB, 256, "sr"));
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            "",
            "fooread /dev/x",
            "seqread",
            "seqread /dev/x --bytes 1M --ops 3",
            "seqread /dev/x --bytes 1000",
            "seqwrite /dev/x --threads 2",
            "randread /dev/x --bs 100",
            "randread /dev/x --ops 0",
            "randread /dev/x --threads",
            "randread /dev/x --what 1",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn sequential_offsets_wrap_at_the_end() {
        let v: Vec<u64> = offsets(Mode::SeqRead, 3, MIB, 5, 1, 0).collect();
        assert_eq!(v, [0, MIB, 2 * MIB, 0, MIB]);
    }

    #[test]
    fn random_offsets_are_seeded_aligned_and_in_range() {
        let a: Vec<u64> = offsets(Mode::RandRead, 65536, 4096, 1000, 7, 3).collect();
        let b: Vec<u64> = offsets(Mode::RandRead, 65536, 4096, 1000, 7, 3).collect();
        let c: Vec<u64> = offsets(Mode::RandRead, 65536, 4096, 1000, 7, 4).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|&o| o % 4096 == 0 && o < 65536 * 4096));
        // Spread over the device, not clustered: both halves get a fair share.
        let low = a.iter().filter(|&&o| o < 32768 * 4096).count();
        assert!((400..600).contains(&low), "{low}");
    }

    #[test]
    fn thread_shares_add_up_to_the_requests() {
        for (ops, threads) in [(1000, 8), (7, 8), (8, 8), (1001, 3)] {
            let total: u64 = (0..threads).map(|t| share(ops, threads, t)).sum();
            assert_eq!(total, ops);
        }
    }

    #[test]
    fn buffers_are_page_aligned() {
        for len in [512, 4096, MIB as usize] {
            let mut b = AlignedBuf::new(len);
            let s = b.bytes();
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % ALIGN, 0);
        }
    }
}
