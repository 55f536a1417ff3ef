//! Descriptor-table exits after LOCK_REGS (descriptor-table exiting on):
//! SGDT/SIDT/SLDT/STR are emulated — the instruction is fetched at a kernel
//! virtual RIP through L2's page tables, the destination is translated the
//! same way and written only where L2 itself could write — and the loads stay
//! refused with #GP(0).

use crate::harness::*;
use paravisor::{DefaultHandlers, StopReason};
use tdcall::attr::L2Attr;
use tdcall::field::{controls, vmcs};
use tdcall::vmx::reason;
use tdcall::L2Vm;
use tdx_model::engine::{DescriptorRegister, L2Action, ScriptedEngine};

/// Linux-style kernel text mapping: KTEXT + x → GPA x (2 MiB pages).
const KTEXT: u64 = 0xFFFF_FFFF_8000_0000;
/// Direct map: DIRECT + x → GPA x (one 1 GiB page).
const DIRECT: u64 = 0xFFFF_8880_0000_0000;
/// vmalloc-style 4 KiB mappings.
const VMALLOC: u64 = 0xFFFF_C900_0000_0000;

fn store(table: DescriptorRegister) -> L2Action {
    L2Action::StoreDescriptorTable { table }
}

fn set(gpr: u8, value: u64) -> L2Action {
    L2Action::SetGpr { gpr, value }
}

/// A TD whose script runs at KTEXT + CODE, with descriptor-table exiting on
/// (what LOCK_REGS turns on) and the kernel-half mappings above.
fn kernel_td(actions: &[L2Action]) -> (Td, paravisor::Vcpu, Vec<u64>, L2PageTables) {
    let mut engine = ScriptedEngine::new(KTEXT + CODE);
    let rips: Vec<u64> = actions.iter().map(|a| engine.push(*a)).collect();
    let mut td = Td::new(engine);
    let mut pt = L2PageTables::new(&mut td);
    // Text: read-only, supervisor.
    pt.map(&mut td, KTEXT + CODE, CODE, 0x20_0000, 0);
    l2_alias(&mut td, CODE, L2Attr::R | L2Attr::XS);
    pt.map(&mut td, DIRECT, 0, 1 << 30, pte::RW);
    let mut cfg = config();
    cfg.secondary_set = controls::SECONDARY_DESC_TABLE_EXITING;
    if let Some(init) = cfg.initial.as_mut() {
        init.rip = KTEXT + CODE;
    }
    let vcpu = boot(&mut td, &cfg);
    paravisor::field::write_vmcs(&mut td, L2Vm::Vm1, vmcs::GUEST_LDTR_SELECTOR, 0x28, 0xFFFF)
        .expect("LDTR selector");
    (td, vcpu, rips, pt)
}

fn code(td: &mut Td, rip: u64, bytes: &[u8]) {
    td.put_code(rip - KTEXT, bytes);
}

fn read(td: &Td, gpa: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    td.0.read_memory(gpa, &mut b).unwrap();
    b
}

fn image(limit: u16, base: u64) -> Vec<u8> {
    let mut v = limit.to_le_bytes().to_vec();
    v.extend_from_slice(&base.to_le_bytes());
    v
}

#[test]
fn stores_are_emulated_through_l2_page_tables() {
    let (mut td, mut vcpu, rips, mut pt) = kernel_td(&[
        set(7, DIRECT + DATA),
        set(0, DIRECT + DATA + 0x10),
        set(6, DIRECT + DATA + 0x20),
        set(1, u64::MAX),
        set(2, VMALLOC + 0xFFC),
        set(3, 0xAAAA_BBBB_CCCC_DDDD),
        store(DescriptorRegister::Idtr), // sidt [rdi]
        store(DescriptorRegister::Gdtr), // sgdt [rax]
        store(DescriptorRegister::Ldtr), // sldt [rsi]
        store(DescriptorRegister::Tr),   // str ecx
        store(DescriptorRegister::Gdtr), // sgdt [rdx]: crosses into another page
        store(DescriptorRegister::Ldtr), // sldt ebx
        L2Action::Hlt,
    ]);
    code(&mut td, rips[6], &[0x0F, 0x01, 0x0F]);
    code(&mut td, rips[7], &[0x0F, 0x01, 0x00]);
    code(&mut td, rips[8], &[0x0F, 0x00, 0x06]);
    code(&mut td, rips[9], &[0x0F, 0x00, 0xC9]);
    code(&mut td, rips[10], &[0x0F, 0x01, 0x02]);
    code(&mut td, rips[11], &[0x0F, 0x00, 0xC3]);
    pt.map(&mut td, VMALLOC, DATA + 0x2000, 0x1000, pte::RW);
    pt.map(&mut td, VMALLOC + 0x1000, DATA + 0x5000, 0x1000, pte::RW);
    for page in [DATA, DATA + 0x2000, DATA + 0x5000] {
        l2_alias(&mut td, page, L2Attr::R | L2Attr::W);
    }
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );
    assert!(td.events().is_empty(), "{:?}", td.events());
    assert_eq!(vcpu.state.rip, rips[12] + 1);
    assert_eq!(vcpu.stats.count(reason::GDTR_IDTR_ACCESS), 3);
    assert_eq!(vcpu.stats.count(reason::LDTR_TR_ACCESS), 3);
    assert_eq!(read(&td, DATA, 10), image(0xFFF, IDT));
    assert_eq!(read(&td, DATA + 0x10, 10), image(0x1F, GDT));
    assert_eq!(read(&td, DATA + 0x20, 2), [0x28, 0]);
    assert_eq!(vcpu.state.gprs[1], 0x18, "STR ECX zero-extends to RCX");
    assert_eq!(vcpu.state.gprs[3], 0x28, "SLDT EBX zero-extends to RBX");
    let gdtr = image(0x1F, GDT);
    assert_eq!(read(&td, DATA + 0x2FFC, 4), gdtr[..4]);
    assert_eq!(read(&td, DATA + 0x5000, 6), gdtr[4..]);
}

