//! The isolation test TA ([`lvbs_tee::sandbox::attack_ta`]): every command
//! but PING tries something a TA must not be able to do. Compiled only with
//! the `attack-ta` feature (the emulator's test image).

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use lvbs_tee::dispatch::{ClientIdentity, TaEnv, TrustedApp};
use lvbs_tee::sandbox::attack_ta::{cmd, UUID};
use lvbs_tee::{Params, TeeError, Uuid};

/// The test TA; `target` is the address of another instance's page that the
/// test image passed at start-up (0 if none).
pub struct AttackTa {
    target: u64,
}

impl AttackTa {
    /// With the victim address `target`.
    pub fn new(target: u64) -> Self {
        AttackTa { target }
    }
}

/// Reads 8 bytes at `addr`.
fn read(addr: u64) -> u64 {
    // SAFETY: none — this is the attack: `addr` is not mapped for ring 3 and
    // the read must fault (#PF), ending the instance.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let buf = core::hint::black_box([depth; 64]);
    recurse(depth + 1).wrapping_add(buf[7])
}

impl TrustedApp for AttackTa {
    fn uuid(&self) -> Uuid {
        UUID
    }

    fn name(&self) -> &'static str {
        "isolation test TA"
    }

    fn open_session(
        &mut self,
        _env: &mut TaEnv<'_>,
        _session: u32,
        _client: &ClientIdentity,
        _params: &mut Params,
    ) -> Result<(), TeeError> {
        Ok(())
    }

    fn invoke(
        &mut self,
        _env: &mut TaEnv<'_>,
        _session: u32,
        _client: &ClientIdentity,
        command: u32,
        params: &mut Params,
    ) -> Result<(), TeeError> {
        let v = match command {
            cmd::PING => {
                params.set_value(0, 0x600D, u32::from(self.target != 0))?;
                return Ok(());
            }
            cmd::READ => {
                let (lo, hi) = params.value(0)?;
                read(u64::from(lo) | (u64::from(hi) << 32))
            }
            cmd::READ_OTHER_TA => read(self.target),
            cmd::WRITE_OWN_CODE => {
                let code = <AttackTa as TrustedApp>::invoke as *const () as *mut u8;
                // SAFETY: none — the attack: the instance's code is mapped
                // user R+X without W, so the write must fault.
                unsafe { code.write_volatile(0xCC) };
                0
            }
            cmd::EXECUTE_HEAP => {
                let code: Box<Vec<u8>> = Box::new(vec![0xC3; 16]); // ret
                                                                   // SAFETY: none — the attack: heap pages are NX, so the call
                                                                   // must fault (#PF with the instruction-fetch bit).
                let f: extern "C" fn() = unsafe { core::mem::transmute(code.as_ptr()) };
                f();
                0
            }
            cmd::MOV_CR3 => {
                // SAFETY: none — the attack: MOV to CR3 at CPL 3 is #GP.
                unsafe { core::arch::asm!("xor eax, eax", "mov cr3, rax", out("rax") _) };
                0
            }
            cmd::WRMSR => {
                // SAFETY: none — the attack: WRMSR at CPL 3 is #GP (here of
                // IA32_LSTAR, which the paravisor shares with L2).
                unsafe {
                    core::arch::asm!("wrmsr", in("ecx") 0xC000_0082u32, in("eax") 0u32, in("edx") 0u32)
                };
                0
            }
            cmd::DIVIDE_BY_ZERO => {
                let zero = core::hint::black_box(0u64);
                let q: u64;
                // SAFETY: none — the attack: DIV by zero is #DE (the Rust
                // operator would panic before executing it).
                unsafe {
                    core::arch::asm!("div {0}", in(reg) zero, inout("rax") 1u64 => q, inout("rdx") 0u64 => _)
                };
                q
            }
            cmd::PANIC => panic!("isolation test TA: deliberate panic"),
            cmd::PORT_IO => {
                // SAFETY: none — the attack: port I/O at CPL 3 with IOPL 0
                // and no I/O bitmap is #GP (this port would end the run).
                unsafe { core::arch::asm!("out 0xF4, al", in("al") 0u8) };
                0
            }
            cmd::HLT => {
                // SAFETY: none — the attack: HLT at CPL 3 is #GP.
                unsafe { core::arch::asm!("hlt") };
                0
            }
            cmd::EXHAUST_HEAP => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0x5A; 32 * 1024]);
                    core::hint::black_box(&hoard);
                }
            }
            cmd::X87 => {
                // SAFETY: none — the attack: the x87/MMX registers hold L2's
                // state; with CR0.TS set while a TA runs this is #NM.
                unsafe { core::arch::asm!("fninit") };
                0
            }
            cmd::BAD_SYSCALL => {
                // SAFETY: none — the attack: an unknown system call number.
                unsafe { core::arch::asm!("int 0x80", inout("rax") 0x1234u64 => _) };
                0
            }
            cmd::STACK_OVERFLOW => recurse(0),
            cmd::SGDT => {
                let mut gdtr = [0u8; 10];
                // SAFETY: none — the attack: SGDT at CPL 3 with CR4.UMIP is
                // #GP; without UMIP it would store 10 bytes into `gdtr`.
                unsafe { core::arch::asm!("sgdt [{}]", in(reg) gdtr.as_mut_ptr()) };
                0
            }
            cmd::BAD_REPLY => {
                super::with_message(|m| {
                    if let Some(h) = m.get_mut(..16) {
                        h.copy_from_slice(b"LVTR\x00\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00");
                    }
                });
                super::reply();
                0
            }
            _ => return Err(TeeError::NotSupported),
        };
        // Only reached if the attack was not stopped.
        params.set_value(1, v as u32, (v >> 32) as u32)?;
        Ok(())
    }

    fn close_session(&mut self, _env: &mut TaEnv<'_>, _session: u32) {}
}
