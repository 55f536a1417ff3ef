//! A virtual local APIC for an L2 vCPU, in x2APIC mode: the register file
//! behind MSRs 0x800–0x8FF, the APIC timer (one-shot, periodic and
//! TSC-deadline with IA32_TSC_DEADLINE, MSR 0x6E0), and the IRR/ISR/PPR logic
//! that decides which vector L1 injects next (tdx-abi.md §2.8 path a).
//!
//! Pure logic: time comes in as the TD virtual TSC (`now`), and the owner
//! ([`crate::interrupts`]) turns [`VirtualApic::next_event`] into the VM's
//! TSC_DEADLINE (§2.7) and [`VirtualApic::pending_vector`] into event
//! injection. Why x2APIC and not xAPIC MMIO: a TD's vCPUs are always in x2APIC
//! mode (IA32_APIC_BASE reads EXTD | EN), so Linux uses the MSR interface from
//! its first APIC access; each access is one MSR exit that L1 decodes from
//! ECX/EDX:EAX alone, with no instruction decoding or L2 page walk.
//!
//! The timer counts at the TD's crystal clock, 25 MHz: one count is
//! `TSC_FREQUENCY` (the TD-scope field in units of 25 MHz) TSC ticks, which
//! is also what CPUID leaf 0x15 tells the guest.

/// First x2APIC MSR.
pub const X2APIC_MSR_BASE: u32 = 0x800;
/// Last x2APIC MSR.
pub const X2APIC_MSR_LAST: u32 = 0x8FF;
/// IA32_TSC_DEADLINE.
pub const MSR_TSC_DEADLINE: u32 = 0x6E0;

/// x2APIC register offsets (MSR − 0x800).
pub mod reg {
    /// Local APIC ID (read-only in x2APIC mode).
    pub const ID: u32 = 0x02;
    /// Version.
    pub const VERSION: u32 = 0x03;
    /// Task priority.
    pub const TPR: u32 = 0x08;
    /// Processor priority (read-only).
    pub const PPR: u32 = 0x0A;
    /// End of interrupt (write-only, value must be 0).
    pub const EOI: u32 = 0x0B;
    /// Logical destination (read-only in x2APIC mode).
    pub const LDR: u32 = 0x0D;
    /// Spurious-interrupt vector.
    pub const SVR: u32 = 0x0F;
    /// In-service register, 8 × 32 bits.
    pub const ISR0: u32 = 0x10;
    /// Trigger-mode register, 8 × 32 bits.
    pub const TMR0: u32 = 0x18;
    /// Interrupt-request register, 8 × 32 bits.
    pub const IRR0: u32 = 0x20;
    /// Error status.
    pub const ESR: u32 = 0x28;
    /// LVT corrected machine check.
    pub const LVT_CMCI: u32 = 0x2F;
    /// Interrupt command (64-bit in x2APIC mode).
    pub const ICR: u32 = 0x30;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x32;
    /// LVT thermal sensor.
    pub const LVT_THERMAL: u32 = 0x33;
    /// LVT performance counter.
    pub const LVT_PMI: u32 = 0x34;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x35;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x36;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x37;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x38;
    /// Timer current count (read-only).
    pub const TIMER_CURRENT: u32 = 0x39;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3E;
    /// Self IPI (write-only).
    pub const SELF_IPI: u32 = 0x3F;
}

/// LVT mask bit.
pub const LVT_MASKED: u32 = 1 << 16;
/// SVR bit 8: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;
/// Version register: version 0x14, 7 LVT entries (max LVT index 6), no EOI broadcast suppression.
pub const VERSION_VALUE: u32 = 0x0006_0014;

/// LVT timer mode, bits 18:17.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    /// Count down once.
    OneShot,
    /// Count down, reload, repeat.
    Periodic,
    /// Fire when the TSC reaches IA32_TSC_DEADLINE.
    TscDeadline,
}

/// A WRMSR or RDMSR the APIC refuses: the guest gets #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApicFault;

/// Counters for measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApicStats {
    /// Timer expiries that raised the LVT timer vector.
    pub timer_fired: u64,
    /// EOIs.
    pub eois: u64,
    /// Self-IPIs (ICR to self, SELF_IPI).
    pub self_ipis: u64,
}

