//! Decoding the L2 instruction behind an MMIO EPT violation (`iced-x86`).
//!
//! EPT-violation exits carry no instruction information (§2.3), so L1 decodes
//! the instruction bytes itself. Supported, in 64-bit mode:
//!
//! * `MOV r/m, reg` and `MOV reg, r/m` of 1, 2, 4 or 8 bytes (including the
//!   high-byte registers AH/CH/DH/BH and the `moffs` forms, which are MOVs
//!   with an absolute memory operand);
//! * `MOV r/m, imm` (stores of 1, 2, 4 or 8 bytes);
//! * `MOVZX` / `MOVSX` / `MOVSXD` loads.
//!
//! The memory address is *not* taken from the decoded operand: the exit's GPA
//! is authoritative. The decode only supplies the direction, size and
//! register, so a guest that rewrites its own instruction bytes between the
//! exit and the decode can only confuse itself. Everything else (string moves,
//! read-modify-write instructions, vector loads, segment-register moves) is
//! [`DecodeError::Unsupported`]; undecodable or truncated bytes are
//! [`DecodeError::Invalid`]. The decoder never panics on guest bytes.

use iced_x86::{Decoder, DecoderOptions, Instruction, MemorySize, Mnemonic, OpKind, Register};
use tdcall::vmcall::AccessSize;

/// Longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// A general-purpose register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GprRef {
    /// Architectural number: 0 = RAX … 15 = R15.
    pub index: u8,
    /// Operand width in bytes: 1, 2, 4 or 8.
    pub width: u8,
    /// AH/CH/DH/BH: bits 15:8 of RAX/RCX/RDX/RBX.
    pub high_byte: bool,
}

impl GprRef {
    /// The operand's value given the full 64-bit register.
    pub const fn read(self, full: u64) -> u64 {
        if self.high_byte {
            (full >> 8) & 0xFF
        } else {
            full & width_mask(self.width)
        }
    }

    /// The full register after writing `value` to the operand: 32-bit writes
    /// zero-extend, 8/16-bit writes keep the other bits.
    pub const fn write(self, full: u64, value: u64) -> u64 {
        if self.high_byte {
            (full & !0xFF00) | ((value & 0xFF) << 8)
        } else {
            match self.width {
                8 => value,
                4 => value & 0xFFFF_FFFF,
                w => (full & !width_mask(w)) | (value & width_mask(w)),
            }
        }
    }
}

const fn width_mask(width: u8) -> u64 {
    match width {
        1 => 0xFF,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

/// How a load widens the value into its register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// MOV: same width.
    None,
    /// MOVZX.
    Zero,
    /// MOVSX / MOVSXD.
    Sign,
}

/// Source of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreSource {
    /// A register.
    Gpr(GprRef),
    /// An immediate (already truncated to the access size).
    Imm(u64),
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioOp {
    /// Memory → register.
    Load {
        /// Destination.
        dest: GprRef,
        /// Access size.
        size: AccessSize,
        /// Widening.
        extend: Extend,
    },
    /// Register or immediate → memory.
    Store {
        /// Source.
        src: StoreSource,
        /// Access size.
        size: AccessSize,
    },
}

impl MmioOp {
    /// The access size.
    pub const fn size(&self) -> AccessSize {
        match self {
            MmioOp::Load { size, .. } | MmioOp::Store { size, .. } => *size,
        }
    }

    /// Whether this writes memory.
    pub const fn is_store(&self) -> bool {
        matches!(self, MmioOp::Store { .. })
    }
}

/// A decoded instruction and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedMmio {
    /// What it does.
    pub op: MmioOp,
    /// Length in bytes (RIP advance).
    pub len: u64,
}

/// Why decoding failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a valid (or complete) instruction.
    Invalid,
    /// Valid, but not an MMIO form the core emulates.
    Unsupported(Mnemonic),
}

