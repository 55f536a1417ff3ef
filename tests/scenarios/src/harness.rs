//! The TD under test: the model wrapped so it is a `paravisor::Platform`, a
//! standard memory layout and L2 configuration, and run/step helpers.

use paravisor::{
    setup_l2_vm, DescriptorTable, ExitHandlers, InitialState, L1Memory, L2VmConfig, MemoryError,
    MmioRange, StopReason, Vcpu,
};
use tdcall::leaves::VpEnterResult;
use tdcall::{L2Vm, Registers, Tdcall, VmcsField};
use tdx_model::engine::{DeliveredEvent, L2Action, ScriptedEngine, TraceEntry};
use tdx_model::host::ScriptedHost;
use tdx_model::memory::GpaFault;
use tdx_model::{TdConfig, TdxModel};

/// The model with the scripted host and engine.
pub type Model = TdxModel<ScriptedHost, ScriptedEngine>;

pub const MIB: u64 = 1 << 20;
/// TD private memory.
pub const MEMORY: u64 = 16 * MIB;
/// Accepted at TD build; the rest is pending (AUG'd, not accepted).
pub const ACCEPTED: u64 = 8 * MIB;
/// L2 virtual-APIC page.
pub const VAPIC: u64 = 0x1_0000;
/// TDG.VP.ENTER guest-state buffer.
pub const BUF: u64 = 0x2_0000;
/// L2 CR3. The scripted engine does not walk L2's page tables, but the
/// paravisor does when it emulates an instruction: see [`L2PageTables`].
pub const PML4: u64 = 0x3_0000;
/// L2 GDT and IDT.
pub const GDT: u64 = 0x3_1000;
pub const IDT: u64 = 0x3_2000;
/// L2 stack top.
pub const STACK: u64 = 0x3_F000;
/// Where the L2 script's instructions live (identity-mapped).
pub const CODE: u64 = 0x40_0000;
/// An ordinary private data page.
pub const DATA: u64 = 0x50_0000;
/// Emulated MMIO backed by accepted private memory that L2 never gets an alias
/// for: accesses exit straight to L1 (§3.5 option b).
pub const MMIO_PRIVATE: u64 = 0x60_0000;
/// Emulated MMIO in a GPA hole outside the TD's memory: the module routes the
/// EPT violation to the host, which resumes L1 (class 0x1100, §3.5 option a).
pub const MMIO_HOLE: u64 = 0xFEC0_0000;
/// A private page the host added but L1 never accepted.
pub const PENDING: u64 = 0xC0_0000;
/// Entry cap for every run.
pub const MAX_ENTRIES: u64 = 100;

/// The model as a paravisor platform (the orphan rule needs the newtype).
pub struct Td(pub Model);

impl Tdcall for Td {
    fn tdcall(&mut self, regs: &mut Registers) {
        self.0.tdcall(regs)
    }
}

fn memory_error(gpa: u64, len: usize, fault: GpaFault) -> MemoryError {
    match fault {
        GpaFault::NotMapped => MemoryError::OutOfRange { gpa, len },
        GpaFault::NotPrivate | GpaFault::Pending => MemoryError::Inaccessible { gpa, len },
    }
}

impl L1Memory for Td {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len();
        self.0
            .read_memory(gpa, buf)
            .map_err(|f| memory_error(gpa, len, f))
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.0
            .write_memory(gpa, data)
            .map_err(|f| memory_error(gpa, data.len(), f))
    }
}

impl paravisor::pinning::SharedMsrs for Td {
    fn read_shared_msr(&mut self, msr: u32) -> Option<u64> {
        self.0.shared_msr(0, msr)
    }
}

impl Td {
    /// A TD with the default configuration and `engine`.
    pub fn new(engine: ScriptedEngine) -> Self {
        let mut c = TdConfig::new(MEMORY);
        c.accepted_bytes = ACCEPTED;
        Self::with_config(c, engine)
    }

    /// A TD with an explicit model configuration.
    pub fn with_config(config: TdConfig, engine: ScriptedEngine) -> Self {
        Td(TdxModel::new(config, ScriptedHost::default(), engine))
    }

    pub fn host(&self) -> &ScriptedHost {
        &self.0.host
    }

    pub fn host_mut(&mut self) -> &mut ScriptedHost {
        &mut self.0.host
    }

    pub fn trace(&self) -> &[TraceEntry] {
        self.0.engine.trace()
    }

    pub fn events(&self) -> &[DeliveredEvent] {
        self.0.engine.events()
    }

    /// L2 VM 1's VMCS field on vCPU 0, as the model holds it.
    pub fn vmcs(&self, field: VmcsField) -> u64 {
        self.0
            .l2_vmcs(0, L2Vm::Vm1, field)
            .expect("VMCS field exists")
    }

    /// Places instruction bytes at GPA `rip` (for identity-mapped code, e.g.
    /// [`L2PageTables::identity`]).
    pub fn put_code(&mut self, rip: u64, bytes: &[u8]) {
        self.0
            .write_memory(rip, bytes)
            .expect("code is private memory");
    }
}

/// A script at [`CODE`]; returns the engine and each action's RIP.
pub fn script(actions: &[L2Action]) -> (ScriptedEngine, Vec<u64>) {
    let mut e = ScriptedEngine::new(CODE);
    let rips = actions.iter().map(|a| e.push(*a)).collect();
    (e, rips)
}

