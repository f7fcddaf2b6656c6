//! Decoding a faulting instruction with yaxpeax-x86 (64-bit mode) into the few operations
//! Xen's `validate` hook lets through (`pv/emul-priv-op.c`); everything else is `Other`.

use yaxpeax_arch::LengthedInstruction;
use yaxpeax_x86::long_mode::{register_class, InstDecoder, Opcode, Operand, RegSpec, Segment};

/// The longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// Where `in`/`out` take the port from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSrc {
    Imm(u8),
    Dx,
}

/// The segment of the memory operand of `outs` (`ins` always writes ES). In 64-bit mode only
/// FS and GS have a base; the others are flat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrSeg {
    Flat,
    Fs,
    Gs,
}

/// An instruction the #GP path may emulate, with its operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Rdmsr,
    Wrmsr,
    /// `mov %crN, %gpr`.
    ReadCr {
        cr: u8,
        gpr: u8,
    },
    /// `mov %gpr, %crN`.
    WriteCr {
        cr: u8,
        gpr: u8,
    },
    Clts,
    Wbinvd,
    /// `bad_prefix`: a 66/F2/F3 prefix, which makes xsetbv #UD.
    Xsetbv {
        bad_prefix: bool,
    },
    Rdtsc,
    Rdtscp,
    Cli,
    Sti,
    /// `in` of `size` (1, 2, 4) bytes into al/ax/eax.
    In {
        port: PortSrc,
        size: u8,
    },
    /// `out` of `size` bytes from al/ax/eax.
    Out {
        port: PortSrc,
        size: u8,
    },
    /// `[rep] ins` to ES:rDI; `addr32` for a 0x67 prefix (edi/ecx).
    Ins {
        size: u8,
        rep: bool,
        addr32: bool,
    },
    /// `[rep] outs` from seg:rSI.
    Outs {
        size: u8,
        rep: bool,
        addr32: bool,
        seg: StrSeg,
    },
}

/// A decoded instruction and its length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub op: Op,
    pub len: u8,
}

/// Why [`decode`] found no emulatable instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeFail {
    /// The bytes end before the instruction does.
    Truncated,
    /// Not a valid instruction, or one the #GP path does not emulate.
    Other,
}

/// Decodes the instruction at the start of `bytes` (64-bit code).
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeFail> {
    let insn = match InstDecoder::default().decode_slice(bytes) {
        Ok(i) => i,
        Err(yaxpeax_x86::long_mode::DecodeError::ExhaustedInput) => return Err(DecodeFail::Truncated),
        Err(_) => return Err(DecodeFail::Other),
    };
    let len = u8::try_from(insn.len().to_const()).map_err(|_| DecodeFail::Other)?;
    if usize::from(len) > bytes.len() || usize::from(len) > MAX_INSN_LEN {
        return Err(DecodeFail::Other);
    }
    let p = insn.prefixes;
    let op = match insn.opcode() {
        Opcode::RDMSR => Op::Rdmsr,
        Opcode::WRMSR => Op::Wrmsr,
        Opcode::CLTS => Op::Clts,
        Opcode::WBINVD => Op::Wbinvd,
        Opcode::XSETBV => Op::Xsetbv { bad_prefix: p.operand_size() || p.rep_any() },
        Opcode::RDTSC => Op::Rdtsc,
        Opcode::RDTSCP => Op::Rdtscp,
        Opcode::CLI => Op::Cli,
        Opcode::STI => Op::Sti,
        Opcode::MOV => mov_cr(insn.operand(0), insn.operand(1)).ok_or(DecodeFail::Other)?,
        Opcode::IN => {
            let size = acc_size(insn.operand(0)).ok_or(DecodeFail::Other)?;
            Op::In { port: port_src(insn.operand(1)).ok_or(DecodeFail::Other)?, size }
        }
        Opcode::OUT => {
            let size = acc_size(insn.operand(1)).ok_or(DecodeFail::Other)?;
            Op::Out { port: port_src(insn.operand(0)).ok_or(DecodeFail::Other)?, size }
        }
        Opcode::INS | Opcode::OUTS => {
            let size = insn.mem_size().and_then(|m| m.bytes_size()).ok_or(DecodeFail::Other)?;
            if !matches!(size, 1 | 2 | 4) {
                return Err(DecodeFail::Other);
            }
            let (rep, addr32) = (p.rep_any(), p.address_size());
            if insn.opcode() == Opcode::INS {
                Op::Ins { size, rep, addr32 }
            } else {
                let seg = match p.segment() {
                    Segment::FS => StrSeg::Fs,
                    Segment::GS => StrSeg::Gs,
                    _ => StrSeg::Flat,
                };
                Op::Outs { size, rep, addr32, seg }
            }
        }
        _ => return Err(DecodeFail::Other),
    };
    Ok(Decoded { op, len })
}

/// `mov` to or from a control register; any other `mov` (debug registers included) is not
/// ours.
fn mov_cr(dst: Operand, src: Operand) -> Option<Op> {
    let (Operand::Register { reg: d }, Operand::Register { reg: s }) = (dst, src) else {
        return None;
    };
    let is_cr = |r: &RegSpec| r.class() == register_class::CR;
    let is_q = |r: &RegSpec| r.class() == register_class::Q;
    if is_cr(&s) && is_q(&d) {
        Some(Op::ReadCr { cr: s.num(), gpr: d.num() })
    } else if is_cr(&d) && is_q(&s) {
        Some(Op::WriteCr { cr: d.num(), gpr: s.num() })
    } else {
        None
    }
}

/// The width of the accumulator operand of `in`/`out`.
fn acc_size(op: Operand) -> Option<u8> {
    let Operand::Register { reg } = op else { return None };
    if reg.num() != 0 {
        return None;
    }
    match reg.class() {
        c if c == register_class::B => Some(1),
        c if c == register_class::W => Some(2),
        c if c == register_class::D => Some(4),
        _ => None,
    }
}

fn port_src(op: Operand) -> Option<PortSrc> {
    match op {
        Operand::ImmediateU8 { imm } => Some(PortSrc::Imm(imm)),
        Operand::Register { reg } if reg.num() == 2 && reg.class() == register_class::W => Some(PortSrc::Dx),
        _ => None,
    }
}