/// The architectural number, width and high-byte flag of a GPR.
pub fn gpr(reg: Register) -> Option<GprRef> {
    use Register::*;
    let (index, width, high_byte) = match reg {
        AL => (0, 1, false),
        CL => (1, 1, false),
        DL => (2, 1, false),
        BL => (3, 1, false),
        AH => (0, 1, true),
        CH => (1, 1, true),
        DH => (2, 1, true),
        BH => (3, 1, true),
        SPL => (4, 1, false),
        BPL => (5, 1, false),
        SIL => (6, 1, false),
        DIL => (7, 1, false),
        R8L => (8, 1, false),
        R9L => (9, 1, false),
        R10L => (10, 1, false),
        R11L => (11, 1, false),
        R12L => (12, 1, false),
        R13L => (13, 1, false),
        R14L => (14, 1, false),
        R15L => (15, 1, false),
        AX => (0, 2, false),
        CX => (1, 2, false),
        DX => (2, 2, false),
        BX => (3, 2, false),
        SP => (4, 2, false),
        BP => (5, 2, false),
        SI => (6, 2, false),
        DI => (7, 2, false),
        R8W => (8, 2, false),
        R9W => (9, 2, false),
        R10W => (10, 2, false),
        R11W => (11, 2, false),
        R12W => (12, 2, false),
        R13W => (13, 2, false),
        R14W => (14, 2, false),
        R15W => (15, 2, false),
        EAX => (0, 4, false),
        ECX => (1, 4, false),
        EDX => (2, 4, false),
        EBX => (3, 4, false),
        ESP => (4, 4, false),
        EBP => (5, 4, false),
        ESI => (6, 4, false),
        EDI => (7, 4, false),
        R8D => (8, 4, false),
        R9D => (9, 4, false),
        R10D => (10, 4, false),
        R11D => (11, 4, false),
        R12D => (12, 4, false),
        R13D => (13, 4, false),
        R14D => (14, 4, false),
        R15D => (15, 4, false),
        RAX => (0, 8, false),
        RCX => (1, 8, false),
        RDX => (2, 8, false),
        RBX => (3, 8, false),
        RSP => (4, 8, false),
        RBP => (5, 8, false),
        RSI => (6, 8, false),
        RDI => (7, 8, false),
        R8 => (8, 8, false),
        R9 => (9, 8, false),
        R10 => (10, 8, false),
        R11 => (11, 8, false),
        R12 => (12, 8, false),
        R13 => (13, 8, false),
        R14 => (14, 8, false),
        R15 => (15, 8, false),
        _ => return Option::None,
    };
    Some(GprRef {
        index,
        width,
        high_byte,
    })
}

fn memory_bytes(m: MemorySize) -> Option<AccessSize> {
    match m {
        MemorySize::UInt8 | MemorySize::Int8 => Some(AccessSize::B1),
        MemorySize::UInt16 | MemorySize::Int16 => Some(AccessSize::B2),
        MemorySize::UInt32 | MemorySize::Int32 => Some(AccessSize::B4),
        MemorySize::UInt64 | MemorySize::Int64 => Some(AccessSize::B8),
        _ => None,
    }
}

fn is_immediate(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

/// Decodes one 64-bit-mode instruction from `bytes` (at most 15 are used).
pub fn decode_mmio(bytes: &[u8], rip: u64) -> Result<DecodedMmio, DecodeError> {
    let bytes = &bytes[..bytes.len().min(MAX_INSN_LEN)];
    let mut decoder = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return Err(DecodeError::Invalid);
    }
    let op = classify(&insn).ok_or(DecodeError::Unsupported(insn.mnemonic()))?;
    Ok(DecodedMmio {
        op,
        len: insn.len() as u64,
    })
}

