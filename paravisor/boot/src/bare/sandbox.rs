//! TA instances in L1 ring 3, one address space each (docs/tee.md,
//! "Isolation of the trusted applications").
//!
//! The TA runtime (`tee/runtime`, built by `build.rs` and embedded here) is
//! a fixed-address ELF linked at [`USER_BASE`]. For every TA the paravisor
//! creates an *instance*: a PML4 of its own whose slot 0 is the kernel's
//! identity map (supervisor-only at the top level, so nothing of the
//! paravisor — text, data, heap, page tables, EPT bookkeeping, guest memory,
//! other instances — is reachable from ring 3) and whose slot 1 maps only
//! this instance:
//!
//! | VA | what | user permissions |
//! |---|---|---|
//! | [`USER_BASE`]… | runtime text | R+X (shared, read-only, by every instance) |
//! | | runtime rodata | R, NX (shared) |
//! | | runtime data + .bss | R+W+NX (a private copy) |
//! | [`HEAP_VA`] | heap, [`HEAP_SIZE`] | R+W+NX |
//! | [`MSG_VA`] | message area, [`MSG_SIZE`] | R+W+NX |
//! | [`STACK_VA`] | stack, [`STACK_SIZE`], unmapped guard page below | R+W+NX |
//!
//! All backing frames come from [`Arena`], a `.bss` region of the paravisor
//! image (so the HEKI service already refuses it to L2, like the rest of the
//! image). [`RingThree`] is the [`Sandbox`] of one instance: the core writes
//! and reads its message area through the identity map, and [`RingThree::run`]
//! loads its CR3, sets CR0.TS and enters it (`user`), serving its system
//! calls until it replies; an exception in ring 3, an unknown system call,
//! `EXIT` or an impossible register state ends the instance for good.
//!
//! Not bounded: run time. No timer interrupt reaches L1 in the emulator (and
//! L1 keeps interrupts disabled), so an instance that loops forever stalls
//! the vCPU; see docs/tee.md.

use alloc::vec::Vec;
use core::cell::UnsafeCell;

use lvbs_loader::{load_plan, ElfError};
use lvbs_tee::sandbox::{syscall, Death, Sandbox, SandboxServices, MSG_SIZE};
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F, PhysFrame,
    Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use super::user::{self, UserRegs};

/// The TA runtime ELF (`build.rs`).
static RUNTIME_ELF: &[u8] = include_bytes!(env!("LVBS_TA_RUNTIME_ELF"));

/// Where the runtime is linked (PML4 slot 1; `tee/runtime/linker.ld`).
pub const USER_BASE: u64 = 0x0000_0080_0000_0000;
/// End of the window the runtime's segments must lie in.
const IMAGE_LIMIT: u64 = USER_BASE + 0x4000_0000;
/// Heap of an instance.
pub const HEAP_VA: u64 = USER_BASE + 0x4000_0000;
/// Bytes of heap per instance: the per-TA memory limit. Sized for the
/// largest state a built-in TA keeps (the secure log's 128 KiB of records
/// plus its index) and the copies of one request (up to 4 × 64 KiB in and
/// out).
pub const HEAP_SIZE: u64 = 1 << 20;
/// Message area of an instance.
pub const MSG_VA: u64 = USER_BASE + 0x8000_0000;
/// Lowest stack address of an instance (the page below is never mapped).
pub const STACK_VA: u64 = USER_BASE + 0xC000_1000;
/// Bytes of stack per instance (the paravisor's own stack is 64 KiB and ran
/// the same TAs in-process).
pub const STACK_SIZE: u64 = 64 << 10;
const PAGE: u64 = 4096;

/// Instances of this image: the four built-in TAs, plus the isolation test
/// TA in the `test-ta` image.
pub const INSTANCES: usize = if cfg!(feature = "test-ta") { 5 } else { 4 };
/// Bytes reserved per instance: heap, message area, stack, a private copy
/// of the runtime's data (at most [`DATA_MAX`]) and page tables.
const PER_INSTANCE: usize =
    HEAP_SIZE as usize + MSG_SIZE + STACK_SIZE as usize + DATA_MAX + 16 * PAGE as usize;
