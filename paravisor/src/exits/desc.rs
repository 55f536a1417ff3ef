//! Descriptor-table exits (reasons 46 and 47; §2.5 secondary bit 2, §4).
//!
//! Descriptor-table exiting is only turned on by [`crate::pinning::lock_registers`],
//! so every such exit happens after LOCK_REGS.
//!
//! * LGDT, LIDT, LLDT and LTR are refused with #GP(0) (logged).
//! * SGDT, SIDT, SLDT and STR trap too (the control covers loads and stores,
//!   SDM Vol. 3C §26.1.3) and are **emulated**, since Linux reads its own
//!   tables (`store_idt`, `store_gdt`, `store_tr`):
//!   1. at CPL > 0 with CR4.UMIP they #GP(0), as the CPU would (UMIP is
//!      pinned, so user mode normally never gets here);
//!   2. the instruction is fetched at CS:RIP through L2's page tables
//!      ([`super::mmio::fetch_instruction`], 64-bit code only) and decoded with
//!      `iced-x86`; it must be the instruction the exit names (instruction
//!      information bits 29:28) and have the exit's length, else #GP(0);
//!   3. the value comes from the L2 VMCS: GUEST_GDTR_BASE/LIMIT,
//!      GUEST_IDTR_BASE/LIMIT (the 10-byte 64-bit-mode image, limit then
//!      base), GUEST_LDTR_SELECTOR, GUEST_TR_SELECTOR;
//!   4. a register destination (SLDT/STR only) is written with the SDM's rules:
//!      a 16-bit register keeps bits 63:16, a 32-bit one is zero-extended to
//!      64 bits (as every 32-bit write in 64-bit mode), a 64-bit one gets the
//!      zero-extended selector;
//!   5. a memory destination's linear address is base + index × scale +
//!      displacement (RIP-relative resolved by the decoder), truncated to 32
//!      bits with an address-size override, plus the FS or GS base for those
//!      segment overrides (other segment bases are 0 in 64-bit mode). The
//!      store goes through [`GuestMemory::write_linear`]: every page it
//!      touches must allow an L2 write at the exit's CPL in L2's page tables
//!      (R/W with CR0.WP, U/S, SMAP with RFLAGS.AC) and have an L2 alias with
//!      R|W, so the emulation can never write where L2 itself could not.
//!
//!   Any failure (unreadable or changed instruction, non-canonical or
//!   unmapped destination, a page L2 cannot write) injects #GP(0) with a log
//!   line instead of the #PF a CPU might raise: a #PF needs CR2, which TDX
//!   shares between L1 and L2 (§2.10) and the core cannot set, and #GP(0) is
//!   the paravisor's answer to every refused access (design.md §4). On
//!   success RIP advances by the decoded length.
//!
//! Not emulated: 16/32-bit code (refused), accessed/dirty-bit updates in L2's
//! page tables for the store.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use tdcall::field::vmcs;
use tdcall::vmx::reason;

use super::guest::{self, GuestMemory};
use super::{ExitCtx, ExitResult};
use crate::field;
use crate::inject::Exception;
use crate::insn;
use crate::memory::Platform;
use crate::walk::{Access, AccessKind, CR4_UMIP, RFLAGS_AC};

/// The instruction behind a descriptor-table exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescInsn {
    /// SGDT m.
    Sgdt,
    /// SIDT m.
    Sidt,
    /// LGDT m.
    Lgdt,
    /// LIDT m.
    Lidt,
    /// SLDT r/m16.
    Sldt,
    /// STR r/m16.
    Str,
    /// LLDT r/m16.
    Lldt,
    /// LTR r/m16.
    Ltr,
}

