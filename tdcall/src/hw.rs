//! The `tdcall` instruction: the one place in this crate that executes it.
#![allow(unsafe_code)]

use crate::regs::{Registers, Tdcall};

/// Executes TDCALL on the CPU. Only meaningful inside a TD; anywhere else the
/// instruction raises #UD (which is how the project's emulator intercepts it).
#[derive(Clone, Copy, Debug, Default)]
pub struct HwTdcall;

impl Tdcall for HwTdcall {
    fn tdcall(&mut self, regs: &mut Registers) {
        let ptr: *mut Registers = regs;
        // SAFETY: `ptr` points to a live, exclusively borrowed `Registers` (repr(C),
        // 15 u64 in the order the offsets below use). The block saves RBX and RBP,
        // which Rust forbids as operands, loads every input register from the
        // struct, runs TDCALL (bytes 66 0F 01 CC), stores every output register back
        // and restores RBX/RBP and RSP. All other GPRs are declared clobbered, and
        // vector state is covered by `clobber_abi`, because TDG.VP.ENTER returns with
        // whatever L2 left in them (§2.3, §2.10). TDCALL does not touch L1 memory
        // other than through the GPAs the caller chose to pass.
        unsafe {
            core::arch::asm!(
                "push rbp",
                "push rbx",
                "push rax",
                "mov rcx, [rax + 0x08]",
                "mov rdx, [rax + 0x10]",
                "mov rbx, [rax + 0x18]",
                "mov rbp, [rax + 0x20]",
                "mov rsi, [rax + 0x28]",
                "mov rdi, [rax + 0x30]",
                "mov r8,  [rax + 0x38]",
                "mov r9,  [rax + 0x40]",
                "mov r10, [rax + 0x48]",
                "mov r11, [rax + 0x50]",
                "mov r12, [rax + 0x58]",
                "mov r13, [rax + 0x60]",
                "mov r14, [rax + 0x68]",
                "mov r15, [rax + 0x70]",
                "mov rax, [rax + 0x00]",
                ".byte 0x66, 0x0f, 0x01, 0xcc",
                "push rax",
                "mov rax, [rsp + 8]",
                "mov [rax + 0x08], rcx",
                "mov [rax + 0x10], rdx",
                "mov [rax + 0x18], rbx",
                "mov [rax + 0x20], rbp",
                "mov [rax + 0x28], rsi",
                "mov [rax + 0x30], rdi",
                "mov [rax + 0x38], r8",
                "mov [rax + 0x40], r9",
                "mov [rax + 0x48], r10",
                "mov [rax + 0x50], r11",
                "mov [rax + 0x58], r12",
                "mov [rax + 0x60], r13",
                "mov [rax + 0x68], r14",
                "mov [rax + 0x70], r15",
                "pop rcx",
                "mov [rax + 0x00], rcx",
                "add rsp, 8",
                "pop rbx",
                "pop rbp",
                inout("rax") ptr => _,
                out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                out("r12") _, out("r13") _, out("r14") _, out("r15") _,
                clobber_abi("sysv64"),
            );
        }
    }
}
