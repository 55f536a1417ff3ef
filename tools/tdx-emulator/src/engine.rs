//! `SvmEngine`: runs L2 VM #1 as a second SVM guest (own VMCB, ASID 2) whose
//! nested page tables mirror the model's page attributes, and turns each
//! #VMEXIT into the [`L2Action`] the model judges.
//!
//! State flow per TDG.VP.ENTER: model (L2 VMCS, registers, shared MSRs) →
//! VMCB; VMRUN; on each exit the registers and natively changed state go back
//! into the model, the action is judged, and its effects are reloaded into the
//! VMCB. L1/L2 sharing (§2.10): CR2, DR6 and STAR/LSTAR/CSTAR/SFMASK/
//! KERNEL_GS_BASE are one physical copy — L2 starts with L1's values and L1
//! sees L2's afterwards. XSAVE state, XCR0 and DR0–3 are physically shared
//! under SVM anyway.

use crate::arch::Gprs;
use crate::decode::{self, CrInsn, RegisterFile};
use crate::hpet;
use crate::l1::{Iopm, Msrpm};
use crate::npt::{self, Npt};
use crate::stats;
use crate::svm;
use crate::vmcb::{
    ar_to_attrib, attrib_to_ar, exit, has_error_code, misc1, misc2, off, Seg, Vmcb, EFER_SVME,
};
use crate::walk::{self, PagingMode};
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use iced_x86::Register;
use tdcall::attr::L2Attr;
use tdcall::field::{vmcs as f, VmcsField};
use tdcall::vmx::{reason, IoQual};
use tdx_model::engine::{AccessKind, DeliveredEvent, L2Action, L2Cpu, L2Engine, Step};
use tdx_model::memory::{Memory, PageState};

const CR0_PG: u64 = 1 << 31;
const CR0_TS: u64 = 1 << 3;
const CR4_VMXE: u64 = 1 << 13;
const CR4_SMXE: u64 = 1 << 14;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const PROC_CR8_LOAD_EXITING: u64 = 1 << 19;
const PROC_CR8_STORE_EXITING: u64 = 1 << 20;
/// XSETBV intercept (MISC2 bit 13) and its exit code.
const MISC2_XSETBV: u32 = 1 << 13;
const EXIT_XSETBV: u64 = 0x8D;
/// Intercept CR0/CR3/CR4 reads so L2 sees the read shadows. Under QEMU TCG only
/// the CR0 bit works, and it catches every MOV from CRn with exit code 0
/// (svm-tcg-probe §3.2); the instruction is decoded either way.
const CR_READ_INTERCEPTS: u32 = (1 << 0) | (1 << 3) | (1 << 4);
const CR_WRITE_INTERCEPTS: u32 = (1 << 16) | (1 << 19) | (1 << 20);
/// VINTR intercept (MISC1 bit 4) and its exit code: the interrupt window.
const MISC1_VINTR: u32 = 1 << 4;
const EXIT_VINTR: u64 = 0x64;
/// INT_CTL: V_IRQ (bit 8), V_INTR_PRIO 15 (bits 19:16), V_IGN_TPR (bit 20),
/// V_INTR_MASKING (bit 24).
const INT_CTL_V_IRQ: u64 = (1 << 8) | (0xF << 16) | (1 << 20);
const INT_CTL_V_INTR_MASKING: u64 = 1 << 24;
const INT_VECTOR: usize = 0x064;
/// SGDT/SIDT/SLDT/STR and LLDT/LTR intercepts (MISC1 bits 6–9, 12, 13), on
/// while the L2 VMCS has descriptor-table exiting (secondary bit 2), which on
/// VMX traps all eight instructions (SDM Vol. 3C §26.1.3); off otherwise, so
/// they run natively. LGDT/LIDT are always intercepted (the model decides).
const DT_READ_INTERCEPTS: u32 = misc1::IDTR_READ
    | misc1::GDTR_READ
    | misc1::LDTR_READ
    | misc1::TR_READ
    | misc1::LDTR_WRITE
    | misc1::TR_WRITE;
const SECONDARY_DESC_TABLE_EXITING: u64 = 1 << 2;
/// The L2 exits' base intercepts (MISC1).
const L2_MISC1: u32 = misc1::INTR
    | misc1::CPUID
    | misc1::HLT
    | misc1::IOIO
    | misc1::MSR
    | misc1::SHUTDOWN
    | misc1::IDTR_WRITE
    | misc1::GDTR_WRITE;

/// Shared MSRs that live in the VMCB save area (VMLOAD/VMSAVE).
const SHARED_VMCB_MSRS: [(u32, usize); 5] = [
    (0xC000_0081, off::STAR),
    (0xC000_0082, off::LSTAR),
    (0xC000_0083, off::CSTAR),
    (0xC000_0084, off::SFMASK),
    (0xC000_0102, off::KGSBASE),
];

