//! The lvbs-tdx boot image, shared by the SVM emulator, the paravisor, the L2
//! guests and the host loader (`docs/emulator-contract.md`,
//! `docs/attestation.md`):
//!
//! * [`layout`]: the TD guest-physical layout constants of the contract;
//! * [`BootInfo`]: the page at [`BootInfo::GPA`] (an IGVM parameter area) L1 reads;
//! * [`load_plan`]: the `PT_LOAD` segments of a static ELF, checked against a
//!   GPA window, and [`TdLayout`]: the paravisor, the L2 kernel, its command
//!   line and initrd plus BootInfo and the reset page, with the pages added
//!   (measured or not) before the TD starts, in load order;
//! * [`linux`]: the layout of a TD whose L2 is a Linux `vmlinux`;
//! * [`igvm`]: a bounded `no_std` reader of the IGVM files `loader build`
//!   writes (the emulator boots them), and the TDX reset page.
//!
//! Every parser here treats its input as hostile: bounds are checked, sizes
//! are capped, and nothing panics on malformed input.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod bootinfo;
mod elf;
pub mod igvm;
pub mod layout;
pub mod linux;
mod td;

pub use bootinfo::{BootInfo, BootInfoError};
pub use elf::{load_plan, ElfError, LoadPlan, Segment};
pub use igvm::{IgvmError, IgvmOp, IgvmTd};
pub use td::{ImageKind, LayoutError, LoadPage, PagePart, TdLayout};
