//! The L2 engine boundary: what "the CPU" asks the model, and the scripted engine.
//!
//! An engine executes L2 code. Whenever L2 does something a TDX module or the
//! CPU's VMX checks would look at (a control-register write, an MSR access, a
//! memory access, CPUID, HLT, VMCALL, port I/O, …) the engine hands it to
//! [`L2Cpu::execute`]. The model applies the L2 VMCS controls, masks, MSR
//! bitmaps and page attributes L1 programmed, and either completes the action
//! (updating L2 state and advancing RIP) or ends TDG.VP.ENTER with the exit
//! hardware would produce.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

/// How an L2 memory access uses the page (§3.5 qualification bits 0–2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

/// One thing L2 does that the model judges. Register operands use the
/// architectural GPR numbers (0 = RAX … 15 = R15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Action {
    /// `MOV CRn, gpr` (n = 0, 3, 4, 8). Encoded length 3.
    MovToCr {
        /// Control register.
        cr: u8,
        /// Source GPR.
        gpr: u8,
    },
    /// `MOV gpr, CRn`. Encoded length 3.
    MovFromCr {
        /// Control register.
        cr: u8,
        /// Destination GPR.
        gpr: u8,
    },
    /// `RDMSR`: ECX = index, result in EDX:EAX. Length 2.
    Rdmsr,
    /// `WRMSR`: ECX = index, EDX:EAX = value. Length 2.
    Wrmsr,
    /// A load, store or fetch of `size` bytes at `gpa` (linear address `gla`)
    /// from privilege level `cpl`. Stores write `value`; loads put the value in
    /// `gpr`. Length 3 (`mov`), fetches have length 0 (they are the next instruction).
    Access {
        /// Read, write or fetch.
        kind: AccessKind,
        /// Guest-physical address.
        gpa: u64,
        /// Guest-linear address reported in the exit.
        gla: u64,
        /// 0 (kernel) or 3 (user).
        cpl: u8,
        /// Bytes: 1, 2, 4 or 8.
        size: u8,
        /// Value to store, or destination GPR number for a load.
        value: u64,
    },
    /// `CPUID` with EAX/ECX from the registers. Length 2.
    Cpuid,
    /// `HLT`. Length 1.
    Hlt,
    /// `VMCALL` with the current registers. Length 3.
    Vmcall,
    /// `TDCALL` with the current registers. Length 4.
    Tdcall,
    /// `IN` of `size` bytes from `port` into AL/AX/EAX. Length 2.
    In {
        /// Port.
        port: u16,
        /// 1, 2 or 4.
        size: u8,
    },
    /// `OUT` of `size` bytes from AL/AX/EAX to `port`. Length 2.
    Out {
        /// Port.
        port: u16,
        /// 1, 2 or 4.
        size: u8,
    },
    /// `LGDT`/`LIDT` (`idt` selects) of a new base and limit. Length 3.
    LoadDescriptorTable {
        /// IDTR instead of GDTR.
        idt: bool,
        /// New base.
        base: u64,
        /// New limit.
        limit: u16,
    },
    /// `SGDT`/`SIDT`/`SLDT`/`STR` of `table`. With descriptor-table exiting
    /// (secondary control bit 2) it exits to L1 with reason 46 (GDTR/IDTR) or
    /// 47 (LDTR/TR) and instruction information bits 29:28 = 0 (SGDT, SLDT) or
    /// 1 (SIDT, STR) (SDM Vol. 3C §28.2.5); the instruction bytes and operand
    /// are L2 memory the script places. Without exiting it completes without
    /// storing anything (the scripted engine has no operand; real-execution
    /// engines only report it while exiting is on). Length 3.
    StoreDescriptorTable {
        /// The register stored.
        table: DescriptorRegister,
    },
    /// `LLDT`/`LTR` (`table` is [`DescriptorRegister::Ldtr`] or
    /// [`DescriptorRegister::Tr`]). With descriptor-table exiting it exits
    /// to L1 with reason 47 and instruction information bits 29:28 = 2
    /// (LLDT) or 3 (LTR) (SDM Vol. 3C §28.2.5); the selector is L2's operand.
    /// Without exiting it completes without loading anything (the emulator
    /// only intercepts these instructions while exiting is on, so the CPU
    /// loads them natively otherwise).
    LoadSegmentTable {
        /// LDTR or TR.
        table: DescriptorRegister,
    },
    /// `STI`: sets RFLAGS.IF; if IF was 0, interrupts stay blocked until the
    /// next instruction completes (blocking by STI). Length 1.
    Sti,
    /// `CLI`: clears RFLAGS.IF. Length 1.
    Cli,
    /// Set general-purpose registers (not an instruction the model judges; a
    /// scripting convenience with length 0).
    SetGpr {
        /// GPR number.
        gpr: u8,
        /// Value.
        value: u64,
    },
}