/// VMCB segment ↔ L2 VMCS fields (selector, base, limit, AR).
const SEGMENTS: [(usize, VmcsField, VmcsField, VmcsField, VmcsField); 8] = [
    (
        off::ES,
        f::GUEST_ES_SELECTOR,
        f::GUEST_ES_BASE,
        f::GUEST_ES_LIMIT,
        f::GUEST_ES_AR,
    ),
    (
        off::CS,
        f::GUEST_CS_SELECTOR,
        f::GUEST_CS_BASE,
        f::GUEST_CS_LIMIT,
        f::GUEST_CS_AR,
    ),
    (
        off::SS,
        f::GUEST_SS_SELECTOR,
        f::GUEST_SS_BASE,
        f::GUEST_SS_LIMIT,
        f::GUEST_SS_AR,
    ),
    (
        off::DS,
        f::GUEST_DS_SELECTOR,
        f::GUEST_DS_BASE,
        f::GUEST_DS_LIMIT,
        f::GUEST_DS_AR,
    ),
    (
        off::FS,
        f::GUEST_FS_SELECTOR,
        f::GUEST_FS_BASE,
        f::GUEST_FS_LIMIT,
        f::GUEST_FS_AR,
    ),
    (
        off::GS,
        f::GUEST_GS_SELECTOR,
        f::GUEST_GS_BASE,
        f::GUEST_GS_LIMIT,
        f::GUEST_GS_AR,
    ),
    (
        off::LDTR,
        f::GUEST_LDTR_SELECTOR,
        f::GUEST_LDTR_BASE,
        f::GUEST_LDTR_LIMIT,
        f::GUEST_LDTR_AR,
    ),
    (
        off::TR,
        f::GUEST_TR_SELECTOR,
        f::GUEST_TR_BASE,
        f::GUEST_TR_LIMIT,
        f::GUEST_TR_AR,
    ),
];

/// VMCB GDTR/IDTR ↔ L2 VMCS fields (base, limit).
const DESCRIPTOR_TABLES: [(usize, VmcsField, VmcsField); 2] = [
    (off::GDTR, f::GUEST_GDTR_BASE, f::GUEST_GDTR_LIMIT),
    (off::IDTR, f::GUEST_IDTR_BASE, f::GUEST_IDTR_LIMIT),
];

/// What to do after an exit.
enum Flow {
    /// VMRUN again.
    Resume,
    /// TDG.VP.ENTER ends.
    Exit,
}

/// The SVM engine for L2 VM #1.
pub struct SvmEngine {
    vmcb: Vmcb,
    gprs: Gprs,
    l1: &'static Vmcb,
    _msrpm: Box<Msrpm>,
    /// [supervisor (or only) NPT, user-fetch NPT (MBEC)].
    npt: [Npt; 2],
    leaves: [Vec<u64>; 2],
    generation: Option<u64>,
    built_mbec: bool,
    active: usize,
    flush: bool,
    last_npf: (u64, u64, u32),
    /// HPET time of the #VMEXIT that ended the previous TDG.VP.ENTER.
    left_at: u64,
    /// The event L1 injected for the next entry.
    queued: Option<DeliveredEvent>,
    /// Keep the active NPT for the next VMRUN (an MBEC switch just chose it).
    keep_npt: bool,
    /// Segments, GDTR and IDTR as last synced with the model: only natively
    /// changed ones are written back.
    synced: [Seg; 10],
}

impl SvmEngine {
    /// An engine whose L2 shares `iopm` (all ports intercepted) and syncs the
    /// §2.10 shared state with L1's VMCB.
    pub fn new(l1: &'static Vmcb, iopm: &'static Iopm) -> Self {
        let vmcb = Vmcb::new();
        let msrpm = Msrpm::ones();
        vmcb.w32(off::CR_INTERCEPTS, CR_READ_INTERCEPTS | CR_WRITE_INTERCEPTS);
        vmcb.w32(off::EXC_INTERCEPTS, 1 << 6); // #UD: VMCALL, TDCALL
                                               // INTR: the host LAPIC timer ends slices at TSC_DEADLINE (`lapic`).
        vmcb.w32(off::MISC1, L2_MISC1);
        vmcb.w32(off::MISC2, misc2::SVM_INSNS | MISC2_XSETBV);
        vmcb.w64(off::IOPM, iopm.pa());
        vmcb.w64(off::MSRPM, msrpm.pa());
        vmcb.w32(off::ASID, 2);
        vmcb.w64(off::INT_CTL, INT_CTL_V_INTR_MASKING);
        vmcb.w64(off::NP_CTL, 1);
        SvmEngine {
            vmcb,
            gprs: Gprs::default(),
            l1,
            _msrpm: msrpm,
            npt: [Npt::new(), Npt::new()],
            leaves: [Vec::new(), Vec::new()],
            generation: None,
            built_mbec: false,
            active: 0,
            flush: true,
            last_npf: (u64::MAX, 0, 0),
            left_at: 0,
            queued: None,
            keep_npt: false,
            synced: [Seg::default(); 10],
        }
    }

    // ---- nested page tables -------------------------------------------------

    /// The NPT leaf for `gpa` in NPT `which` (0 supervisor/only, 1 user).
    fn desired_leaf(mem: &Memory, cpu: &L2Cpu<'_>, gpa: u64, which: usize, mbec: bool) -> u64 {
        if mem.state(gpa) != Some(PageState::Accepted) {
            return 0;
        }
        let a = mem.attr(gpa, cpu.vm());
        if !a.contains(L2Attr::VALID) || !a.contains(L2Attr::R) {
            return 0;
        }
        let mut e = (mem.backing_address() as u64 + gpa) | npt::P | npt::U | npt::A | npt::D;
        if a.contains(L2Attr::W) {
            e |= npt::W;
        }
        let x = if mbec && which == 1 {
            a.contains(L2Attr::XU)
        } else {
            a.contains(L2Attr::XS)
        };
        if !x {
            e |= npt::NX;
        }
        e
    }