impl DescInsn {
    /// Instruction-information bits 29:28 name the instruction (SDM Vol. 3C
    /// §28.2.5, tables "Format of the VM-Exit Instruction-Information Field as
    /// Used for LIDT, LGDT, SIDT, or SGDT" / "… for LLDT, LTR, SLDT, and STR"):
    /// for reason 46 SGDT, SIDT, LGDT, LIDT; for 47 SLDT, STR, LLDT, LTR.
    pub const fn from_exit(basic: u16, info: u32) -> Self {
        const GDTR_IDTR: [DescInsn; 4] = [
            DescInsn::Sgdt,
            DescInsn::Sidt,
            DescInsn::Lgdt,
            DescInsn::Lidt,
        ];
        const LDTR_TR: [DescInsn; 4] =
            [DescInsn::Sldt, DescInsn::Str, DescInsn::Lldt, DescInsn::Ltr];
        let i = ((info >> 28) & 3) as usize;
        if basic == reason::GDTR_IDTR_ACCESS {
            GDTR_IDTR[i]
        } else {
            LDTR_TR[i]
        }
    }

    /// The mnemonic.
    pub const fn name(self) -> &'static str {
        match self {
            DescInsn::Sgdt => "SGDT",
            DescInsn::Sidt => "SIDT",
            DescInsn::Lgdt => "LGDT",
            DescInsn::Lidt => "LIDT",
            DescInsn::Sldt => "SLDT",
            DescInsn::Str => "STR",
            DescInsn::Lldt => "LLDT",
            DescInsn::Ltr => "LTR",
        }
    }

    /// The `iced-x86` mnemonic.
    pub const fn mnemonic(self) -> Mnemonic {
        match self {
            DescInsn::Sgdt => Mnemonic::Sgdt,
            DescInsn::Sidt => Mnemonic::Sidt,
            DescInsn::Lgdt => Mnemonic::Lgdt,
            DescInsn::Lidt => Mnemonic::Lidt,
            DescInsn::Sldt => Mnemonic::Sldt,
            DescInsn::Str => Mnemonic::Str,
            DescInsn::Lldt => Mnemonic::Lldt,
            DescInsn::Ltr => Mnemonic::Ltr,
        }
    }

    /// SGDT/SIDT/SLDT/STR.
    pub const fn is_store(self) -> bool {
        matches!(
            self,
            DescInsn::Sgdt | DescInsn::Sidt | DescInsn::Sldt | DescInsn::Str
        )
    }
}

/// Where a decoded store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreTarget {
    /// A general-purpose register (SLDT/STR).
    Register(insn::GprRef),
    /// Memory at this linear address.
    Memory(u64),
}

/// Why a store instruction cannot be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDecodeError {
    /// Undecodable or truncated bytes.
    Invalid,
    /// A valid instruction, but not the one the exit names.
    Mismatch(Mnemonic),
    /// An operand form the emulation does not handle.
    Unsupported,
}

/// Register and segment-base values for the effective address.
pub trait AddressRegs {
    /// GPR `n` (0 = RAX … 15 = R15).
    fn gpr(&self, n: u8) -> u64;
    /// The FS (`fs`) or GS base.
    fn fs_gs_base(&mut self, fs: bool) -> Option<u64>;
}

/// Decodes the 64-bit instruction in `bytes` at `rip`, checks that it is
/// `expected`, and resolves its destination. Returns the target and length.
pub fn decode_store<R: AddressRegs + ?Sized>(
    bytes: &[u8],
    rip: u64,
    expected: DescInsn,
    regs: &mut R,
) -> Result<(StoreTarget, u64), StoreDecodeError> {
    let bytes = &bytes[..bytes.len().min(insn::MAX_INSN_LEN)];
    let mut decoder = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
    let i = decoder.decode();
    if i.is_invalid() {
        return Err(StoreDecodeError::Invalid);
    }
    if i.mnemonic() != expected.mnemonic() {
        return Err(StoreDecodeError::Mismatch(i.mnemonic()));
    }
    if i.op_count() != 1 || i.has_lock_prefix() {
        return Err(StoreDecodeError::Unsupported);
    }
    let len = i.len() as u64;
    match i.op0_kind() {
        OpKind::Register => insn::gpr(i.op0_register())
            .filter(|g| !g.high_byte && g.width >= 2)
            .map(|g| (StoreTarget::Register(g), len))
            .ok_or(StoreDecodeError::Unsupported),
        OpKind::Memory => effective_address(&i, regs)
            .map(|la| (StoreTarget::Memory(la), len))
            .ok_or(StoreDecodeError::Unsupported),
        _ => Err(StoreDecodeError::Unsupported),
    }
}