/// Largest writable part of the runtime image.
const DATA_MAX: usize = 64 << 10;
/// Largest read-only part of the runtime image (text + rodata, shared).
const SHARED_MAX: usize = 1 << 20;
/// Bytes of the arena.
pub const ARENA_SIZE: usize = SHARED_MAX + INSTANCES * PER_INSTANCE;

#[repr(C, align(4096))]
struct ArenaSpace(UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: the bytes are only reached through `Arena`, which exists once
// (`Sandboxes::new` takes it from `ARENA_TAKEN`) and hands out each frame
// once; the paravisor has one vCPU.
unsafe impl Sync for ArenaSpace {}

static ARENA: ArenaSpace = ArenaSpace(UnsafeCell::new([0; ARENA_SIZE]));
static ARENA_TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// A bump allocator of 4 KiB frames over [`ARENA`] (identity mapped, so a
/// frame's physical address is also its kernel address).
struct Arena {
    next: u64,
    end: u64,
}

impl Arena {
    fn take() -> Option<Arena> {
        if ARENA_TAKEN.swap(true, core::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        let start = ARENA.0.get() as u64;
        Some(Arena {
            next: start,
            end: start + ARENA_SIZE as u64,
        })
    }

    /// `n` contiguous zeroed frames.
    fn frames(&mut self, n: u64) -> Option<u64> {
        let start = self.next;
        let end = start.checked_add(n.checked_mul(PAGE)?)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        fill(start, 0, (end - start) as usize);
        Some(start)
    }
}

// SAFETY: `frames` returns unused, zeroed, 4 KiB-aligned frames of the
// arena, each once.
unsafe impl FrameAllocator<Size4KiB> for Arena {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let pa = self.frames(1)?;
        PhysFrame::from_start_address(PhysAddr::new(pa)).ok()
    }
}

/// Writes `len` bytes of `byte` at arena address `pa`.
fn fill(pa: u64, byte: u8, len: usize) {
    // SAFETY: every caller passes a range inside `ARENA` (frames this module
    // allocated), which is identity mapped, accepted and reached by no Rust
    // reference; the vCPU is not running any instance meanwhile.
    unsafe { core::ptr::write_bytes(pa as *mut u8, byte, len) };
}

/// Copies `data` to arena address `pa`.
fn copy_to(pa: u64, data: &[u8]) {
    // SAFETY: as in `fill`; `data` is paravisor memory outside the arena
    // (the embedded ELF, or a request buffer), so the ranges do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), pa as *mut u8, data.len()) };
}

/// Copies from arena address `pa` into `buf`.
fn copy_from(pa: u64, buf: &mut [u8]) {
    // SAFETY: as in `copy_to`, in the other direction.
    unsafe { core::ptr::copy_nonoverlapping(pa as *const u8, buf.as_mut_ptr(), buf.len()) };
}

/// Why the instances could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxError {
    /// The embedded runtime is not a loadable ELF in the user window.
    Image(ElfError),
    /// A segment is writable and executable, or too large.
    Segment(usize),
    /// The arena is exhausted.
    Arena,
    /// The kernel's top-level entry is user-accessible (it must not be).
    KernelMap,
    /// A page-table operation failed.
    Map(u64),
}

impl core::fmt::Display for SandboxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SandboxError::Image(e) => write!(f, "TA runtime ELF: {e:?}"),
            SandboxError::Segment(i) => write!(f, "TA runtime segment {i} is W+X or too large"),
            SandboxError::Arena => f.write_str("TA arena exhausted"),
            SandboxError::KernelMap => f.write_str("the kernel map is user-accessible"),
            SandboxError::Map(va) => write!(f, "mapping {va:#x} failed"),
        }
    }
}

