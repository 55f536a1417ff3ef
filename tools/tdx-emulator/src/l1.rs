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

/// GPA of the identity page directory that stands in for "paging off".
const IDENTITY_PD_GPA: u64 = 0xFFFF_F000;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
/// CR0/CR3/CR4 read and write intercepts (VMCB 0x000).
const CR_RW_INTERCEPTS: u32 = 0x0019_0019;
/// Selective CR0 write intercept (MISC1 bit 5, exit 0x65).
const MISC1_SEL_CR0: u32 = 1 << 5;
const EXIT_CR0_SEL_WRITE: u64 = 0x65;

/// L1's control registers while it runs with paging off.
///
/// QEMU TCG (10.0.2) fetches an SVM guest's instructions without nested
/// translation — from host-physical memory — once the guest has exited and
/// resumed with CR0.PG=0 (measured: after the first TDCALL the next fetch
/// read the host's page at the GPA). So L1's "paging off" runs on paging on:
/// 32-bit paging with an identity map of 4 MiB pages at [`IDENTITY_PD_GPA`],
/// EFER.LME hidden, and the emulator keeps and shows L1's own CR0/CR3/CR4/EFER
/// (CR and EFER accesses are intercepted) until L1 sets CR0.PG.
#[derive(Clone, Copy, Debug)]
struct Unpaged {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
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
    unpaged: Option<Unpaged>,
    _identity_pd: Box<Page>,
    step: Stepping,
}

/// Counting L1 instructions while a statistics mark asks for it
/// (`host::MARK_COUNT_L1`): L1 runs with RFLAGS.TF and the #DB intercept, so
/// every instruction ends in a single-step #VMEXIT; instructions the
/// emulator completes itself (TDCALL, CPUID, MSR, CR) count once there.
/// `INT n` clears TF in the handler it enters (the TA's `int 0x80` back into
/// the paravisor), so it is intercepted: the handler's page loses execute in
/// L1's NPT, the INT runs natively, and the fetch fault at the handler turns
/// stepping back on. Exceptions a TA raises end stepping until the next L1
/// #VMEXIT (not on the benchmark's path).
#[derive(Default)]
struct Stepping {
    /// TF and the intercepts are set.
    on: bool,
    /// `(page, saved NPT leaf)` of an interrupt handler made non-executable.
    handler: Option<(u64, u64)>,
}

