//! [`L2Cpu`]: the model's judgement of each L2 action against what L1
//! programmed (§2.5–§2.7 controls and masks, §3.2 attributes with MBEC, §3.5
//! EPT-violation qualification, §4 exit routing).
#![forbid(unsafe_code)]

use crate::engine::{AccessKind, DescriptorRegister, L2Action, Step};
use crate::host::HostVmm;
use crate::memory::{Memory, PageState};
use crate::metadata::{CR0_BASE_MASK, CR0_BASE_SHADOW, CR0_RESERVED, CR4_ALLOWED, CR4_BASE_SHADOW};
use alloc::collections::BTreeMap;
use tdcall::attr::L2Attr;
use tdcall::enter::EXT_EXIT_QUAL_PENDING_EPT_VIOLATION;
use tdcall::field::{controls as c, vmcs, L2Ctls, VmcsField};
use tdcall::vmcall::{TdVmcall, VmcallOutput, VmcallStatus};
use tdcall::vmx::{reason, vector, CrAccessQual, EptViolationQual, IoQual};
use tdcall::{L2ExitInfo, L2Vm, Registers};

/// L2 register state carried through the TDG.VP.ENTER buffer (§2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L2Regs {
    /// RAX..R15 in architectural order.
    pub gprs: [u64; 16],
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// SSP.
    pub ssp: u64,
    /// RVI | SVI << 8.
    pub intr_status: u16,
}

impl L2Regs {
    /// GPR by number; numbers above 15 read 0.
    pub fn gpr(&self, n: u8) -> u64 {
        self.gprs.get(n as usize).copied().unwrap_or(0)
    }

    /// Sets a GPR by number; numbers above 15 are ignored.
    pub fn set_gpr(&mut self, n: u8, v: u64) {
        if let Some(g) = self.gprs.get_mut(n as usize) {
            *g = v;
        }
    }
}

/// Where TDG.VP.ENTER's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// An L2→L1 exit.
    ToL1(L2ExitInfo),
    /// An exit the module routes to the host (§3.5, §4).
    ToHost(L2ExitInfo),
}

/// MSRs whose state the module keeps per vCPU, shared between L1 and L2 (§2.10).
pub const SHARED_MSRS: [u32; 6] = [
    0xC000_0081, // STAR
    0xC000_0082, // LSTAR
    0xC000_0083, // CSTAR
    0xC000_0084, // SFMASK
    0xC000_0102, // KERNEL_GS_BASE
    0xC000_0103, // TSC_AUX
];

/// MSRs held in the L2 VMCS that L2 reads and writes natively when L1 does not intercept them.
const VMCS_MSRS: [(u32, VmcsField); 7] = [
    (0x174, vmcs::GUEST_SYSENTER_CS),
    (0x175, vmcs::GUEST_SYSENTER_ESP),
    (0x176, vmcs::GUEST_SYSENTER_EIP),
    (0x277, vmcs::GUEST_IA32_PAT),
    (0x1D9, vmcs::GUEST_IA32_DEBUGCTL),
    (0xC000_0100, vmcs::GUEST_FS_BASE),
    (0xC000_0101, vmcs::GUEST_GS_BASE),
];
const MSR_EFER: u32 = 0xC000_0080;
/// EFER bits L2 may change in place: SCE, LME (§4).
const EFER_L2_WRITABLE: u64 = 0x101;

/// Index and bit of an MSR in the 512-qword bitmap (§2.7), or `None` outside both ranges.
pub fn msr_bitmap_position(msr: u32, write: bool) -> Option<(usize, u32)> {
    let base = match msr {
        0..=0x1FFF => 0,
        0xC000_0000..=0xC000_1FFF => 0x80,
        _ => return None,
    };
    let index = base + if write { 0x100 } else { 0 } + ((msr & 0x1FFF) >> 6) as usize;
    Some((index, msr & 0x3F))
}

