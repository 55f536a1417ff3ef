//! L2 VM #1 as the contract defines it: identity page tables and descriptor
//! tables in the last 64 KiB of the L2 region, a 64-bit initial state, and the
//! "probe echo" hypercall.

use paravisor::pinning::{
    MSR_CSTAR, MSR_EFER, MSR_LSTAR, MSR_SFMASK, MSR_STAR, MSR_SYSENTER_CS, MSR_SYSENTER_EIP,
    MSR_SYSENTER_ESP,
};
use paravisor::setup::{
    DescriptorTable, InitialState, L2VmConfig, MsrPassthrough, Segment, AR_TSS_BUSY,
};
use paravisor::{HypercallArgs, HypercallContext, HypercallHandler, L1Memory, MemoryError, ENOSYS};
use tdcall::enter::gpr;
use tdcall::L2Vm;

use crate::bootinfo::{L2Layout, PAGE_SIZE};

/// Present | writable (supervisor only: U/S = 0, so with MBEC every L2
/// address is a supervisor-mode address and fetches need Xs).
const PTE_P_RW: u64 = 0x3;
/// Present | writable | 2 MiB page.
const PDE_2M: u64 = 0x83;

/// Flat 64-bit code descriptor (AR 0xA09B).
pub const GDT_CODE64: u64 = 0x00AF_9B00_0000_FFFF;
/// Flat data descriptor (AR 0xC093).
pub const GDT_DATA: u64 = 0x00CF_9300_0000_FFFF;
/// Code selector.
pub const SEL_CODE: u16 = 0x08;
/// Data selector.
pub const SEL_DATA: u16 = 0x10;
/// TSS selector.
pub const SEL_TSS: u16 = 0x18;

/// The `VMCALL` id the probe uses to test the hypercall path (contract).
pub const PROBE_ECHO_ID: u64 = lvbs_loader::layout::PROBE_ECHO_ID;
/// What the echo XORs into RSI.
pub const PROBE_ECHO_XOR: u64 = 0x5A5A_5A5A;