/// A segment of the runtime as mapped: shared frames (read-only segments)
/// or the file bytes each instance copies.
struct Segment {
    va: u64,
    pages: u64,
    flags: F,
    /// Read-only: the one copy every instance maps.
    shared: Option<u64>,
    /// Writable: the file bytes and the offset of `va` in its first page.
    data: &'static [u8],
    offset: u64,
}

/// Everything needed to create instances: the arena, the loaded image and
/// the kernel's PML4 entry 0.
pub struct Sandboxes {
    arena: Arena,
    segments: Vec<Segment>,
    entry: u64,
    kernel_pml4: u64,
    /// Instances created.
    pub created: usize,
}

impl Sandboxes {
    /// Parses the embedded runtime and copies its read-only segments once.
    pub fn new() -> Result<Sandboxes, SandboxError> {
        let mut arena = Arena::take().ok_or(SandboxError::Arena)?;
        let plan = load_plan(RUNTIME_ELF, USER_BASE..IMAGE_LIMIT).map_err(SandboxError::Image)?;
        let mut segments = Vec::new();
        let (mut shared, mut private) = (0usize, 0usize);
        for (i, s) in plan.segments.iter().enumerate() {
            let (x, w) = (s.flags & 1 != 0, s.flags & 2 != 0);
            if x && w {
                return Err(SandboxError::Segment(i));
            }
            let offset = s.paddr % PAGE;
            let va = s.paddr - offset;
            let pages = (offset + s.memsz).div_ceil(PAGE);
            let mut flags = F::PRESENT | F::USER_ACCESSIBLE;
            if w {
                flags |= F::WRITABLE;
            }
            if !x {
                flags |= F::NO_EXECUTE;
            }
            let shared_frames = if w {
                private += (pages * PAGE) as usize;
                None
            } else {
                shared += (pages * PAGE) as usize;
                let pa = arena.frames(pages).ok_or(SandboxError::Arena)?;
                copy_to(pa + offset, s.data);
                Some(pa)
            };
            if shared > SHARED_MAX || private > DATA_MAX {
                return Err(SandboxError::Segment(i));
            }
            segments.push(Segment {
                va,
                pages,
                flags,
                shared: shared_frames,
                data: s.data,
                offset,
            });
        }
        let kernel_pml4 = Cr3::read().0.start_address().as_u64();
        Ok(Sandboxes {
            arena,
            segments,
            entry: plan.entry,
            kernel_pml4,
            created: 0,
        })
    }

    /// Bytes of the runtime shared by all instances (text and rodata).
    pub fn shared_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.shared.is_some())
            .map(|s| s.pages * PAGE)
            .sum()
    }

    /// A new instance called `name`.
    pub fn create(&mut self, name: &'static str) -> Result<RingThree, SandboxError> {
        let arena = &mut self.arena;
        let pml4 = arena.frames(1).ok_or(SandboxError::Arena)?;
        // SAFETY: both are page tables: `kernel_pml4` is the live PML4 (CR3)
        // and `pml4` a fresh zeroed arena frame; neither is referenced
        // elsewhere while these references live (single vCPU, no interrupts).
        let (kernel, table) = unsafe {
            (
                &*(self.kernel_pml4 as *const PageTable),
                &mut *(pml4 as *mut PageTable),
            )
        };
        let k = &kernel[0];
        if k.flags().contains(F::USER_ACCESSIBLE) {
            return Err(SandboxError::KernelMap);
        }
        table[0].set_addr(k.addr(), k.flags());
        // SAFETY: the arena and every page table the mapper walks are
        // identity mapped (offset 0) in the kernel map.
        let mut mapper = unsafe { OffsetPageTable::new(table, VirtAddr::new(0)) };
        let mut data = Vec::new();
        for s in &self.segments {
            let frames = match s.shared {
                Some(pa) => pa,
                None => {
                    let pa = arena.frames(s.pages).ok_or(SandboxError::Arena)?;
                    copy_to(pa + s.offset, s.data);
                    data.push((pa, s.pages, s.offset, s.data));
                    pa
                }
            };
            map(&mut mapper, arena, s.va, frames, s.pages, s.flags)?;
        }
        let rw = F::PRESENT | F::USER_ACCESSIBLE | F::WRITABLE | F::NO_EXECUTE;
        let mut region = |va: u64, bytes: u64| -> Result<u64, SandboxError> {
            let pages = bytes.div_ceil(PAGE);
            let pa = arena.frames(pages).ok_or(SandboxError::Arena)?;
            map(&mut mapper, arena, va, pa, pages, rw)?;
            Ok(pa)
        };
        let heap = region(HEAP_VA, HEAP_SIZE)?;
        let msg = region(MSG_VA, MSG_SIZE as u64)?;
        let stack = region(STACK_VA, STACK_SIZE)?;
        self.created += 1;
        let mut t = RingThree {
            name,
            pml4,
            kernel_pml4: self.kernel_pml4,
            entry: self.entry,
            data,
            heap,
            msg,
            stack,
            regs: UserRegs::default(),
            dead: false,
            stats: InstanceStats::default(),
        };
        t.initial_registers();
        Ok(t)
    }
}