/// A descriptor-table register (for [`L2Action::StoreDescriptorTable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorRegister {
    /// GDTR (SGDT).
    Gdtr,
    /// IDTR (SIDT).
    Idtr,
    /// LDTR (SLDT).
    Ldtr,
    /// TR (STR).
    Tr,
}

impl L2Action {
    /// The length of the instruction this action stands for; RIP advances by it
    /// when the action completes, and the exit reports it (§2.3 R11).
    pub const fn length(&self) -> u32 {
        match self {
            L2Action::MovToCr { .. } | L2Action::MovFromCr { .. } => 3,
            L2Action::Rdmsr | L2Action::Wrmsr | L2Action::Cpuid => 2,
            L2Action::Access {
                kind: AccessKind::Fetch,
                ..
            } => 0,
            L2Action::Access { .. } => 3,
            L2Action::Hlt | L2Action::Sti | L2Action::Cli => 1,
            L2Action::Vmcall
            | L2Action::LoadDescriptorTable { .. }
            | L2Action::StoreDescriptorTable { .. }
            | L2Action::LoadSegmentTable { .. } => 3,
            L2Action::Tdcall => 4,
            L2Action::In { .. } | L2Action::Out { .. } => 2,
            L2Action::SetGpr { .. } => 0,
        }
    }
}

/// What [`L2Cpu::execute`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The action completed; RIP advanced. The engine continues.
    Completed,
    /// The action faulted inside L2: the module (or CPU) delivered exception
    /// `vector` to L2 without involving L1. The engine continues with L2's
    /// handler, which the scripted engine models as the next action.
    FaultedInL2 {
        /// Exception vector.
        vector: u8,
    },
    /// TDG.VP.ENTER ends: L1 (or the host) gets control.
    Exit,
}

/// One entry of the scripted engine's trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// RIP of the action.
    pub rip: u64,
    /// The action.
    pub action: L2Action,
    /// What happened.
    pub step: Step,
    /// For completed loads, RDMSR, IN, CPUID (EAX) and MOV from CR: the value read.
    pub value: Option<u64>,
}

/// An event L1 injected on entry (VM-entry interruption information), as L2 received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveredEvent {
    /// RIP at delivery.
    pub rip: u64,
    /// Vector.
    pub vector: u8,
    /// Error code, if any.
    pub error_code: Option<u32>,
}

pub use crate::cpu::L2Cpu;

