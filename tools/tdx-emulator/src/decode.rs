//! Instruction decoding with `iced-x86` for the exits QEMU's SVM reports
//! without decode assists: MOV to/from CRn, CLTS/LMSW/SMSW, LGDT/LIDT, the
//! memory operand of a faulting access, and the Intel-only VMCALL/TDCALL.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, MemorySize, OpKind, Register};

/// Longest x86 instruction.
pub const MAX_LEN: usize = 15;

/// TDCALL.
pub const TDCALL: [u8; 4] = [0x66, 0x0F, 0x01, 0xCC];
/// VMCALL.
pub const VMCALL: [u8; 3] = [0x0F, 0x01, 0xC1];

/// Code-segment bitness from SVM attributes (L = bit 9, D = bit 10) and EFER.LMA.
pub fn bitness(cs_attrib: u16, efer_lma: bool) -> u32 {
    if efer_lma && cs_attrib & (1 << 9) != 0 {
        64
    } else if cs_attrib & (1 << 10) != 0 {
        32
    } else {
        16
    }
}

/// Decodes one instruction at `rip`; `None` if the bytes are invalid.
pub fn decode(bytes: &[u8], rip: u64, bitness: u32) -> Option<Instruction> {
    let mut d = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE);
    let i = d.decode();
    (!i.is_invalid()).then_some(i)
}

/// Width in bytes and architectural number (0 = RAX … 15 = R15) of a
/// general-purpose register (AH..BH map to RAX..RBX).
fn gpr_info(r: Register) -> Option<(u8, u8)> {
    let n = r as u32;
    let within = |first: Register, last: Register| {
        (first as u32..=last as u32)
            .contains(&n)
            .then(|| (n - first as u32) as u8)
    };
    if let Some(i) = within(Register::RAX, Register::R15) {
        return Some((8, i));
    }
    if let Some(i) = within(Register::EAX, Register::R15D) {
        return Some((4, i));
    }
    if let Some(i) = within(Register::AX, Register::R15W) {
        return Some((2, i));
    }
    if let Some(i) = within(Register::AL, Register::BL) {
        return Some((1, i));
    }
    if let Some(i) = within(Register::AH, Register::BH) {
        return Some((1, i));
    }
    within(Register::SPL, Register::R15L).map(|i| (1, i + 4))
}

/// Architectural number (0 = RAX … 15 = R15) of a general-purpose register.
pub fn gpr_number(r: Register) -> Option<u8> {
    gpr_info(r).map(|(_, n)| n)
}

/// Bytes a memory operand of this size touches, for the sizes data accesses
/// use (vector and descriptor operands report their full size; unknown → 8).
fn memory_bytes(m: MemorySize) -> usize {
    match m {
        MemorySize::UInt8 | MemorySize::Int8 => 1,
        MemorySize::UInt16 | MemorySize::Int16 | MemorySize::WordOffset => 2,
        MemorySize::UInt32 | MemorySize::Int32 | MemorySize::Float32 | MemorySize::DwordOffset => 4,
        MemorySize::UInt128 | MemorySize::Int128 | MemorySize::Packed128_UInt64 => 16,
        MemorySize::Fword6 => 6,
        MemorySize::Fword10 => 10,
        _ => 8,
    }
}

/// A control-register instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrInsn {
    /// MOV CRn, gpr.
    MovTo { cr: u8, gpr: u8 },
    /// MOV gpr, CRn.
    MovFrom { cr: u8, gpr: u8 },
    /// CLTS.
    Clts,
    /// LMSW (any operand).
    Lmsw,
    /// SMSW (any operand).
    Smsw,
}

