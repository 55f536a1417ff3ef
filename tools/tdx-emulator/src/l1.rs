//! L1 — the paravisor — as an SVM guest: its initial state (contract §"L1
//! initial vCPU state"), its NPT over the TD's private memory (accepted pages
//! only) and lazily allocated shared pages, and its exits: TDCALL through #UD,
//! CPUID and EFER emulation, and the L1 bugs that end the run.

use crate::arch::{self, Gprs};
use crate::decode;
use crate::emu_println;
use crate::engine::SvmEngine;
use crate::host::QemuHost;
use crate::npt::{self, Npt};
use crate::page::{Page, Pages};
use crate::stats;
use crate::svm;
use crate::vmcb::{exit, misc1, misc2, off, Seg, Vmcb, EFER_SVME};
use crate::walk::{self, PagingMode};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use lvbs_loader::layout::{EXIT_L1_BUG, SHARED_BIT};
use tdcall::{Registers, Tdcall};
use tdx_model::memory::PageState;
use tdx_model::TdxModel;

/// The TDX-module model with the emulator's host and engine.
pub type Model = TdxModel<QemuHost, SvmEngine>;

/// MSR permission map: 8 KiB.
pub type Msrpm = Pages<1024>;
/// I/O permission map: 12 KiB.
pub type Iopm = Pages<1536>;

const MSR_EFER: u32 = 0xC000_0080;
const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
/// Shared pages L1 may touch (lazily backed): 64 MiB.
const MAX_SHARED_PAGES: usize = 16 * 1024;

/// MSRs L1 reads and writes natively: VMLOAD/VMSAVE or the VMCB switch them.
const L1_NATIVE_MSRS: [u32; 11] = [
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0x277,       // PAT (G_PAT with nested paging)
    0xC000_0081, // STAR
    0xC000_0082, // LSTAR
    0xC000_0083, // CSTAR
    0xC000_0084, // SFMASK
    0xC000_0100, // FS_BASE
    0xC000_0101, // GS_BASE
    0xC000_0102, // KERNEL_GS_BASE
];

/// Bit index of `msr`'s read-intercept bit in the MSRPM (the write bit follows).
pub fn msrpm_bit(msr: u32) -> Option<usize> {
    let (base, index) = match msr {
        0..=0x1FFF => (0, msr),
        0xC000_0000..=0xC000_1FFF => (0x800 * 8, msr - 0xC000_0000),
        0xC001_0000..=0xC001_1FFF => (0x1000 * 8, msr - 0xC001_0000),
        _ => return None,
    };
    Some(base + 2 * index as usize)
}

/// The paravisor's vCPU.
pub struct L1 {
    vmcb: &'static Vmcb,
    gprs: Gprs,
    npt: Npt,
    accepted: Vec<bool>,
    generation: Option<u64>,
    shared: BTreeMap<u64, Box<Page>>,
    _msrpm: Box<Msrpm>,
}