/// The x2APIC of one L2 vCPU.
#[derive(Clone, Debug)]
pub struct VirtualApic {
    id: u32,
    tpr: u32,
    svr: u32,
    esr: u32,
    icr: u64,
    lvt_cmci: u32,
    lvt_timer: u32,
    lvt_thermal: u32,
    lvt_pmi: u32,
    lvt_lint0: u32,
    lvt_lint1: u32,
    lvt_error: u32,
    irr: [u64; 4],
    isr: [u64; 4],
    timer_initial: u32,
    timer_divide: u32,
    /// TSC of the last (re)load of the one-shot/periodic counter.
    timer_start: u64,
    /// One-shot or periodic: TSC at which the counter reaches 0 (`None` = stopped).
    timer_due: Option<u64>,
    tsc_deadline: u64,
    tsc_per_count: u64,
    /// Counters.
    pub stats: ApicStats,
}

fn bit(set: &[u64; 4], v: u8) -> bool {
    set[(v >> 6) as usize] >> (v & 63) & 1 != 0
}

fn set_bit(set: &mut [u64; 4], v: u8, on: bool) {
    let w = &mut set[(v >> 6) as usize];
    if on {
        *w |= 1 << (v & 63);
    } else {
        *w &= !(1 << (v & 63));
    }
}

fn highest(set: &[u64; 4]) -> Option<u8> {
    (0..4)
        .rev()
        .find(|&i| set[i] != 0)
        .map(|i| (i as u8) * 64 + (63 - set[i].leading_zeros() as u8))
}

fn word32(set: &[u64; 4], n: u32) -> u64 {
    (set[(n / 2) as usize] >> ((n % 2) * 32)) & 0xFFFF_FFFF
}

impl VirtualApic {
    /// The reset state (SVR 0xFF: software-disabled, every LVT masked) of the
    /// APIC with x2APIC ID `id`, whose timer counts once per `tsc_per_count`
    /// TSC ticks at divide-by-1 (the TD's TSC_FREQUENCY field for 25 MHz).
    pub fn new(id: u32, tsc_per_count: u64) -> Self {
        VirtualApic {
            id,
            tpr: 0,
            svr: 0xFF,
            esr: 0,
            icr: 0,
            lvt_cmci: LVT_MASKED,
            lvt_timer: LVT_MASKED,
            lvt_thermal: LVT_MASKED,
            lvt_pmi: LVT_MASKED,
            lvt_lint0: LVT_MASKED,
            lvt_lint1: LVT_MASKED,
            lvt_error: LVT_MASKED,
            irr: [0; 4],
            isr: [0; 4],
            timer_initial: 0,
            timer_divide: 0,
            timer_start: 0,
            timer_due: None,
            tsc_deadline: 0,
            tsc_per_count: tsc_per_count.max(1),
            stats: ApicStats::default(),
        }
    }

    /// Whether `msr` belongs to this APIC (the x2APIC range or TSC_DEADLINE).
    pub const fn owns_msr(msr: u32) -> bool {
        matches!(msr, X2APIC_MSR_BASE..=X2APIC_MSR_LAST | MSR_TSC_DEADLINE)
    }