/// 64-bit-mode linear address of `i`'s memory operand (SDM Vol. 1 §3.7.5):
/// base + index × scale + displacement, with RIP/EIP-relative operands
/// already resolved by the decoder, wrapped to 32 bits under an
/// address-size override, plus the FS/GS base for those segments.
fn effective_address<R: AddressRegs + ?Sized>(i: &Instruction, regs: &mut R) -> Option<u64> {
    let reg_value = |regs: &R, r: Register| -> Option<(u64, bool)> {
        if r == Register::None {
            return Some((0, false));
        }
        if r == Register::RIP || r == Register::EIP {
            // The decoder folds next-RIP into the displacement.
            return Some((0, r == Register::EIP));
        }
        let g = insn::gpr(r)?;
        match g.width {
            8 => Some((regs.gpr(g.index), false)),
            4 => Some((regs.gpr(g.index) & 0xFFFF_FFFF, true)),
            _ => None,
        }
    };
    let (base, base32) = reg_value(regs, i.memory_base())?;
    let (index, index32) = reg_value(regs, i.memory_index())?;
    let addr32 = base32 || index32 || i.memory_displ_size() == 4;
    let mut ea = base
        .wrapping_add(index.wrapping_mul(i.memory_index_scale() as u64))
        .wrapping_add(i.memory_displacement64());
    if addr32 {
        ea &= 0xFFFF_FFFF;
    }
    let seg = match i.memory_segment() {
        Register::FS => regs.fs_gs_base(true)?,
        Register::GS => regs.fs_gs_base(false)?,
        _ => 0,
    };
    Some(ea.wrapping_add(seg))
}

/// Handles exits 46 and 47.
pub fn handle<P: Platform>(cx: &mut ExitCtx<'_, P>) -> ExitResult {
    let which = DescInsn::from_exit(cx.exit.exit_reason().basic(), cx.exit.instruction_info);
    let rip = cx.state.rip;
    if !which.is_store() {
        log::warn!(
            "L2 {} at RIP {rip:#x} after LOCK_REGS: #GP(0)",
            which.name()
        );
        return cx.inject(Exception::GeneralProtection);
    }
    match emulate_store(cx, which) {
        Ok(len) => {
            cx.advance_rip(len);
            Ok(super::ExitAction::Resume)
        }
        Err(Refused::Gp(why)) => {
            log::warn!(
                "L2 {} at RIP {rip:#x} (CPL {}) not emulated: {why}: #GP(0)",
                which.name(),
                cx.exit.cpl
            );
            cx.inject(Exception::GeneralProtection)
        }
        Err(Refused::Stop(e)) => Err(e),
    }
}

enum Refused {
    Gp(alloc::string::String),
    Stop(crate::vcpu::StopReason),
}

impl From<crate::FieldAccessError> for Refused {
    fn from(e: crate::FieldAccessError) -> Self {
        Refused::Stop(e.into())
    }
}

fn gp(why: impl core::fmt::Display) -> Refused {
    Refused::Gp(alloc::format!("{why}"))
}

struct VmcsRegs<'c, 'a, P: Platform> {
    cx: &'c mut ExitCtx<'a, P>,
}

impl<P: Platform> AddressRegs for VmcsRegs<'_, '_, P> {
    fn gpr(&self, n: u8) -> u64 {
        self.cx.gpr(n)
    }
    fn fs_gs_base(&mut self, fs: bool) -> Option<u64> {
        let f = if fs {
            vmcs::GUEST_FS_BASE
        } else {
            vmcs::GUEST_GS_BASE
        };
        field::read_vmcs(self.cx.platform, self.cx.vm, f)
            .map_err(|e| log::warn!("{e}"))
            .ok()
    }
}