    /// Brings the NPT(s) in line with the model's attributes when they changed.
    fn sync_npt(&mut self, cpu: &L2Cpu<'_>) {
        let mem = cpu.memory();
        let mbec = cpu.mbec();
        if self.generation == Some(mem.generation()) && self.built_mbec == mbec {
            return;
        }
        self.generation = Some(mem.generation());
        self.built_mbec = mbec;
        let pages = (mem.size() / 4096) as usize;
        let mut updates = 0;
        for which in 0..if mbec { 2 } else { 1 } {
            if self.leaves[which].len() != pages {
                self.leaves[which] = vec![0; pages];
            }
            for i in 0..pages {
                let gpa = i as u64 * 4096;
                let want = Self::desired_leaf(mem, cpu, gpa, which, mbec);
                if self.leaves[which][i] != want {
                    self.leaves[which][i] = want;
                    self.npt[which].set_leaf(gpa, want);
                    updates += 1;
                }
            }
        }
        if !mbec {
            self.active = 0;
        }
        self.flush = true;
        stats::with(|s| {
            s.npt_scans += 1;
            s.npt_updates += updates;
        });
    }

    // ---- model → VMCB ---------------------------------------------------------

    fn load_control(&self, cpu: &L2Cpu<'_>) {
        let cr0 = cpu.vmcs(f::GUEST_CR0);
        let mut efer = cpu.vmcs(f::GUEST_IA32_EFER) | EFER_SVME;
        if efer & EFER_LME != 0 && cr0 & CR0_PG != 0 {
            efer |= EFER_LMA;
        } else {
            efer &= !EFER_LMA;
        }
        let v = &self.vmcb;
        v.w64(off::CR0, cr0);
        v.w64(off::CR3, cpu.vmcs(f::GUEST_CR3));
        v.w64(off::CR4, cpu.vmcs(f::GUEST_CR4) & !(CR4_VMXE | CR4_SMXE));
        v.w64(off::EFER, efer);
        let primary = cpu.vmcs(f::PROC_BASED_CTLS);
        let mut cr = CR_READ_INTERCEPTS | CR_WRITE_INTERCEPTS;
        if primary & PROC_CR8_LOAD_EXITING != 0 {
            cr |= 1 << 24;
        }
        if primary & PROC_CR8_STORE_EXITING != 0 {
            cr |= 1 << 8;
        }
        v.w32(off::CR_INTERCEPTS, cr);
        let misc = v.r32(off::MISC1) & !DT_READ_INTERCEPTS;
        let dt = cpu.vmcs(f::SECONDARY_PROC_BASED_CTLS) & SECONDARY_DESC_TABLE_EXITING != 0;
        v.w32(
            off::MISC1,
            if dt { misc | DT_READ_INTERCEPTS } else { misc },
        );
    }

    fn load_msrs(&self, cpu: &L2Cpu<'_>) {
        let v = &self.vmcb;
        for (msr, o) in SHARED_VMCB_MSRS {
            v.w64(o, cpu.shared_msr(msr).unwrap_or(0));
        }
        v.w64(off::SYSENTER_CS, cpu.vmcs(f::GUEST_SYSENTER_CS));
        v.w64(off::SYSENTER_ESP, cpu.vmcs(f::GUEST_SYSENTER_ESP));
        v.w64(off::SYSENTER_EIP, cpu.vmcs(f::GUEST_SYSENTER_EIP));
        v.w64(off::G_PAT, cpu.vmcs(f::GUEST_IA32_PAT));
        v.w64(off::FS + 8, cpu.vmcs(f::GUEST_FS_BASE));
        v.w64(off::GS + 8, cpu.vmcs(f::GUEST_GS_BASE));
    }

    fn load_segments(&mut self, cpu: &L2Cpu<'_>) {
        let v = &self.vmcb;
        for (i, (o, sel, base, limit, ar)) in SEGMENTS.into_iter().enumerate() {
            let s = Seg {
                selector: cpu.vmcs(sel) as u16,
                attrib: ar_to_attrib(cpu.vmcs(ar)),
                limit: cpu.vmcs(limit) as u32,
                base: cpu.vmcs(base),
            };
            v.set_seg(o, s);
            self.synced[i] = s;
        }
        // VMX: CPL = SS.DPL.
        v.w8(off::CPL, ((cpu.vmcs(f::GUEST_SS_AR) >> 5) & 3) as u8);
        self.load_descriptor_tables(cpu);
    }

    fn load_descriptor_tables(&mut self, cpu: &L2Cpu<'_>) {
        for (i, (o, base, limit)) in DESCRIPTOR_TABLES.into_iter().enumerate() {
            let s = Seg {
                selector: 0,
                attrib: 0,
                limit: cpu.vmcs(limit) as u32,
                base: cpu.vmcs(base),
            };
            self.vmcb.set_seg(o, s);
            self.synced[8 + i] = s;
        }
    }

    /// FS/GS base and KERNEL_GS_BASE change natively (segment loads,
    /// WRFSBASE, SWAPGS): the model must see them before it judges an MSR access.
    fn store_native_msrs(&self, cpu: &mut L2Cpu<'_>) {
        let v = &self.vmcb;
        cpu.set_guest_state(f::GUEST_FS_BASE, v.seg(off::FS).base);
        cpu.set_guest_state(f::GUEST_GS_BASE, v.seg(off::GS).base);
        cpu.set_shared_msr(0xC000_0102, v.r64(off::KGSBASE));
    }

