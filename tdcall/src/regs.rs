//! The register file of one TDCALL and the [`Tdcall`] trait (§1.1, §1.4).
#![forbid(unsafe_code)]

/// General-purpose registers passed into and returned from a TDCALL.
///
/// RSP is absent: no leaf uses it and TDG.VP.ENTER preserves L1's RSP (§2.3).
/// The layout is fixed (`repr(C)`) because the instruction wrapper in
/// [`crate::hw`] loads and stores it by offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
#[allow(missing_docs)]
pub struct Registers {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl Registers {
    /// GPR by its architectural number (0 = RAX … 15 = R15, §1.5 expose order).
    /// RSP (4) reads as 0 because it is never part of a TDCALL.
    pub fn gpr(&self, n: u8) -> u64 {
        match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            15 => self.r15,
            _ => 0,
        }
    }

    /// Sets a GPR by its architectural number; RSP (4) and numbers above 15 are ignored.
    pub fn set_gpr(&mut self, n: u8, value: u64) {
        match n {
            0 => self.rax = value,
            1 => self.rcx = value,
            2 => self.rdx = value,
            3 => self.rbx = value,
            5 => self.rbp = value,
            6 => self.rsi = value,
            7 => self.rdi = value,
            8 => self.r8 = value,
            9 => self.r9 = value,
            10 => self.r10 = value,
            11 => self.r11 = value,
            12 => self.r12 = value,
            13 => self.r13 = value,
            14 => self.r14 = value,
            15 => self.r15 = value,
            _ => {}
        }
    }
}

/// Executes one TDCALL.
///
/// On entry `regs.rax` holds the leaf and version (§1.1) and the other registers
/// the leaf's inputs; on return every register holds what the TDX module left
/// there, with the completion status in `rax` (§1.2). Implementations: the real
/// instruction ([`crate::hw::HwTdcall`]) and the software model of the module.
pub trait Tdcall {
    /// Runs the TDCALL described by `regs` and writes the outputs back into it.
    fn tdcall(&mut self, regs: &mut Registers);
}

impl<T: Tdcall + ?Sized> Tdcall for &mut T {
    fn tdcall(&mut self, regs: &mut Registers) {
        (**self).tdcall(regs)
    }
}