    /// APIC software-enabled (SVR bit 8).
    pub fn enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// The timer mode the LVT selects.
    pub fn timer_mode(&self) -> TimerMode {
        match (self.lvt_timer >> 17) & 3 {
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    fn divide(&self) -> u64 {
        let v = (self.timer_divide & 3) | ((self.timer_divide >> 1) & 4);
        if v == 7 {
            1
        } else {
            2 << v
        }
    }

    fn count_period(&self) -> u64 {
        self.tsc_per_count.saturating_mul(self.divide())
    }

    fn isrv(&self) -> u32 {
        highest(&self.isr).map_or(0, u32::from)
    }

    /// Processor priority: the higher of TPR and the in-service class.
    pub fn ppr(&self) -> u32 {
        let isrv = self.isrv() & 0xF0;
        if (self.tpr & 0xF0) >= isrv {
            self.tpr & 0xFF
        } else {
            isrv
        }
    }

    /// Requests `vector` (IRR). Vectors below 16 are illegal: they set the
    /// "received illegal vector" error instead.
    pub fn raise(&mut self, vector: u8) {
        if vector < 16 {
            self.esr |= 1 << 6;
            return;
        }
        set_bit(&mut self.irr, vector, true);
    }

    /// The vector L1 should inject now: the highest requested one whose
    /// priority class is above the processor priority, if the APIC is enabled.
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.enabled() {
            return None;
        }
        let v = highest(&self.irr)?;
        ((v as u32 & 0xF0) > (self.ppr() & 0xF0)).then_some(v)
    }

    /// Whether any vector is requested (even if masked by priority).
    pub fn has_requests(&self) -> bool {
        self.irr.iter().any(|w| *w != 0)
    }

    /// The vector was delivered (injected): IRR → ISR.
    pub fn accept(&mut self, vector: u8) {
        set_bit(&mut self.irr, vector, false);
        set_bit(&mut self.isr, vector, true);
    }

    /// Whether `vector` is in service.
    pub fn in_service(&self, vector: u8) -> bool {
        bit(&self.isr, vector)
    }

    /// Whether `vector` is requested.
    pub fn requested(&self, vector: u8) -> bool {
        bit(&self.irr, vector)
    }

    fn eoi(&mut self) {
        if let Some(v) = highest(&self.isr) {
            set_bit(&mut self.isr, v, false);
        }
        self.stats.eois += 1;
    }

    fn fire_timer(&mut self) {
        self.stats.timer_fired += 1;
        if self.lvt_timer & LVT_MASKED == 0 && self.enabled() {
            self.raise(self.lvt_timer as u8);
        }
    }

    /// Advances the timer to `now`: an expiry requests the LVT timer vector
    /// (unless masked); a periodic timer reloads.
    pub fn poll(&mut self, now: u64) {
        match self.timer_mode() {
            TimerMode::TscDeadline => {
                if self.tsc_deadline != 0 && now >= self.tsc_deadline {
                    self.tsc_deadline = 0;
                    self.fire_timer();
                }
            }
            mode => {
                if let Some(due) = self.timer_due {
                    if now >= due {
                        self.fire_timer();
                        if mode == TimerMode::Periodic && self.timer_initial != 0 {
                            let period = self.count_period() * self.timer_initial as u64;
                            // Skip missed periods rather than firing a burst.
                            let missed = (now - due) / period.max(1);
                            let next = due + (missed + 1) * period;
                            self.timer_start = next - period;
                            self.timer_due = Some(next);
                        } else {
                            self.timer_due = None;
                        }
                    }
                }
            }
        }
    }

    /// The TSC at which the timer fires next, if it is armed.
    pub fn next_event(&self) -> Option<u64> {
        match self.timer_mode() {
            TimerMode::TscDeadline => (self.tsc_deadline != 0).then_some(self.tsc_deadline),
            _ => self.timer_due,
        }
    }

    fn current_count(&self, now: u64) -> u64 {
        match (self.timer_mode(), self.timer_due) {
            (TimerMode::TscDeadline, _) | (_, None) => 0,
            (_, Some(due)) => due.saturating_sub(now).div_ceil(self.count_period()),
        }
    }

    /// RDMSR of an APIC MSR at time `now`.
    pub fn rdmsr(&mut self, msr: u32, now: u64) -> Result<u64, ApicFault> {
        if msr == MSR_TSC_DEADLINE {
            return Ok(if self.timer_mode() == TimerMode::TscDeadline {
                self.tsc_deadline
            } else {
                0
            });
        }
        let r = msr.wrapping_sub(X2APIC_MSR_BASE);
        let v = match r {
            reg::ID => self.id as u64,
            reg::VERSION => VERSION_VALUE as u64,
            reg::TPR => self.tpr as u64,
            reg::PPR => self.ppr() as u64,
            reg::LDR => (((self.id >> 4) << 16) | (1 << (self.id & 0xF))) as u64,
            reg::SVR => self.svr as u64,
            n @ reg::ISR0..=0x17 => word32(&self.isr, n - reg::ISR0),
            reg::TMR0..=0x1F => 0,
            n @ reg::IRR0..=0x27 => word32(&self.irr, n - reg::IRR0),
            reg::ESR => self.esr as u64,
            reg::LVT_CMCI => self.lvt_cmci as u64,
            reg::ICR => self.icr,
            reg::LVT_TIMER => self.lvt_timer as u64,
            reg::LVT_THERMAL => self.lvt_thermal as u64,
            reg::LVT_PMI => self.lvt_pmi as u64,
            reg::LVT_LINT0 => self.lvt_lint0 as u64,
            reg::LVT_LINT1 => self.lvt_lint1 as u64,
            reg::LVT_ERROR => self.lvt_error as u64,
            reg::TIMER_INITIAL => self.timer_initial as u64,
            reg::TIMER_CURRENT => self.current_count(now),
            reg::TIMER_DIVIDE => self.timer_divide as u64,
            // EOI and SELF_IPI are write-only; everything else is reserved.
            _ => return Err(ApicFault),
        };
        Ok(v)
    }

    /// WRMSR of an APIC MSR at time `now`.
    pub fn wrmsr(&mut self, msr: u32, value: u64, now: u64) -> Result<(), ApicFault> {
        if msr == MSR_TSC_DEADLINE {
            // Ignored outside TSC-deadline mode (SDM 10.5.4.1).
            if self.timer_mode() == TimerMode::TscDeadline {
                self.tsc_deadline = value;
                self.poll(now);
            }
            return Ok(());
        }
        let r = msr.wrapping_sub(X2APIC_MSR_BASE);
        // x2APIC: the upper 32 bits are reserved except in the ICR.
        if r != reg::ICR && value >> 32 != 0 {
            return Err(ApicFault);
        }
        let v32 = value as u32;
        let lvt_mask = |v: u32, writable: u32| {
            // With the APIC software-disabled, LVT mask bits stay set.
            v & writable
        };
        let forced_mask = if self.enabled() { 0 } else { LVT_MASKED };
        match r {
            reg::TPR => self.tpr = v32 & 0xFF,
            reg::EOI => {
                if v32 != 0 {
                    return Err(ApicFault);
                }
                self.eoi();
            }
            reg::SVR => {
                self.svr = v32 & 0x1FFF;
                if !self.enabled() {
                    for l in [
                        &mut self.lvt_cmci,
                        &mut self.lvt_timer,
                        &mut self.lvt_thermal,
                        &mut self.lvt_pmi,
                        &mut self.lvt_lint0,
                        &mut self.lvt_lint1,
                        &mut self.lvt_error,
                    ] {
                        *l |= LVT_MASKED;
                    }
                }
            }
            reg::ESR => {
                if v32 != 0 {
                    return Err(ApicFault);
                }
                self.esr = 0;
            }
            reg::LVT_CMCI => self.lvt_cmci = lvt_mask(v32, 0x1_07FF) | forced_mask,
            reg::ICR => {
                self.icr = value & !(1 << 12);
                self.send_ipi(value);
            }
            reg::LVT_TIMER => {
                let old_mode = self.timer_mode();
                self.lvt_timer = lvt_mask(v32, 0x7_00FF) | forced_mask;
                if self.timer_mode() != old_mode {
                    // A mode change disarms the timer (SDM 10.5.4.1).
                    self.timer_due = None;
                    self.timer_initial = 0;
                    self.tsc_deadline = 0;
                }
            }
            reg::LVT_THERMAL => self.lvt_thermal = lvt_mask(v32, 0x1_07FF) | forced_mask,
            reg::LVT_PMI => self.lvt_pmi = lvt_mask(v32, 0x1_07FF) | forced_mask,
            reg::LVT_LINT0 => self.lvt_lint0 = lvt_mask(v32, 0x1_A7FF) | forced_mask,
            reg::LVT_LINT1 => self.lvt_lint1 = lvt_mask(v32, 0x1_A7FF) | forced_mask,
            reg::LVT_ERROR => self.lvt_error = lvt_mask(v32, 0x1_00FF) | forced_mask,
            reg::TIMER_INITIAL => {
                if self.timer_mode() == TimerMode::TscDeadline {
                    return Ok(());
                }
                self.timer_initial = v32;
                self.timer_start = now;
                self.timer_due = (v32 != 0)
                    .then(|| now.saturating_add(self.count_period().saturating_mul(v32 as u64)));
            }
            reg::TIMER_DIVIDE => {
                // Keep the remaining time of a running count in TSC terms.
                self.timer_divide = v32 & 0xB;
            }
            reg::SELF_IPI => {
                self.stats.self_ipis += 1;
                self.raise(v32 as u8);
            }
            _ => return Err(ApicFault),
        }
        Ok(())
    }

    /// ICR write: only fixed interrupts to this APIC (destination shorthand
    /// "self", or "all including self", or physical destination = own ID)
    /// are delivered; there are no other vCPUs.
    fn send_ipi(&mut self, icr: u64) {
        let vector = icr as u8;
        let delivery = (icr >> 8) & 7;
        let shorthand = (icr >> 18) & 3;
        let dest = (icr >> 32) as u32;
        let to_self = match shorthand {
            1 | 2 => true,
            0 => (icr >> 11) & 1 == 0 && dest == self.id,
            _ => false,
        };
        if delivery == 0 && to_self {
            self.stats.self_ipis += 1;
            self.raise(vector);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TPC: u64 = 100; // TSC ticks per APIC count

    fn enabled() -> VirtualApic {
        let mut a = VirtualApic::new(0, TPC);
        a.wrmsr(0x80F, 0x1FF, 0).unwrap();
        a
    }

    #[test]
    fn reset_state_and_read_only_registers() {
        let mut a = VirtualApic::new(3, TPC);
        assert_eq!(a.rdmsr(0x802, 0), Ok(3));
        assert_eq!(a.rdmsr(0x803, 0), Ok(VERSION_VALUE as u64));
        assert_eq!(a.rdmsr(0x80D, 0), Ok(1 << 3));
        assert_eq!(a.rdmsr(0x80F, 0), Ok(0xFF));
        assert_eq!(a.rdmsr(0x832, 0), Ok(LVT_MASKED as u64));
        assert_eq!(a.rdmsr(0x80B, 0), Err(ApicFault), "EOI is write-only");
        assert_eq!(a.wrmsr(0x802, 1, 0), Err(ApicFault), "ID is read-only");
        assert_eq!(a.wrmsr(0x80B, 1, 0), Err(ApicFault), "EOI needs 0");
        assert_eq!(a.wrmsr(0x808, 1 << 32, 0), Err(ApicFault));
        assert!(VirtualApic::owns_msr(0x6E0) && VirtualApic::owns_msr(0x8FF));
        assert!(!VirtualApic::owns_msr(0x1B));
    }

    #[test]
    fn priorities_isr_and_eoi() {
        let mut a = enabled();
        a.raise(0x31);
        a.raise(0x52);
        assert_eq!(a.pending_vector(), Some(0x52));
        a.accept(0x52);
        assert_eq!(a.ppr(), 0x50);
        assert_eq!(
            a.pending_vector(),
            None,
            "0x31 is below the in-service class"
        );
        assert_eq!(a.rdmsr(0x810 + 2, 0), Ok(1 << (0x52 - 64)));
        a.wrmsr(0x80B, 0, 0).unwrap();
        assert_eq!(a.pending_vector(), Some(0x31));
        a.wrmsr(0x808, 0x40, 0).unwrap();
        assert_eq!(a.pending_vector(), None, "TPR masks class 3");
        a.wrmsr(0x808, 0, 0).unwrap();
        assert_eq!(a.pending_vector(), Some(0x31));
        a.raise(5);
        assert_eq!(a.rdmsr(0x828, 0), Ok(1 << 6), "illegal vector error");
        // Software-disabled: nothing is delivered.
        a.wrmsr(0x80F, 0xFF, 0).unwrap();
        assert_eq!(a.pending_vector(), None);
    }

    #[test]
    fn tsc_deadline_timer() {
        let mut a = enabled();
        a.wrmsr(0x832, (2 << 17) | 0xEC, 0).unwrap();
        assert_eq!(a.timer_mode(), TimerMode::TscDeadline);
        assert_eq!(a.next_event(), None);
        a.wrmsr(0x6E0, 5_000, 100).unwrap();
        assert_eq!(a.rdmsr(0x6E0, 100), Ok(5_000));
        assert_eq!(a.next_event(), Some(5_000));
        a.poll(4_999);
        assert_eq!(a.pending_vector(), None);
        a.poll(5_000);
        assert_eq!(a.pending_vector(), Some(0xEC));
        assert_eq!(a.next_event(), None, "one shot: the deadline resets");
        assert_eq!(a.rdmsr(0x6E0, 5_000), Ok(0));
        // A deadline in the past fires at once; 0 disarms.
        a.accept(0xEC);
        a.wrmsr(0x80B, 0, 5_000).unwrap();
        a.wrmsr(0x6E0, 10, 6_000).unwrap();
        assert_eq!(a.pending_vector(), Some(0xEC));
        a.accept(0xEC);
        a.wrmsr(0x6E0, 9_000, 6_000).unwrap();
        a.wrmsr(0x6E0, 0, 6_000).unwrap();
        assert_eq!(a.next_event(), None);
        // The initial-count register is ignored in TSC-deadline mode.
        a.wrmsr(0x838, 10, 6_000).unwrap();
        assert_eq!(a.rdmsr(0x838, 6_000), Ok(0));
        assert_eq!(a.stats.timer_fired, 2);
    }

    #[test]
    fn one_shot_and_periodic_timer() {
        let mut a = enabled();
        a.wrmsr(0x83E, 0xB, 0).unwrap(); // divide by 1
        a.wrmsr(0x832, 0x40, 0).unwrap(); // one-shot, vector 0x40
        a.wrmsr(0x838, 10, 1_000).unwrap();
        assert_eq!(a.next_event(), Some(1_000 + 10 * TPC));
        assert_eq!(a.rdmsr(0x839, 1_500), Ok(5));
        a.poll(2_000);
        assert_eq!(a.pending_vector(), Some(0x40));
        assert_eq!(a.next_event(), None);
        a.accept(0x40);
        a.wrmsr(0x80B, 0, 2_000).unwrap();
        // Periodic, divide by 2: period 2 × 10 × TPC = 2000; late polls skip periods.
        a.wrmsr(0x83E, 0x0, 2_000).unwrap();
        a.wrmsr(0x832, (1 << 17) | 0x41, 2_000).unwrap();
        a.wrmsr(0x838, 10, 2_000).unwrap();
        assert_eq!(a.next_event(), Some(4_000));
        a.poll(9_500);
        assert_eq!(a.pending_vector(), Some(0x41));
        assert_eq!(a.next_event(), Some(10_000));
        // Masked: expiries count but request nothing.
        a.accept(0x41);
        a.wrmsr(0x80B, 0, 9_500).unwrap();
        a.wrmsr(0x832, LVT_MASKED as u64 | (1 << 17) | 0x41, 9_500)
            .unwrap();
        a.poll(20_000);
        assert!(!a.has_requests());
    }

    #[test]
    fn self_ipis() {
        let mut a = enabled();
        a.wrmsr(0x83F, 0xF6, 0).unwrap();
        assert!(a.requested(0xF6));
        a.wrmsr(0x830, (1 << 18) | 0xF7, 0).unwrap(); // shorthand self
        assert!(a.requested(0xF7));
        a.wrmsr(0x830, 0xF8, 0).unwrap(); // physical destination 0 = this APIC
        assert!(a.requested(0xF8));
        a.wrmsr(0x830, (5u64 << 32) | 0xF9, 0).unwrap(); // another APIC: dropped
        assert!(!a.requested(0xF9));
        a.wrmsr(0x830, (4 << 8) | 0xFA, 0).unwrap(); // NMI delivery: not modelled
        assert!(!a.requested(0xFA));
        assert_eq!(a.stats.self_ipis, 3);
    }
}
