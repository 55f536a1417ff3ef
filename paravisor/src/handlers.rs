//! The policy hooks the exit handlers consult, and their defaults.
//!
//! [`ExitHandlers`] is what [`crate::Vcpu::run`] takes. [`Handlers`] composes it
//! from four small policies — [`HypercallHandler`], [`CrPolicy`], [`MsrPolicy`],
//! [`CpuidPolicy`] — so a later HEKI layer can replace one (e.g. register
//! pinning as a `CrPolicy` + `MsrPolicy` wrapper, HEKI calls as a
//! `HypercallHandler`) and keep the defaults for the rest. One struct may
//! implement several policies and share state between them by implementing
//! [`ExitHandlers`] directly.

use alloc::vec::Vec;

use tdcall::{L2EnterGuestState, L2Vm};

use crate::memory::Platform;

/// `-ENOSYS` as the 64-bit R8 status of an LVBS call.
pub const ENOSYS: u64 = -38i64 as u64;

/// The registers of an LVBS VMCALL (heki-lvbs-abi.md §2.1): RDI = id, RSI/RDX/R8 = a1..a3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallArgs {
    /// RDI: function id (0x1FFE0.. for HEKI, 0x1FFF0 for OP-TEE).
    pub id: u64,
    /// RSI.
    pub a1: u64,
    /// RDX.
    pub a2: u64,
    /// R8.
    pub a3: u64,
}

/// What a hypercall handler may use besides its arguments.
pub struct HypercallContext<'a> {
    /// The platform: TDCALLs (page attributes, VMCS fields) and L1 memory.
    pub platform: &'a mut dyn Platform,
    /// The calling L2 VM.
    pub vm: L2Vm,
    /// L2's registers at the call (RIP still on the VMCALL).
    pub state: &'a L2EnterGuestState,
    pub(crate) invalidate: &'a mut bool,
}

impl HypercallContext<'_> {
    /// Ask for INVEPT single-context on the next TDG.VP.ENTER, after the handler
    /// changed L2 page attributes without the per-VM INVEPT flag (§2.9).
    pub fn invalidate_translations(&mut self) {
        *self.invalidate = true;
    }
}

/// Serves L2 VMCALLs from CPL 0 (design.md §4). Returns the value for R8:
/// a negative errno or a non-negative result/token.
pub trait HypercallHandler {
    /// Handles one call.
    fn handle(&mut self, cx: &mut HypercallContext<'_>, args: &HypercallArgs) -> u64;
}

/// The default handler: every id returns `-ENOSYS`.
#[derive(Clone, Copy, Debug, Default)]
pub struct EnosysHypercalls;

impl HypercallHandler for EnosysHypercalls {
    fn handle(&mut self, _: &mut HypercallContext<'_>, _: &HypercallArgs) -> u64 {
        ENOSYS
    }
}

/// An L2 write of CR0 or CR4 that reached L1 (MOV to CR, CLTS or LMSW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrWrite {
    /// 0 or 4.
    pub cr: u8,
    /// The guest-visible value before the write (L1-owned bits from the read shadow).
    pub old: u64,
    /// The value L2 wants.
    pub new: u64,
}

/// A [`CrPolicy`] verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrDecision {
    /// Emulate the write.
    Allow,
    /// Inject #GP(0); the register keeps its value.
    Reject,
}

/// Decides L2 control-register writes (pinning hook, design.md §4). Called after
/// the architectural checks, which inject #GP on their own.
pub trait CrPolicy {
    /// Judges one write.
    fn check(&mut self, write: &CrWrite) -> CrDecision;
}

/// The default: allow every architecturally valid write.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowCrWrites;

impl CrPolicy for AllowCrWrites {
    fn check(&mut self, _: &CrWrite) -> CrDecision {
        CrDecision::Allow
    }
}

/// What to do with an RDMSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrRead {
    /// L1 emulates it with this value.
    Value(u64),
    /// Ask the host (TDG.VP.VMCALL Instruction.RDMSR).
    Forward,
    /// Inject #GP(0).
    Deny,
}

/// What to do with a WRMSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrWrite {
    /// L1 emulated it (state updated by the policy).
    Done,
    /// Pass it to the host (TDG.VP.VMCALL Instruction.WRMSR).
    Forward,
    /// Inject #GP(0).
    Deny,
}

