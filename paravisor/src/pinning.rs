//! Register pinning: LVBS `LOCK_REGS` (design.md §4, heki-lvbs-abi.md §5.2).
//!
//! After [`lock_registers`] the guest kernel can no longer change:
//!
//! * CR0.PE, CR0.WP, CR0.PG, and every CR4 bit except MCE, PGE, PCE and VMXE.
//!   L1 takes ownership of those bits in the CR0/CR4 guest/host masks (the read
//!   shadows keep the values L2 saw), so any change exits to L1 (§2.6), and
//!   [`PinnedCr`] answers it with #GP(0), leaving the register unchanged. The
//!   comparison is masked new value against masked pinned value.
//! * EFER, STAR, LSTAR, CSTAR, SFMASK, APIC_BASE and SYSENTER_CS/ESP/EIP. Their
//!   write bits are set in the L2 MSR bitmap (§2.7) and [`PinnedMsrs`] refuses
//!   any write that changes the value captured at lock time (#GP(0)); a write
//!   of the same value is a no-op.
//! * GDTR, IDTR, LDTR and TR. Secondary control bit 2 (descriptor-table
//!   exiting) is in L1's write mask in module 1.5.01 (0x0C513E0C, §2.5), so
//!   LGDT/LIDT/LLDT/LTR exit to L1 (reasons 46/47) and get #GP(0). The same
//!   control also traps SGDT/SIDT/SLDT/STR; [`crate::exits::desc`] emulates
//!   those (Linux reads its IDT/GDT with them, e.g. `store_idt`): the
//!   instruction and its memory operand are translated through L2's page
//!   tables ([`crate::walk`]) and the value is written only where L2 itself
//!   could write. With CR4.UMIP, which stays pinned, they #GP(0) above CPL 0.

use tdcall::field::{controls, vmcs, FieldId};
use tdcall::L2Vm;

use crate::field::{self, FieldAccessError};
use crate::handlers::{
    AllowCrWrites, CrDecision, CrPolicy, CrWrite, MsrPolicy, MsrRead, MsrTable, MsrWrite,
};
use crate::msr_bitmap::{position, MsrDirection};
use crate::setup::{CR0_PE, CR0_PG, CR0_WP, CR4_MCE, CR4_PGE, CR4_VMXE};

/// CR0 bits pinned at lock: PE, WP, PG.
pub const CR0_PINNED: u64 = CR0_PE | CR0_WP | CR0_PG;
/// CR4.PCE.
const CR4_PCE: u64 = 1 << 8;
/// CR4 bits left to the guest: MCE, PGE, PCE, VMXE; every other bit is pinned.
pub const CR4_UNPINNED: u64 = CR4_MCE | CR4_PGE | CR4_PCE | CR4_VMXE;
/// CR4 bits pinned at lock.
pub const CR4_PINNED: u64 = !CR4_UNPINNED;

/// IA32_EFER.
pub const MSR_EFER: u32 = 0xC000_0080;
/// IA32_STAR.
pub const MSR_STAR: u32 = 0xC000_0081;
/// IA32_LSTAR.
pub const MSR_LSTAR: u32 = 0xC000_0082;
/// IA32_CSTAR.
pub const MSR_CSTAR: u32 = 0xC000_0083;
/// IA32_FMASK (SFMASK).
pub const MSR_SFMASK: u32 = 0xC000_0084;
/// IA32_SYSENTER_CS.
pub const MSR_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const MSR_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const MSR_SYSENTER_EIP: u32 = 0x176;

/// The MSRs frozen at lock.
pub const PINNED_MSRS: [u32; 9] = [
    MSR_EFER,
    MSR_STAR,
    MSR_LSTAR,
    MSR_CSTAR,
    MSR_SFMASK,
    crate::handlers::MSR_IA32_APIC_BASE,
    MSR_SYSENTER_CS,
    MSR_SYSENTER_ESP,
    MSR_SYSENTER_EIP,
];

/// Reads MSRs that TDX shares between L1 and L2 (STAR, LSTAR, CSTAR, SFMASK:
/// tdx-abi.md §2.10): after an exit the L1 vCPU's own MSR holds L2's value.
/// The bare-metal paravisor implements it with RDMSR; tests with the model.
pub trait SharedMsrs {
    /// The current value of `msr`, if this platform can read it.
    fn read_shared_msr(&mut self, msr: u32) -> Option<u64>;
}

impl<T: SharedMsrs + ?Sized> SharedMsrs for &mut T {
    fn read_shared_msr(&mut self, msr: u32) -> Option<u64> {
        (**self).read_shared_msr(msr)
    }
}

/// Values captured by [`lock_registers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterPins {
    /// Guest-visible CR0 at lock.
    pub cr0: u64,
    /// Guest-visible CR4 at lock.
    pub cr4: u64,
    /// (MSR, value) pairs of [`PINNED_MSRS`].
    pub msrs: [(u32, u64); 9],
}