    fn load_regs(&mut self, cpu: &L2Cpu<'_>) {
        let r = cpu.regs();
        let v = &self.vmcb;
        v.w64(off::RAX, r.gprs[0]);
        v.w64(off::RSP, r.gprs[4]);
        v.w64(off::RIP, r.rip);
        v.w64(off::RFLAGS, r.rflags | 2);
        let g = &mut self.gprs;
        g.rcx = r.gprs[1];
        g.rdx = r.gprs[2];
        g.rbx = r.gprs[3];
        g.rbp = r.gprs[5];
        g.rsi = r.gprs[6];
        g.rdi = r.gprs[7];
        g.r8 = r.gprs[8];
        g.r9 = r.gprs[9];
        g.r10 = r.gprs[10];
        g.r11 = r.gprs[11];
        g.r12 = r.gprs[12];
        g.r13 = r.gprs[13];
        g.r14 = r.gprs[14];
        g.r15 = r.gprs[15];
    }

    /// Everything, at the start of TDG.VP.ENTER.
    fn load_all(&mut self, cpu: &mut L2Cpu<'_>) {
        // §2.10: the shared MSRs, CR2 and DR6 are L1's current values.
        for (msr, o) in SHARED_VMCB_MSRS {
            cpu.set_shared_msr(msr, self.l1.r64(o));
        }
        self.vmcb.w64(off::CR2, self.l1.r64(off::CR2));
        self.vmcb.w64(off::DR6, self.l1.r64(off::DR6));
        self.vmcb.w64(off::DR7, cpu.vmcs(f::GUEST_DR7) | 0x400);
        self.load_control(cpu);
        self.load_msrs(cpu);
        self.load_segments(cpu);
        self.load_regs(cpu);
        let shadow = cpu.vmcs(f::GUEST_INTERRUPTIBILITY) & 3 != 0;
        self.vmcb.w64(off::INT_SHADOW, shadow as u64);
        self.vmcb.w64(off::EVENTINJ, 0);
    }

    // ---- VMCB → model ---------------------------------------------------------

    fn store_regs(&self, cpu: &mut L2Cpu<'_>) {
        let v = &self.vmcb;
        let g = &self.gprs;
        let r = cpu.regs_mut();
        r.gprs = [
            v.r64(off::RAX),
            g.rcx,
            g.rdx,
            g.rbx,
            v.r64(off::RSP),
            g.rbp,
            g.rsi,
            g.rdi,
            g.r8,
            g.r9,
            g.r10,
            g.r11,
            g.r12,
            g.r13,
            g.r14,
            g.r15,
        ];
        r.rip = v.rip();
        r.rflags = v.r64(off::RFLAGS);
    }

    /// Writes segment `i` of [`SEGMENTS`] back if L2 changed it natively.
    fn store_segment(&mut self, cpu: &mut L2Cpu<'_>, i: usize) {
        let (o, sel, base, limit, ar) = SEGMENTS[i];
        let s = self.vmcb.seg(o);
        if s == self.synced[i] {
            return;
        }
        self.synced[i] = s;
        cpu.set_guest_state(sel, s.selector as u64);
        cpu.set_guest_state(base, s.base);
        cpu.set_guest_state(limit, s.limit as u64);
        cpu.set_guest_state(ar, attrib_to_ar(s.attrib));
    }

    /// CS and SS (the exit information and CPL come from them).
    fn store_cs_ss(&mut self, cpu: &mut L2Cpu<'_>) {
        self.store_segment(cpu, 1);
        self.store_segment(cpu, 2);
    }

    /// Everything L2 may have changed natively, when TDG.VP.ENTER ends.
    fn store_all(&mut self, cpu: &mut L2Cpu<'_>) {
        for i in 0..SEGMENTS.len() {
            self.store_segment(cpu, i);
        }
        let v = &self.vmcb;
        for (i, (o, base, limit)) in DESCRIPTOR_TABLES.into_iter().enumerate() {
            let s = v.seg(o);
            if s != self.synced[8 + i] {
                self.synced[8 + i] = s;
                cpu.set_guest_state(base, s.base);
                cpu.set_guest_state(limit, s.limit as u64);
            }
        }
        cpu.set_guest_state(f::GUEST_DR7, v.r64(off::DR7));
        let intr = cpu.vmcs(f::GUEST_INTERRUPTIBILITY) & !3;
        let shadow = v.r64(off::INT_SHADOW) & 1;
        cpu.set_guest_state(f::GUEST_INTERRUPTIBILITY, intr | shadow);
        // KERNEL_GS_BASE changes natively with SWAPGS; the rest only via WRMSR.
        cpu.set_shared_msr(0xC000_0102, v.r64(off::KGSBASE));
        // §2.10: L1 continues with L2's shared state.
        for (msr, o) in SHARED_VMCB_MSRS {
            self.l1.w64(o, cpu.shared_msr(msr).unwrap_or(0));
        }
        self.l1.w64(off::CR2, v.r64(off::CR2));
        self.l1.w64(off::DR6, v.r64(off::DR6));
    }

    // ---- guest memory and decoding --------------------------------------------

    fn paging(&self) -> PagingMode {
        PagingMode {
            cr0: self.vmcb.r64(off::CR0),
            cr3: self.vmcb.r64(off::CR3),
            cr4: self.vmcb.r64(off::CR4),
            efer: self.vmcb.r64(off::EFER),
        }
    }

    fn translate(&self, mem: &Memory, la: u64) -> Option<walk::Translation> {
        walk::translate(&self.paging(), la, |gpa| {
            let mut b = [0u8; 8];
            mem.read(gpa, &mut b).ok().map(|_| u64::from_le_bytes(b))
        })
        .ok()
    }

