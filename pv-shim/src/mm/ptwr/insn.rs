//! The stores the writable-page-table path emulates: decoding one with yaxpeax-x86 (64-bit
//! mode), computing where it writes, and executing it on one naturally aligned operand of at
//! most 8 bytes, with the register and flag effects the CPU would have produced.
//!
//! Xen lets `x86_emulate` run any instruction that writes memory (`pv_emul_is_mem_write`);
//! this shim takes the forms a PV kernel uses on page-table entries and their obvious
//! relatives: `mov` (register or immediate), `xchg`, `cmpxchg`, `cmpxchg8b`, `add`/`or`/
//! `and`/`sub`/`xor` (register or immediate, locked or not) and `bts`/`btr`/`btc`, at any
//! operand width. `cmpxchg16b` is refused as Xen refuses it (a 16-byte store).

use crate::emul::{gpr, set_gpr};
use crate::guest::GuestRegs;
use yaxpeax_arch::LengthedInstruction;
use yaxpeax_x86::long_mode::{register_class, InstDecoder, Operand, RegSpec, Segment};

pub use yaxpeax_x86::long_mode::Opcode;

/// A general-purpose register operand: `num` in ModRM numbering, `high` for ah/ch/dh/bh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    pub num: u8,
    pub high: bool,
}

/// The source operand of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    /// Already extended to 64 bits as the instruction extends it.
    Imm(u64),
    Reg(Reg),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    Add,
    Or,
    And,
    Sub,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitOp {
    Set,
    Reset,
    Complement,
}

/// What the store does with the old value of its operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mov(Src),
    /// `xchg`: the old value goes to the register.
    Xchg(Reg),
    /// `cmpxchg`: compare with the accumulator.
    Cmpxchg(Reg),
    /// `cmpxchg8b`: compare with edx:eax, store ecx:ebx.
    Cmpxchg8b,
    Alu(Alu, Src),
    /// `bts`/`btr`/`btc`; the bit number is already reduced to the operand.
    Bit(BitOp, u32),
}

/// A decoded store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Store {
    pub kind: Kind,
    /// Operand width in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// The linear address it writes.
    pub addr: u64,
    /// Instruction length.
    pub len: u8,
}

/// Why [`decode_store`] found nothing to emulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeFail {
    /// The bytes end before the instruction does.
    Truncated,
    /// Not a store this path emulates.
    Other,
}

/// The FS and GS bases an instruction's segment override adds (the other segments are flat
/// in 64-bit mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegBases {
    pub fs: u64,
    pub gs: u64,
}

