//! A software model of the Intel TDX module 1.5.01 as seen by an L1 VMM in a
//! partitioned TD. It implements [`tdcall::Tdcall`], so the paravisor runs
//! against it unchanged, and it decides everything the module would decide:
//! operand checks and status codes, L2 VMCS write masks, page attributes,
//! TDG.VP.ENTER exit routing, RTMRs and the TDREPORT.
//!
//! "The CPU" that runs L2 code is an [`engine::L2Engine`]; this crate has the
//! scripted one. Section numbers refer to `shared/reference/tdx-abi.md`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod cpu;
pub mod engine;
pub mod host;
mod leaves;
pub mod measure;
pub mod memory;
pub mod metadata;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use engine::L2Engine;
use host::HostVmm;
use memory::Memory;
use tdcall::attr::L2Attr;
use tdcall::field::VmcsField;
use tdcall::leaf::Leaf;
use tdcall::leaves::VeInfo;
use tdcall::{L2Vm, Registers, Tdcall};

/// The TD the model emulates.
#[derive(Clone, Debug)]
pub struct TdConfig {
    /// vCPUs (1..).
    pub num_vcpus: u32,
    /// L2 VMs, 0..=3 (TD_PARAMS NUM_L2_VMS, §2.1).
    pub num_l2_vms: u8,
    /// Private memory in bytes (rounded up to 2 MiB).
    pub memory_bytes: u64,
    /// Bytes at the bottom of memory added before finalization (accepted, 4 KiB leaves).
    pub accepted_bytes: u64,
    /// The rest is AUG'd as 2 MiB leaves (else 4 KiB).
    pub map_2m: bool,
    /// 48 or 52 (§5.2).
    pub gpaw: u8,
    /// TD ATTRIBUTES (§5.6).
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// TSC frequency in units of 25 MHz.
    pub tsc_frequency: u16,
    /// The virtual VMX capability MSR allows MBEC (§8: secondary bit 22 write fails otherwise).
    pub mbec_supported: bool,
    /// MRTD the host's build produced (see [`measure::MrtdBuilder`]).
    pub mrtd: [u8; 48],
    /// MRCONFIGID, MROWNER, MROWNERCONFIG.
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
    /// The model's report MAC key (stands in for the CPU's key).
    pub report_key: [u8; 32],
    /// A target TD this TD is bound to as a service TD (binding slot 0), if any.
    pub servtd_binding: Option<ServtdBinding>,
}

/// A service-TD binding: the target's UUID and the TD-scope fields it exposes.
#[derive(Clone, Debug, Default)]
pub struct ServtdBinding {
    /// Target TD_UUID (R10..R13).
    pub uuid: [u64; 4],
    /// Fields by id: (value, writable mask).
    pub fields: BTreeMap<u64, (u64, u64)>,
}

impl TdConfig {
    /// One vCPU, one L2 VM, GPAW 48, MBEC available, all memory accepted.
    pub fn new(memory_bytes: u64) -> Self {
        TdConfig {
            num_vcpus: 1,
            num_l2_vms: 1,
            memory_bytes,
            accepted_bytes: memory_bytes,
            map_2m: true,
            gpaw: 48,
            attributes: 1 << 28, // SEPT_VE_DISABLE, as Linux requires (§5.3)
            xfam: 0x3,
            tsc_frequency: 100, // 2.5 GHz
            mbec_supported: true,
            mrtd: [0; 48],
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            report_key: *b"lvbs-tdx model report MAC key!!!",
            servtd_binding: None,
        }
    }
}

/// Per L2 VM, per vCPU: the L2 VMCS and MSR bitmap (§2.1).
#[derive(Clone, Debug)]
pub(crate) struct L2VmState {
    pub(crate) vmcs: BTreeMap<u16, u64>,
    pub(crate) msr_bitmap: Vec<u64>,
    /// The module's own record that L1 wrote the vAPIC address (§2.2 check 3);
    /// the VMCS field itself reads 0 until then.
    pub(crate) vapic_set: bool,
}

impl L2VmState {
    fn new(vm: L2Vm) -> Self {
        let mut vmcs: BTreeMap<u16, u64> = metadata::VMCS_FIELDS
            .iter()
            .map(|s| (s.field.0, s.init & s.field.element_size().mask()))
            .collect();
        vmcs.insert(tdcall::field::vmcs::VPID.0, vm.index() as u64);
        L2VmState {
            vmcs,
            msr_bitmap: vec![u64::MAX; 512],
            vapic_set: false,
        }
    }
}