    /// Reads `buf.len()` bytes at linear `la`; returns how many were readable.
    fn read_linear(&self, mem: &Memory, la: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let a = la.wrapping_add(done as u64);
            let Some(t) = self.translate(mem, a) else {
                break;
            };
            let n = (0x1000 - (a & 0xFFF) as usize).min(buf.len() - done);
            if mem.read(t.gpa, &mut buf[done..done + n]).is_err() {
                break;
            }
            done += n;
        }
        done
    }

    fn code_linear(&self) -> u64 {
        let cs = self.vmcb.seg(off::CS);
        if self.bitness() == 64 {
            self.vmcb.rip()
        } else {
            cs.base.wrapping_add(self.vmcb.rip()) & 0xFFFF_FFFF
        }
    }

    fn bitness(&self) -> u32 {
        decode::bitness(
            self.vmcb.seg(off::CS).attrib,
            self.vmcb.r64(off::EFER) & EFER_LMA != 0,
        )
    }

    fn fetch_instruction(&self, mem: &Memory) -> Option<iced_x86::Instruction> {
        let mut b = [0u8; decode::MAX_LEN];
        let n = self.read_linear(mem, self.code_linear(), &mut b);
        decode::decode(&b[..n], self.vmcb.rip(), self.bitness())
    }

    // ---- exits ------------------------------------------------------------------

    fn run_action(&mut self, cpu: &mut L2Cpu<'_>, action: L2Action, len: u32) -> Flow {
        let step = cpu.execute_decoded(&action, len);
        match step {
            Step::Completed => {
                self.load_regs(cpu);
                match action {
                    L2Action::MovToCr { .. } => self.load_control(cpu),
                    L2Action::Wrmsr => {
                        self.load_control(cpu);
                        self.load_msrs(cpu);
                    }
                    L2Action::LoadDescriptorTable { .. } => self.load_descriptor_tables(cpu),
                    _ => {}
                }
                Flow::Resume
            }
            Step::FaultedInL2 { vector } => {
                self.load_regs(cpu);
                self.inject(vector);
                Flow::Resume
            }
            Step::Exit => Flow::Exit,
        }
    }

    fn inject(&self, vector: u8) {
        self.vmcb
            .inject_exception(vector, has_error_code(vector).then_some(0));
    }

    fn advance(&self, cpu: &mut L2Cpu<'_>, len: u64) {
        let rip = self.vmcb.rip().wrapping_add(len);
        self.vmcb.set_rip(rip);
        cpu.regs_mut().rip = rip;
    }

    fn handle(&mut self, cpu: &mut L2Cpu<'_>, code: u64) -> Flow {
        self.store_regs(cpu);
        self.store_cs_ss(cpu);
        match code {
            0x00..=0x1F => self.cr_access(cpu),
            exit::MSR => {
                self.store_native_msrs(cpu);
                let write = self.vmcb.r64(off::EXITINFO1) & 1 != 0;
                let action = if write {
                    L2Action::Wrmsr
                } else {
                    L2Action::Rdmsr
                };
                self.run_action(cpu, action, 2)
            }
            exit::CPUID => self.run_action(cpu, L2Action::Cpuid, 2),
            exit::HLT => self.run_action(cpu, L2Action::Hlt, 1),
            exit::IOIO => self.io(cpu),
            exit::UD => self.undefined_opcode(cpu),
            exit::IDTR_WRITE | exit::GDTR_WRITE => self.descriptor_table(cpu),
            exit::LDTR_WRITE | exit::TR_WRITE => self.segment_table_load(cpu, code),
            exit::IDTR_READ | exit::GDTR_READ | exit::LDTR_READ | exit::TR_READ => {
                self.descriptor_table_store(cpu, code)
            }
            exit::NPF => self.nested_page_fault(cpu),
            EXIT_XSETBV => {
                cpu.exit_to_l1(reason::XSETBV, 0, 3);
                Flow::Exit
            }
            exit::SHUTDOWN => {
                cpu.exit_with_reason(reason::TRIPLE_FAULT);
                Flow::Exit
            }
            exit::VMRUN..=exit::SKINIT => {
                self.inject(6);
                Flow::Resume
            }
            exit::INTR => {
                // The host LAPIC timer (or a stray interrupt): take it, then
                // see whether the TSC_DEADLINE has passed (§2.7, reason 52).
                crate::arch::take_pending_interrupts();
                if cpu.check_timer(crate::arch::rdtsc()) {
                    Flow::Exit
                } else {
                    Flow::Resume
                }
            }
            EXIT_VINTR => {
                // L2 became interruptible with interrupt-window exiting on (§2.8).
                if cpu.check_interrupt_window() {
                    Flow::Exit
                } else {
                    self.set_interrupt_window(false);
                    Flow::Resume
                }
            }
            exit::INVALID => {
                crate::emu_println!(
                    "L2 VMRUN failed (invalid state): CR0 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x} CS {:?} RIP {:#x}",
                    self.vmcb.r64(off::CR0),
                    self.vmcb.r64(off::CR3),
                    self.vmcb.r64(off::CR4),
                    self.vmcb.r64(off::EFER),
                    self.vmcb.seg(off::CS),
                    self.vmcb.rip()
                );
                cpu.exit_with_reason(reason::INVALID_GUEST_STATE);
                Flow::Exit
            }
            other => {
                crate::emu_println!(
                    "FATAL: unexpected L2 exit {other:#x} at RIP {:#x}",
                    self.vmcb.rip()
                );
                crate::finish(crate::EXIT_EMULATOR_BUG)
            }
        }
    }

    fn cr_access(&mut self, cpu: &mut L2Cpu<'_>) -> Flow {
        let mut bytes = [0u8; decode::MAX_LEN];
        let n = self.read_linear(cpu.memory(), self.code_linear(), &mut bytes);
        let (decoded, len) = match decode::quick_cr_move(&bytes[..n], self.bitness()) {
            Some((d, len)) => (Some(d), len),
            None => match decode::decode(&bytes[..n], self.vmcb.rip(), self.bitness()) {
                Some(i) => (decode::cr_insn(&i), i.len() as u32),
                None => {
                    log::warn!(
                        "L2 CR exit at RIP {:#x}: undecodable instruction: #UD",
                        self.vmcb.rip()
                    );
                    self.inject(6);
                    return Flow::Resume;
                }
            },
        };
        match decoded {
            Some(CrInsn::MovTo { cr, gpr }) => {
                self.run_action(cpu, L2Action::MovToCr { cr, gpr }, len)
            }
            Some(CrInsn::MovFrom {
                cr: cr @ (0 | 3 | 4),
                gpr,
            }) => self.run_action(cpu, L2Action::MovFromCr { cr, gpr }, len),
            Some(CrInsn::MovFrom { cr: 8, gpr })
                if cpu.vmcs(f::PROC_BASED_CTLS) & PROC_CR8_STORE_EXITING != 0 =>
            {
                self.run_action(cpu, L2Action::MovFromCr { cr: 8, gpr }, len)
            }
            Some(CrInsn::MovFrom { cr, gpr }) => {
                // CR2 (shared, §2.10) and CR8 (TPR) read natively.
                let value = match cr {
                    2 => self.vmcb.r64(off::CR2),
                    8 => self.vmcb.r64(off::INT_CTL) & 0xF,
                    _ => {
                        self.inject(6);
                        return Flow::Resume;
                    }
                };
                cpu.regs_mut().set_gpr(gpr, value);
                self.load_regs(cpu);
                self.advance(cpu, len as u64);
                Flow::Resume
            }
            Some(CrInsn::Clts) => {
                // Approximation: VMX exits to L1 when L1 owns CR0.TS; the model
                // has no CLTS action, so TS is cleared natively.
                let cr0 = cpu.vmcs(f::GUEST_CR0) & !CR0_TS;
                cpu.set_guest_state(f::GUEST_CR0, cr0);
                self.vmcb.w64(off::CR0, cr0);
                self.advance(cpu, len as u64);
                Flow::Resume
            }
            Some(CrInsn::Lmsw | CrInsn::Smsw) | None => {
                log::warn!(
                    "L2 CR exit at RIP {:#x}: {:02x?} is not modelled: #UD",
                    self.vmcb.rip(),
                    &bytes[..len as usize]
                );
                self.inject(6);
                Flow::Resume
            }
        }
    }

    fn io(&mut self, cpu: &mut L2Cpu<'_>) -> Flow {
        let info = self.vmcb.r64(off::EXITINFO1);
        let next = self.vmcb.r64(off::EXITINFO2);
        let len = next.wrapping_sub(self.vmcb.rip()) as u32;
        let port = (info >> 16) as u16;
        let size = match (info >> 4) & 7 {
            1 => 1,
            2 => 2,
            _ => 4,
        };
        let is_in = info & 1 != 0;
        if info & 4 != 0 {
            // INS/OUTS: always L2→L1 (§4) with the string and REP bits.
            let q = IoQual {
                size,
                is_in,
                string: true,
                rep: info & 8 != 0,
                immediate: false,
                port,
            };
            cpu.exit_to_l1(reason::IO_INSTRUCTION, q.encode(), len);
            return Flow::Exit;
        }
        let action = if is_in {
            L2Action::In { port, size }
        } else {
            L2Action::Out { port, size }
        };
        self.run_action(cpu, action, len)
    }

    fn undefined_opcode(&mut self, cpu: &mut L2Cpu<'_>) -> Flow {
        let mut b = [0u8; 4];
        let n = self.read_linear(cpu.memory(), self.code_linear(), &mut b);
        if n == 4 && b == decode::TDCALL {
            return self.run_action(cpu, L2Action::Tdcall, 4);
        }
        if n >= 3 && b[..3] == decode::VMCALL {
            return self.run_action(cpu, L2Action::Vmcall, 3);
        }
        self.inject(6);
        Flow::Resume
    }

    fn descriptor_table(&mut self, cpu: &mut L2Cpu<'_>) -> Flow {
        let mem = cpu.memory();
        let operand = self.fetch_instruction(mem).and_then(|i| {
            let idt = decode::descriptor_table_load(&i)?;
            let (la, _) = decode::memory_operand(&i, &VmcbRegs(self))?;
            let mut b = [0u8; 10];
            (self.read_linear(mem, la, &mut b) == 10).then_some((i.len() as u32, idt, b))
        });
        let Some((len, idt, b)) = operand else {
            log::warn!(
                "L2 LGDT/LIDT at RIP {:#x} not decodable: #GP(0)",
                self.vmcb.rip()
            );
            self.inject(13);
            return Flow::Resume;
        };
        let limit = u16::from_le_bytes([b[0], b[1]]);
        let mut base = u64::from_le_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]);
        if self.bitness() != 64 {
            base &= 0xFFFF_FFFF;
        }
        self.run_action(cpu, L2Action::LoadDescriptorTable { idt, base, limit }, len)
    }

    /// SGDT/SIDT/SLDT/STR while descriptor-table exiting is on: the model
    /// turns it into exit 46/47 for L1, which emulates the store itself; the
    /// emulator only supplies the instruction length.
    fn descriptor_table_store(&mut self, cpu: &mut L2Cpu<'_>, code: u64) -> Flow {
        use iced_x86::Mnemonic as M;
        use tdx_model::engine::DescriptorRegister as D;
        let (table, mnemonic) = match code {
            exit::GDTR_READ => (D::Gdtr, M::Sgdt),
            exit::IDTR_READ => (D::Idtr, M::Sidt),
            exit::LDTR_READ => (D::Ldtr, M::Sldt),
            _ => (D::Tr, M::Str),
        };
        let insn = self
            .fetch_instruction(cpu.memory())
            .filter(|i| i.mnemonic() == mnemonic);
        let Some(i) = insn else {
            log::warn!(
                "L2 {mnemonic:?} at RIP {:#x} not decodable: #GP(0)",
                self.vmcb.rip()
            );
            self.inject(13);
            return Flow::Resume;
        };
        self.run_action(
            cpu,
            L2Action::StoreDescriptorTable { table },
            i.len() as u32,
        )
    }

    /// LLDT/LTR while descriptor-table exiting is on: exit 47 for L1 (which
    /// refuses them after LOCK_REGS); the emulator supplies the length.
    fn segment_table_load(&mut self, cpu: &mut L2Cpu<'_>, code: u64) -> Flow {
        use iced_x86::Mnemonic as M;
        use tdx_model::engine::DescriptorRegister as D;
        let (table, mnemonic) = if code == exit::LDTR_WRITE {
            (D::Ldtr, M::Lldt)
        } else {
            (D::Tr, M::Ltr)
        };
        let insn = self
            .fetch_instruction(cpu.memory())
            .filter(|i| i.mnemonic() == mnemonic);
        let Some(i) = insn else {
            log::warn!(
                "L2 {mnemonic:?} at RIP {:#x} not decodable: #GP(0)",
                self.vmcb.rip()
            );
            self.inject(13);
            return Flow::Resume;
        };
        self.run_action(cpu, L2Action::LoadSegmentTable { table }, i.len() as u32)
    }

    fn nested_page_fault(&mut self, cpu: &mut L2Cpu<'_>) -> Flow {
        let info = self.vmcb.r64(off::EXITINFO1);
        let gpa = self.vmcb.r64(off::EXITINFO2);
        let fetch = info & 0x10 != 0;
        let write = info & 2 != 0;
        let in_walk = info & (1 << 33) != 0;
        let kind = if fetch {
            AccessKind::Fetch
        } else if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        let mbec = cpu.mbec();
        let mem = cpu.memory();
        let mut cpl = self.vmcb.cpl();
        let mut user_page = cpl == 3;
        let (gla, size, len) = if fetch {
            let rip = self.code_linear();
            let next = (rip | 0xFFF).wrapping_add(1);
            let hit = [rip, next].into_iter().find_map(|la| {
                self.translate(mem, la)
                    .filter(|t| t.gpa >> 12 == gpa >> 12)
                    .map(|t| (la, t.user))
            });
            let (la, user) = hit.unwrap_or((rip, cpl == 3));
            user_page = user;
            if mbec {
                // MBEC judges by the linear address's U/S, not by CPL.
                cpl = if user { 3 } else { 0 };
            }
            (la, 1, 0)
        } else if in_walk {
            (gpa, 8, 0)
        } else {
            match self.fetch_instruction(mem) {
                Some(i) => match decode::memory_operand(&i, &VmcbRegs(self)) {
                    Some((la, size)) => (la, size, i.len() as u32),
                    None => (gpa, 8, i.len() as u32),
                },
                None => (gpa, 8, 0),
            }
        };
        let size = match size {
            0 | 1 => 1,
            2 => 2,
            3 | 4 => 4,
            _ => 8,
        };
        let action = L2Action::Access {
            kind,
            gpa,
            gla,
            cpl,
            size,
            value: 0,
        };
        match cpu.execute_decoded(&action, len) {
            Step::Completed => {
                // The model allows it: the active NPT did not say so.
                if fetch && mbec {
                    let want = user_page as usize;
                    if self.active != want {
                        self.active = want;
                        self.flush = true;
                        self.keep_npt = true;
                        stats::with(|s| s.mbec_switches += 1);
                        return Flow::Resume;
                    }
                }
                let key = (gpa >> 12, info);
                if (self.last_npf.0, self.last_npf.1) == key {
                    self.last_npf.2 += 1;
                } else {
                    self.last_npf = (key.0, key.1, 0);
                }
                if self.last_npf.2 > 4 {
                    crate::emu_println!(
                        "FATAL: L2 NPF at GPA {gpa:#x} (info {info:#x}) repeats although the model allows the access"
                    );
                    crate::finish(crate::EXIT_EMULATOR_BUG);
                }
                // Grant what the model allowed (stale NPT, or an attribute the
                // NPT cannot express such as execute-only).
                let page = gpa & !0xFFF;
                let mem = cpu.memory();
                if mem.state(page) == Some(PageState::Accepted) && page < mem.size() {
                    let mut e = self.npt[self.active].leaf(page);
                    if e == 0 {
                        e = (mem.backing_address() as u64 + page)
                            | npt::P
                            | npt::U
                            | npt::A
                            | npt::D
                            | npt::NX;
                    }
                    if write {
                        e |= npt::W;
                    }
                    if fetch {
                        e &= !npt::NX;
                    }
                    self.npt[self.active].set_leaf(page, e);
                    self.leaves[self.active][(page >> 12) as usize] = e;
                    self.flush = true;
                    stats::with(|s| s.npt_overrides += 1);
                }
                Flow::Resume
            }
            Step::FaultedInL2 { vector } => {
                self.inject(vector);
                Flow::Resume
            }
            Step::Exit => Flow::Exit,
        }
    }
}