/// Emulates SGDT/SIDT/SLDT/STR; returns the instruction length.
fn emulate_store<P: Platform>(cx: &mut ExitCtx<'_, P>, which: DescInsn) -> Result<u64, Refused> {
    let paging = guest::read_paging(cx.platform, cx.vm)?;
    if cx.exit.cpl > 0 && paging.cr4 & CR4_UMIP != 0 {
        return Err(gp("CR4.UMIP at CPL > 0"));
    }
    let Some((bytes, n)) = super::mmio::fetch_instruction_with(cx, &paging, which.name()) else {
        return Err(gp("instruction bytes unavailable"));
    };
    let rip = cx.state.rip;
    let (target, len) = decode_store(&bytes[..n], rip, which, &mut VmcsRegs { cx })
        .map_err(|e| gp(alloc::format!("decode of {:02x?}: {e:?}", &bytes[..n])))?;
    let exit_len = cx.exit.instruction_length as u64;
    if exit_len != 0 && exit_len != len {
        return Err(gp(alloc::format!(
            "decoded length {len} differs from the exit's {exit_len}"
        )));
    }
    let (image, size): ([u8; 10], usize) = match which {
        DescInsn::Sgdt | DescInsn::Sidt => {
            let (b, l) = if which == DescInsn::Sgdt {
                (vmcs::GUEST_GDTR_BASE, vmcs::GUEST_GDTR_LIMIT)
            } else {
                (vmcs::GUEST_IDTR_BASE, vmcs::GUEST_IDTR_LIMIT)
            };
            let base = field::read_vmcs(cx.platform, cx.vm, b)?;
            let limit = field::read_vmcs(cx.platform, cx.vm, l)? as u16;
            (descriptor_image(limit, base), 10)
        }
        _ => {
            let f = if which == DescInsn::Sldt {
                vmcs::GUEST_LDTR_SELECTOR
            } else {
                vmcs::GUEST_TR_SELECTOR
            };
            let sel = field::read_vmcs(cx.platform, cx.vm, f)? as u16;
            let mut b = [0u8; 10];
            b[..2].copy_from_slice(&sel.to_le_bytes());
            (b, 2)
        }
    };
    match target {
        StoreTarget::Register(g) => {
            let sel = u16::from_le_bytes([image[0], image[1]]) as u64;
            let full = g.write(cx.gpr(g.index), sel);
            cx.set_gpr(g.index, full);
            log::debug!("L2 {} -> {:?} = {sel:#x}", which.name(), g);
        }
        StoreTarget::Memory(la) => {
            let access = Access {
                kind: AccessKind::Write,
                user: cx.exit.cpl == 3,
                ac: cx.state.rflags & RFLAGS_AC != 0,
            };
            let mut mem = GuestMemory::new(cx.platform, cx.vm);
            mem.write_linear(&paging, la, &image[..size], access)
                .map_err(|e| gp(alloc::format!("store to {la:#x}: {e}")))?;
            log::debug!(
                "L2 {} -> [{la:#x}] = {:02x?} ({} ATTR.RD)",
                which.name(),
                &image[..size],
                mem.attr_reads()
            );
        }
    }
    Ok(len)
}