/// The CPU as the model lets an engine drive it during one TDG.VP.ENTER.
pub struct L2Cpu<'a> {
    pub(crate) vm: L2Vm,
    pub(crate) vcpu_index: u32,
    pub(crate) regs: L2Regs,
    pub(crate) vmcs: &'a mut BTreeMap<u16, u64>,
    pub(crate) msr_bitmap: &'a [u64],
    pub(crate) shared_msrs: &'a mut BTreeMap<u32, u64>,
    pub(crate) mem: &'a mut Memory,
    pub(crate) host: &'a mut dyn HostVmm,
    pub(crate) l2_ctls: u64,
    pub(crate) end: Option<RunEnd>,
    pub(crate) last_value: Option<u64>,
    /// TSC_DEADLINE of this VM on this vCPU (§2.7); `u64::MAX` = disabled.
    pub(crate) tsc_deadline: u64,
}

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

impl L2Cpu<'_> {
    /// The L2 VM being run.
    pub fn vm(&self) -> L2Vm {
        self.vm
    }

    /// L2 registers.
    pub fn regs(&self) -> &L2Regs {
        &self.regs
    }

    /// L2 registers, mutable.
    pub fn regs_mut(&mut self) -> &mut L2Regs {
        &mut self.regs
    }

    /// An L2 VMCS field as the CPU sees it.
    pub fn vmcs(&self, field: VmcsField) -> u64 {
        self.vmcs.get(&field.0).copied().unwrap_or(0)
    }

    /// The value the last completed action read, if it read one.
    pub fn last_value(&self) -> Option<u64> {
        self.last_value
    }

    /// Whether the run has ended.
    pub fn has_exited(&self) -> bool {
        self.end.is_some()
    }

    /// TSC_DEADLINE of the running VM (§2.7): the TD-virtual-TSC value at
    /// which L2 exits with reason 52; `u64::MAX` when disabled.
    pub fn tsc_deadline(&self) -> u64 {
        self.tsc_deadline
    }

    /// Ends the run with a preemption-timer exit (reason 52, §2.7) if the
    /// deadline is enabled and `now` (the TD virtual TSC) has reached it.
    /// Engines call it before each instruction; a deadline already past at
    /// entry therefore exits before L2's first instruction.
    pub fn check_timer(&mut self, now: u64) -> bool {
        if self.end.is_some() {
            return true;
        }
        if self.tsc_deadline != u64::MAX && now >= self.tsc_deadline {
            self.exit_with_reason(reason::PREEMPTION_TIMER);
            return true;
        }
        false
    }

    /// Whether L2 can take an external interrupt now: RFLAGS.IF = 1 and no
    /// blocking by STI or MOV SS (guest interruptibility bits 1:0).
    pub fn interruptible(&self) -> bool {
        self.regs.rflags & RFLAGS_IF != 0
            && self.vmcs(vmcs::GUEST_INTERRUPTIBILITY)
                & (c::INTERRUPTIBILITY_STI | c::INTERRUPTIBILITY_MOV_SS)
                == 0
    }

    /// Whether L1 set interrupt-window exiting (primary control bit 2).
    pub fn interrupt_window_exiting(&self) -> bool {
        self.vmcs(vmcs::PROC_BASED_CTLS) & c::PROC_INTERRUPT_WINDOW_EXITING != 0
    }

    /// Ends the run with an interrupt-window exit (reason 7, §2.8) when L1
    /// asked for one and L2 is interruptible. Engines call it before each
    /// instruction (after [`L2Cpu::check_timer`]).
    pub fn check_interrupt_window(&mut self) -> bool {
        if self.end.is_some() {
            return true;
        }
        if self.interrupt_window_exiting() && self.interruptible() {
            self.exit_with_reason(reason::INTERRUPT_WINDOW);
            return true;
        }
        false
    }

    /// Ends blocking by STI / MOV SS: engines call it when an instruction
    /// other than the one that set the blocking retired.
    pub fn clear_interrupt_shadow(&mut self) {
        let v = self.vmcs(vmcs::GUEST_INTERRUPTIBILITY);
        let blocking = c::INTERRUPTIBILITY_STI | c::INTERRUPTIBILITY_MOV_SS;
        if v & blocking != 0 {
            self.vmcs
                .insert(vmcs::GUEST_INTERRUPTIBILITY.0, v & !blocking);
        }
    }

    /// Ends the run with a VM-entry failure (exit reason bit 31 set, §2.3):
    /// nothing of L2 ran.
    pub(crate) fn entry_failure(&mut self, basic: u16) {
        let mut info = self.exit_info(basic, 0, 0, 0);
        info.reason |= 1 << 31;
        self.end = Some(RunEnd::ToL1(info));
    }

    /// MBEC: secondary controls bit 22 (§3.2).
    pub fn mbec(&self) -> bool {
        self.vmcs(vmcs::SECONDARY_PROC_BASED_CTLS) & c::SECONDARY_MBEC != 0
    }

    /// Ends the run with an L2→L1 exit of `basic` reason and no qualification
    /// (triple fault, timer, …).
    pub fn exit_with_reason(&mut self, basic: u16) {
        let info = self.exit_info(basic, 0, 0, 0);
        self.end = Some(RunEnd::ToL1(info));
    }

    /// For real-execution engines: ends the run with an L2→L1 exit for an
    /// instruction that §4 always routes to L1 but that has no [`L2Action`]
    /// (string I/O, XSETBV, …). The engine supplies the qualification and the
    /// instruction length; RIP is not advanced.
    pub fn exit_to_l1(&mut self, basic: u16, qualification: u64, length: u32) {
        if self.end.is_none() {
            self.exit(basic, qualification, length);
        }
    }

    fn exit_info(&self, basic: u16, qualification: u64, length: u32, cpl: u8) -> L2ExitInfo {
        let cs_ar = self.vmcs(vmcs::GUEST_CS_AR);
        L2ExitInfo {
            reason: basic as u32,
            qualification,
            cs_selector: self.vmcs(vmcs::GUEST_CS_SELECTOR) as u16,
            cs_ar: cs_ar as u16,
            cs_limit: self.vmcs(vmcs::GUEST_CS_LIMIT) as u32,
            cs_base: self.vmcs(vmcs::GUEST_CS_BASE),
            instruction_length: length,
            cpl,
            ..L2ExitInfo::default()
        }
    }

    fn exit(&mut self, basic: u16, qualification: u64, length: u32) -> Step {
        let info = self.exit_info(basic, qualification, length, 0);
        self.end = Some(RunEnd::ToL1(info));
        Step::Exit
    }

    fn complete(&mut self, length: u32) -> Step {
        self.regs.rip = self.regs.rip.wrapping_add(length as u64);
        Step::Completed
    }

    fn fault(&mut self, vector: u8) -> Step {
        self.last_value = None;
        Step::FaultedInL2 { vector }
    }

    /// Judges and, where allowed, performs one scripted action: the model
    /// carries out the whole instruction (memory accesses included) and advances
    /// RIP by [`L2Action::length`].
    pub fn execute(&mut self, action: &L2Action) -> Step {
        self.run_action(action, action.length(), true)
    }

    /// Judges one instruction a real CPU trapped on, whose length the engine
    /// decoded. The model applies its effect on L2 state (registers, VMCS) and
    /// advances RIP by `length` when the instruction completes. For
    /// [`L2Action::Access`] the model does not touch memory: `Completed` means
    /// "allowed, re-execute natively" and RIP is left unchanged.
    pub fn execute_decoded(&mut self, action: &L2Action, length: u32) -> Step {
        self.run_action(action, length, false)
    }

    /// Private memory, for engines that read L2 code or page tables.
    pub fn memory(&self) -> &Memory {
        self.mem
    }

    /// For real-execution engines: records guest state that L2 changed natively,
    /// without an action the model judged (segment loads, SWAPGS/WRGSBASE,
    /// LLDT/LTR, interruptibility, …), so that TDG.VP.RD and the next exit see
    /// it. Only guest-state fields (encoding bits 11:10 = 2) are accepted; any
    /// other field is refused and `false` returned.
    pub fn set_guest_state(&mut self, field: VmcsField, value: u64) -> bool {
        if (field.0 >> 10) & 3 != 2 {
            return false;
        }
        self.vmcs
            .insert(field.0, value & field.element_size().mask());
        true
    }

    /// The per-vCPU value of a shared MSR (§2.10, [`SHARED_MSRS`]) as the model
    /// holds it; `None` for other MSRs.
    pub fn shared_msr(&self, msr: u32) -> Option<u64> {
        SHARED_MSRS
            .contains(&msr)
            .then(|| self.shared_msrs.get(&msr).copied().unwrap_or(0))
    }

    /// For real-execution engines: records the value a shared MSR (§2.10) has on
    /// the CPU (L1 and L2 both change these natively). Refuses other MSRs.
    pub fn set_shared_msr(&mut self, msr: u32, value: u64) -> bool {
        if !SHARED_MSRS.contains(&msr) {
            return false;
        }
        self.shared_msrs.insert(msr, value);
        true
    }

    fn run_action(&mut self, action: &L2Action, len: u32, perform_access: bool) -> Step {
        self.last_value = None;
        if self.end.is_some() {
            return Step::Exit;
        }
        match *action {
            L2Action::MovToCr { cr, gpr } => self.mov_to_cr(cr, gpr, len),
            L2Action::MovFromCr { cr, gpr } => self.mov_from_cr(cr, gpr, len),
            L2Action::Rdmsr => self.rdmsr(len),
            L2Action::Wrmsr => self.wrmsr(len),
            L2Action::Access {
                kind,
                gpa,
                gla,
                cpl,
                size,
                value,
            } => {
                let step = self.access(kind, gpa, gla, cpl, size, value, len, perform_access);
                if !perform_access && step == Step::Completed {
                    self.regs.rip = self.regs.rip.wrapping_sub(len as u64);
                }
                step
            }
            L2Action::Cpuid => self.exit(reason::CPUID, 0, len),
            L2Action::Hlt => self.exit(reason::HLT, 0, len),
            L2Action::Vmcall => self.exit(reason::VMCALL, 0, len),
            L2Action::Tdcall => self.tdcall(len),
            L2Action::In { port, size } | L2Action::Out { port, size } => {
                if !matches!(size, 1 | 2 | 4) {
                    return self.fault(vector::UD);
                }
                let is_in = matches!(action, L2Action::In { .. });
                let q = IoQual {
                    size,
                    is_in,
                    string: false,
                    rep: false,
                    immediate: false,
                    port,
                };
                self.exit(reason::IO_INSTRUCTION, q.encode(), len)
            }
            L2Action::LoadDescriptorTable { idt, base, limit } => {
                if self.vmcs(vmcs::SECONDARY_PROC_BASED_CTLS) & c::SECONDARY_DESC_TABLE_EXITING != 0
                {
                    // Instruction information bits 29:28: 2 = LGDT, 3 = LIDT (SDM).
                    let step = self.exit(reason::GDTR_IDTR_ACCESS, 0, len);
                    if let Some(RunEnd::ToL1(info)) = &mut self.end {
                        info.instruction_info = (if idt { 3 } else { 2 }) << 28;
                    }
                    return step;
                }
                let (b, l) = if idt {
                    (vmcs::GUEST_IDTR_BASE, vmcs::GUEST_IDTR_LIMIT)
                } else {
                    (vmcs::GUEST_GDTR_BASE, vmcs::GUEST_GDTR_LIMIT)
                };
                self.vmcs.insert(b.0, base);
                self.vmcs.insert(l.0, limit as u64);
                self.complete(len)
            }
            L2Action::StoreDescriptorTable { table } => {
                if self.vmcs(vmcs::SECONDARY_PROC_BASED_CTLS) & c::SECONDARY_DESC_TABLE_EXITING == 0
                {
                    return self.complete(len);
                }
                // Instruction information bits 29:28 (SDM Vol. 3C §28.2.5).
                let (basic, which) = match table {
                    DescriptorRegister::Gdtr => (reason::GDTR_IDTR_ACCESS, 0),
                    DescriptorRegister::Idtr => (reason::GDTR_IDTR_ACCESS, 1),
                    DescriptorRegister::Ldtr => (reason::LDTR_TR_ACCESS, 0),
                    DescriptorRegister::Tr => (reason::LDTR_TR_ACCESS, 1),
                };
                let step = self.exit(basic, 0, len);
                if let Some(RunEnd::ToL1(info)) = &mut self.end {
                    info.instruction_info = which << 28;
                }
                step
            }
            L2Action::LoadSegmentTable { table } => {
                if self.vmcs(vmcs::SECONDARY_PROC_BASED_CTLS) & c::SECONDARY_DESC_TABLE_EXITING == 0
                {
                    return self.complete(len);
                }
                // Instruction information bits 29:28 (SDM Vol. 3C §28.2.5).
                let which = if table == DescriptorRegister::Tr {
                    3
                } else {
                    2
                };
                let step = self.exit(reason::LDTR_TR_ACCESS, 0, len);
                if let Some(RunEnd::ToL1(info)) = &mut self.end {
                    info.instruction_info = which << 28;
                }
                step
            }
            L2Action::Sti => {
                if self.regs.rflags & RFLAGS_IF == 0 {
                    self.regs.rflags |= RFLAGS_IF;
                    let v = self.vmcs(vmcs::GUEST_INTERRUPTIBILITY);
                    self.vmcs
                        .insert(vmcs::GUEST_INTERRUPTIBILITY.0, v | c::INTERRUPTIBILITY_STI);
                }
                self.complete(len)
            }
            L2Action::Cli => {
                self.regs.rflags &= !RFLAGS_IF;
                self.complete(len)
            }
            L2Action::SetGpr { gpr, value } => {
                self.regs.set_gpr(gpr, value);
                self.complete(len)
            }
        }
    }

    /// What L2 reads from CR0/CR4 (§2.6): L1-owned bits from L1's shadow,
    /// module-owned bits from the base shadow, the rest from the guest value.
    pub fn cr_read(&self, cr: u8) -> u64 {
        let (guest, l1_mask, l1_shadow, base_mask, base_shadow) = match cr {
            0 => (
                self.vmcs(vmcs::GUEST_CR0),
                self.vmcs(vmcs::CR0_GUEST_HOST_MASK),
                self.vmcs(vmcs::CR0_READ_SHADOW),
                CR0_BASE_MASK,
                CR0_BASE_SHADOW,
            ),
            _ => (
                self.vmcs(vmcs::GUEST_CR4),
                self.vmcs(vmcs::CR4_GUEST_HOST_MASK),
                self.vmcs(vmcs::CR4_READ_SHADOW),
                !CR4_ALLOWED,
                CR4_BASE_SHADOW,
            ),
        };
        (l1_shadow & l1_mask)
            | (base_shadow & base_mask & !l1_mask)
            | (guest & !(l1_mask | base_mask))
    }

    fn mov_to_cr(&mut self, cr: u8, gpr: u8, len: u32) -> Step {
        let new = self.regs.gpr(gpr);
        let qual = CrAccessQual::mov_to(cr, gpr).encode();
        let primary = self.vmcs(vmcs::PROC_BASED_CTLS);
        match cr {
            0 | 4 => {
                let (mask_f, shadow_f) = if cr == 0 {
                    (vmcs::CR0_GUEST_HOST_MASK, vmcs::CR0_READ_SHADOW)
                } else {
                    (vmcs::CR4_GUEST_HOST_MASK, vmcs::CR4_READ_SHADOW)
                };
                // §2.6 step 1: a change to any L1-owned bit exits to L1.
                if (new ^ self.vmcs(shadow_f)) & self.vmcs(mask_f) != 0 {
                    return self.exit(reason::CR_ACCESS, qual, len);
                }
                if cr == 0 {
                    self.apply_cr0(new, qual, len)
                } else {
                    self.apply_cr4(new, qual, len)
                }
            }
            3 if primary & c::PROC_CR3_LOAD_EXITING != 0 => self.exit(reason::CR_ACCESS, qual, len),
            3 => {
                self.vmcs.insert(vmcs::GUEST_CR3.0, new);
                self.complete(len)
            }
            8 if primary & (1 << 19) != 0 => self.exit(reason::CR_ACCESS, qual, len),
            8 => self.complete(len),
            _ => self.fault(vector::UD),
        }
    }

    /// §2.6 step 2 for CR0: illegal values #GP in L2; CD/NW set or NE cleared exit
    /// to L1; otherwise the module updates GUEST_CR0.
    fn apply_cr0(&mut self, new: u64, qual: u64, len: u32) -> Step {
        const PE: u64 = 1;
        const NE: u64 = 1 << 5;
        const WP: u64 = 1 << 16;
        const NW: u64 = 1 << 29;
        const CD: u64 = 1 << 30;
        const PG: u64 = 1 << 31;
        const CR4_CET: u64 = 1 << 23;
        let old = self.vmcs(vmcs::GUEST_CR0);
        if new & CR0_RESERVED != 0 || (new & PG != 0 && new & PE == 0) {
            return self.fault(vector::GP);
        }
        if new & WP == 0 && self.vmcs(vmcs::GUEST_CR4) & CR4_CET != 0 {
            return self.fault(vector::GP);
        }
        if new & (CD | NW) != 0 || new & NE == 0 {
            return self.exit(reason::CR_ACCESS, qual, len);
        }
        let wr = c::GUEST_CR0_L1_WR_MASK;
        self.vmcs
            .insert(vmcs::GUEST_CR0.0, (old & !wr) | (new & wr));
        self.complete(len)
    }

    /// §2.6 step 2 for CR4: bits outside the allowed set that differ from the base
    /// shadow are reserved (#GP) or module-owned MCE/VMXE/SMXE (exit to L1).
    fn apply_cr4(&mut self, new: u64, qual: u64, len: u32) -> Step {
        const MODULE_OWNED: u64 = (1 << 6) | (1 << 13) | (1 << 14);
        let old = self.vmcs(vmcs::GUEST_CR4);
        let changed_owned = (new ^ CR4_BASE_SHADOW) & !CR4_ALLOWED;
        if changed_owned & !MODULE_OWNED != 0 {
            return self.fault(vector::GP);
        }
        if changed_owned != 0 {
            return self.exit(reason::CR_ACCESS, qual, len);
        }
        self.vmcs.insert(
            vmcs::GUEST_CR4.0,
            (old & !CR4_ALLOWED) | (new & CR4_ALLOWED),
        );
        self.complete(len)
    }

    fn mov_from_cr(&mut self, cr: u8, gpr: u8, len: u32) -> Step {
        let value = match cr {
            0 | 4 => self.cr_read(cr),
            3 => self.vmcs(vmcs::GUEST_CR3),
            8 => 0,
            _ => return self.fault(vector::UD),
        };
        self.regs.set_gpr(gpr, value);
        self.last_value = Some(value);
        self.complete(len)
    }

    fn msr_intercepted(&self, msr: u32, write: bool) -> bool {
        match msr_bitmap_position(msr, write) {
            Some((index, bit)) => self.msr_bitmap.get(index).is_none_or(|q| q >> bit & 1 != 0),
            None => true,
        }
    }

    fn native_msr(&self, msr: u32) -> Option<u64> {
        if msr == MSR_EFER {
            return Some(self.vmcs(vmcs::GUEST_IA32_EFER));
        }
        if SHARED_MSRS.contains(&msr) {
            return Some(self.shared_msrs.get(&msr).copied().unwrap_or(0));
        }
        VMCS_MSRS
            .iter()
            .find(|(m, _)| *m == msr)
            .map(|(_, f)| self.vmcs(*f))
    }

    fn rdmsr(&mut self, len: u32) -> Step {
        let msr = self.regs.gprs[1] as u32;
        if self.msr_intercepted(msr, false) {
            return self.exit(reason::MSR_READ, 0, len);
        }
        // Not in L1's bitmap: the module's own policy (§4). MSRs it does not
        // handle natively take the #VE policy, which for L2 means an exit to L1.
        let Some(value) = self.native_msr(msr) else {
            return self.exit(reason::MSR_READ, 0, len);
        };
        self.regs.gprs[0] = value & 0xFFFF_FFFF;
        self.regs.gprs[2] = value >> 32;
        self.last_value = Some(value);
        self.complete(len)
    }

    fn wrmsr(&mut self, len: u32) -> Step {
        let msr = self.regs.gprs[1] as u32;
        let value = (self.regs.gprs[2] << 32) | (self.regs.gprs[0] & 0xFFFF_FFFF);
        if self.msr_intercepted(msr, true) {
            return self.exit(reason::MSR_WRITE, 0, len);
        }
        if msr == MSR_EFER {
            let old = self.vmcs(vmcs::GUEST_IA32_EFER);
            if (value ^ old) & !EFER_L2_WRITABLE != 0 {
                return self.fault(vector::GP);
            }
            self.vmcs.insert(vmcs::GUEST_IA32_EFER.0, value);
        } else if SHARED_MSRS.contains(&msr) {
            self.shared_msrs.insert(msr, value);
        } else if let Some((_, f)) = VMCS_MSRS.iter().find(|(m, _)| *m == msr) {
            self.vmcs.insert(f.0, value);
        } else {
            return self.exit(reason::MSR_WRITE, 0, len);
        }
        self.complete(len)
    }

    fn tdcall(&mut self, len: u32) -> Step {
        let to_host = L2Ctls::from_bits_retain(self.l2_ctls).contains(L2Ctls::ENABLE_TDVMCALL);
        if !(to_host && self.regs.gprs[0] == 0) {
            return self.exit(reason::TDCALL, 0, len);
        }
        // §4: with ENABLE_TDVMCALL a TDG.VP.VMCALL from L2 goes to the host and L2 resumes.
        let mut r = Registers::default();
        for n in 0..16u8 {
            r.set_gpr(n, self.regs.gpr(n));
        }
        let out = match TdVmcall::decode(&r) {
            Some(call) => self.host.tdvmcall(self.vcpu_index, &call),
            None => VmcallOutput::status(VmcallStatus::SUBFUNC_UNSUPPORTED),
        };
        out.write_registers(&mut r);
        for n in 10..16u8 {
            self.regs.set_gpr(n, r.gpr(n));
        }
        self.regs.gprs[0] = 0;
        self.complete(len)
    }

    #[allow(clippy::too_many_arguments)]
    fn access(
        &mut self,
        kind: AccessKind,
        gpa: u64,
        gla: u64,
        cpl: u8,
        size: u8,
        value: u64,
        len: u32,
        perform: bool,
    ) -> Step {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return self.fault(vector::UD);
        }
        let rw_bit = match kind {
            AccessKind::Read => EptViolationQual::READ,
            AccessKind::Write => EptViolationQual::WRITE,
            AccessKind::Fetch => EptViolationQual::FETCH,
        };
        let gla_bits = EptViolationQual::GLA_VALID | EptViolationQual::FINAL_TRANSLATION;
        let last = gpa.wrapping_add(size as u64 - 1);
        let mapped = self.mem.check(gpa, size as u64, false).is_ok();
        if !mapped {
            // Shared, outside private memory or converted away: the module TD-exits
            // to the host (§3.5). The host may resume L1 with the same exit info.
            let mut info =
                self.exit_info(reason::EPT_VIOLATION, (rw_bit | gla_bits).bits(), len, cpl);
            info.gpa = gpa;
            info.gla = gla;
            self.end = Some(RunEnd::ToHost(info));
            return Step::Exit;
        }
        let mbec = self.mbec();
        for page_gpa in [gpa, last] {
            let attr = self.mem.attr(page_gpa, self.vm);
            let allowed = attr.contains(L2Attr::VALID)
                && match kind {
                    AccessKind::Read => attr.contains(L2Attr::R),
                    AccessKind::Write => attr.contains(L2Attr::W),
                    AccessKind::Fetch if mbec && cpl == 3 => attr.contains(L2Attr::XU),
                    AccessKind::Fetch => attr.contains(L2Attr::XS),
                };
            let pending = self.mem.state(page_gpa) == Some(PageState::Pending);
            if allowed && !pending {
                continue;
            }
            let mut q = rw_bit | gla_bits;
            if attr.contains(L2Attr::VALID) {
                q.set(EptViolationQual::READABLE, attr.contains(L2Attr::R));
                q.set(EptViolationQual::WRITABLE, attr.contains(L2Attr::W));
                q.set(EptViolationQual::EXECUTABLE, attr.contains(L2Attr::XS));
                q.set(
                    EptViolationQual::USER_EXECUTABLE,
                    mbec && attr.contains(L2Attr::XU),
                );
            }
            let mut info = self.exit_info(reason::EPT_VIOLATION, q.bits(), len, cpl);
            info.gpa = page_gpa.max(gpa);
            info.gla = gla.wrapping_add(info.gpa - gpa);
            if pending {
                info.ext_qual_type = EXT_EXIT_QUAL_PENDING_EPT_VIOLATION;
            }
            self.end = Some(RunEnd::ToL1(info));
            return Step::Exit;
        }
        let n = size as usize;
        if !perform {
            return self.complete(len);
        }
        match kind {
            AccessKind::Read => {
                let mut b = [0u8; 8];
                if self.mem.read(gpa, &mut b[..n]).is_err() {
                    return self.fault(vector::GP);
                }
                let v = u64::from_le_bytes(b);
                self.regs.set_gpr(value as u8, v);
                self.last_value = Some(v);
            }
            AccessKind::Write => {
                if self.mem.write(gpa, &value.to_le_bytes()[..n]).is_err() {
                    return self.fault(vector::GP);
                }
            }
            AccessKind::Fetch => {}
        }
        self.complete(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_bitmap_positions() {
        // §2.7 examples: LSTAR read qword 0x82 bit 2, write 0x182 bit 2; x2APIC EOI write 0x120 bit 11.
        assert_eq!(msr_bitmap_position(0xC000_0082, false), Some((0x82, 2)));
        assert_eq!(msr_bitmap_position(0xC000_0082, true), Some((0x182, 2)));
        assert_eq!(msr_bitmap_position(0x80B, true), Some((0x120, 11)));
        assert_eq!(msr_bitmap_position(0x4000_0000, false), None);
    }

    #[test]
    fn native_state_sync_is_limited_to_guest_state_and_shared_msrs() {
        let mut vmcs = BTreeMap::new();
        let mut shared = BTreeMap::new();
        let mut mem = Memory::new(0x20_0000, 0x20_0000, false, 48);
        let mut host = crate::host::ScriptedHost::default();
        let bitmap = [u64::MAX; 512];
        let mut cpu = L2Cpu {
            vm: L2Vm::Vm1,
            vcpu_index: 0,
            regs: L2Regs::default(),
            vmcs: &mut vmcs,
            msr_bitmap: &bitmap,
            shared_msrs: &mut shared,
            mem: &mut mem,
            host: &mut host,
            l2_ctls: 0,
            end: None,
            last_value: None,
            tsc_deadline: u64::MAX,
        };
        assert!(cpu.set_guest_state(vmcs::GUEST_GS_BASE, 0xFFFF_8000_0000_1000));
        assert_eq!(cpu.vmcs(vmcs::GUEST_GS_BASE), 0xFFFF_8000_0000_1000);
        // 16-bit fields are truncated to their width.
        assert!(cpu.set_guest_state(vmcs::GUEST_CS_SELECTOR, 0x1_0010));
        assert_eq!(cpu.vmcs(vmcs::GUEST_CS_SELECTOR), 0x10);
        // Controls and exit information are not guest state.
        assert!(!cpu.set_guest_state(vmcs::SECONDARY_PROC_BASED_CTLS, 0));
        assert!(!cpu.set_guest_state(vmcs::EXIT_QUALIFICATION, 0));
        assert!(!cpu.set_guest_state(vmcs::CR0_READ_SHADOW, 0));
        assert_eq!(cpu.shared_msr(0xC000_0082), Some(0));
        assert!(cpu.set_shared_msr(0xC000_0082, 0xFFFF_FFFF_8100_0000));
        assert_eq!(cpu.shared_msr(0xC000_0082), Some(0xFFFF_FFFF_8100_0000));
        assert!(!cpu.set_shared_msr(0xC000_0080, 0));
        assert_eq!(cpu.shared_msr(0xC000_0080), None);
        // RDMSR of a shared MSR not intercepted by L1 reads the synced value.
        cpu.msr_bitmap = &[0; 512];
        cpu.regs.gprs[1] = 0xC000_0082;
        assert_eq!(cpu.execute_decoded(&L2Action::Rdmsr, 2), Step::Completed);
        assert_eq!(cpu.regs.gprs[0], 0x8100_0000);
        assert_eq!(cpu.regs.gprs[2], 0xFFFF_FFFF);
        // An exit the engine decodes itself (OUTSB to port 0x3F8, length 1).
        let q = IoQual {
            size: 1,
            is_in: false,
            string: true,
            rep: false,
            immediate: false,
            port: 0x3F8,
        };
        cpu.exit_to_l1(reason::IO_INSTRUCTION, q.encode(), 1);
        let Some(RunEnd::ToL1(info)) = cpu.end else {
            panic!("no exit")
        };
        assert_eq!(info.reason, reason::IO_INSTRUCTION as u32);
        assert_eq!(info.qualification, q.encode());
        assert_eq!(info.instruction_length, 1);
        // The first exit stands.
        cpu.exit_to_l1(reason::HLT, 0, 1);
        assert_eq!(cpu.end, Some(RunEnd::ToL1(info)));
    }
}