/// Maps `pages` frames from `pa` at `va` with `flags`; intermediate tables
/// are user-accessible and writable (the leaf decides).
fn map(
    mapper: &mut OffsetPageTable<'_>,
    arena: &mut Arena,
    va: u64,
    pa: u64,
    pages: u64,
    flags: F,
) -> Result<(), SandboxError> {
    let parents = F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE;
    for i in 0..pages {
        let v = va + i * PAGE;
        let page = Page::<Size4KiB>::from_start_address(VirtAddr::new(v))
            .map_err(|_| SandboxError::Map(v))?;
        let frame = PhysFrame::<Size4KiB>::from_start_address(PhysAddr::new(pa + i * PAGE))
            .map_err(|_| SandboxError::Map(v))?;
        // SAFETY: the frame is an arena frame reserved for this instance (or
        // a shared read-only runtime frame, mapped without W); the page is in
        // PML4 slot 1, which only this instance's tables use, and is mapped
        // once. The table is not the active one, so no TLB flush is needed.
        unsafe {
            mapper
                .map_to_with_table_flags(page, frame, flags, parents, arena)
                .map_err(|_| SandboxError::Map(v))?
                .ignore();
        }
    }
    Ok(())
}

/// Counters of one instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceStats {
    /// Runs (requests served).
    pub runs: u64,
    /// System calls served.
    pub syscalls: u64,
    /// Ring-3 entries (runs + system calls).
    pub entries: u64,
}

/// One TA instance in ring 3; see the module documentation.
pub struct RingThree {
    name: &'static str,
    pml4: u64,
    kernel_pml4: u64,
    entry: u64,
    /// Private copies of the writable segments: (frames, pages, offset, file bytes).
    data: Vec<(u64, u64, u64, &'static [u8])>,
    heap: u64,
    msg: u64,
    stack: u64,
    regs: UserRegs,
    dead: bool,
    /// Counters.
    pub stats: InstanceStats,
}

impl RingThree {
    /// Entry state: RIP at the runtime's entry, RSP at the top of the stack,
    /// the message area and heap in RDI/RSI and RDX/RCX.
    fn initial_registers(&mut self) {
        self.regs = UserRegs {
            rip: self.entry,
            rsp: STACK_VA + STACK_SIZE,
            rdi: MSG_VA,
            rsi: MSG_SIZE as u64,
            rdx: HEAP_VA,
            rcx: HEAP_SIZE,
            rflags: 0x2,
            ..UserRegs::default()
        };
    }

    /// The lowest address of the instance's memory in L1 (its heap), for the
    /// isolation test TA's victim address.
    pub fn heap_address(&self) -> u64 {
        self.heap
    }