impl L1 {
    /// L1 at the contract's initial state, entering at `entry`.
    pub fn new(vmcb: &'static Vmcb, iopm: &'static Iopm, entry: u64) -> Self {
        let msrpm = Msrpm::ones();
        for msr in L1_NATIVE_MSRS {
            if let Some(bit) = msrpm_bit(msr) {
                msrpm.set_bit(bit, false);
                msrpm.set_bit(bit + 1, false);
            }
        }
        let npt = Npt::new();
        vmcb.w32(off::EXC_INTERCEPTS, 1 << 6); // #UD: TDCALL
        vmcb.w32(
            off::MISC1,
            misc1::CPUID | misc1::HLT | misc1::IOIO | misc1::MSR | misc1::SHUTDOWN,
        );
        vmcb.w32(
            off::MISC2,
            misc2::SVM_INSNS | misc2::WBINVD | misc2::MONITOR | misc2::MWAIT,
        );
        vmcb.w64(off::IOPM, iopm.pa());
        vmcb.w64(off::MSRPM, msrpm.pa());
        vmcb.w32(off::ASID, 1);
        vmcb.w8(off::TLB_CONTROL, 1);
        vmcb.w64(off::INT_CTL, 1 << 24); // V_INTR_MASKING: L1's IF never gates host interrupts
        vmcb.w64(off::NP_CTL, 1);
        vmcb.w64(off::NCR3, npt.root());
        let flat = |attrib| Seg {
            selector: 0,
            attrib,
            limit: 0xFFFF_FFFF,
            base: 0,
        };
        vmcb.set_seg(off::CS, flat(0xC9B));
        for s in [off::DS, off::ES, off::FS, off::GS, off::SS] {
            vmcb.set_seg(s, flat(0xC93));
        }
        vmcb.set_seg(
            off::LDTR,
            Seg {
                selector: 0,
                attrib: 0,
                limit: 0xFFFF,
                base: 0,
            },
        );
        vmcb.set_seg(
            off::TR,
            Seg {
                selector: 0,
                attrib: 0x8B,
                limit: 0xFFFF,
                base: 0,
            },
        );
        vmcb.set_seg(
            off::GDTR,
            Seg {
                selector: 0,
                attrib: 0,
                limit: 0xFFFF,
                base: 0,
            },
        );
        vmcb.set_seg(off::IDTR, Seg::default());
        vmcb.w8(off::CPL, 0);
        vmcb.w64(off::EFER, 0x901 | EFER_SVME);
        vmcb.w64(off::CR0, 0x21);
        vmcb.w64(off::CR4, 0x40);
        vmcb.w64(off::CR3, 0);
        vmcb.w64(off::DR7, 0x400);
        vmcb.w64(off::DR6, 0xFFFF_0FF0);
        vmcb.w64(off::RFLAGS, 2);
        vmcb.w64(off::RIP, entry);
        vmcb.w64(off::RSP, 0);
        vmcb.w64(off::RAX, 0);
        vmcb.w64(off::G_PAT, 0x0007_0406_0007_0406);
        let gprs = Gprs {
            rbx: 48,
            rsi: 0,
            rdx: arch::cpuid(1, 0)[0] as u64,
            ..Gprs::default()
        };
        L1 {
            vmcb,
            gprs,
            npt,
            accepted: Vec::new(),
            generation: None,
            shared: BTreeMap::new(),
            _msrpm: msrpm,
        }
    }

    /// Maps exactly the accepted private pages, at the model's backing store.
    fn sync_npt(&mut self, model: &Model) {
        let mem = model.memory();
        if self.generation == Some(mem.generation()) {
            return;
        }
        self.generation = Some(mem.generation());
        let pages = (mem.size() / 4096) as usize;
        if self.accepted.len() != pages {
            self.accepted = vec![false; pages];
        }
        let backing = mem.backing_address() as u64;
        let mut changed = false;
        for (i, known) in self.accepted.iter_mut().enumerate() {
            let gpa = i as u64 * 4096;
            let ok = mem.state(gpa) == Some(PageState::Accepted);
            if ok != *known {
                *known = ok;
                changed = true;
                let leaf = if ok {
                    (backing + gpa) | npt::P | npt::W | npt::U | npt::A | npt::D
                } else {
                    0
                };
                self.npt.set_leaf(gpa, leaf);
            }
        }
        if changed {
            self.vmcb.w8(off::TLB_CONTROL, 1);
        }
    }

    /// Runs L1 until the TD ends the run.
    pub fn run(mut self, model: &mut Model) -> ! {
        loop {
            self.sync_npt(model);
            svm::run(self.vmcb, &mut self.gprs);
            self.vmcb.w8(off::TLB_CONTROL, 0);
            let code = self.vmcb.exitcode();
            stats::with(|s| *s.l1_svm_exits.entry(code).or_default() += 1);
            match code {
                exit::UD => self.undefined_opcode(model),
                exit::NPF => self.nested_page_fault(model),
                exit::MSR => self.msr(),
                exit::CPUID => self.cpuid(),
                exit::HLT => self.bug("HLT (use TDG.VP.VMCALL<Instruction.HLT>)"),
                exit::IOIO => {
                    let info = self.vmcb.r64(off::EXITINFO1);
                    emu_println!(
                        "L1 bug: port I/O {} port {:#x} (use TDG.VP.VMCALL<Instruction.IO>)",
                        if info & 1 != 0 { "IN" } else { "OUT" },
                        info >> 16
                    );
                    self.bug("port I/O")
                }
                exit::WBINVD => self.bug("WBINVD (use TDG.VP.VMCALL<Instruction.WBINVD>)"),
                exit::SHUTDOWN => self.bug("triple fault (shutdown)"),
                exit::VMRUN..=exit::SKINIT | exit::MONITOR | exit::MWAIT => {
                    // Not Intel instructions (or not allowed in a TD): #UD.
                    self.vmcb.inject_exception(6, None);
                }
                exit::INVALID => {
                    emu_println!(
                        "L1 VMRUN failed (invalid state): CR0 {:#x} CR4 {:#x} EFER {:#x} CS attrib {:#x}",
                        self.vmcb.r64(off::CR0),
                        self.vmcb.r64(off::CR4),
                        self.vmcb.r64(off::EFER),
                        self.vmcb.seg(off::CS).attrib
                    );
                    self.bug("invalid guest state")
                }
                other => {
                    emu_println!("unexpected L1 exit {other:#x}");
                    self.bug("unexpected exit")
                }
            }
        }
    }