/// Decides intercepted L2 MSR accesses.
///
/// Extension point for register pinning (LVBS `LOCK_REGS`, design.md §4): wrap
/// the base policy and return [`MsrWrite::Deny`] from [`MsrPolicy::write`] when
/// a frozen MSR (EFER, STAR, LSTAR, CSTAR, SFMASK, APIC_BASE, SYSENTER_CS/ESP/EIP)
/// would change. Those MSRs must then be write-intercepted in the L2 MSR
/// bitmap ([`crate::MsrBitmap`]), since pass-through writes never reach L1.
pub trait MsrPolicy {
    /// An RDMSR of `msr`.
    fn read(&mut self, msr: u32) -> MsrRead;
    /// A WRMSR of `value` to `msr`.
    fn write(&mut self, msr: u32, value: u64) -> MsrWrite;
}

/// IA32_APIC_BASE.
pub const MSR_IA32_APIC_BASE: u32 = 0x1B;
/// IA32_FEATURE_CONTROL.
pub const MSR_IA32_FEATURE_CONTROL: u32 = 0x3A;
/// MSR_PLATFORM_INFO.
pub const MSR_PLATFORM_INFO: u32 = 0xCE;
/// IA32_MTRRCAP.
pub const MSR_IA32_MTRRCAP: u32 = 0xFE;
/// IA32_MTRR_DEF_TYPE.
pub const MSR_IA32_MTRR_DEF_TYPE: u32 = 0x2FF;

/// One entry of an [`MsrTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrRule {
    /// Emulated by L1 with a stored value; writes update it when `writable`,
    /// else they #GP.
    Emulated {
        /// Current value.
        value: u64,
        /// Whether WRMSR may change it.
        writable: bool,
    },
    /// Forwarded to the host in both directions.
    Forward,
}

/// A small MSR policy table: listed MSRs are emulated or forwarded; every other
/// intercepted MSR gets #GP(0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsrTable {
    entries: Vec<(u32, MsrRule)>,
}

impl Default for MsrTable {
    /// IA32_APIC_BASE emulated (x2APIC enabled, BSP; writable),
    /// IA32_FEATURE_CONTROL emulated read-only as "locked, VMX off", and
    /// PLATFORM_INFO, MTRRCAP and MTRR_DEF_TYPE forwarded to the host.
    fn default() -> Self {
        let mut t = MsrTable::empty();
        t.emulate(MSR_IA32_APIC_BASE, 0xFEE0_0D00, true)
            .emulate(MSR_IA32_FEATURE_CONTROL, 1, false)
            .forward(MSR_PLATFORM_INFO)
            .forward(MSR_IA32_MTRRCAP)
            .forward(MSR_IA32_MTRR_DEF_TYPE);
        t
    }
}

impl MsrTable {
    /// No entries: every intercepted MSR is denied.
    pub fn empty() -> Self {
        MsrTable {
            entries: Vec::new(),
        }
    }

    /// Adds or replaces an entry.
    pub fn set(&mut self, msr: u32, rule: MsrRule) -> &mut Self {
        match self.entries.iter_mut().find(|(m, _)| *m == msr) {
            Some(e) => e.1 = rule,
            None => self.entries.push((msr, rule)),
        }
        self
    }

    /// Emulates `msr` with `value`.
    pub fn emulate(&mut self, msr: u32, value: u64, writable: bool) -> &mut Self {
        self.set(msr, MsrRule::Emulated { value, writable })
    }

    /// Forwards `msr` to the host.
    pub fn forward(&mut self, msr: u32) -> &mut Self {
        self.set(msr, MsrRule::Forward)
    }

    /// The rule for `msr`.
    pub fn rule(&self, msr: u32) -> Option<MsrRule> {
        self.entries.iter().find(|(m, _)| *m == msr).map(|e| e.1)
    }
}

impl MsrPolicy for MsrTable {
    fn read(&mut self, msr: u32) -> MsrRead {
        match self.rule(msr) {
            Some(MsrRule::Emulated { value, .. }) => MsrRead::Value(value),
            Some(MsrRule::Forward) => MsrRead::Forward,
            None => MsrRead::Deny,
        }
    }

    fn write(&mut self, msr: u32, new: u64) -> MsrWrite {
        match self.entries.iter_mut().find(|(m, _)| *m == msr) {
            Some((_, MsrRule::Emulated { value, writable })) => {
                if *writable {
                    *value = new;
                    MsrWrite::Done
                } else {
                    MsrWrite::Deny
                }
            }
            Some((_, MsrRule::Forward)) => MsrWrite::Forward,
            None => MsrWrite::Deny,
        }
    }
}