/// Register values for effective addresses, from the VMCB and GPR block.
struct VmcbRegs<'a>(&'a SvmEngine);

impl RegisterFile for VmcbRegs<'_> {
    fn gpr(&self, n: u8) -> u64 {
        let e = self.0;
        let g = &e.gprs;
        match n {
            0 => e.vmcb.r64(off::RAX),
            1 => g.rcx,
            2 => g.rdx,
            3 => g.rbx,
            4 => e.vmcb.r64(off::RSP),
            5 => g.rbp,
            6 => g.rsi,
            7 => g.rdi,
            8 => g.r8,
            9 => g.r9,
            10 => g.r10,
            11 => g.r11,
            12 => g.r12,
            13 => g.r13,
            14 => g.r14,
            _ => g.r15,
        }
    }

    fn segment_base(&self, seg: Register) -> u64 {
        let v = &self.0.vmcb;
        let long = self.0.bitness() == 64;
        match seg {
            Register::FS => v.seg(off::FS).base,
            Register::GS => v.seg(off::GS).base,
            _ if long => 0,
            Register::ES => v.seg(off::ES).base,
            Register::CS => v.seg(off::CS).base,
            Register::SS => v.seg(off::SS).base,
            _ => v.seg(off::DS).base,
        }
    }
}

impl SvmEngine {
    /// Interrupt-window exiting (§2.8) as an SVM virtual interrupt: V_IRQ
    /// with the VINTR intercept exits when L2 could take it (RFLAGS.IF = 1,
    /// no interrupt shadow); the virtual interrupt itself is never delivered.
    fn set_interrupt_window(&self, on: bool) {
        let v = &self.vmcb;
        let misc = v.r32(off::MISC1);
        let ctl = v.r64(off::INT_CTL);
        if on {
            v.w32(off::MISC1, misc | MISC1_VINTR);
            v.w64(off::INT_CTL, ctl | INT_CTL_V_IRQ);
            v.w8(INT_VECTOR, 0x20);
        } else {
            v.w32(off::MISC1, misc & !MISC1_VINTR);
            v.w64(off::INT_CTL, ctl & !INT_CTL_V_IRQ);
        }
    }
}