    fn bug(&self, what: &str) -> ! {
        emu_println!(
            "L1 bug at RIP {:#x} (CS.base {:#x}): {what}",
            self.vmcb.rip(),
            self.vmcb.seg(off::CS).base
        );
        crate::finish(EXIT_L1_BUG)
    }

    fn paging(&self) -> PagingMode {
        PagingMode {
            cr0: self.vmcb.r64(off::CR0),
            cr3: self.vmcb.r64(off::CR3),
            cr4: self.vmcb.r64(off::CR4),
            efer: self.vmcb.r64(off::EFER),
        }
    }

    /// A qword of L1 guest-physical memory (private accepted or shared).
    fn read_gpa_u64(&self, model: &Model, gpa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read_gpa(model, gpa, &mut b)?;
        Some(u64::from_le_bytes(b))
    }

    fn read_gpa(&self, model: &Model, gpa: u64, buf: &mut [u8]) -> Option<()> {
        if gpa & SHARED_BIT == 0 {
            return model.read_memory(gpa, buf).ok();
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let a = (gpa + i as u64) & !SHARED_BIT;
            let page = self.shared.get(&(a & !0xFFF))?;
            *b = page.read((a & 0xFF8) as usize, 8).to_le_bytes()[(a & 7) as usize];
        }
        Some(())
    }

    /// Reads instruction bytes at L1's CS:RIP (one walk per page touched).
    fn fetch(&self, model: &Model, buf: &mut [u8]) -> bool {
        let la = self.vmcb.seg(off::CS).base.wrapping_add(self.vmcb.rip());
        let mode = self.paging();
        let mut done = 0;
        while done < buf.len() {
            let a = la.wrapping_add(done as u64);
            let Ok(t) = walk::translate(&mode, a, |g| self.read_gpa_u64(model, g)) else {
                return false;
            };
            let n = (0x1000 - (a & 0xFFF) as usize).min(buf.len() - done);
            if self
                .read_gpa(model, t.gpa, &mut buf[done..done + n])
                .is_none()
            {
                return false;
            }
            done += n;
        }
        true
    }

    fn undefined_opcode(&mut self, model: &mut Model) {
        let mut bytes = [0u8; 4];
        if !self.fetch(model, &mut bytes) || bytes != decode::TDCALL {
            self.vmcb.inject_exception(6, None);
            return;
        }
        if self.vmcb.cpl() != 0 {
            self.vmcb.inject_exception(13, Some(0));
            return;
        }
        let g = &mut self.gprs;
        let mut r = Registers {
            rax: self.vmcb.r64(off::RAX),
            rcx: g.rcx,
            rdx: g.rdx,
            rbx: g.rbx,
            rbp: g.rbp,
            rsi: g.rsi,
            rdi: g.rdi,
            r8: g.r8,
            r9: g.r9,
            r10: g.r10,
            r11: g.r11,
            r12: g.r12,
            r13: g.r13,
            r14: g.r14,
            r15: g.r15,
        };
        let leaf = r.rax as u16;
        let t0 = crate::hpet::now_ns();
        model.tdcall(&mut r);
        let dt = crate::hpet::now_ns().saturating_sub(t0);
        stats::with(|s| {
            *s.tdcalls.entry(leaf).or_default() += 1;
            *s.tdcall_ns.entry(leaf).or_default() += dt;
        });
        if leaf == tdcall::Leaf::VpEnter.number() && r.rax >> 63 == 0 {
            let class = (r.rax >> 32) as u32;
            stats::with(|s| *s.l2_exits.entry((class, r.rax as u16)).or_default() += 1);
        }
        if let Some(why) = model.dead() {
            emu_println!("the TDX module model killed the TD: {why}");
            crate::finish(lvbs_loader::layout::EXIT_FATAL);
        }
        self.vmcb.w64(off::RAX, r.rax);
        let g = &mut self.gprs;
        g.rcx = r.rcx;
        g.rdx = r.rdx;
        g.rbx = r.rbx;
        g.rbp = r.rbp;
        g.rsi = r.rsi;
        g.rdi = r.rdi;
        g.r8 = r.r8;
        g.r9 = r.r9;
        g.r10 = r.r10;
        g.r11 = r.r11;
        g.r12 = r.r12;
        g.r13 = r.r13;
        g.r14 = r.r14;
        g.r15 = r.r15;
        self.vmcb.set_rip(self.vmcb.rip().wrapping_add(4));
    }

