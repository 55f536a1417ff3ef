//! Interrupt delivery and the timer for an L2 vCPU (tdx-abi.md §2.7, §2.8):
//! a [`VirtualApic`] in x2APIC mode, its timer backed by the VM's
//! TSC_DEADLINE, and event injection on the TDG.VP.ENTER loop.
//!
//! Before every entry ([`Interrupts::before_entry`]):
//! 1. the APIC's timer is advanced to the TD virtual TSC ([`Clock`]);
//! 2. the highest deliverable vector is injected as an external interrupt
//!    (VM-entry interruption info, type 0, §2.8 path a) when L2 has
//!    RFLAGS.IF = 1, no STI/MOV-SS blocking and no other event is being
//!    injected; otherwise interrupt-window exiting (primary bit 2) is turned
//!    on, and the window exit (reason 7) brings L1 back to inject;
//! 3. TSC_DEADLINE (§2.7) is set to the APIC timer's next expiry (or
//!    disabled), so a timer that expires while L2 runs ends the slice with
//!    exit reason 52.
//!
//! After every exit ([`Interrupts::handle_exit`]) L1 serves, before the
//! generic dispatch: reasons 52 and 7 (nothing to do but re-evaluate), RDMSR
//! and WRMSR of the x2APIC MSRs and IA32_TSC_DEADLINE, and HLT with
//! RFLAGS.IF = 1, which waits in L1 until the timer fires. L1 has no
//! interrupt source of its own here, so it waits by polling the TSC (on real
//! TDX it would arm its own APIC timer and `STI; TDG.VP.VMCALL<HLT>`).
//!
//! Virtual-interrupt delivery (RVI in the ENTER buffer, path b) and posted
//! interrupts are not used: path a needs nothing from the module but the
//! VM-entry fields, which every engine models.

use tdcall::field::{controls, vmcs, FieldId};
use tdcall::leaves::VpEnterResult;
use tdcall::vmx::{reason, EventType, InterruptionInfo};
use tdcall::EnterOutcome;

use crate::apic::VirtualApic;
use crate::field;
use crate::handlers::ExitHandlers;
use crate::inject;
use crate::memory::Platform;
use crate::setup::RFLAGS_IF;
use crate::vcpu::{StopReason, Vcpu};

/// The TD virtual TSC as L1 reads it (RDTSC in a TD; the model's clock in
/// host tests).
pub trait Clock {
    /// The TSC now.
    fn tsc(&mut self) -> u64;

    /// Waits until the TSC reaches `deadline` (L2 halted with nothing
    /// pending). The default polls [`Clock::tsc`].
    fn wait_until(&mut self, deadline: u64) {
        while self.tsc() < deadline {
            core::hint::spin_loop();
        }
    }
}

/// Counters of the interrupt machinery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterruptStats {
    /// External interrupts injected.
    pub injected: u64,
    /// Entries with interrupt-window exiting on.
    pub window_requests: u64,
    /// TSC_DEADLINE writes (TDG.VP.WR).
    pub deadline_writes: u64,
    /// Exits for x2APIC / TSC_DEADLINE MSRs served here.
    pub apic_msr_exits: u64,
    /// HLTs with RFLAGS.IF = 1 that waited in L1.
    pub halts: u64,
    /// TSC ticks spent waiting in those HLTs.
    pub halted_ticks: u64,
    /// #GP(0) injected for refused APIC MSR accesses.
    pub apic_faults: u64,
}

/// The interrupt state of one L2 vCPU.
#[derive(Clone, Debug)]
pub struct Interrupts {
    /// The virtual x2APIC.
    pub apic: VirtualApic,
    /// Interrupt-window exiting is on in the VMCS (as L1 last wrote it).
    window_on: bool,
    /// TSC_DEADLINE as L1 last wrote it (the module's reset value is disabled).
    deadline: u64,
    /// Counters.
    pub stats: InterruptStats,
}

/// Length of RDMSR/WRMSR.
const MSR_INSN_LEN: u64 = 2;

impl Interrupts {
    /// Interrupt state around `apic`.
    pub fn new(apic: VirtualApic) -> Self {
        Interrupts {
            apic,
            window_on: false,
            deadline: u64::MAX,
            stats: InterruptStats::default(),
        }
    }

    /// The TSC_DEADLINE L1 last programmed (`u64::MAX` = disabled).
    pub fn programmed_deadline(&self) -> u64 {
        self.deadline
    }