/// Decodes the store at the start of `bytes`, executed with `regs` (rip = its address).
pub fn decode_store(bytes: &[u8], regs: &GuestRegs, seg: SegBases) -> Result<Store, DecodeFail> {
    let insn = match InstDecoder::default().decode_slice(bytes) {
        Ok(i) => i,
        Err(yaxpeax_x86::long_mode::DecodeError::ExhaustedInput) => return Err(DecodeFail::Truncated),
        Err(_) => return Err(DecodeFail::Other),
    };
    let len = u8::try_from(insn.len().to_const()).map_err(|_| DecodeFail::Other)?;
    if usize::from(len) > bytes.len() || usize::from(len) > crate::emul::MAX_INSN_LEN {
        return Err(DecodeFail::Other);
    }
    let size = insn.mem_size().and_then(|m| m.bytes_size()).ok_or(DecodeFail::Other)?;
    let p = insn.prefixes;
    let next_rip = regs.rip.wrapping_add(u64::from(len));
    let addr32 = p.address_size();
    let op0 = insn.operand(0);
    let op1 = || insn.operand(1);
    let other = |o: Operand| src_of(o, size);
    let (mem, kind) = match insn.opcode() {
        Opcode::MOV => (op0, Kind::Mov(other(op1())?)),
        Opcode::XCHG => match (is_mem(&op0), op0, op1()) {
            (true, m, Operand::Register { reg }) | (false, Operand::Register { reg }, m) => {
                (m, Kind::Xchg(reg_of(reg, size)?))
            }
            _ => return Err(DecodeFail::Other),
        },
        Opcode::CMPXCHG => match op1() {
            Operand::Register { reg } => (op0, Kind::Cmpxchg(reg_of(reg, size)?)),
            _ => return Err(DecodeFail::Other),
        },
        Opcode::CMPXCHG8B => (op0, Kind::Cmpxchg8b),
        Opcode::ADD | Opcode::OR | Opcode::AND | Opcode::SUB | Opcode::XOR => {
            let alu = match insn.opcode() {
                Opcode::ADD => Alu::Add,
                Opcode::OR => Alu::Or,
                Opcode::AND => Alu::And,
                Opcode::SUB => Alu::Sub,
                _ => Alu::Xor,
            };
            (op0, Kind::Alu(alu, other(op1())?))
        }
        Opcode::BTS | Opcode::BTR | Opcode::BTC => {
            let bop = match insn.opcode() {
                Opcode::BTS => BitOp::Set,
                Opcode::BTR => BitOp::Reset,
                _ => BitOp::Complement,
            };
            (op0, Kind::Bit(bop, 0))
        }
        _ => return Err(DecodeFail::Other),
    };
    if !matches!(size, 1 | 2 | 4 | 8) || !is_mem(&mem) {
        return Err(DecodeFail::Other);
    }
    let mut addr = effective_addr(mem, regs, next_rip, addr32).ok_or(DecodeFail::Other)?;
    addr = addr.wrapping_add(match p.segment() {
        Segment::FS => seg.fs,
        Segment::GS => seg.gs,
        _ => 0,
    });
    let kind = match kind {
        Kind::Bit(op, _) => {
            let bits = u64::from(size) * 8;
            match other(op1())? {
                Src::Imm(i) => Kind::Bit(op, (i & (bits - 1)) as u32),
                Src::Reg(r) => {
                    // A register bit offset is signed and may address other operands.
                    let off = sign_extend(read_reg(regs, r, size), size);
                    let step = (off >> bits.trailing_zeros()).wrapping_mul(i64::from(size));
                    addr = addr.wrapping_add(step as u64);
                    Kind::Bit(op, (off as u64 & (bits - 1)) as u32)
                }
            }
        }
        k => k,
    };
    if matches!(kind, Kind::Bit(..)) && size == 1 {
        return Err(DecodeFail::Other);
    }
    Ok(Store { kind, size, addr, len })
}

fn is_mem(o: &Operand) -> bool {
    matches!(
        o,
        Operand::AbsoluteU32 { .. }
            | Operand::AbsoluteU64 { .. }
            | Operand::MemDeref { .. }
            | Operand::Disp { .. }
            | Operand::MemIndexScale { .. }
            | Operand::MemIndexScaleDisp { .. }
            | Operand::MemBaseIndexScale { .. }
            | Operand::MemBaseIndexScaleDisp { .. }
    )
}

/// A general-purpose register of width `size`.
fn reg_of(r: RegSpec, size: u8) -> Result<Reg, DecodeFail> {
    let (num, width) = match r.class() {
        c if c == register_class::Q => (r.num(), 8),
        c if c == register_class::D => (r.num(), 4),
        c if c == register_class::W => (r.num(), 2),
        c if c == register_class::B && r.num() >= 4 => return Ok(Reg { num: r.num() - 4, high: true }),
        c if c == register_class::B || c == register_class::RB => (r.num(), 1),
        _ => return Err(DecodeFail::Other),
    };
    if width != size {
        return Err(DecodeFail::Other);
    }
    Ok(Reg { num, high: false })
}

fn src_of(o: Operand, size: u8) -> Result<Src, DecodeFail> {
    Ok(Src::Imm(match o {
        Operand::Register { reg } => return Ok(Src::Reg(reg_of(reg, size)?)),
        Operand::ImmediateI8 { imm } => imm as i64 as u64,
        Operand::ImmediateU8 { imm } => u64::from(imm),
        Operand::ImmediateI16 { imm } => imm as i64 as u64,
        Operand::ImmediateU16 { imm } => u64::from(imm),
        Operand::ImmediateI32 { imm } => imm as i64 as u64,
        Operand::ImmediateU32 { imm } => u64::from(imm),
        Operand::ImmediateI64 { imm } => imm as u64,
        Operand::ImmediateU64 { imm } => imm,
        _ => return Err(DecodeFail::Other),
    }))
}