impl L2Engine for SvmEngine {
    fn tsc(&mut self) -> u64 {
        // L1 and L2 run with TSC_OFFSET 0: the TD virtual TSC is the host's.
        crate::arch::rdtsc()
    }

    fn run(&mut self, cpu: &mut L2Cpu<'_>) {
        self.sync_npt(cpu);
        self.load_all(cpu);
        let injecting = self.queued.is_some();
        if let Some(ev) = self.queued.take() {
            // Approximation: the model passes vector and error code only, so
            // vectors < 32 go in as hardware exceptions (NMI for 2) and the
            // rest as external interrupts; software INTn/INT3 types are lost.
            if ev.vector < 32 {
                self.vmcb.inject_exception(ev.vector, ev.error_code);
            } else {
                self.vmcb.inject_interrupt(ev.vector);
            }
        }
        self.active = 0;
        self.keep_npt = false;
        self.flush = true;
        // Exits before L2's first instruction (§2.7, §2.8). With an event to
        // deliver, VMX delivers it first; here the slice is cut by a timer
        // armed for the earliest moment instead (approximation).
        let deadline = cpu.tsc_deadline();
        if !injecting && (cpu.check_timer(crate::arch::rdtsc()) || cpu.check_interrupt_window()) {
            self.left_at = hpet::now_ns();
            return;
        }
        self.set_interrupt_window(cpu.interrupt_window_exiting());
        let mut exited_at = self.left_at;
        let mut through_l1 = true;
        let mbec = cpu.mbec();
        loop {
            if mbec && !self.keep_npt {
                // Between fetch faults, pick the NPT by privilege level: CPL 3
                // fetches only user pages, CPL 0 (almost) only supervisor ones.
                let want = (self.vmcb.cpl() == 3) as usize;
                if want != self.active {
                    self.active = want;
                    self.flush = true;
                }
            }
            self.keep_npt = false;
            self.vmcb.w64(off::NCR3, self.npt[self.active].root());
            self.vmcb.w8(off::TLB_CONTROL, self.flush as u8);
            self.flush = false;
            let now = hpet::now_ns();
            if exited_at != 0 {
                let dt = now.saturating_sub(exited_at);
                stats::with(|s| {
                    if through_l1 {
                        s.l2_to_l1 += 1;
                        s.l2_to_l1_ns += dt;
                    } else {
                        s.l2_in_engine += 1;
                        s.l2_in_engine_ns += dt;
                    }
                });
            }
            if deadline != u64::MAX && !crate::lapic::arm(deadline) {
                crate::lapic::arm_now();
            }
            svm::run_irq(&self.vmcb, &mut self.gprs);
            exited_at = hpet::now_ns();
            through_l1 = false;
            let code = self.vmcb.exitcode();
            stats::with(|s| *s.l2_svm_exits.entry(code).or_default() += 1);
            self.vmcb.w64(off::EVENTINJ, 0);
            if let Flow::Exit = self.handle(cpu, code) {
                if deadline != u64::MAX {
                    crate::lapic::disarm();
                }
                self.set_interrupt_window(false);
                self.store_regs(cpu);
                self.store_all(cpu);
                self.left_at = exited_at;
                return;
            }
        }
    }

    fn deliver_event(&mut self, _cpu: &mut L2Cpu<'_>, event: DeliveredEvent) {
        // Injected by the first VMRUN of `run` (`load_all` clears EVENTINJ).
        self.queued = Some(event);
    }
}