/// Per-vCPU state (TDVPS).
#[derive(Clone, Debug)]
pub(crate) struct VcpuState {
    pub(crate) vms: Vec<L2VmState>,
    pub(crate) l2_ctls: [u64; 4],
    pub(crate) tsc_deadline: [u64; 4],
    pub(crate) cpuid_ve: [u64; 2],
    pub(crate) shared_msrs: BTreeMap<u32, u64>,
    pub(crate) l1_interrupt_pending: bool,
    pub(crate) ve_info: Option<VeInfo>,
}

/// Counters of what the model did, for tests and measurements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// TDCALLs per leaf number.
    pub tdcalls: BTreeMap<u16, u64>,
    /// EPT flushes per L2 VM index (INVEPT leaf, ATTR.WR flag, ENTER selector 1).
    pub invept: [u64; 4],
    /// INVGLA/INVVPID flushes per L2 VM index.
    pub invgla: [u64; 4],
    /// Exits from L2 by basic reason.
    pub l2_exits: BTreeMap<u16, u64>,
    /// TDG.MEM.PAGE.ATTR.WR calls that succeeded.
    pub attr_writes: u64,
}

/// The TDX module model for one TD.
pub struct TdxModel<H: HostVmm, E: L2Engine> {
    pub(crate) config: TdConfig,
    pub(crate) mem: Memory,
    pub(crate) vcpus: Vec<VcpuState>,
    pub(crate) current: usize,
    pub(crate) rtmr: [[u8; 48]; 4],
    pub(crate) notify_enables: u64,
    pub(crate) td_ctls: u64,
    pub(crate) busy: Vec<(Leaf, u32)>,
    pub(crate) failures: Vec<(Leaf, u32, tdcall::TdxStatus)>,
    pub(crate) dead: Option<String>,
    pub(crate) stats: ModelStats,
    /// The host VMM.
    pub host: H,
    /// The CPU that runs L2.
    pub engine: E,
}

impl<H: HostVmm, E: L2Engine> TdxModel<H, E> {
    /// A freshly finalized TD.
    pub fn new(config: TdConfig, host: H, engine: E) -> Self {
        let num_vms = config.num_l2_vms.min(3);
        let vcpus = (0..config.num_vcpus.max(1))
            .map(|_| VcpuState {
                vms: L2Vm::ALL[..num_vms as usize]
                    .iter()
                    .map(|vm| L2VmState::new(*vm))
                    .collect(),
                l2_ctls: [0; 4],
                tsc_deadline: [u64::MAX; 4],
                cpuid_ve: [0; 2],
                shared_msrs: BTreeMap::new(),
                l1_interrupt_pending: false,
                ve_info: None,
            })
            .collect();
        let gpaw = if config.gpaw == 52 { 52 } else { 48 };
        TdxModel {
            mem: Memory::new(
                config.memory_bytes,
                config.accepted_bytes,
                config.map_2m,
                gpaw,
            ),
            config: TdConfig {
                gpaw,
                num_l2_vms: num_vms,
                ..config
            },
            vcpus,
            current: 0,
            rtmr: [[0; 48]; 4],
            notify_enables: 0,
            td_ctls: 0,
            busy: Vec::new(),
            failures: Vec::new(),
            dead: None,
            stats: ModelStats::default(),
            host,
            engine,
        }
    }

    /// The configuration (GPAW normalised to 48 or 52, NUM_L2_VMS to ≤ 3).
    pub fn config(&self) -> &TdConfig {
        &self.config
    }

    /// Selects the vCPU whose TDCALLs the next [`Tdcall::tdcall`] calls are.
    pub fn set_current_vcpu(&mut self, index: usize) {
        self.current = index.min(self.vcpus.len() - 1);
    }

    /// Private memory (contents, page states, attributes).
    pub fn memory(&self) -> &Memory {
        &self.mem
    }

    /// Reads private memory as L1 would (accepted pages only).
    pub fn read_memory(&self, gpa: u64, buf: &mut [u8]) -> Result<(), memory::GpaFault> {
        self.mem.read(gpa, buf)
    }

    /// Writes private memory as L1 would (accepted pages only).
    pub fn write_memory(&mut self, gpa: u64, data: &[u8]) -> Result<(), memory::GpaFault> {
        self.mem.write(gpa, data)
    }

    /// The attribute `vm` has at `gpa`.
    pub fn page_attr(&self, gpa: u64, vm: L2Vm) -> L2Attr {
        self.mem.attr(gpa, vm)
    }

    /// An L2 VMCS field of `vm` on `vcpu`, unmasked (test inspection).
    pub fn l2_vmcs(&self, vcpu: usize, vm: L2Vm, field: VmcsField) -> Option<u64> {
        let s = self.vcpus.get(vcpu)?.vms.get(vm.index() as usize - 1)?;
        s.vmcs.get(&field.0).copied()
    }