/// Why locking failed. Nothing is pinned then; the caller reports the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinError {
    /// A TDG.VP.RD/WR failed.
    Field(FieldAccessError),
    /// A pinned MSR's value could not be read.
    MsrUnavailable(u32),
}

impl From<FieldAccessError> for PinError {
    fn from(e: FieldAccessError) -> Self {
        PinError::Field(e)
    }
}

fn guest_visible<T: tdcall::Tdcall + ?Sized>(
    t: &mut T,
    vm: L2Vm,
    guest: tdcall::VmcsField,
    mask: tdcall::VmcsField,
    shadow: tdcall::VmcsField,
) -> Result<(u64, u64, u64), FieldAccessError> {
    let g = field::read_vmcs(t, vm, guest)?;
    let m = field::read_vmcs(t, vm, mask)?;
    let s = field::read_vmcs(t, vm, shadow)?;
    Ok(((g & !m) | (s & m), m, s))
}

/// Pins the registers of `vm` on this vCPU (LVBS `LOCK_REGS`): captures the
/// current values, takes ownership of the pinned CR bits, write-intercepts the
/// pinned MSRs and turns on descriptor-table exiting. `apic_base` is the
/// policy that serves APIC_BASE (the paravisor emulates it).
pub fn lock_registers<P: crate::Platform + SharedMsrs + ?Sized>(
    p: &mut P,
    vm: L2Vm,
    apic_base: &mut dyn MsrPolicy,
) -> Result<RegisterPins, PinError> {
    // Capture first, so a failure changes nothing.
    let (cr0, cr0_mask, cr0_shadow) = guest_visible(
        p,
        vm,
        vmcs::GUEST_CR0,
        vmcs::CR0_GUEST_HOST_MASK,
        vmcs::CR0_READ_SHADOW,
    )?;
    let (cr4, cr4_mask, cr4_shadow) = guest_visible(
        p,
        vm,
        vmcs::GUEST_CR4,
        vmcs::CR4_GUEST_HOST_MASK,
        vmcs::CR4_READ_SHADOW,
    )?;
    let mut msrs = [(0u32, 0u64); 9];
    for (slot, msr) in msrs.iter_mut().zip(PINNED_MSRS) {
        let value = match msr {
            MSR_EFER => field::read_vmcs(p, vm, vmcs::GUEST_IA32_EFER)?,
            MSR_SYSENTER_CS => field::read_vmcs(p, vm, vmcs::GUEST_SYSENTER_CS)?,
            MSR_SYSENTER_ESP => field::read_vmcs(p, vm, vmcs::GUEST_SYSENTER_ESP)?,
            MSR_SYSENTER_EIP => field::read_vmcs(p, vm, vmcs::GUEST_SYSENTER_EIP)?,
            crate::handlers::MSR_IA32_APIC_BASE => match apic_base.read(msr) {
                MsrRead::Value(v) => v,
                _ => p
                    .read_shared_msr(msr)
                    .ok_or(PinError::MsrUnavailable(msr))?,
            },
            _ => p
                .read_shared_msr(msr)
                .ok_or(PinError::MsrUnavailable(msr))?,
        };
        *slot = (msr, value);
    }
    // Shadows before masks: at no point may L2 read a value it did not set.
    let cr0_shadow = (cr0_shadow & cr0_mask) | (cr0 & CR0_PINNED & !cr0_mask);
    field::write_vmcs(p, vm, vmcs::CR0_READ_SHADOW, cr0_shadow, u64::MAX)?;
    field::write_vmcs(
        p,
        vm,
        vmcs::CR0_GUEST_HOST_MASK,
        cr0_mask | CR0_PINNED,
        u64::MAX,
    )?;
    let cr4_shadow = (cr4_shadow & cr4_mask) | (cr4 & CR4_PINNED & !cr4_mask);
    field::write_vmcs(p, vm, vmcs::CR4_READ_SHADOW, cr4_shadow, u64::MAX)?;
    field::write_vmcs(
        p,
        vm,
        vmcs::CR4_GUEST_HOST_MASK,
        cr4_mask | CR4_PINNED,
        u64::MAX,
    )?;
    for msr in PINNED_MSRS {
        if let Some((index, bit)) = position(msr, MsrDirection::Write) {
            let id = FieldId::l2_msr_bitmap(vm, index);
            field::write(p, "L2 MSR bitmap", id, u64::MAX, 1 << bit)?;
        }
    }
    let ctl = controls::SECONDARY_DESC_TABLE_EXITING;
    field::write_vmcs(p, vm, vmcs::SECONDARY_PROC_BASED_CTLS, ctl, ctl)?;
    log::info!(
        "LOCK_REGS: VM {} CR0 {cr0:#x} CR4 {cr4:#x} pinned",
        vm.index()
    );
    Ok(RegisterPins { cr0, cr4, msrs })
}