/// RFLAGS.TF.
const RFLAGS_TF: u64 = 1 << 8;
/// Exception intercept bit of #DB.
const EXC_DB: u32 = 1 << 1;
/// MISC1 bit 21: INT n (exit 0x75).
const MISC1_INTN: u32 = 1 << 21;
/// #VMEXIT codes: #DB, INT n.
const EXIT_DB: u64 = exit::EXCP_BASE + 1;
const EXIT_INTN: u64 = 0x75;
/// DR6 with no condition flagged (its reserved bits read as ones).
const DR6_INIT: u64 = 0xFFFF_0FF0;
/// DR6.BS: single-step.
const DR6_BS: u64 = 1 << 14;
/// NPT leaf: no execute.
const NPT_NX: u64 = 1 << 63;

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
        // CR0 0x21, CR3 0, CR4 0x40, EFER 0x901: see `enter_unpaged` below.
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
        // 1024 PDEs of 4 MiB identity pages (P|W|U|A|D|PS), two per qword.
        let identity_pd = Page::new();
        for i in 0..512u64 {
            let pde = |n: u64| (n << 22) | 0xE7;
            identity_pd.set(i as usize, pde(2 * i) | pde(2 * i + 1) << 32);
        }
        let mut npt = npt;
        npt.set_leaf(
            IDENTITY_PD_GPA,
            identity_pd.pa() | npt::P | npt::W | npt::U | npt::A | npt::D,
        );
        let mut l1 = L1 {
            vmcb,
            gprs,
            npt,
            accepted: Vec::new(),
            generation: None,
            shared: BTreeMap::new(),
            _msrpm: msrpm,
            unpaged: None,
            step: Stepping::default(),
            _identity_pd: identity_pd,
        };
        l1.enter_unpaged(Unpaged {
            cr0: 0x21,
            cr3: 0,
            cr4: 0x40,
            efer: 0x901,
        });
        l1
    }

    /// Runs L1 "with paging off" on the identity map (see [`Unpaged`]).
    fn enter_unpaged(&mut self, u: Unpaged) {
        let v = self.vmcb;
        v.w64(off::CR0, u.cr0 | CR0_PG);
        v.w64(off::CR3, IDENTITY_PD_GPA);
        v.w64(off::CR4, (u.cr4 & !CR4_PAE) | CR4_PSE);
        v.w64(off::EFER, (u.efer & !(EFER_LME | EFER_LMA)) | EFER_SVME);
        v.w32(off::CR_INTERCEPTS, CR_RW_INTERCEPTS);
        v.w32(off::MISC1, v.r32(off::MISC1) & !MISC1_SEL_CR0);
        v.w8(off::TLB_CONTROL, 1);
        self.unpaged = Some(u);
    }

    /// L1 set CR0.PG: its own control registers take over.
    fn leave_unpaged(&mut self, u: Unpaged) {
        let v = self.vmcb;
        let mut efer = u.efer | EFER_SVME;
        if efer & EFER_LME != 0 {
            efer |= EFER_LMA;
        }
        v.w64(off::CR3, u.cr3);
        v.w64(off::CR4, u.cr4);
        v.w64(off::EFER, efer);
        v.w64(off::CR0, u.cr0);
        v.w32(off::CR_INTERCEPTS, 0);
        v.w32(off::MISC1, v.r32(off::MISC1) | MISC1_SEL_CR0);
        v.w8(off::TLB_CONTROL, 1);
        self.unpaged = None;
    }

    /// Maps exactly the accepted private pages, at the model's backing store.
    /// Only page-state changes matter (L2 attribute changes do not), so an
    /// L1 that aliases thousands of pages does not rescan memory each time.
    fn sync_npt(&mut self, model: &Model) {
        let mem = model.memory();
        if self.generation == Some(mem.state_generation()) {
            return;
        }
        self.generation = Some(mem.state_generation());
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

    /// Turns single-stepping on or off as the statistics mark asks, and
    /// keeps TF set while it is on.
    fn prepare_stepping(&mut self) {
        let want = crate::host::counting_l1();
        if want != self.step.on {
            self.step.on = want;
            let (exc, misc) = (
                self.vmcb.r32(off::EXC_INTERCEPTS),
                self.vmcb.r32(off::MISC1),
            );
            if want {
                self.vmcb.w32(off::EXC_INTERCEPTS, exc | EXC_DB);
                self.vmcb.w32(off::MISC1, misc | MISC1_INTN);
            } else {
                self.vmcb.w32(off::EXC_INTERCEPTS, exc & !EXC_DB);
                self.vmcb.w32(off::MISC1, misc & !MISC1_INTN);
                self.restore_handler_page();
                let f = self.vmcb.r64(off::RFLAGS);
                self.vmcb.w64(off::RFLAGS, f & !RFLAGS_TF);
            }
        }
        if self.step.on && self.step.handler.is_none() {
            let f = self.vmcb.r64(off::RFLAGS);
            self.vmcb.w64(off::RFLAGS, f | RFLAGS_TF);
        }
    }

    fn restore_handler_page(&mut self) {
        if let Some((page, leaf)) = self.step.handler.take() {
            self.npt.set_leaf(page, leaf);
            self.vmcb.w8(off::TLB_CONTROL, 1);
            if self.step.on {
                let misc = self.vmcb.r32(off::MISC1);
                self.vmcb.w32(off::MISC1, misc | MISC1_INTN);
            }
        }
    }

    /// Handles the exits stepping causes; counts the instructions the
    /// emulator completes. Returns whether `code` is dealt with.
    fn stepping_exit(&mut self, model: &Model, code: u64) -> bool {
        let cpl = self.vmcb.cpl();
        match code {
            EXIT_DB => {
                let dr6 = self.vmcb.r64(off::DR6);
                self.vmcb.w64(off::DR6, DR6_INIT);
                if dr6 & DR6_BS == 0 {
                    // Not ours: L1's own #DB.
                    self.vmcb.inject_exception(1, None);
                } else {
                    crate::host::count_l1_instruction(cpl);
                }
                true
            }
            EXIT_INTN => {
                // The vector from the instruction (QEMU gives no decode
                // assist for INTn): CD ib, or INT3 (CC) / INTO (CE) / INT1 (F1).
                let mut b = [0u8; 2];
                let vector = match self.fetch(model, &mut b).then_some(b) {
                    Some([0xCD, v]) => u64::from(v),
                    Some([0xCC, _]) => 3,
                    Some([0xCE, _]) => 4,
                    _ => 1,
                };
                // The gate's handler: IDT entry `vector` (16 bytes, 64-bit).
                let gate = self.vmcb.seg(off::IDTR).base + vector * 16;
                let mut g = [0u8; 16];
                let handler = self.read_gpa(model, gate, &mut g).map(|()| {
                    u64::from(u16::from_le_bytes([g[0], g[1]]))
                        | u64::from(u16::from_le_bytes([g[6], g[7]])) << 16
                        | u64::from(u32::from_le_bytes([g[8], g[9], g[10], g[11]])) << 32
                });
                crate::host::count_l1_instruction(cpl);
                let misc = self.vmcb.r32(off::MISC1);
                self.vmcb.w32(off::MISC1, misc & !MISC1_INTN);
                if let Some(h) = handler {
                    // L1 identity-maps its kernel: the handler's GPA is its address.
                    let page = h & !0xFFF;
                    let leaf = self.npt.leaf(page);
                    if leaf != 0 {
                        self.npt.set_leaf(page, leaf | NPT_NX);
                        self.vmcb.w8(off::TLB_CONTROL, 1);
                        self.step.handler = Some((page, leaf));
                    }
                }
                // Resume at the INT itself: it runs natively now.
                true
            }
            exit::NPF => {
                let gpa = self.vmcb.r64(off::EXITINFO2);
                match self.step.handler {
                    Some((page, _)) if gpa & !0xFFF == page => {
                        self.restore_handler_page();
                        true
                    }
                    _ => false,
                }
            }
            exit::UD | exit::CPUID | exit::MSR | 0x00..=0x1F | EXIT_CR0_SEL_WRITE => {
                crate::host::count_l1_instruction(cpl);
                false
            }
            _ => false,
        }
    }

    /// Runs L1 until the TD ends the run.
    pub fn run(mut self, model: &mut Model) -> ! {
        loop {
            self.sync_npt(model);
            self.prepare_stepping();
            svm::run(self.vmcb, &mut self.gprs);
            self.vmcb.w8(off::TLB_CONTROL, 0);
            let code = self.vmcb.exitcode();
            if self.step.on && self.stepping_exit(model, code) {
                continue;
            }
            stats::with(|s| *s.l1_svm_exits.entry(code).or_default() += 1);
            match code {
                exit::UD => self.undefined_opcode(model),
                0x00..=0x1F | EXIT_CR0_SEL_WRITE => self.cr_access(model, code),
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
        if let Some(u) = self.unpaged {
            return PagingMode {
                cr0: u.cr0,
                cr3: u.cr3,
                cr4: u.cr4,
                efer: u.efer,
            };
        }
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
        let efer = match self.unpaged {
            Some(u) => u.efer,
            None => self.vmcb.r64(off::EFER) & !EFER_SVME,
        };
        if write {
            let v = (self.gprs.rdx << 32) | (self.vmcb.r64(off::RAX) & 0xFFFF_FFFF);
            if v & !(EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE) != 0 {
                self.vmcb.inject_exception(13, Some(0));
                return;
            }
            let new = (v & (EFER_SCE | EFER_LME | EFER_NXE)) | (efer & EFER_LMA);
            match &mut self.unpaged {
                Some(u) => {
                    u.efer = new;
                    self.vmcb.w64(off::EFER, (new & !EFER_LME) | EFER_SVME);
                }
                None => self.vmcb.w64(off::EFER, new | EFER_SVME),
            }
        } else {
            let v = efer;
            self.vmcb.w64(off::RAX, v & 0xFFFF_FFFF);
            self.gprs.rdx = v >> 32;
        }
        self.vmcb.set_rip(self.vmcb.rip() + 2);
    }

    fn gpr(&self, n: u8) -> u64 {
        let g = &self.gprs;
        match n {
            0 => self.vmcb.r64(off::RAX),
            1 => g.rcx,
            2 => g.rdx,
            3 => g.rbx,
            4 => self.vmcb.r64(off::RSP),
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

    fn set_gpr(&mut self, n: u8, v: u64) {
        let g = &mut self.gprs;
        match n {
            0 => self.vmcb.w64(off::RAX, v),
            1 => g.rcx = v,
            2 => g.rdx = v,
            3 => g.rbx = v,
            4 => self.vmcb.w64(off::RSP, v),
            5 => g.rbp = v,
            6 => g.rsi = v,
            7 => g.rdi = v,
            8 => g.r8 = v,
            9 => g.r9 = v,
            10 => g.r10 = v,
            11 => g.r11 = v,
            12 => g.r12 = v,
            13 => g.r13 = v,
            14 => g.r14 = v,
            _ => g.r15 = v,
        }
    }

    /// CR accesses: all of them while L1 runs "with paging off", afterwards
    /// only CR0 writes that change more than TS/MP (to catch paging being
    /// turned off again).
    fn cr_access(&mut self, model: &Model, code: u64) {
        let mut bytes = [0u8; 4];
        let bitness = decode::bitness(
            self.vmcb.seg(off::CS).attrib,
            self.vmcb.r64(off::EFER) & EFER_LMA != 0,
        );
        let insn = if self.fetch(model, &mut bytes) {
            decode::quick_cr_move(&bytes, bitness)
        } else if self.fetch(model, &mut bytes[..3]) {
            decode::quick_cr_move(&bytes[..3], bitness)
        } else {
            None
        };
        let Some((insn, len)) = insn else {
            emu_println!("L1 CR access (exit {code:#x}) by an instruction the emulator does not emulate: {bytes:02x?}");
            self.bug("unsupported control-register instruction")
        };
        let mask = if bitness == 64 { u64::MAX } else { 0xFFFF_FFFF };
        match (insn, self.unpaged) {
            (decode::CrInsn::MovFrom { cr, gpr }, Some(u)) => {
                let v = match cr {
                    0 => u.cr0,
                    2 => self.vmcb.r64(off::CR2),
                    3 => u.cr3,
                    4 => u.cr4,
                    _ => 0,
                };
                self.set_gpr(gpr, v & mask);
            }
            (decode::CrInsn::MovTo { cr, gpr }, Some(mut u)) => {
                let v = self.gpr(gpr) & mask;
                match cr {
                    0 if v & CR0_PG != 0 => {
                        if u.efer & EFER_LME != 0 && u.cr4 & CR4_PAE == 0 {
                            self.vmcb.inject_exception(13, Some(0));
                            return;
                        }
                        u.cr0 = v;
                        self.leave_unpaged(u);
                    }
                    0 => {
                        u.cr0 = v;
                        self.vmcb.w64(off::CR0, v | CR0_PG);
                        self.unpaged = Some(u);
                    }
                    3 => self.unpaged = Some(Unpaged { cr3: v, ..u }),
                    4 => {
                        u.cr4 = v;
                        self.vmcb.w64(off::CR4, (v & !CR4_PAE) | CR4_PSE);
                        self.unpaged = Some(u);
                    }
                    _ => {}
                }
            }
            (decode::CrInsn::MovTo { cr: 0, gpr }, None) => {
                let v = self.gpr(gpr) & mask;
                if v & CR0_PG == 0 {
                    let efer = self.vmcb.r64(off::EFER) & !(EFER_SVME | EFER_LMA);
                    self.enter_unpaged(Unpaged {
                        cr0: v,
                        cr3: self.vmcb.r64(off::CR3),
                        cr4: self.vmcb.r64(off::CR4),
                        efer,
                    });
                } else {
                    self.vmcb.w64(off::CR0, v);
                }
            }
            _ => {
                emu_println!("L1 CR access (exit {code:#x}): unexpected {insn:?}");
                self.bug("unexpected control-register access")
            }
        }
        self.vmcb.set_rip(self.vmcb.rip() + len as u64);
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