fn classify(insn: &Instruction) -> Option<MmioOp> {
    if insn.op_count() != 2 || insn.has_lock_prefix() {
        return None;
    }
    let (k0, k1) = (insn.op0_kind(), insn.op1_kind());
    let size = memory_bytes(insn.memory_size())?;
    match insn.mnemonic() {
        Mnemonic::Mov => match (k0, k1) {
            (OpKind::Memory, OpKind::Register) => {
                let src = gpr(insn.op1_register())?;
                (src.width as usize == size as usize).then_some(MmioOp::Store {
                    src: StoreSource::Gpr(src),
                    size,
                })
            }
            (OpKind::Memory, k) if is_immediate(k) => {
                let imm = insn.try_immediate(1).ok()? & size.mask();
                Some(MmioOp::Store {
                    src: StoreSource::Imm(imm),
                    size,
                })
            }
            (OpKind::Register, OpKind::Memory) => {
                let dest = gpr(insn.op0_register())?;
                (dest.width as usize == size as usize).then_some(MmioOp::Load {
                    dest,
                    size,
                    extend: Extend::None,
                })
            }
            _ => None,
        },
        m @ (Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd) => {
            if (k0, k1) != (OpKind::Register, OpKind::Memory) {
                return None;
            }
            let dest = gpr(insn.op0_register())?;
            if dest.high_byte || (dest.width as usize) < size as usize {
                return None;
            }
            let extend = if m == Mnemonic::Movzx {
                Extend::Zero
            } else {
                Extend::Sign
            };
            Some(MmioOp::Load { dest, size, extend })
        }
        _ => None,
    }
}