/// EAX, EBX, ECX, EDX of a CPUID leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// CPUID leaf of the hypervisor range base.
pub const CPUID_HYPERVISOR_BASE: u32 = 0x4000_0000;
/// Hypervisor signature at leaf 0x4000_0000 in EBX, ECX, EDX.
pub const HYPERVISOR_SIGNATURE: [u8; 12] = *b"LVBSTDX\0\0\0\0\0";
/// CPUID.1:ECX.VMX.
pub const CPUID_1_ECX_VMX: u32 = 1 << 5;
/// CPUID.1:ECX.SMX.
pub const CPUID_1_ECX_SMX: u32 = 1 << 6;
/// CPUID.1:ECX hypervisor-present bit.
pub const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;

/// What L2 sees for CPUID.
pub trait CpuidPolicy {
    /// A result L1 answers itself, without asking the host; `None` forwards.
    fn local(&mut self, leaf: u32, subleaf: u32) -> Option<CpuidResult>;
    /// Adjusts a host answer before L2 sees it.
    fn adjust(&mut self, leaf: u32, subleaf: u32, result: &mut CpuidResult);
}

/// The default CPUID policy: hide VMX and SMX (L2 gets no nested
/// virtualization), set the hypervisor-present bit, and own the hypervisor
/// range 0x4000_0000..=0x4000_00FF: leaf 0x4000_0000 reports the "LVBSTDX"
/// signature with max leaf 0x4000_0000, the rest read as zero, so the host
/// hypervisor's leaves never reach L2.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultCpuidPolicy;

impl CpuidPolicy for DefaultCpuidPolicy {
    fn local(&mut self, leaf: u32, _subleaf: u32) -> Option<CpuidResult> {
        if leaf == CPUID_HYPERVISOR_BASE {
            let sig = |i: usize| {
                u32::from_le_bytes([
                    HYPERVISOR_SIGNATURE[i],
                    HYPERVISOR_SIGNATURE[i + 1],
                    HYPERVISOR_SIGNATURE[i + 2],
                    HYPERVISOR_SIGNATURE[i + 3],
                ])
            };
            Some(CpuidResult {
                eax: CPUID_HYPERVISOR_BASE,
                ebx: sig(0),
                ecx: sig(4),
                edx: sig(8),
            })
        } else if (CPUID_HYPERVISOR_BASE..=CPUID_HYPERVISOR_BASE + 0xFF).contains(&leaf) {
            Some(CpuidResult::default())
        } else {
            None
        }
    }

    fn adjust(&mut self, leaf: u32, _subleaf: u32, r: &mut CpuidResult) {
        if leaf == 1 {
            r.ecx &= !(CPUID_1_ECX_VMX | CPUID_1_ECX_SMX);
            r.ecx |= CPUID_1_ECX_HYPERVISOR;
        }
    }
}

/// What L1 does with an L2 port access (exit reason 30).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortAccess {
    /// Forward it to the host with TDG.VP.VMCALL Instruction.IO (§1.5).
    Forward,
    /// No device: IN reads all ones, OUT is dropped; the host never sees it.
    Absent,
    /// L1 answers this IN itself with `value` (OUT: dropped).
    Value(u32),
}

/// Everything [`crate::Vcpu::run`] consults while handling exits.
pub trait ExitHandlers {
    /// The VMCALL handler.
    fn hypercalls(&mut self) -> &mut dyn HypercallHandler;
    /// The CR0/CR4 write policy.
    fn cr_policy(&mut self) -> &mut dyn CrPolicy;
    /// The MSR policy.
    fn msr_policy(&mut self) -> &mut dyn MsrPolicy;
    /// The CPUID policy.
    fn cpuid_policy(&mut self) -> &mut dyn CpuidPolicy;
    /// TDG.VP.ENTER reported a pending L1 interrupt (class 0x1102 or 0x1120,
    /// §2.3): take it (on bare metal: open an interrupt window in L1). The loop
    /// re-enters afterwards.
    fn pending_interrupt(&mut self, _platform: &mut dyn Platform) {}
    /// Where an L2 access to `port` (an IN if `is_in`) goes. The default
    /// forwards every port.
    fn port_access(&mut self, _port: u16, _is_in: bool) -> PortAccess {
        PortAccess::Forward
    }
    /// L2 executed XSETBV (exit 55, always L2→L1, §4) from CPL 0 with ECX =
    /// `xcr` and EDX:EAX = `value`. XCR0 is shared between L1 and L2
    /// (§2.10), so serving it means checking the value and executing XSETBV
    /// in L1. The default cannot: the loop stops (fail closed).
    fn xsetbv(&mut self, _xcr: u32, _value: u64) -> XsetbvOutcome {
        XsetbvOutcome::Unhandled
    }
}

