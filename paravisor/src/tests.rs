//! Unit tests of the loop and set-up against a tiny fake platform. The real
//! coverage is the scenario suite (`tests/scenarios`) against the TDX-module model.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;

use tdcall::field::{controls, vmcs, FieldId};
use tdcall::leaf::Leaf;
use tdcall::vmcall::TdVmcall;
use tdcall::vmx::{reason, InterruptionInfo};
use tdcall::{EnterOutcome, L2ExitInfo, L2Vm, Registers, StatusCode, Tdcall, TdxStatus};

use crate::*;

/// Records field writes, answers reads from them, replays queued ENTER results.
#[derive(Default)]
struct Fake {
    fields: BTreeMap<u64, u64>,
    writes: Vec<(u64, u64, u64)>,
    enters: VecDeque<(u64, L2ExitInfo)>,
    enter_rcx: Vec<u64>,
    vmcalls: Vec<TdVmcall>,
    mem: Vec<u8>,
}

impl Tdcall for Fake {
    fn tdcall(&mut self, r: &mut Registers) {
        match Leaf::from_number(r.rax as u16) {
            Some(Leaf::VpWr) => {
                self.writes.push((r.rdx, r.r8, r.r9));
                let old = self.fields.get(&r.rdx).copied().unwrap_or(0);
                self.fields.insert(r.rdx, (old & !r.r9) | (r.r8 & r.r9));
                r.r8 = old;
                r.rax = 0;
            }
            Some(Leaf::VpRd) => {
                r.r8 = self.fields.get(&r.rdx).copied().unwrap_or(0);
                r.rax = 0;
            }
            Some(Leaf::VpEnter) => {
                self.enter_rcx.push(r.rcx);
                let (code, exit) = self
                    .enters
                    .pop_front()
                    .unwrap_or((0xC000_0100, L2ExitInfo::default()));
                let outcome = EnterOutcome::from_code(StatusCode(code as u32));
                match outcome {
                    Some(o) => exit.write_registers(o, r),
                    None => r.rax = TdxStatus::new(StatusCode(code as u32), 2).0,
                }
            }
            Some(Leaf::MemPageAttrRd) => {
                // Every page: VM 1 alias R|W|Xs|Xu|VALID.
                r.rcx &= !0xFFF;
                r.rdx = 0x800F << 16;
                r.rax = 0;
            }
            Some(Leaf::VpVmcall) => {
                self.vmcalls.push(TdVmcall::decode(r).unwrap());
                r.rax = 0;
                r.r10 = 0;
                r.r11 = 0x42;
            }
            _ => r.rax = 0xC000_0100_0000_0000,
        }
    }
}