/// The two words of a busy 64-bit TSS descriptor for `base` (limit 0x67).
pub fn tss_descriptor(base: u64) -> [u64; 2] {
    let limit = L2Layout::TSS_BYTES - 1;
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | ((AR_TSS_BUSY as u64) << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    [low, base >> 32]
}

fn put(page: &mut [u8; PAGE_SIZE as usize], index: usize, value: u64) {
    page[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
}

/// Writes L2's identity page tables (2 MiB pages over the first 1 GiB), GDT and
/// TSS into the tail of the L2 region through `mem`. Every page written is
/// written whole, so nothing depends on the pages being zero.
pub fn write_l2_tables<M: L1Memory + ?Sized>(
    mem: &mut M,
    layout: &L2Layout,
) -> Result<(), MemoryError> {
    let mut page = [0u8; PAGE_SIZE as usize];
    put(&mut page, 0, layout.pdpt | PTE_P_RW);
    mem.write(layout.pml4, &page)?;

    page.fill(0);
    put(&mut page, 0, layout.pd | PTE_P_RW);
    mem.write(layout.pdpt, &page)?;

    for i in 0..512 {
        put(&mut page, i, ((i as u64) << 21) | PDE_2M);
    }
    mem.write(layout.pd, &page)?;

    page.fill(0);
    let [tss_lo, tss_hi] = tss_descriptor(layout.tss);
    for (i, d) in [0, GDT_CODE64, GDT_DATA, tss_lo, tss_hi]
        .into_iter()
        .enumerate()
    {
        put(&mut page, i, d);
    }
    // TSS: all zero except the I/O map base (offset 0x66) = limit + 1, "no bitmap".
    let tss_off = (layout.tss - layout.gdt) as usize;
    page[tss_off + 0x66..tss_off + 0x68]
        .copy_from_slice(&(L2Layout::TSS_BYTES as u16).to_le_bytes());
    mem.write(layout.gdt, &page)
}

/// The L2 VM #1 configuration: 64-bit flat state at the entry point, paging
/// through the tail page tables, MBEC on, nothing else added to the defaults.
pub fn l2_config(layout: &L2Layout, vapic_gpa: u64, guest_state_gpa: u64) -> L2VmConfig {
    let mut init = InitialState::long_mode(
        layout.pml4,
        DescriptorTable {
            base: layout.gdt,
            limit: (L2Layout::GDT_BYTES - 1) as u16,
        },
        DescriptorTable { base: 0, limit: 0 },
        layout.entry,
        layout.stack_top,
    );
    init.cs = Segment::code64(SEL_CODE);
    init.tr = Segment {
        selector: SEL_TSS,
        base: layout.tss,
        limit: (L2Layout::TSS_BYTES - 1) as u32,
        access_rights: AR_TSS_BUSY,
    };
    let mut config = L2VmConfig::new(L2Vm::Vm1, vapic_gpa, guest_state_gpa);
    config.mbec = true;
    config.initial = Some(init);
    config.msr_passthrough = PASSTHROUGH_MSRS
        .iter()
        .map(|&msr| MsrPassthrough {
            msr,
            read: true,
            write: true,
        })
        .collect();
    config
}

/// MSRs L2 reads and writes without an exit: the syscall/sysenter MSRs and
/// EFER, which the kernel sets up before LOCK_REGS (the module itself keeps
/// EFER's fixed bits, §4). LOCK_REGS then write-intercepts them
/// (`paravisor::pinning`); reads stay native.
pub const PASSTHROUGH_MSRS: [u32; 8] = [
    MSR_EFER,
    MSR_STAR,
    MSR_LSTAR,
    MSR_CSTAR,
    MSR_SFMASK,
    MSR_SYSENTER_CS,
    MSR_SYSENTER_ESP,
    MSR_SYSENTER_EIP,
];

/// The registers L2 starts with besides RIP/RSP: RDI = base, RSI = size (contract).
pub fn initial_gprs(layout: &L2Layout) -> [(usize, u64); 2] {
    [(gpr::RDI, layout.base), (gpr::RSI, layout.size)]
}

/// The probe-build call that tells the probe where the paravisor's own pages
/// are, so its attack suite can aim at them: RSI = 0 the vAPIC page, 1 the
/// TDG.VP.ENTER buffer, 2 the start of the paravisor image (else -ENOSYS). A
/// production build would not answer it; the attacks need no secret (the
/// pages are unreachable wherever they are), only a target.
pub const PROBE_INFO_ID: u64 = 0x1_FFFE;

/// Hypercalls of the probe build: id 0x1FFFF answers `RSI ^ 0x5A5A_5A5A`,
/// [`PROBE_INFO_ID`] the paravisor's addresses, every other id `-ENOSYS`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeHypercalls {
    /// Echo calls served.
    pub echoes: u64,
    /// Calls answered with -ENOSYS.
    pub unknown: u64,
    /// What [`PROBE_INFO_ID`] answers: vAPIC page, ENTER buffer, image start.
    pub info: [u64; 3],
}

impl ProbeHypercalls {
    /// A handler whose [`PROBE_INFO_ID`] answers `info`.
    pub fn new(info: [u64; 3]) -> Self {
        ProbeHypercalls {
            info,
            ..Self::default()
        }
    }
}

impl HypercallHandler for ProbeHypercalls {
    fn handle(&mut self, _cx: &mut HypercallContext<'_>, args: &HypercallArgs) -> u64 {
        if args.id == PROBE_ECHO_ID {
            self.echoes += 1;
            args.a1 ^ PROBE_ECHO_XOR
        } else if let (PROBE_INFO_ID, Some(v)) = (args.id, self.info.get(args.a1 as usize)) {
            *v
        } else {
            self.unknown += 1;
            ENOSYS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_descriptor_layout() {
        let [lo, hi] = tss_descriptor(0x0000_0001_02FF_3100);
        assert_eq!(lo & 0xFFFF, 0x67);
        assert_eq!((lo >> 16) & 0xFF_FFFF, 0xFF_3100);
        assert_eq!((lo >> 40) & 0xFF, 0x8B);
        assert_eq!(lo >> 56, 0x02);
        assert_eq!(hi, 1);
    }

    #[test]
    fn descriptors_match_vmcs_access_rights() {
        // Access byte (bits 47:40) and flags nibble (bits 55:52) form the VMX AR.
        let ar = |d: u64| ((d >> 40) & 0xFF) | (((d >> 52) & 0xF) << 12);
        assert_eq!(ar(GDT_CODE64), 0xA09B);
        assert_eq!(ar(GDT_DATA), 0xC093);
    }
}