    fn nested_page_fault(&mut self, model: &Model) {
        let gpa = self.vmcb.r64(off::EXITINFO2);
        let info = self.vmcb.r64(off::EXITINFO1);
        if gpa & SHARED_BIT != 0 && gpa >> 48 == 0 && self.shared.len() < MAX_SHARED_PAGES {
            let page = gpa & !0xFFF;
            let p = self
                .shared
                .entry(page & !SHARED_BIT)
                .or_insert_with(Page::new);
            self.npt
                .set_leaf(page, p.pa() | npt::P | npt::W | npt::U | npt::A | npt::D);
            self.vmcb.w8(off::TLB_CONTROL, 1);
            return;
        }
        let state = model.memory().state(gpa);
        emu_println!(
            "L1 bug: nested page fault at GPA {gpa:#x} (error {info:#x}), page state {state:?}: {}",
            match state {
                Some(PageState::Pending) => "not accepted (TDG.MEM.PAGE.ACCEPT first)",
                Some(PageState::Removed) => "converted to shared",
                _ if gpa & SHARED_BIT != 0 => "shared GPA out of range",
                _ => "outside the TD's private memory",
            }
        );
        self.bug("access to unusable memory")
    }

    fn msr(&mut self) {
        let write = self.vmcb.r64(off::EXITINFO1) & 1 != 0;
        let msr = self.gprs.rcx as u32;
        if msr != MSR_EFER {
            emu_println!(
                "L1 bug: {} of MSR {msr:#x}, which this emulator does not virtualize for L1 (a TD would take #VE; use TDG.VP.VMCALL<Instruction.{}>)",
                if write { "WRMSR" } else { "RDMSR" },
                if write { "WRMSR" } else { "RDMSR" }
            );
            self.bug("MSR access");
        }
        let efer = self.vmcb.r64(off::EFER);
        if write {
            let v = (self.gprs.rdx << 32) | (self.vmcb.r64(off::RAX) & 0xFFFF_FFFF);
            if v & !(EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE) != 0 {
                self.vmcb.inject_exception(13, Some(0));
                return;
            }
            let new = (v & (EFER_SCE | EFER_LME | EFER_NXE)) | (efer & EFER_LMA) | EFER_SVME;
            self.vmcb.w64(off::EFER, new);
        } else {
            let v = efer & !EFER_SVME;
            self.vmcb.w64(off::RAX, v & 0xFFFF_FFFF);
            self.gprs.rdx = v >> 32;
        }
        self.vmcb.set_rip(self.vmcb.rip() + 2);
    }

    fn cpuid(&mut self) {
        let leaf = self.vmcb.r64(off::RAX) as u32;
        let sub = self.gprs.rcx as u32;
        let mut r = arch::cpuid(leaf, sub);
        match leaf {
            0 => r[0] = r[0].max(0x21),
            1 => r[2] |= 1 << 31, // hypervisor present
            0x21 => r = [0, 0x6574_6E49, 0x2020_2020, 0x5844_546C], // "IntelTDX    "
            0x8000_0001 => r[2] &= !(1 << 2), // no SVM inside a TD
            0x8000_000A => r = [0; 4],
            _ => {}
        }
        self.vmcb.w64(off::RAX, r[0] as u64);
        self.gprs.rbx = r[1] as u64;
        self.gprs.rcx = r[2] as u64;
        self.gprs.rdx = r[3] as u64;
        self.vmcb.set_rip(self.vmcb.rip() + 2);
    }
}