    /// Whether interrupt-window exiting is on.
    pub fn window_requested(&self) -> bool {
        self.window_on
    }

    /// Whether an injection is possible now: no event already in the VM-entry
    /// field (an exception a handler injected, a re-injected vectored event)
    /// and no STI/MOV-SS blocking. RFLAGS.IF is checked by the caller.
    fn can_inject<P: Platform + ?Sized>(&self, p: &mut P, vcpu: &Vcpu) -> Result<bool, StopReason> {
        let vm = vcpu.vm();
        let entry = field::read_vmcs(p, vm, vmcs::VM_ENTRY_INTR_INFO)?;
        if InterruptionInfo(entry as u32).is_valid() {
            return Ok(false);
        }
        let blocking = field::read_vmcs(p, vm, vmcs::GUEST_INTERRUPTIBILITY)?;
        Ok(blocking & (controls::INTERRUPTIBILITY_STI | controls::INTERRUPTIBILITY_MOV_SS) == 0)
    }

    fn set_window<P: Platform + ?Sized>(
        &mut self,
        p: &mut P,
        vcpu: &Vcpu,
        on: bool,
    ) -> Result<(), StopReason> {
        if on {
            self.stats.window_requests += 1;
        }
        if on != self.window_on {
            let bit = controls::PROC_INTERRUPT_WINDOW_EXITING;
            field::write_vmcs(
                p,
                vcpu.vm(),
                vmcs::PROC_BASED_CTLS,
                if on { bit } else { 0 },
                bit,
            )?;
            self.window_on = on;
        }
        Ok(())
    }

    /// Timer, injection and interrupt window before a TDG.VP.ENTER.
    pub fn before_entry<P: Platform + Clock + ?Sized>(
        &mut self,
        p: &mut P,
        vcpu: &mut Vcpu,
    ) -> Result<(), StopReason> {
        let now = p.tsc();
        self.apic.poll(now);
        let mut want_window = false;
        if let Some(v) = self.apic.pending_vector() {
            if vcpu.state.rflags & RFLAGS_IF != 0 && self.can_inject(p, vcpu)? {
                let info = InterruptionInfo::new(v, EventType::ExternalInterrupt, false);
                inject::inject_event(p, vcpu.vm(), info, None)?;
                self.apic.accept(v);
                self.stats.injected += 1;
                log::trace!("injected vector {v:#x} at RIP {:#x}", vcpu.state.rip);
                // A higher-priority request still needs the next window.
                want_window = self.apic.pending_vector().is_some();
            } else {
                want_window = true;
            }
        }
        self.set_window(p, vcpu, want_window)?;
        let next = self.apic.next_event().unwrap_or(u64::MAX);
        if next != self.deadline {
            field::write(
                p,
                "TSC_DEADLINE",
                FieldId::tsc_deadline(vcpu.vm()),
                next,
                u64::MAX,
            )?;
            self.deadline = next;
            self.stats.deadline_writes += 1;
        }
        Ok(())
    }

    /// Serves the exits that belong to the interrupt machinery. `Ok(true)`
    /// means handled (re-enter); `Ok(false)` leaves the exit to the generic
    /// dispatch.
    pub fn handle_exit<P: Platform + Clock + ?Sized>(
        &mut self,
        p: &mut P,
        vcpu: &mut Vcpu,
        result: &VpEnterResult,
    ) -> Result<bool, StopReason> {
        if !matches!(
            result.outcome,
            EnterOutcome::L2ToL1 | EnterOutcome::HostRoutedAsync
        ) {
            return Ok(false);
        }
        let exit = result.exit.exit_reason();
        if exit.is_entry_failure() {
            return Ok(false);
        }
        let basic = exit.basic();
        let handled = match basic {
            reason::PREEMPTION_TIMER | reason::INTERRUPT_WINDOW => true,
            reason::MSR_READ | reason::MSR_WRITE => {
                let msr = vcpu.state.gprs[tdcall::enter::gpr::RCX] as u32;
                if !VirtualApic::owns_msr(msr) {
                    return Ok(false);
                }
                self.apic_msr(p, vcpu, msr, basic == reason::MSR_WRITE)?;
                true
            }
            reason::HLT if vcpu.state.rflags & RFLAGS_IF != 0 => {
                self.halt(p, vcpu, result.exit.instruction_length as u64)?;
                true
            }
            _ => false,
        };
        if handled {
            vcpu.stats.record_exit(basic);
            vcpu.last_exit = Some(result.exit);
        }
        Ok(handled)
    }