/// Classifies a control-register instruction.
pub fn cr_insn(i: &Instruction) -> Option<CrInsn> {
    let cr_num = |r: Register| -> Option<u8> {
        let n = r as u32;
        let base = Register::CR0 as u32;
        (n >= base && n <= Register::CR15 as u32).then(|| (n - base) as u8)
    };
    match i.code() {
        Code::Mov_cr_r64 | Code::Mov_cr_r32 => Some(CrInsn::MovTo {
            cr: cr_num(i.op0_register())?,
            gpr: gpr_number(i.op1_register())?,
        }),
        Code::Mov_r64_cr | Code::Mov_r32_cr => Some(CrInsn::MovFrom {
            cr: cr_num(i.op1_register())?,
            gpr: gpr_number(i.op0_register())?,
        }),
        Code::Clts => Some(CrInsn::Clts),
        Code::Lmsw_rm16 | Code::Lmsw_r32m16 | Code::Lmsw_r64m16 => Some(CrInsn::Lmsw),
        Code::Smsw_rm16 | Code::Smsw_r32m16 | Code::Smsw_r64m16 => Some(CrInsn::Smsw),
        _ => None,
    }
}

/// Fast path for the common encodings `[REX] 0F 20/22 /r` (MOV from/to CRn,
/// register form) without running the full decoder: the instruction and its
/// length. Other bytes (prefixes, CLTS, LMSW, …) return `None`.
pub fn quick_cr_move(bytes: &[u8], bitness: u32) -> Option<(CrInsn, u32)> {
    let (rex, rest) = match bytes.first() {
        Some(&b) if bitness == 64 && b & 0xF0 == 0x40 => (b, &bytes[1..]),
        _ => (0, bytes),
    };
    let [0x0F, op @ (0x20 | 0x22), modrm, ..] = *rest else {
        return None;
    };
    // The mod bits are ignored (always the register form); REX.R extends the
    // control register, REX.B the GPR, REX.W/X do not matter.
    let cr = ((modrm >> 3) & 7) | if rex & 4 != 0 { 8 } else { 0 };
    let gpr = (modrm & 7) | if rex & 1 != 0 { 8 } else { 0 };
    let len = if rex != 0 { 4 } else { 3 };
    let insn = if op == 0x22 {
        CrInsn::MovTo { cr, gpr }
    } else {
        CrInsn::MovFrom { cr, gpr }
    };
    Some((insn, len))
}

/// LGDT/LIDT: `Some(true)` for LIDT, `Some(false)` for LGDT.
pub fn descriptor_table_load(i: &Instruction) -> Option<bool> {
    match i.code() {
        Code::Lgdt_m1632_16 | Code::Lgdt_m1632 | Code::Lgdt_m1664 => Some(false),
        Code::Lidt_m1632_16 | Code::Lidt_m1632 | Code::Lidt_m1664 => Some(true),
        _ => None,
    }
}

/// Register values for effective-address computation.
pub trait RegisterFile {
    /// GPR by architectural number.
    fn gpr(&self, n: u8) -> u64;
    /// Segment base (FS/GS in 64-bit mode; all in legacy modes).
    fn segment_base(&self, seg: Register) -> u64;
}