/// What [`ExitHandlers::xsetbv`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsetbvOutcome {
    /// Executed: L2 continues after the instruction.
    Done,
    /// Refused: #GP(0) into L2.
    Fault,
    /// Not served: the loop stops.
    Unhandled,
}

/// Whether `value` is a legal XCR0 given the `allowed` state components
/// (SDM XSETBV: x87 always set, AVX needs SSE, the AVX-512 triple and the
/// AMX pair all or nothing and only with AVX / each other).
pub fn xcr0_valid(value: u64, allowed: u64) -> bool {
    const X87: u64 = 1;
    const SSE: u64 = 1 << 1;
    const AVX: u64 = 1 << 2;
    const BNDREGS: u64 = 1 << 3;
    const BNDCSR: u64 = 1 << 4;
    const AVX512: u64 = 0x7 << 5;
    const AMX: u64 = 0x3 << 17;
    if value & !allowed != 0 || value & X87 == 0 {
        return false;
    }
    if value & AVX != 0 && value & SSE == 0 {
        return false;
    }
    if (value & BNDREGS != 0) != (value & BNDCSR != 0) {
        return false;
    }
    let avx512 = value & AVX512;
    if avx512 != 0 && (avx512 != AVX512 || value & AVX == 0) {
        return false;
    }
    let amx = value & AMX;
    amx == 0 || amx == AMX
}

/// [`ExitHandlers`] composed of one policy each.
#[derive(Clone, Debug, Default)]
pub struct Handlers<
    Hc = EnosysHypercalls,
    Cr = AllowCrWrites,
    Ms = MsrTable,
    Cp = DefaultCpuidPolicy,
> {
    /// VMCALL handler.
    pub hypercalls: Hc,
    /// CR write policy.
    pub cr: Cr,
    /// MSR policy.
    pub msr: Ms,
    /// CPUID policy.
    pub cpuid: Cp,
    /// How often [`ExitHandlers::pending_interrupt`] ran.
    pub pending_interrupts: u64,
}

/// The default handlers: `-ENOSYS`, allow CR writes, [`MsrTable::default`], [`DefaultCpuidPolicy`].
pub type DefaultHandlers = Handlers;

impl<Hc, Cr, Ms, Cp> Handlers<Hc, Cr, Ms, Cp> {
    /// Replaces the hypercall handler.
    pub fn with_hypercalls<T>(self, hypercalls: T) -> Handlers<T, Cr, Ms, Cp> {
        Handlers {
            hypercalls,
            cr: self.cr,
            msr: self.msr,
            cpuid: self.cpuid,
            pending_interrupts: self.pending_interrupts,
        }
    }

    /// Replaces the CR policy.
    pub fn with_cr_policy<T>(self, cr: T) -> Handlers<Hc, T, Ms, Cp> {
        Handlers {
            hypercalls: self.hypercalls,
            cr,
            msr: self.msr,
            cpuid: self.cpuid,
            pending_interrupts: self.pending_interrupts,
        }
    }

    /// Replaces the MSR policy.
    pub fn with_msr_policy<T>(self, msr: T) -> Handlers<Hc, Cr, T, Cp> {
        Handlers {
            hypercalls: self.hypercalls,
            cr: self.cr,
            msr,
            cpuid: self.cpuid,
            pending_interrupts: self.pending_interrupts,
        }
    }

    /// Replaces the CPUID policy.
    pub fn with_cpuid_policy<T>(self, cpuid: T) -> Handlers<Hc, Cr, Ms, T> {
        Handlers {
            hypercalls: self.hypercalls,
            cr: self.cr,
            msr: self.msr,
            cpuid,
            pending_interrupts: self.pending_interrupts,
        }
    }
}

impl<Hc, Cr, Ms, Cp> ExitHandlers for Handlers<Hc, Cr, Ms, Cp>
where
    Hc: HypercallHandler,
    Cr: CrPolicy,
    Ms: MsrPolicy,
    Cp: CpuidPolicy,
{
    fn hypercalls(&mut self) -> &mut dyn HypercallHandler {
        &mut self.hypercalls
    }
    fn cr_policy(&mut self) -> &mut dyn CrPolicy {
        &mut self.cr
    }
    fn msr_policy(&mut self) -> &mut dyn MsrPolicy {
        &mut self.msr
    }
    fn cpuid_policy(&mut self) -> &mut dyn CpuidPolicy {
        &mut self.cpuid
    }
    fn pending_interrupt(&mut self, _platform: &mut dyn Platform) {
        self.pending_interrupts += 1;
    }
}