    /// Loads the instance's CR3, runs it once, restores the kernel's CR3.
    fn enter_once(&mut self) -> Result<(), user::BadUserState> {
        let switch = |pml4: u64| {
            if let Ok(frame) = PhysFrame::from_start_address(PhysAddr::new(pml4)) {
                // SAFETY: both PML4s map the kernel identically (slot 0 is the
                // kernel's entry), so the code, stack and data in use stay
                // mapped across the switch; slot 1 of the instance's table
                // maps only its own frames.
                unsafe { Cr3::write(frame, Cr3::read().1) };
            }
        };
        self.stats.entries += 1;
        switch(self.pml4);
        let r = user::enter(&mut self.regs);
        switch(self.kernel_pml4);
        r
    }

    fn kill(&mut self, what: core::fmt::Arguments<'_>) -> Death {
        self.dead = true;
        let r = &self.regs;
        log::warn!(
            "TEE: TA instance {} killed: {what} (RIP {:#x} RSP {:#x} CR2 {:#x})",
            self.name,
            r.rip,
            r.rsp,
            r.cr2
        );
        Death::Fault
    }

    /// The exit message an instance left in its message area, printable only.
    fn exit_message(&self, len: u64) -> alloc::string::String {
        let len = (len as usize).min(syscall::EXIT_MESSAGE_MAX);
        let mut buf = [0u8; syscall::EXIT_MESSAGE_MAX];
        let buf = &mut buf[..len];
        copy_from(self.msg, buf);
        buf.iter()
            .map(|&b| {
                if (0x20..0x7F).contains(&b) {
                    b as char
                } else {
                    '?'
                }
            })
            .collect()
    }
}

/// Names of the CPU exceptions, by vector.
const EXCEPTIONS: [&str; 32] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
    "#GP", "#PF", "-", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "-", "-", "-", "-", "-", "-",
    "#HV", "#VC", "#SX", "-",
];

impl Sandbox for RingThree {
    fn write_message(&mut self, offset: usize, data: &[u8]) -> bool {
        match offset.checked_add(data.len()) {
            Some(end) if end <= MSG_SIZE => {
                copy_to(self.msg + offset as u64, data);
                true
            }
            _ => false,
        }
    }

    fn read_message(&self, offset: usize, buf: &mut [u8]) -> bool {
        match offset.checked_add(buf.len()) {
            Some(end) if end <= MSG_SIZE => {
                copy_from(self.msg + offset as u64, buf);
                true
            }
            _ => false,
        }
    }

    fn run(&mut self, services: &mut dyn SandboxServices) -> Result<(), Death> {
        if self.dead {
            return Err(Death::Fault);
        }
        self.stats.runs += 1;
        user::with_fpu_trapping(|| loop {
            if self.enter_once().is_err() {
                return Err(self.kill(format_args!("impossible register state")));
            }
            let v = self.regs.vector;
            if v != u64::from(syscall::VECTOR) {
                let name = EXCEPTIONS.get(v as usize).copied().unwrap_or("?");
                let code = self.regs.error_code;
                return Err(self.kill(format_args!(
                    "CPU exception {v} {name} error code {code:#x}"
                )));
            }
            self.stats.syscalls += 1;
            match self.regs.rax {
                syscall::REPLY => {
                    self.regs.rax = 0;
                    return Ok(());
                }
                syscall::RANDOM => {
                    let mut b = [0u8; 32];
                    let ok = services.random(&mut b).is_ok();
                    let w = |i: usize| {
                        let mut x = [0u8; 8];
                        x.copy_from_slice(&b[8 * i..8 * i + 8]);
                        u64::from_le_bytes(x)
                    };
                    let r = &mut self.regs;
                    r.rax = u64::from(!ok);
                    (r.rdi, r.rsi, r.rdx, r.r8) = (w(0), w(1), w(2), w(3));
                }
                syscall::EXIT => {
                    let code = self.regs.rdi;
                    let msg = self.exit_message(self.regs.rsi);
                    let out_of_memory = code == syscall::EXIT_OUT_OF_MEMORY;
                    self.kill(format_args!(
                        "{} ({msg})",
                        if out_of_memory {
                            "heap exhausted"
                        } else {
                            "panic"
                        }
                    ));
                    return Err(if out_of_memory {
                        Death::OutOfMemory
                    } else {
                        Death::Fault
                    });
                }
                n => return Err(self.kill(format_args!("unknown system call {n:#x}"))),
            }
        })
    }