/// The value of an address register (64- or 32-bit, or rip/eip = the next instruction).
fn addr_reg(regs: &GuestRegs, r: RegSpec, next_rip: u64) -> Option<u64> {
    match r.class() {
        c if c == register_class::Q => Some(gpr(regs, r.num())),
        c if c == register_class::D => Some(gpr(regs, r.num()) & 0xffff_ffff),
        c if c == register_class::RIP => Some(next_rip),
        c if c == register_class::EIP => Some(next_rip & 0xffff_ffff),
        _ => None,
    }
}

/// The offset of memory operand `o` (before the segment base).
fn effective_addr(o: Operand, regs: &GuestRegs, next_rip: u64, addr32: bool) -> Option<u64> {
    let idx = |i: RegSpec, s: u8| addr_reg(regs, i, next_rip).map(|v| v.wrapping_mul(u64::from(s)));
    let base = |b: RegSpec| addr_reg(regs, b, next_rip);
    let disp = |d: i32| d as i64 as u64;
    let a = match o {
        Operand::AbsoluteU64 { addr } => addr,
        // A 32-bit absolute displacement is sign-extended in 64-bit mode.
        Operand::AbsoluteU32 { addr } => addr as i32 as i64 as u64,
        Operand::MemDeref { base: b } => base(b)?,
        Operand::Disp { base: b, disp: d } => base(b)?.wrapping_add(disp(d)),
        Operand::MemIndexScale { index, scale } => idx(index, scale)?,
        Operand::MemIndexScaleDisp { index, scale, disp: d } => idx(index, scale)?.wrapping_add(disp(d)),
        Operand::MemBaseIndexScale { base: b, index, scale } => base(b)?.wrapping_add(idx(index, scale)?),
        Operand::MemBaseIndexScaleDisp { base: b, index, scale, disp: d } => {
            base(b)?.wrapping_add(idx(index, scale)?).wrapping_add(disp(d))
        }
        _ => return None,
    };
    Some(if addr32 { a & 0xffff_ffff } else { a })
}

/// All ones in the low `size` bytes.
pub fn width_mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (u32::from(size) * 8)) - 1
    }
}

fn sign_extend(v: u64, size: u8) -> i64 {
    let sh = 64 - u32::from(size.min(8)) * 8;
    ((v << sh) as i64) >> sh
}

fn read_reg(regs: &GuestRegs, r: Reg, size: u8) -> u64 {
    let v = gpr(regs, r.num);
    if r.high {
        (v >> 8) & 0xff
    } else {
        v & width_mask(size)
    }
}

/// Writes `v` to a register of width `size` as the CPU does: a 32-bit write zero-extends, 8-
/// and 16-bit writes keep the other bits.
fn write_reg(regs: &mut GuestRegs, r: Reg, size: u8, v: u64) {
    let old = gpr(regs, r.num);
    let new = match (size, r.high) {
        (_, true) => (old & !0xff00) | ((v & 0xff) << 8),
        (8, _) => v,
        (4, _) => v & 0xffff_ffff,
        (s, _) => (old & !width_mask(s)) | (v & width_mask(s)),
    };
    set_gpr(regs, r.num, new);
}

pub const X86_EFLAGS_CF: u64 = 1 << 0;
pub const X86_EFLAGS_PF: u64 = 1 << 2;
pub const X86_EFLAGS_AF: u64 = 1 << 4;
pub const X86_EFLAGS_ZF: u64 = 1 << 6;
pub const X86_EFLAGS_SF: u64 = 1 << 7;
pub const X86_EFLAGS_OF: u64 = 1 << 11;
/// The flags an arithmetic instruction defines.
const ARITH_FLAGS: u64 =
    X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF | X86_EFLAGS_ZF | X86_EFLAGS_SF | X86_EFLAGS_OF;