    fn apic_msr<P: Platform + Clock + ?Sized>(
        &mut self,
        p: &mut P,
        vcpu: &mut Vcpu,
        msr: u32,
        write: bool,
    ) -> Result<(), StopReason> {
        use tdcall::enter::gpr;
        self.stats.apic_msr_exits += 1;
        let now = p.tsc();
        let g = &mut vcpu.state.gprs;
        let result = if write {
            let value = (g[gpr::RDX] << 32) | (g[gpr::RAX] & 0xFFFF_FFFF);
            log::trace!("x2APIC WRMSR {msr:#x} <- {value:#x}");
            self.apic.wrmsr(msr, value, now)
        } else {
            self.apic.rdmsr(msr, now).map(|v| {
                g[gpr::RAX] = v & 0xFFFF_FFFF;
                g[gpr::RDX] = v >> 32;
            })
        };
        match result {
            Ok(()) => {
                vcpu.state.rip = vcpu.state.rip.wrapping_add(MSR_INSN_LEN);
            }
            Err(_) => {
                log::warn!(
                    "L2 {} of x2APIC MSR {msr:#x} refused: #GP(0) at RIP {:#x}",
                    if write { "WRMSR" } else { "RDMSR" },
                    vcpu.state.rip
                );
                inject::inject_gp0(p, vcpu.vm())?;
                self.stats.apic_faults += 1;
                vcpu.stats.injected += 1;
            }
        }
        Ok(())
    }

    /// HLT with RFLAGS.IF = 1: complete it, drop the STI blocking it may sit
    /// in (`STI; HLT`), and wait until an interrupt is deliverable. With no
    /// timer armed and nothing requested, nothing can ever wake L2: stop.
    fn halt<P: Platform + Clock + ?Sized>(
        &mut self,
        p: &mut P,
        vcpu: &mut Vcpu,
        len: u64,
    ) -> Result<(), StopReason> {
        vcpu.state.rip = vcpu.state.rip.wrapping_add(len);
        let blocking = controls::INTERRUPTIBILITY_STI | controls::INTERRUPTIBILITY_MOV_SS;
        let state = field::read_vmcs(p, vcpu.vm(), vmcs::GUEST_INTERRUPTIBILITY)?;
        if state & blocking != 0 {
            field::write_vmcs(p, vcpu.vm(), vmcs::GUEST_INTERRUPTIBILITY, 0, blocking)?;
        }
        self.stats.halts += 1;
        let start = p.tsc();
        loop {
            let now = p.tsc();
            self.apic.poll(now);
            if self.apic.pending_vector().is_some() {
                break;
            }
            match self.apic.next_event() {
                Some(t) => p.wait_until(t),
                None => {
                    log::info!(
                        "L2 halted with interrupts enabled and no timer armed: nothing can wake it"
                    );
                    return Err(StopReason::Halted);
                }
            }
        }
        self.stats.halted_ticks += p.tsc().saturating_sub(start);
        Ok(())
    }
}

impl Vcpu {
    /// [`Vcpu::run`] with interrupt delivery and the APIC timer ([`Interrupts`]):
    /// the loop for guests that take interrupts (Linux).
    pub fn run_with_interrupts<P: Platform + Clock, H: ExitHandlers + ?Sized>(
        &mut self,
        platform: &mut P,
        handlers: &mut H,
        irq: &mut Interrupts,
        max_entries: u64,
    ) -> StopReason {
        for _ in 0..max_entries {
            let step = irq
                .before_entry(platform, self)
                .and_then(|()| self.enter(platform))
                .and_then(|r| {
                    if irq.handle_exit(platform, self, &r)? {
                        Ok(())
                    } else {
                        self.handle(platform, handlers, &r)
                    }
                });
            if let Err(stop) = step {
                match stop {
                    StopReason::Halted => log::info!("L2 VM {} halted", self.vm().index()),
                    _ => log::error!("L2 VM {} stopped: {stop}", self.vm().index()),
                }
                return stop;
            }
        }
        log::warn!(
            "L2 VM {}: exit limit of {max_entries} entries reached",
            self.vm().index()
        );
        StopReason::ExitLimit
    }
}