    fn reset(&mut self) -> bool {
        for &(pa, pages, offset, bytes) in &self.data {
            fill(pa, 0, (pages * PAGE) as usize);
            copy_to(pa + offset, bytes);
        }
        fill(self.heap, 0, HEAP_SIZE as usize);
        fill(self.msg, 0, MSG_SIZE);
        fill(self.stack, 0, STACK_SIZE as usize);
        self.initial_registers();
        self.dead = false;
        log::info!("TEE: TA instance {} restarted", self.name);
        true
    }
}

/// Answers the start-up request's (unused) system calls: no randomness
/// before the TEE core exists.
struct NoServices;

impl SandboxServices for NoServices {
    fn random(&mut self, _: &mut [u8]) -> Result<(), lvbs_tee::TeeError> {
        Err(lvbs_tee::TeeError::Generic)
    }
}

/// The TEE's trusted applications on bare metal: one ring-3 instance per
/// built-in TA (and, in the `test-ta` image, the isolation test TA, whose
/// victim address is the key manager instance's heap), each started with
/// the root key derived for its own UUID. A TA whose instance cannot be
/// created is left out (the client then gets ITEM_NOT_FOUND), with an error
/// in the log.
pub fn isolated_apps(
    measurement: &[u8; 48],
    sealing_root: &[u8; 32],
) -> Vec<alloc::boxed::Box<dyn lvbs_tee::TrustedApp>> {
    use alloc::boxed::Box;
    use lvbs_tee::platform::ta_root_key;
    use lvbs_tee::sandbox::IsolatedApp;

    let mut sandboxes = match Sandboxes::new() {
        Ok(s) => s,
        Err(e) => {
            log::error!("TEE: no TA instances: {e}");
            return Vec::new();
        }
    };
    let mut apps: Vec<Box<dyn lvbs_tee::TrustedApp>> = Vec::new();
    let mut victim = 0;
    for (uuid, name) in lvbs_tee::ta::BUILTIN {
        let instance = match sandboxes.create(name) {
            Ok(i) => i,
            Err(e) => {
                log::error!("TEE: TA {name} not started: {e}");
                continue;
            }
        };
        if uuid == lvbs_tee::ta::key_manager::UUID {
            victim = instance.heap_address();
        }
        let root = ta_root_key(sealing_root, &uuid);
        let app = IsolatedApp::start(instance, uuid, name, measurement, &root, 0, &mut NoServices);
        if app.is_dead() {
            log::error!("TEE: TA {name} did not start");
        }
        apps.push(Box::new(app));
    }
    #[cfg(feature = "test-ta")]
    {
        use lvbs_tee::sandbox::attack_ta;
        let name = "isolation-test";
        match sandboxes.create(name) {
            Ok(instance) => {
                let root = ta_root_key(sealing_root, &attack_ta::UUID);
                let app = IsolatedApp::start(
                    instance,
                    attack_ta::UUID,
                    name,
                    measurement,
                    &root,
                    victim,
                    &mut NoServices,
                )
                .restartable(measurement, &root, victim);
                log::warn!(
                    "TEE: test image: isolation test TA started (victim: key-manager heap at {victim:#x}), restartable"
                );
                apps.push(Box::new(app));
            }
            Err(e) => log::error!("TEE: isolation test TA not started: {e}"),
        }
    }
    let _ = victim;
    log::info!(
        "TEE: {} ring-3 TA instances: {} KiB heap, {} KiB stack, {} KiB message area each; runtime text+rodata {} KiB shared; arena {} of {} KiB used",
        sandboxes.created,
        HEAP_SIZE >> 10,
        STACK_SIZE >> 10,
        MSG_SIZE >> 10,
        sandboxes.shared_bytes() >> 10,
        (sandboxes.arena.next - ARENA.0.get() as u64) >> 10,
        ARENA_SIZE >> 10
    );
    apps
}