/// An engine supplies the CPU that runs L2 code.
pub trait L2Engine {
    /// Runs L2 from the state in `cpu` until an action ends with [`Step::Exit`],
    /// or the engine itself must end the run (then it calls [`L2Cpu::exit_with`]).
    ///
    /// Before each instruction the engine asks [`L2Cpu::check_timer`] (the
    /// TSC_DEADLINE of §2.7, exit reason 52) and
    /// [`L2Cpu::check_interrupt_window`] (exit reason 7, §2.8); both also
    /// apply before the first instruction, after an injected event.
    fn run(&mut self, cpu: &mut L2Cpu<'_>);

    /// The TD's virtual TSC now: what RDTSC returns in L1 and L2, and the
    /// clock TSC_DEADLINE compares against (§2.7).
    fn tsc(&mut self) -> u64;

    /// L1 injected an event that L2 receives at entry (§2.8). The scripted
    /// engine models the guest's exception fixup: the faulting action is skipped.
    fn deliver_event(&mut self, cpu: &mut L2Cpu<'_>, event: DeliveredEvent);
}

/// A scripted L2: a list of actions laid out at consecutive instruction
/// addresses from a base RIP. L2's RIP selects the action that runs, so when L1
/// advances RIP past an exiting instruction the script continues with the next
/// one, and when it does not (e.g. after fixing a page's attributes) the same
/// action runs again, exactly as hardware would re-execute it.
#[derive(Clone, Debug, Default)]
pub struct ScriptedEngine {
    actions: Vec<(u64, L2Action)>,
    next_rip: u64,
    trace: Vec<TraceEntry>,
    events: Vec<DeliveredEvent>,
    tsc: u64,
    /// Safety valve against scripts that loop: maximum actions per entry.
    pub max_steps_per_entry: usize,
    /// Virtual TSC ticks each executed action takes (the scripted engine's
    /// clock: time passes only as L2 executes or someone reads the TSC).
    pub ticks_per_action: u64,
    /// Virtual TSC ticks each [`L2Engine::tsc`] read takes, so that an L1
    /// polling the TSC (waiting for a deadline while L2 halts) makes progress.
    pub ticks_per_read: u64,
}

impl ScriptedEngine {
    /// An empty script whose first action sits at `base_rip`.
    pub fn new(base_rip: u64) -> Self {
        ScriptedEngine {
            actions: Vec::new(),
            next_rip: base_rip,
            trace: Vec::new(),
            events: Vec::new(),
            tsc: 0,
            max_steps_per_entry: 10_000,
            ticks_per_action: 1_000,
            ticks_per_read: 10,
        }
    }

    /// Appends an action; returns its RIP.
    pub fn push(&mut self, action: L2Action) -> u64 {
        let rip = self.next_rip;
        self.actions.push((rip, action));
        // Zero-length actions still need distinct addresses to be addressable.
        self.next_rip += u64::from(action.length().max(1));
        rip
    }

    /// Appends several actions.
    pub fn extend<I: IntoIterator<Item = L2Action>>(&mut self, actions: I) {
        for a in actions {
            self.push(a);
        }
    }

    /// RIP just past the last action.
    pub fn end_rip(&self) -> u64 {
        self.next_rip
    }

    /// Everything executed so far.
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    /// Events L1 injected.
    pub fn events(&self) -> &[DeliveredEvent] {
        &self.events
    }

    /// The virtual TSC without advancing it.
    pub fn peek_tsc(&self) -> u64 {
        self.tsc
    }

    /// Moves the virtual TSC forward by `ticks` (a test standing in for time
    /// that passes outside L2).
    pub fn advance_tsc(&mut self, ticks: u64) {
        self.tsc = self.tsc.saturating_add(ticks);
    }

    fn action_at(&self, rip: u64) -> Option<(usize, L2Action)> {
        self.actions
            .iter()
            .position(|(r, _)| *r == rip)
            .map(|i| (i, self.actions[i].1))
    }

    fn skip_to_next(&self, cpu: &mut L2Cpu<'_>, index: usize) {
        let next = self
            .actions
            .get(index + 1)
            .map(|(r, _)| *r)
            .unwrap_or(self.next_rip);
        cpu.regs_mut().rip = next;
    }
}

impl L2Engine for ScriptedEngine {
    fn run(&mut self, cpu: &mut L2Cpu<'_>) {
        for _ in 0..self.max_steps_per_entry {
            // Exits that happen before the next instruction (§2.7, §2.8).
            if cpu.check_timer(self.tsc) || cpu.check_interrupt_window() {
                return;
            }
            let rip = cpu.regs().rip;
            let Some((index, action)) = self.action_at(rip) else {
                // Running off the script is executing garbage: a triple fault.
                cpu.exit_with_reason(tdcall::vmx::reason::TRIPLE_FAULT);
                return;
            };
            let step = if let L2Action::SetGpr { gpr, value } = action {
                cpu.regs_mut().set_gpr(gpr, value);
                self.skip_to_next(cpu, index);
                Step::Completed
            } else {
                cpu.execute(&action)
            };
            self.tsc = self.tsc.saturating_add(self.ticks_per_action);
            if step != Step::Exit && action != L2Action::Sti {
                // Blocking by STI / MOV SS ends once the next instruction retired.
                cpu.clear_interrupt_shadow();
            }
            self.trace.push(TraceEntry {
                rip,
                action,
                step,
                value: cpu.last_value(),
            });
            match step {
                Step::Completed => {
                    // Keep the script's own layout even for zero-length actions.
                    if action.length() == 0 {
                        self.skip_to_next(cpu, index);
                    }
                }
                Step::FaultedInL2 { .. } => self.skip_to_next(cpu, index),
                Step::Exit => return,
            }
        }
        // A script that never exits (e.g. a loop L1 keeps resuming) ends as a
        // preemption-timer exit so the caller regains control.
        cpu.exit_with_reason(tdcall::vmx::reason::PREEMPTION_TIMER);
    }

    fn tsc(&mut self) -> u64 {
        self.tsc = self.tsc.saturating_add(self.ticks_per_read);
        self.tsc
    }

    fn deliver_event(&mut self, cpu: &mut L2Cpu<'_>, event: DeliveredEvent) {
        self.events.push(event);
        // Exceptions are delivered on the faulting instruction; the guest's
        // fixup resumes after it. Interrupts arrive between instructions.
        if event.vector < 32 {
            if let Some((index, _)) = self.action_at(event.rip) {
                self.skip_to_next(cpu, index);
            }
        }
    }
}
