//! The lvbs-tdx boot image, shared by the SVM emulator, the paravisor and the
//! probe guest (`docs/emulator-contract.md`):
//!
//! * [`layout`]: the TD guest-physical layout constants of the contract;
//! * [`BootInfo`]: the page at [`BootInfo::GPA`] the emulator writes for L1;
//! * [`TdImage`]: the container `cargo xtask run` packs and the emulator receives
//!   as its PVH module (paravisor ELF + L2 guest ELF);
//! * [`load_plan`]: the `PT_LOAD` segments of a static ELF, checked against a
//!   GPA window, and [`TdLayout`]: both programs plus BootInfo, with the page
//!   set that is added (and measured) before the TD starts;
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
mod image;
pub mod layout;
mod td;

pub use bootinfo::{BootInfo, BootInfoError};
pub use elf::{load_plan, ElfError, LoadPlan, Segment};
pub use igvm::{IgvmError, IgvmOp, IgvmTd};
pub use image::{ImageError, ImageKind, TdImage, TdImageBuilder, TdImageEntry};
pub use td::{LayoutError, LoadPage, PagePart, TdLayout};