#[test]
fn refused_stores_get_gp_and_write_nothing() {
    let (mut td, mut vcpu, rips, mut pt) = kernel_td(&[
        // 0: alias read-only (PTE writable): no confused-deputy write.
        set(7, DIRECT + DATA + 0x1000),
        store(DescriptorRegister::Idtr),
        // 2: PTE read-only with CR0.WP (alias R|W).
        set(7, VMALLOC + 0x1_0000),
        store(DescriptorRegister::Idtr),
        // 4: not mapped.
        set(7, VMALLOC + 0x2_0000),
        store(DescriptorRegister::Idtr),
        // 6: not canonical.
        set(7, 0x0000_8000_0000_0000),
        store(DescriptorRegister::Idtr),
        // 8: crosses from a writable page into a read-only alias.
        set(7, VMALLOC + 0x3_0FFC),
        store(DescriptorRegister::Gdtr),
        // 10: the bytes are LIDT, the exit says SIDT.
        set(7, DIRECT + DATA),
        store(DescriptorRegister::Idtr),
        // 12: the bytes are a 7-byte SIDT, the exit says 3.
        store(DescriptorRegister::Idtr),
        // 13: a PTE pointing outside the TD (no ATTR.RD of it: that would
        // be a TD exit, tdx-abi.md §3.3).
        set(7, VMALLOC + 0x4_0000),
        store(DescriptorRegister::Idtr),
        // 15: a PML4E pointing at a page table outside the TD.
        set(7, 0xFFFF_D000_0000_0000),
        store(DescriptorRegister::Idtr),
        // 17-19: the loads stay refused.
        L2Action::LoadDescriptorTable {
            idt: true,
            base: DIRECT,
            limit: 0xFFF,
        },
        L2Action::LoadSegmentTable {
            table: DescriptorRegister::Ldtr,
        },
        L2Action::LoadSegmentTable {
            table: DescriptorRegister::Tr,
        },
        L2Action::Hlt,
    ]);
    for i in [1, 3, 5, 7, 14, 16] {
        code(&mut td, rips[i], &[0x0F, 0x01, 0x0F]); // sidt [rdi]
    }
    code(&mut td, rips[9], &[0x0F, 0x01, 0x07]); // sgdt [rdi]
    code(&mut td, rips[11], &[0x0F, 0x01, 0x1F]); // lidt [rdi]
    code(&mut td, rips[12], &[0x0F, 0x01, 0x0D, 0, 0, 0, 0]); // sidt [rip]
    pt.map(&mut td, VMALLOC + 0x1_0000, DATA + 0x6000, 0x1000, 0);
    pt.map(&mut td, VMALLOC + 0x4_0000, 0x7_0000_0000, 0x1000, pte::RW);
    let pml4e = PML4 + ((0xFFFF_D000_0000_0000u64 >> 39) & 0x1FF) * 8;
    let outside = 0x7_0000_0000u64 | pte::P | pte::RW;
    td.0.write_memory(pml4e, &outside.to_le_bytes()).unwrap();
    pt.map(&mut td, VMALLOC + 0x3_0000, DATA + 0x2000, 0x1000, pte::RW);
    pt.map(&mut td, VMALLOC + 0x3_1000, DATA + 0x1000, 0x1000, pte::RW);
    l2_alias(&mut td, DATA, L2Attr::R | L2Attr::W);
    l2_alias(&mut td, DATA + 0x1000, L2Attr::R);
    l2_alias(&mut td, DATA + 0x2000, L2Attr::R | L2Attr::W);
    l2_alias(&mut td, DATA + 0x6000, L2Attr::R | L2Attr::W);
    let marker = [0x5Au8; 16];
    for page in [DATA, DATA + 0x1000, DATA + 0x2FF0, DATA + 0x6000] {
        td.0.write_memory(page, &marker).unwrap();
    }
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );
    assert_eq!(
        td.events(),
        [1, 3, 5, 7, 9, 11, 12, 14, 16, 17, 18, 19].map(|i| gp0_at(rips[i]))
    );
    for page in [DATA, DATA + 0x1000, DATA + 0x2FF0, DATA + 0x6000] {
        assert_eq!(read(&td, page, 16), marker, "{page:#x} written");
    }
    assert_eq!(td.vmcs(vmcs::GUEST_IDTR_BASE), IDT, "LIDT refused");
}

#[test]
fn without_page_tables_nothing_is_emulated() {
    // CR3 points at an empty PML4: the instruction itself does not translate.
    let mut engine = ScriptedEngine::new(CODE);
    let rip = engine.push(store(DescriptorRegister::Idtr));
    engine.push(L2Action::Hlt);
    let mut td = Td::new(engine);
    L2PageTables::new(&mut td);
    td.put_code(rip, &[0x0F, 0x01, 0x0F]);
    let mut cfg = config();
    cfg.secondary_set = controls::SECONDARY_DESC_TABLE_EXITING;
    let mut vcpu = boot(&mut td, &cfg);
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );
    assert_eq!(td.events(), [gp0_at(rip)]);
}