/// The 64-bit-mode SGDT/SIDT image: limit (2 bytes) then base (8 bytes),
/// little-endian (SDM Vol. 2B "SGDT").
pub fn descriptor_image(limit: u16, base: u64) -> [u8; 10] {
    let mut b = [0u8; 10];
    b[..2].copy_from_slice(&limit.to_le_bytes());
    b[2..].copy_from_slice(&base.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Regs([u64; 16], u64, u64);

    impl AddressRegs for Regs {
        fn gpr(&self, n: u8) -> u64 {
            self.0[n as usize]
        }
        fn fs_gs_base(&mut self, fs: bool) -> Option<u64> {
            Some(if fs { self.1 } else { self.2 })
        }
    }

    fn regs() -> Regs {
        let mut g = [0u64; 16];
        for (i, r) in g.iter_mut().enumerate() {
            *r = 0x1000 * (i as u64 + 1);
        }
        // RDI: a high kernel address; R9: a value whose low half matters.
        g[7] = 0xFFFF_8880_0000_0000;
        g[9] = 0xFFFF_FFFF_0000_0010;
        Regs(g, 0x7F00_0000_0000, 0xFFFF_8881_0000_0000)
    }

    const RIP: u64 = 0xFFFF_FFFF_8100_0000;

    fn d(bytes: &[u8], which: DescInsn) -> Result<(StoreTarget, u64), StoreDecodeError> {
        decode_store(bytes, RIP, which, &mut regs())
    }

    #[test]
    fn names() {
        assert_eq!(DescInsn::from_exit(46, 3 << 28), DescInsn::Lidt);
        assert_eq!(DescInsn::from_exit(46, 2 << 28), DescInsn::Lgdt);
        assert_eq!(DescInsn::from_exit(46, 1 << 28), DescInsn::Sidt);
        assert_eq!(DescInsn::from_exit(46, 0), DescInsn::Sgdt);
        assert_eq!(DescInsn::from_exit(47, 3 << 28), DescInsn::Ltr);
        assert_eq!(DescInsn::from_exit(47, 1 << 28), DescInsn::Str);
        assert_eq!(DescInsn::from_exit(47, 0).name(), "SLDT");
        assert!(!DescInsn::Lldt.is_store() && DescInsn::Str.is_store());
    }

    #[test]
    fn memory_operands() {
        // sidt [rdi]: 0F 01 0F
        assert_eq!(
            d(&[0x0F, 0x01, 0x0F], DescInsn::Sidt),
            Ok((StoreTarget::Memory(0xFFFF_8880_0000_0000), 3))
        );
        // sgdt [rax+rcx*4+0x10]: 0F 01 44 88 10
        assert_eq!(
            d(&[0x0F, 0x01, 0x44, 0x88, 0x10], DescInsn::Sgdt),
            Ok((StoreTarget::Memory(0x1000 + 0x2000 * 4 + 0x10), 5))
        );
        // sgdt [rbx-8]: 0F 01 43 F8 (negative displacement wraps)
        assert_eq!(
            d(&[0x0F, 0x01, 0x43, 0xF8], DescInsn::Sgdt),
            Ok((StoreTarget::Memory(0x4000 - 8), 4))
        );
        // sidt [rip+0x100]: 0F 01 0D 00 01 00 00 (7 bytes; next RIP + 0x100)
        assert_eq!(
            d(&[0x0F, 0x01, 0x0D, 0, 1, 0, 0], DescInsn::Sidt),
            Ok((StoreTarget::Memory(RIP + 7 + 0x100), 7))
        );
        // sidt gs:[rdi+8]: 65 0F 01 4F 08
        assert_eq!(
            d(&[0x65, 0x0F, 0x01, 0x4F, 0x08], DescInsn::Sidt),
            Ok((
                StoreTarget::Memory(0xFFFF_8881_0000_0000u64.wrapping_add(0xFFFF_8880_0000_0008)),
                5
            ))
        );
        // sgdt fs:[0x20] (SIB, no base): 64 0F 01 04 25 20 00 00 00
        assert_eq!(
            d(
                &[0x64, 0x0F, 0x01, 0x04, 0x25, 0x20, 0, 0, 0],
                DescInsn::Sgdt
            ),
            Ok((StoreTarget::Memory(0x7F00_0000_0020), 9))
        );
        // Address-size override: sidt [r9d]: 67 41 0F 01 09 → low 32 bits of R9.
        assert_eq!(
            d(&[0x67, 0x41, 0x0F, 0x01, 0x09], DescInsn::Sidt),
            Ok((StoreTarget::Memory(0x10), 5))
        );
        // [edi+0xFFFFFFF8] wraps inside 32 bits: 67 0F 01 4F F8 (EDI = 0)
        assert_eq!(
            d(&[0x67, 0x0F, 0x01, 0x4F, 0xF8], DescInsn::Sidt),
            Ok((StoreTarget::Memory(0xFFFF_FFF8), 5))
        );
        // sidt [rdi+0x1000] (disp32, 64-bit addressing): 0F 01 8F 00 10 00 00
        assert_eq!(
            d(&[0x0F, 0x01, 0x8F, 0, 0x10, 0, 0], DescInsn::Sidt),
            Ok((StoreTarget::Memory(0xFFFF_8880_0000_1000), 7))
        );
        // sidt [0xFFFFFF00] (SIB, no base: disp32 sign-extended): 0F 01 0C 25 00 FF FF FF
        assert_eq!(
            d(
                &[0x0F, 0x01, 0x0C, 0x25, 0, 0xFF, 0xFF, 0xFF],
                DescInsn::Sidt
            ),
            Ok((StoreTarget::Memory(0xFFFF_FFFF_FFFF_FF00), 8))
        );
        // The same with an address-size override: zero-extended.
        assert_eq!(
            d(
                &[0x67, 0x0F, 0x01, 0x0C, 0x25, 0, 0xFF, 0xFF, 0xFF],
                DescInsn::Sidt
            ),
            Ok((StoreTarget::Memory(0xFFFF_FF00), 9))
        );
        // sldt [rsi]: 0F 00 06; str word [rdx]: 0F 00 0A
        assert_eq!(
            d(&[0x0F, 0x00, 0x06], DescInsn::Sldt),
            Ok((StoreTarget::Memory(0x7000), 3))
        );
        assert_eq!(
            d(&[0x0F, 0x00, 0x0A], DescInsn::Str),
            Ok((StoreTarget::Memory(0x3000), 3))
        );
    }

    #[test]
    fn register_destinations() {
        let reg = |bytes: &[u8], which| match d(bytes, which) {
            Ok((StoreTarget::Register(g), _)) => g,
            other => panic!("{other:?}"),
        };
        // str eax: 0F 00 C8; str ax: 66 0F 00 C8; str rax: 48 0F 00 C8; sldt r11: 49 0F 00 C3
        let eax = reg(&[0x0F, 0x00, 0xC8], DescInsn::Str);
        let ax = reg(&[0x66, 0x0F, 0x00, 0xC8], DescInsn::Str);
        let rax = reg(&[0x48, 0x0F, 0x00, 0xC8], DescInsn::Str);
        let r11 = reg(&[0x49, 0x0F, 0x00, 0xC3], DescInsn::Sldt);
        let full = 0x1122_3344_5566_7788;
        assert_eq!(
            ax.write(full, 0x40),
            0x1122_3344_5566_0040,
            "16-bit keeps 63:16"
        );
        assert_eq!(eax.write(full, 0x40), 0x40, "32-bit zero-extends");
        assert_eq!(rax.write(full, 0x40), 0x40);
        assert_eq!((r11.index, r11.width), (11, 8));
    }

    #[test]
    fn mismatches_and_garbage() {
        // lidt [rdi] behind a SIDT exit.
        assert_eq!(
            d(&[0x0F, 0x01, 0x1F], DescInsn::Sidt),
            Err(StoreDecodeError::Mismatch(Mnemonic::Lidt))
        );
        // sidt behind an SGDT exit.
        assert_eq!(
            d(&[0x0F, 0x01, 0x0F], DescInsn::Sgdt),
            Err(StoreDecodeError::Mismatch(Mnemonic::Sidt))
        );
        assert_eq!(d(&[], DescInsn::Sgdt), Err(StoreDecodeError::Invalid));
        assert_eq!(
            d(&[0x0F, 0x01], DescInsn::Sgdt),
            Err(StoreDecodeError::Invalid)
        );
        // Register form of SGDT is #UD on a CPU (iced: invalid).
        assert!(d(&[0x0F, 0x01, 0xC0 | 0x07], DescInsn::Sgdt).is_err());
    }

    #[test]
    fn image_layout() {
        assert_eq!(
            descriptor_image(0xFFF, 0xFFFF_FE00_0000_0000),
            [0xFF, 0x0F, 0, 0, 0, 0, 0, 0xFE, 0xFF, 0xFF]
        );
    }
}