    /// A qword of `vm`'s L1-visible MSR bitmap on `vcpu`.
    pub fn l2_msr_bitmap(&self, vcpu: usize, vm: L2Vm, index: usize) -> Option<u64> {
        self.vcpus
            .get(vcpu)?
            .vms
            .get(vm.index() as usize - 1)?
            .msr_bitmap
            .get(index)
            .copied()
    }

    /// The value of an MSR the module shares between L1 and L2 on `vcpu`
    /// (STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, TSC_AUX; §2.10): what L1's
    /// own RDMSR would return after an exit.
    pub fn shared_msr(&self, vcpu: usize, msr: u32) -> Option<u64> {
        if !cpu::SHARED_MSRS.contains(&msr) {
            return None;
        }
        Some(
            self.vcpus
                .get(vcpu)?
                .shared_msrs
                .get(&msr)
                .copied()
                .unwrap_or(0),
        )
    }

    /// The TD virtual TSC now (what RDTSC returns in L1 and L2, §2.7): the
    /// engine's clock. The scripted engine's clock advances with every L2
    /// action and every read.
    pub fn tsc(&mut self) -> u64 {
        self.engine.tsc()
    }

    /// Marks an interrupt deliverable to L1 on the current vCPU (or clears it):
    /// TDG.VP.ENTER then returns TDX_PENDING_INTERRUPT (§2.2 check 4).
    pub fn set_l1_interrupt_pending(&mut self, pending: bool) {
        self.vcpus[self.current].l1_interrupt_pending = pending;
    }

    /// Records #VE information for the current vCPU (what the module stores when
    /// it delivers a #VE to L1), to be read with TDG.VP.VEINFO.GET.
    pub fn post_ve(&mut self, info: VeInfo) {
        self.vcpus[self.current].ve_info = Some(info);
    }

    /// Makes the next `times` calls of `leaf` fail with TDX_OPERAND_BUSY (SEPT
    /// entry), as contention with other vCPUs or the host would.
    pub fn inject_busy(&mut self, leaf: Leaf, times: u32) {
        self.busy.push((leaf, times));
    }

    /// Makes the call of `leaf` after the next `skip` ones fail with `status`
    /// without any effect, standing in for failures the model cannot otherwise
    /// produce (host misbehaviour, resource exhaustion). Test equipment only.
    pub fn inject_status(&mut self, leaf: Leaf, skip: u32, status: tdcall::TdxStatus) {
        self.failures.push((leaf, skip, status));
    }

    /// Why the TD is dead, if it is.
    pub fn dead(&self) -> Option<&str> {
        self.dead.as_deref()
    }

    /// RTMR `index`.
    pub fn rtmr(&self, index: usize) -> Option<[u8; 48]> {
        self.rtmr.get(index).copied()
    }

    /// Counters.
    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    pub(crate) fn kill(&mut self, why: String) {
        log::error!("tdx-model: TD killed: {why}");
        if self.dead.is_none() {
            self.dead = Some(why);
        }
    }

    fn take_failure(&mut self, leaf: Leaf) -> Option<tdcall::TdxStatus> {
        let pos = self.failures.iter().position(|(l, _, _)| *l == leaf)?;
        let entry = &mut self.failures[pos];
        if entry.1 > 0 {
            entry.1 -= 1;
            return None;
        }
        Some(self.failures.remove(pos).2)
    }

    fn take_busy(&mut self, leaf: Leaf) -> bool {
        if let Some(entry) = self.busy.iter_mut().find(|(l, n)| *l == leaf && *n > 0) {
            entry.1 -= 1;
            return true;
        }
        false
    }
}

impl<H: HostVmm, E: L2Engine> Tdcall for TdxModel<H, E> {
    fn tdcall(&mut self, regs: &mut Registers) {
        *self.stats.tdcalls.entry(regs.rax as u16).or_default() += 1;
        if self.dead.is_some() {
            regs.rax = tdcall::TdxStatus::new(tdcall::StatusCode::TD_FATAL, 0).0;
            return;
        }
        if let Some(leaf) = Leaf::from_number(regs.rax as u16) {
            if let Some(status) = self.take_failure(leaf) {
                regs.rax = status.0;
                return;
            }
            if self.take_busy(leaf) {
                regs.rax = tdcall::TdxError::operand(
                    tdcall::StatusCode::OPERAND_BUSY,
                    tdcall::OperandId::SEPT_ENTRY,
                )
                .status()
                .0;
                return;
            }
        }
        leaves::dispatch(self, regs);
    }
}