/// CR policy that enforces the pins once locked and defers to `base` otherwise.
#[derive(Clone, Debug, Default)]
pub struct PinnedCr<Base = AllowCrWrites> {
    /// The policy for writes that do not touch pinned bits.
    pub base: Base,
    pins: Option<(u64, u64)>,
}

impl<Base> PinnedCr<Base> {
    /// Wraps `base`, unlocked.
    pub fn new(base: Base) -> Self {
        PinnedCr { base, pins: None }
    }

    /// Starts enforcing `pins`.
    pub fn lock(&mut self, pins: &RegisterPins) {
        self.pins = Some((pins.cr0, pins.cr4));
    }

    /// Whether the pins are enforced.
    pub fn is_locked(&self) -> bool {
        self.pins.is_some()
    }
}

impl<Base: CrPolicy> CrPolicy for PinnedCr<Base> {
    fn check(&mut self, w: &CrWrite) -> CrDecision {
        if let Some((cr0, cr4)) = self.pins {
            let (pinned, mask) = match w.cr {
                0 => (cr0, CR0_PINNED),
                4 => (cr4, CR4_PINNED),
                _ => return self.base.check(w),
            };
            if w.new & mask != pinned & mask {
                log::warn!(
                    "pinned CR{} write refused: {:#x} -> {:#x} (pinned bits {:#x})",
                    w.cr,
                    w.old,
                    w.new,
                    (w.new ^ pinned) & mask
                );
                return CrDecision::Reject;
            }
        }
        self.base.check(w)
    }
}

/// MSR policy that freezes [`PINNED_MSRS`] once locked and defers to `base`.
#[derive(Clone, Debug, Default)]
pub struct PinnedMsrs<Base = MsrTable> {
    /// The policy for everything not frozen.
    pub base: Base,
    pins: Option<[(u32, u64); 9]>,
}

impl<Base> PinnedMsrs<Base> {
    /// Wraps `base`, unlocked.
    pub fn new(base: Base) -> Self {
        PinnedMsrs { base, pins: None }
    }

    /// Starts enforcing `pins`.
    pub fn lock(&mut self, pins: &RegisterPins) {
        self.pins = Some(pins.msrs);
    }

    fn pinned(&self, msr: u32) -> Option<u64> {
        self.pins?.iter().find(|(m, _)| *m == msr).map(|(_, v)| *v)
    }
}

impl<Base: MsrPolicy> MsrPolicy for PinnedMsrs<Base> {
    fn read(&mut self, msr: u32) -> MsrRead {
        match self.pinned(msr) {
            Some(v) => MsrRead::Value(v),
            None => self.base.read(msr),
        }
    }

    fn write(&mut self, msr: u32, value: u64) -> MsrWrite {
        match self.pinned(msr) {
            // Same value: it is already in place, nothing to do.
            Some(v) if v == value => MsrWrite::Done,
            Some(v) => {
                log::warn!("pinned MSR {msr:#x} write refused: {v:#x} -> {value:#x}");
                MsrWrite::Deny
            }
            None => self.base.write(msr, value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins() -> RegisterPins {
        RegisterPins {
            cr0: 0x8005_0033,
            cr4: 0x30_06A0, // PAE|PGE|OSFXSR|OSXMMEXCPT|SMEP|SMAP
            msrs: [(MSR_LSTAR, 0xFFFF_FFFF_8100_0000); 9],
        }
    }

    #[test]
    fn masked_comparison() {
        let mut p = PinnedCr::new(AllowCrWrites);
        let w = |cr, new| CrWrite { cr, old: 0, new };
        assert_eq!(p.check(&w(0, 0)), CrDecision::Allow, "unlocked");
        p.lock(&pins());
        assert_eq!(
            p.check(&w(0, 0x8005_0033 & !(1 << 16))),
            CrDecision::Reject,
            "WP"
        );
        assert_eq!(
            p.check(&w(0, 0x8005_0033 | (1 << 3))),
            CrDecision::Allow,
            "TS is free"
        );
        assert_eq!(
            p.check(&w(4, 0x30_06A0 & !(1 << 20))),
            CrDecision::Reject,
            "SMEP"
        );
        assert_eq!(
            p.check(&w(4, 0x30_06A0 & !(1 << 21))),
            CrDecision::Reject,
            "SMAP"
        );
        assert_eq!(p.check(&w(4, 0x30_0620)), CrDecision::Allow, "PGE toggle");
        assert_eq!(p.check(&w(4, 0x30_06E0)), CrDecision::Allow, "MCE");
    }

    #[test]
    fn frozen_msrs() {
        let mut m = PinnedMsrs::new(MsrTable::default());
        m.lock(&pins());
        assert_eq!(m.write(MSR_LSTAR, 0xFFFF_FFFF_8100_0000), MsrWrite::Done);
        assert_eq!(m.write(MSR_LSTAR, 0x4141_4141), MsrWrite::Deny);
        assert_eq!(m.read(MSR_LSTAR), MsrRead::Value(0xFFFF_FFFF_8100_0000));
    }
}