/// The linear address and size (bytes) of the first memory operand.
pub fn memory_operand(i: &Instruction, regs: &impl RegisterFile) -> Option<(u64, usize)> {
    let op = (0..i.op_count()).find(|&n| {
        matches!(
            i.op_kind(n),
            OpKind::Memory
                | OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemorySegDI
                | OpKind::MemorySegEDI
                | OpKind::MemorySegRDI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
        )
    })?;
    let la = i.virtual_address(op, 0, |reg, _, _| {
        if matches!(
            reg,
            Register::ES | Register::CS | Register::SS | Register::DS | Register::FS | Register::GS
        ) {
            return Some(regs.segment_base(reg));
        }
        let (width, n) = gpr_info(reg)?;
        let v = regs.gpr(n);
        Some(match width {
            4 => v & 0xFFFF_FFFF,
            2 => v & 0xFFFF,
            _ => v,
        })
    })?;
    Some((la, memory_bytes(i.memory_size())))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Regs([u64; 16]);
    impl RegisterFile for Regs {
        fn gpr(&self, n: u8) -> u64 {
            self.0[n as usize]
        }
        fn segment_base(&self, seg: Register) -> u64 {
            if seg == Register::GS {
                0x1_0000
            } else {
                0
            }
        }
    }

    #[test]
    fn control_register_moves() {
        // mov cr0, rbx; mov cr4, r10; mov rax, cr3; mov r9, cr2; clts
        let cases: &[(&[u8], CrInsn, usize)] = &[
            (&[0x0F, 0x22, 0xC3], CrInsn::MovTo { cr: 0, gpr: 3 }, 3),
            (
                &[0x41, 0x0F, 0x22, 0xE2],
                CrInsn::MovTo { cr: 4, gpr: 10 },
                4,
            ),
            (&[0x0F, 0x20, 0xD8], CrInsn::MovFrom { cr: 3, gpr: 0 }, 3),
            (
                &[0x41, 0x0F, 0x20, 0xD1],
                CrInsn::MovFrom { cr: 2, gpr: 9 },
                4,
            ),
            (
                &[0x44, 0x0F, 0x22, 0xC0],
                CrInsn::MovTo { cr: 8, gpr: 0 },
                4,
            ),
            (&[0x0F, 0x06], CrInsn::Clts, 2),
        ];
        for (bytes, want, len) in cases {
            let i = decode(bytes, 0x1000, 64).unwrap();
            assert_eq!(cr_insn(&i), Some(*want), "{bytes:02x?}");
            assert_eq!(i.len(), *len);
        }
        for (bytes, want, len) in cases {
            assert_eq!(
                quick_cr_move(bytes, 64),
                (*want != CrInsn::Clts).then_some((*want, *len as u32))
            );
        }
        assert_eq!(
            quick_cr_move(&[0x0F, 0x22, 0x00], 64),
            Some((CrInsn::MovTo { cr: 0, gpr: 0 }, 3))
        );
        assert_eq!(quick_cr_move(&[0x0F, 0x06], 64), None);
        assert_eq!(quick_cr_move(&[0x66, 0x0F, 0x22, 0xC0], 64), None);
        let i = decode(&[0x0F, 0x01, 0x30], 0, 64).unwrap(); // lmsw [rax]
        assert_eq!(cr_insn(&i), Some(CrInsn::Lmsw));
        assert_eq!(cr_insn(&decode(&[0x90], 0, 64).unwrap()), None);
    }

    #[test]
    fn memory_operands() {
        let mut r = Regs([0; 16]);
        r.0[0] = 0x2000; // rax
        r.0[1] = 3; // rcx
                    // mov [rax+rcx*8+0x10], edx
        let i = decode(&[0x89, 0x54, 0xC8, 0x10], 0, 64).unwrap();
        assert_eq!(memory_operand(&i, &r), Some((0x2028, 4)));
        // mov rbx, gs:[0x40]
        let i = decode(&[0x65, 0x48, 0x8B, 0x1C, 0x25, 0x40, 0, 0, 0], 0, 64).unwrap();
        assert_eq!(memory_operand(&i, &r), Some((0x1_0040, 8)));
        // RIP-relative: mov byte [rip+0x10], 1 at 0x5000 (length 7)
        let i = decode(&[0xC6, 0x05, 0x10, 0, 0, 0, 1], 0x5000, 64).unwrap();
        assert_eq!(memory_operand(&i, &r), Some((0x5017, 1)));
        // No memory operand.
        let i = decode(&[0x48, 0x89, 0xC3], 0, 64).unwrap();
        assert_eq!(memory_operand(&i, &r), None);
    }

    #[test]
    fn descriptor_tables_and_bitness() {
        let i = decode(&[0x0F, 0x01, 0x18], 0, 64).unwrap(); // lidt [rax]
        assert_eq!(descriptor_table_load(&i), Some(true));
        let i = decode(&[0x0F, 0x01, 0x10], 0, 64).unwrap(); // lgdt [rax]
        assert_eq!(descriptor_table_load(&i), Some(false));
        assert_eq!(bitness(0xA9B, true), 64);
        assert_eq!(bitness(0xC9B, true), 32);
        assert_eq!(bitness(0xC9B, false), 32);
        assert_eq!(bitness(0x9B, false), 16);
        assert_eq!(gpr_number(Register::R12D), Some(12));
        assert_eq!(gpr_number(Register::CR0), None);
    }
}