/// The standard L2 VM 1: 64-bit flat kernel state at [`CODE`] with IF = 0,
/// MBEC on, default CR ownership, both MMIO ranges.
pub fn config() -> L2VmConfig {
    let mut c = L2VmConfig::new(L2Vm::Vm1, VAPIC, BUF);
    c.mbec = true;
    c.initial = Some(InitialState::long_mode(
        PML4,
        DescriptorTable {
            base: GDT,
            limit: 0x1F,
        },
        DescriptorTable {
            base: IDT,
            limit: 0xFFF,
        },
        CODE,
        STACK,
    ));
    c.mmio = vec![
        MmioRange {
            base: MMIO_PRIVATE,
            size: 0x1000,
        },
        MmioRange {
            base: MMIO_HOLE,
            size: 0x1000,
        },
    ];
    c
}

/// Sets up VM 1 with `cfg`.
pub fn boot(td: &mut Td, cfg: &L2VmConfig) -> Vcpu {
    setup_l2_vm(td, cfg).expect("L2 setup")
}

/// Runs until the loop stops.
pub fn run<H: ExitHandlers>(td: &mut Td, vcpu: &mut Vcpu, handlers: &mut H) -> StopReason {
    vcpu.run(td, handlers, MAX_ENTRIES)
}

/// One TDG.VP.ENTER and its handling; `Err` when the loop would stop.
pub fn step<H: ExitHandlers>(
    td: &mut Td,
    vcpu: &mut Vcpu,
    handlers: &mut H,
) -> Result<VpEnterResult, StopReason> {
    let r = vcpu.enter(td)?;
    vcpu.handle(td, handlers, &r)?;
    Ok(r)
}

/// #GP(0) as the engine records it at `rip`.
pub fn gp0_at(rip: u64) -> DeliveredEvent {
    DeliveredEvent {
        rip,
        vector: 13,
        error_code: Some(0),
    }
}

/// Page-table entry bits (Intel SDM Vol. 3A table 4-19/4-20).
pub mod pte {
    pub const P: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const US: u64 = 1 << 2;
    pub const PS: u64 = 1 << 7;
}

/// Gives L2 VM 1 an alias with `attr` (plus VALID) on the 4 KiB page at `gpa`.
pub fn l2_alias(td: &mut Td, gpa: u64, attr: tdcall::attr::L2Attr) {
    use tdcall::attr::{AttrWrFlags, GpaAttr, GpaMapping, L2Attr, PageLevel};
    tdcall::call(
        td,
        &tdcall::leaves::MemPageAttrWr {
            mapping: GpaMapping::new(gpa, PageLevel::Size4K),
            attr: GpaAttr::for_vm(L2Vm::Vm1, attr | L2Attr::VALID),
            flags: AttrWrFlags::for_vm(L2Vm::Vm1, L2Attr::PRESENT, true),
        },
    )
    .expect("ATTR.WR");
}

/// L2's 4-level page tables, rooted at [`PML4`] (the CR3 of [`config`]), with
/// tables taken from the pages after the IDT; every table page gets an L2
/// alias with R (the paravisor's walk requires it, as the CPU's does).
pub struct L2PageTables {
    next: u64,
}

/// First GPA past the table pool (the stack page below [`STACK`]).
const TABLE_POOL_END: u64 = STACK - 0x1000;

impl L2PageTables {
    /// Empty tables: every linear address is not present.
    pub fn new(td: &mut Td) -> Self {
        td.0.write_memory(PML4, &[0; 0x1000]).expect("PML4");
        l2_alias(td, PML4, tdcall::attr::L2Attr::R);
        L2PageTables { next: IDT + 0x1000 }
    }

    fn entry(td: &Td, gpa: u64) -> u64 {
        let mut b = [0u8; 8];
        td.0.read_memory(gpa, &mut b).expect("table");
        u64::from_le_bytes(b)
    }

    /// Maps `linear` to `gpa` with a `size` page (4 KiB, 2 MiB or 1 GiB) and
    /// the leaf `flags` (P is added). Intermediate entries are P|RW|US, so the
    /// leaf decides.
    pub fn map(&mut self, td: &mut Td, linear: u64, gpa: u64, size: u64, flags: u64) {
        let leaf_level = match size {
            0x1000 => 1,
            0x20_0000 => 2,
            0x4000_0000 => 3,
            _ => panic!("page size {size:#x}"),
        };
        let mut table = PML4;
        for level in (leaf_level..=4u32).rev() {
            let slot = table + ((linear >> (12 + 9 * (level - 1))) & 0x1FF) * 8;
            if level == leaf_level {
                let ps = if level > 1 { pte::PS } else { 0 };
                let e = gpa | flags | pte::P | ps;
                td.0.write_memory(slot, &e.to_le_bytes()).expect("leaf");
                return;
            }
            let e = Self::entry(td, slot);
            table = if e & pte::P != 0 {
                e & 0x000F_FFFF_FFFF_F000
            } else {
                let t = self.next;
                assert!(t < TABLE_POOL_END, "table pool exhausted");
                self.next += 0x1000;
                td.0.write_memory(t, &[0; 0x1000]).expect("table");
                l2_alias(td, t, tdcall::attr::L2Attr::R);
                let e = t | pte::P | pte::RW | pte::US;
                td.0.write_memory(slot, &e.to_le_bytes()).expect("entry");
                t
            };
        }
    }

    /// 0–4 GiB identity-mapped with writable supervisor 1 GiB pages, and the
    /// script's code pages at [`CODE`] executable for L2 (alias R|Xs).
    pub fn identity(td: &mut Td) -> Self {
        let mut t = Self::new(td);
        for i in 0..4 {
            t.map(td, i << 30, i << 30, 1 << 30, pte::RW);
        }
        for page in [CODE, CODE + 0x1000] {
            l2_alias(td, page, tdcall::attr::L2Attr::R | tdcall::attr::L2Attr::XS);
        }
        t
    }
}