/// Widens a loaded value of `size` for `extend` (the result is then written
/// through [`GprRef::write`], which truncates to the destination width).
pub fn extend_value(value: u64, size: AccessSize, extend: Extend) -> u64 {
    let v = value & size.mask();
    match extend {
        Extend::None | Extend::Zero => v,
        Extend::Sign => {
            let shift = 64 - 8 * size as u32;
            (((v << shift) as i64) >> shift) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(bytes: &[u8]) -> Result<DecodedMmio, DecodeError> {
        decode_mmio(bytes, 0x1000)
    }

    #[test]
    fn mov_store_and_load_all_sizes() {
        // mov [rax], bl / mov [rax], bx / mov [rax], ebx / mov [rax], rbx
        let cases: [(&[u8], AccessSize, u8, u64); 4] = [
            (&[0x88, 0x18], AccessSize::B1, 1, 2),
            (&[0x66, 0x89, 0x18], AccessSize::B2, 2, 3),
            (&[0x89, 0x18], AccessSize::B4, 4, 2),
            (&[0x48, 0x89, 0x18], AccessSize::B8, 8, 3),
        ];
        for (bytes, size, width, len) in cases {
            let got = d(bytes).unwrap();
            assert_eq!(got.len, len);
            assert_eq!(
                got.op,
                MmioOp::Store {
                    src: StoreSource::Gpr(GprRef {
                        index: 3,
                        width,
                        high_byte: false
                    }),
                    size
                }
            );
        }
        // mov r9d, [rdi+8]: 44 8B 4F 08
        assert_eq!(
            d(&[0x44, 0x8B, 0x4F, 0x08]).unwrap(),
            DecodedMmio {
                op: MmioOp::Load {
                    dest: GprRef {
                        index: 9,
                        width: 4,
                        high_byte: false
                    },
                    size: AccessSize::B4,
                    extend: Extend::None
                },
                len: 4
            }
        );
        // mov ah, [rsi]: 8A 26
        assert_eq!(
            d(&[0x8A, 0x26]).unwrap().op,
            MmioOp::Load {
                dest: GprRef {
                    index: 0,
                    width: 1,
                    high_byte: true
                },
                size: AccessSize::B1,
                extend: Extend::None
            }
        );
    }

    #[test]
    fn immediates_moffs_and_extensions() {
        // mov dword [rax], 0x12345678: C7 00 78 56 34 12
        assert_eq!(
            d(&[0xC7, 0x00, 0x78, 0x56, 0x34, 0x12]).unwrap().op,
            MmioOp::Store {
                src: StoreSource::Imm(0x1234_5678),
                size: AccessSize::B4
            }
        );
        // mov qword [rax], -1 (imm32 sign-extended): 48 C7 00 FF FF FF FF
        assert_eq!(
            d(&[0x48, 0xC7, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]).unwrap().op,
            MmioOp::Store {
                src: StoreSource::Imm(u64::MAX),
                size: AccessSize::B8
            }
        );
        // mov eax, [moffs64]: A1 + 8-byte address
        let moffs = d(&[0xA1, 0, 0x10, 0xE0, 0xFE, 0, 0, 0, 0]).unwrap();
        assert_eq!(moffs.len, 9);
        assert!(matches!(
            moffs.op,
            MmioOp::Load {
                size: AccessSize::B4,
                ..
            }
        ));
        // movzx eax, word [rbx]: 0F B7 03
        assert_eq!(
            d(&[0x0F, 0xB7, 0x03]).unwrap().op,
            MmioOp::Load {
                dest: GprRef {
                    index: 0,
                    width: 4,
                    high_byte: false
                },
                size: AccessSize::B2,
                extend: Extend::Zero
            }
        );
        // movsx rax, byte [rbx]: 48 0F BE 03
        assert!(matches!(
            d(&[0x48, 0x0F, 0xBE, 0x03]).unwrap().op,
            MmioOp::Load {
                extend: Extend::Sign,
                size: AccessSize::B1,
                ..
            }
        ));
        assert_eq!(
            extend_value(0x80, AccessSize::B1, Extend::Sign),
            u64::MAX - 0x7F
        );
        assert_eq!(extend_value(0x1_7F, AccessSize::B1, Extend::Sign), 0x7F);
        assert_eq!(extend_value(0xFFFF, AccessSize::B2, Extend::Zero), 0xFFFF);
    }

    #[test]
    fn register_write_semantics() {
        let full = 0x1122_3344_5566_7788;
        let al = gpr(Register::AL).unwrap();
        let ah = gpr(Register::AH).unwrap();
        let ax = gpr(Register::AX).unwrap();
        let eax = gpr(Register::EAX).unwrap();
        assert_eq!(al.write(full, 0xAB), 0x1122_3344_5566_77AB);
        assert_eq!(ah.write(full, 0xAB), 0x1122_3344_5566_AB88);
        assert_eq!(ax.write(full, 0xABCD), 0x1122_3344_5566_ABCD);
        assert_eq!(eax.write(full, 0xABCD), 0xABCD);
        assert_eq!(ah.read(full), 0x77);
        assert_eq!(ax.read(full), 0x7788);
        assert_eq!(gpr(Register::ES), None);
    }

    #[test]
    fn rejects_what_it_does_not_emulate() {
        assert_eq!(d(&[]), Err(DecodeError::Invalid));
        assert_eq!(d(&[0x48, 0x89]), Err(DecodeError::Invalid), "truncated");
        assert_eq!(
            d(&[0x0F, 0x0B]),
            Err(DecodeError::Unsupported(Mnemonic::Ud2))
        );
        // add [rax], ebx
        assert_eq!(
            d(&[0x01, 0x18]),
            Err(DecodeError::Unsupported(Mnemonic::Add))
        );
        // movsb
        assert!(d(&[0xA4]).is_err());
        // mov [rax], ds (8C 18)
        assert!(d(&[0x8C, 0x18]).is_err());
        // mov eax, ebx (no memory operand)
        assert!(d(&[0x89, 0xD8]).is_err());
        // lock-prefixed garbage
        assert!(d(&[0xF0, 0x89, 0x18]).is_err());
        // Every 1- and 2-byte input decodes or fails without panicking.
        for a in 0..=255u8 {
            let _ = d(&[a]);
            for b in 0..=255u8 {
                let _ = d(&[a, b, 0, 0]);
            }
        }
    }
}