/// ZF, SF and PF of result `r` of width `size`.
fn szp(r: u64, size: u8) -> u64 {
    let msb = 1u64 << (u32::from(size) * 8 - 1);
    let mut f = 0;
    if r & width_mask(size) == 0 {
        f |= X86_EFLAGS_ZF;
    }
    if r & msb != 0 {
        f |= X86_EFLAGS_SF;
    }
    if (r as u8).count_ones().is_multiple_of(2) {
        f |= X86_EFLAGS_PF;
    }
    f
}

/// The flags of `a + b` or `a - b` (`r` the masked result).
pub fn arith_flags(a: u64, b: u64, r: u64, size: u8, sub: bool) -> u64 {
    let msb = 1u64 << (u32::from(size) * 8 - 1);
    let mut f = szp(r, size);
    let carry = if sub { a < b } else { r < a };
    let overflow = if sub { (a ^ b) & (a ^ r) & msb } else { !(a ^ b) & (a ^ r) & msb };
    if carry {
        f |= X86_EFLAGS_CF;
    }
    if overflow != 0 {
        f |= X86_EFLAGS_OF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= X86_EFLAGS_AF;
    }
    f
}

/// Runs `st` on the operand's old value `old` (masked to its width): updates the registers
/// and flags in `regs`, and returns the value to store, or `None` when it stores nothing (a
/// failed compare-exchange).
pub fn execute(st: &Store, regs: &mut GuestRegs, old: u64) -> Option<u64> {
    let size = st.size;
    let mask = width_mask(size);
    let src = |regs: &GuestRegs, s: Src| match s {
        Src::Imm(i) => i & mask,
        Src::Reg(r) => read_reg(regs, r, size),
    };
    let set_flags = |regs: &mut GuestRegs, which: u64, f: u64| regs.rflags = (regs.rflags & !which) | f;
    match st.kind {
        Kind::Mov(s) => Some(src(regs, s)),
        Kind::Xchg(r) => {
            let new = read_reg(regs, r, size);
            write_reg(regs, r, size, old);
            Some(new)
        }
        Kind::Cmpxchg(r) => {
            let acc = Reg { num: 0, high: false };
            let a = read_reg(regs, acc, size);
            let new = read_reg(regs, r, size);
            set_flags(regs, ARITH_FLAGS, arith_flags(a, old, a.wrapping_sub(old) & mask, size, true));
            if a == old {
                Some(new)
            } else {
                write_reg(regs, acc, size, old);
                None
            }
        }
        Kind::Cmpxchg8b => {
            let cmp = (regs.rdx & 0xffff_ffff) << 32 | (regs.rax & 0xffff_ffff);
            if cmp == old {
                set_flags(regs, X86_EFLAGS_ZF, X86_EFLAGS_ZF);
                Some((regs.rcx & 0xffff_ffff) << 32 | (regs.rbx & 0xffff_ffff))
            } else {
                set_flags(regs, X86_EFLAGS_ZF, 0);
                regs.rax = old & 0xffff_ffff;
                regs.rdx = old >> 32;
                None
            }
        }
        Kind::Alu(op, s) => {
            let b = src(regs, s);
            let (r, f) = match op {
                Alu::Add => {
                    let r = old.wrapping_add(b) & mask;
                    (r, arith_flags(old, b, r, size, false))
                }
                Alu::Sub => {
                    let r = old.wrapping_sub(b) & mask;
                    (r, arith_flags(old, b, r, size, true))
                }
                Alu::Or => (old | b, szp(old | b, size)),
                Alu::And => (old & b, szp(old & b, size)),
                Alu::Xor => (old ^ b, szp(old ^ b, size)),
            };
            // Logic operations clear CF and OF; AF is undefined and left clear.
            set_flags(regs, ARITH_FLAGS, f);
            Some(r)
        }
        Kind::Bit(op, bit) => {
            let m = 1u64 << bit;
            set_flags(regs, X86_EFLAGS_CF, if old & m != 0 { X86_EFLAGS_CF } else { 0 });
            Some(match op {
                BitOp::Set => old | m,
                BitOp::Reset => old & !m,
                BitOp::Complement => old ^ m,
            })
        }
    }
}