impl L1Memory for Fake {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let s = gpa as usize;
        let src = self
            .mem
            .get(s..s + buf.len())
            .ok_or(MemoryError::OutOfRange {
                gpa,
                len: buf.len(),
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        let s = gpa as usize;
        let dst = self
            .mem
            .get_mut(s..s + data.len())
            .ok_or(MemoryError::OutOfRange {
                gpa,
                len: data.len(),
            })?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

impl crate::pinning::SharedMsrs for Fake {
    fn read_shared_msr(&mut self, _msr: u32) -> Option<u64> {
        None
    }
}

fn fake() -> Fake {
    Fake {
        mem: vec![0; 0x4000],
        ..Fake::default()
    }
}

fn exit(reason: u16, len: u32) -> L2ExitInfo {
    L2ExitInfo {
        reason: reason as u32,
        instruction_length: len,
        ..L2ExitInfo::default()
    }
}

#[test]
fn setup_writes_vapic_first_and_checks_masks() {
    let mut p = fake();
    let mut cfg = L2VmConfig::new(L2Vm::Vm1, 0x1000, 0x2000);
    cfg.mbec = true;
    cfg.msr_passthrough.push(MsrPassthrough {
        msr: 0xC000_0082,
        read: true,
        write: false,
    });
    let vcpu = setup_l2_vm(&mut p, &cfg).unwrap();
    assert_eq!(vcpu.guest_state_gpa(), 0x2000);
    let vapic = FieldId::l2_vmcs(L2Vm::Vm1, vmcs::VIRTUAL_APIC_PAGE_ADDR).0;
    assert_eq!(
        p.writes[0],
        (vapic, 0x1000, controls::VIRTUAL_APIC_L1_WR_MASK)
    );
    let sec = FieldId::l2_vmcs(L2Vm::Vm1, vmcs::SECONDARY_PROC_BASED_CTLS).0;
    assert!(p
        .writes
        .contains(&(sec, controls::SECONDARY_MBEC, controls::SECONDARY_MBEC)));
    let bitmap: Vec<_> = p.writes.iter().filter(|w| w.0 >> 56 == 37).collect();
    assert_eq!(
        bitmap,
        [&(FieldId::l2_msr_bitmap(L2Vm::Vm1, 0x82).0, !4u64, u64::MAX)]
    );

    cfg.secondary_set = 1 << 0;
    assert_eq!(
        setup_l2_vm(&mut fake(), &cfg).unwrap_err(),
        SetupError::ControlOutsideMask {
            field: "SECONDARY_PROC_BASED_CTLS",
            bits: 1
        }
    );
    let bad = L2VmConfig::new(L2Vm::Vm1, 0x1800, 0x2000);
    assert!(matches!(
        setup_l2_vm(&mut fake(), &bad),
        Err(SetupError::Misaligned { .. })
    ));
}

#[test]
fn loop_handles_status_classes_and_flush() {
    let mut p = fake();
    p.enters.extend([
        (0x1120, L2ExitInfo::default()),
        (0x1101, exit(reason::TDCALL, 4)),
        (0x1102, exit(reason::EXTERNAL_INTERRUPT, 0)),
        (0x1100, exit(reason::EXTERNAL_INTERRUPT, 0)),
        (0, exit(reason::HLT, 1)),
    ]);
    let mut vcpu = Vcpu::new(L2Vm::Vm1, 0x2000, Default::default(), Vec::new()).unwrap();
    vcpu.state.rip = 0x100;
    let mut h = DefaultHandlers::default();
    assert_eq!(vcpu.run(&mut p, &mut h, 100), StopReason::Halted);
    // The flush stays requested until L2 actually ran.
    assert_eq!(
        p.enter_rcx,
        [1 << 52 | 1, 1 << 52 | 1, 1 << 52, 1 << 52, 1 << 52]
    );
    assert_eq!(h.pending_interrupts, 2);
    assert_eq!(vcpu.stats.host_routed_tdvmcall, 1);
    assert_eq!(vcpu.stats.host_routed_async, 1);
    assert_eq!(vcpu.stats.count(reason::HLT), 1);
    assert_eq!(
        p.vmcalls,
        [TdVmcall::Hlt {
            interrupts_blocked: true
        }]
    );
    // An error status stops the loop with it; the cap stops endless loops.
    let stop = vcpu.run(&mut p, &mut h, 100);
    assert!(matches!(stop, StopReason::EnterFailed(e) if e.code() == StatusCode::OPERAND_INVALID));
    p.enters
        .extend((0..10).map(|_| (0x1101, exit(reason::TDCALL, 4))));
    assert_eq!(vcpu.run(&mut p, &mut h, 5), StopReason::ExitLimit);
}

#[test]
fn vmcall_returns_enosys_and_refuses_user_mode() {
    let mut p = fake();
    let mut user = exit(reason::VMCALL, 3);
    user.cpl = 3;
    p.enters.extend([
        (0, exit(reason::VMCALL, 3)),
        (0, user),
        (0, exit(reason::HLT, 1)),
    ]);
    let mut vcpu = Vcpu::new(L2Vm::Vm1, 0x2000, Default::default(), Vec::new()).unwrap();
    vcpu.state.rip = 0x100;
    vcpu.state.gprs[7] = 0x1FFE2;
    assert_eq!(
        vcpu.run(&mut p, &mut DefaultHandlers::default(), 10),
        StopReason::Halted
    );
    assert_eq!(vcpu.state.gprs[8], ENOSYS);
    assert_eq!(
        vcpu.state.rip,
        0x100 + 3 + 1,
        "user VMCALL did not advance RIP"
    );
    let info = FieldId::l2_vmcs(L2Vm::Vm1, vmcs::VM_ENTRY_INTR_INFO).0;
    assert_eq!(p.fields[&info], InterruptionInfo::invalid_opcode().0 as u64);
    assert_eq!(vcpu.stats.injected, 1);
}

#[test]
fn unknown_exit_fails_closed() {
    let mut p = fake();
    p.enters.push_back((0, exit(reason::RDTSC, 2)));
    let mut vcpu = Vcpu::new(L2Vm::Vm1, 0x2000, Default::default(), Vec::new()).unwrap();
    assert_eq!(
        vcpu.run(&mut p, &mut DefaultHandlers::default(), 10),
        StopReason::UnhandledExit {
            reason: reason::RDTSC as u32,
            qualification: 0
        }
    );
}

#[test]
fn string_io_is_refused_with_ud() {
    let mut p = fake();
    let mut outs = exit(reason::IO_INSTRUCTION, 2);
    // OUTSB to 0x3F8 with REP: size 1, out, string, rep.
    outs.qualification = tdcall::vmx::IoQual {
        size: 1,
        is_in: false,
        string: true,
        rep: true,
        immediate: false,
        port: 0x3F8,
    }
    .encode();
    p.enters.extend([(0, outs), (0, exit(reason::HLT, 1))]);
    let mut vcpu = Vcpu::new(L2Vm::Vm1, 0x2000, Default::default(), Vec::new()).unwrap();
    vcpu.state.rip = 0x100;
    assert_eq!(
        vcpu.run(&mut p, &mut DefaultHandlers::default(), 10),
        StopReason::Halted
    );
    assert_eq!(
        p.vmcalls,
        [TdVmcall::Hlt {
            interrupts_blocked: true
        }],
        "nothing forwarded"
    );
    assert_eq!(vcpu.state.rip, 0x101, "OUTS not skipped");
    let info = FieldId::l2_vmcs(L2Vm::Vm1, vmcs::VM_ENTRY_INTR_INFO).0;
    assert_eq!(p.fields[&info], InterruptionInfo::invalid_opcode().0 as u64);
}

#[test]
fn exits_during_event_delivery_reinject_the_event() {
    let mut p = fake();
    let mut cpuid = exit(reason::CPUID, 2);
    // A #PF (vector 14, error code 2) was being delivered.
    cpuid.idt_vectoring_info = 0x8000_0B0E;
    cpuid.idt_vectoring_error = 2;
    p.enters.extend([(0, cpuid), (0, exit(reason::HLT, 1))]);
    let mut vcpu = Vcpu::new(L2Vm::Vm1, 0x2000, Default::default(), Vec::new()).unwrap();
    assert_eq!(
        vcpu.run(&mut p, &mut DefaultHandlers::default(), 10),
        StopReason::Halted
    );
    let f = |field| p.fields[&FieldId::l2_vmcs(L2Vm::Vm1, field).0];
    assert_eq!(f(vmcs::VM_ENTRY_INTR_INFO), 0x8000_0B0E);
    assert_eq!(f(vmcs::VM_ENTRY_EXCEPTION_ERROR_CODE), 2);
}

#[test]
fn sidt_is_emulated_and_umip_refuses_it_above_cpl0() {
    use crate::walk::{CR4_PAE, CR4_UMIP, EFER_LMA};
    let run = |cpl: u8, cr4: u64| {
        let mut p = fake();
        let f = |field| FieldId::l2_vmcs(L2Vm::Vm1, field).0;
        // Paging off (linear = physical), 64-bit code segment.
        p.fields.insert(f(vmcs::GUEST_CR4), cr4);
        p.fields.insert(f(vmcs::GUEST_IA32_EFER), EFER_LMA);
        p.fields
            .insert(f(vmcs::GUEST_IDTR_BASE), 0xFFFF_FE00_0000_0000);
        p.fields.insert(f(vmcs::GUEST_IDTR_LIMIT), 0xFFF);
        p.mem[0x100..0x103].copy_from_slice(&[0x0F, 0x01, 0x0F]); // sidt [rdi]
        let mut sidt = exit(reason::GDTR_IDTR_ACCESS, 3);
        sidt.instruction_info = 1 << 28;
        sidt.cpl = cpl;
        sidt.cs_ar = 0xA09B;
        p.enters.extend([(0, sidt), (0, exit(reason::HLT, 1))]);
        let mut vcpu = Vcpu::new(L2Vm::Vm1, 0x2000, Default::default(), Vec::new()).unwrap();
        vcpu.state.rip = 0x100;
        vcpu.state.gprs[7] = 0x800;
        assert_eq!(
            vcpu.run(&mut p, &mut DefaultHandlers::default(), 10),
            StopReason::Halted
        );
        let gp = p.fields.get(&f(vmcs::VM_ENTRY_INTR_INFO)).copied();
        (gp, vcpu.state.rip, p.mem[0x800..0x80A].to_vec())
    };
    let image = [0xFF, 0x0F, 0, 0, 0, 0, 0, 0xFE, 0xFF, 0xFF].to_vec();
    let gp = Some(InterruptionInfo::general_protection().0 as u64);
    assert_eq!(run(0, CR4_PAE | CR4_UMIP), (None, 0x104, image.clone()));
    assert_eq!(run(3, CR4_PAE), (None, 0x104, image));
    assert_eq!(run(3, CR4_PAE | CR4_UMIP), (gp, 0x101, vec![0; 10]));
}
