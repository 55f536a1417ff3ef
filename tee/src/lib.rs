//! lvbs-tee: the TEE of the lvbs-tdx paravisor, as pure logic.
//!
//! The guest (L2) reaches trusted applications with the OP-TEE message ABI
//! carried on the LVBS call 0x1FFF0 (`heki-lvbs-abi.md` §7). This crate
//! holds everything behind that call that does not depend on the platform:
//!
//! * [`msg`]: the transport (SMC-argument page) and the `optee_msg_arg`
//!   wire format, with a defensive parser and the serializer for replies;
//! * [`dispatch`]: the TEE core — SMC functions, message commands
//!   (OPEN_SESSION, INVOKE_COMMAND, CLOSE_SESSION, CANCEL, REGISTER_SHM,
//!   UNREGISTER_SHM), sessions, registered shared memory, and the
//!   [`TrustedApp`] interface;
//! * [`ta`]: four trusted applications — secure log, key manager,
//!   credential manager, virtual HSM;
//! * [`client`]: a GlobalPlatform-Client-API-shaped library that builds the
//!   argument pages (for the probe guest, and for tests);
//! * [`fuzz`]: [`fuzz::handle_call`], the raw-bytes entry point for fuzzers.
//!
//! Guest memory is reached only through [`GuestMemory`]: buffers are copied
//! in before a TA runs and copied out after; a TA never sees guest memory.
//!
//! # Isolation of trusted applications
//!
//! **Design.** Each TA runs in its own address space in L1 user mode (ring
//! 3 of the paravisor, one page table per TA instance, as litebox does for
//! VTL1), not in a separate L2 VM: that needs no second VM's worth of
//! TDX-module state and keeps an INVOKE to one privilege switch each way.
//!
//! **What this crate provides for it.** [`sandbox`]: the message format
//! between the core and an isolated instance, the core-side proxy
//! ([`sandbox::IsolatedApp`], a [`TrustedApp`] that checks every reply
//! field and turns a dead instance into `TARGET_DEAD` with origin TEE) and
//! the TA-side loop ([`sandbox::Instance`]). The bare-metal paravisor
//! (`paravisor-boot`) runs the TA runtime (`tee/runtime`) in ring 3 behind
//! it, one instance per TA with its own page tables, heap and stack; see
//! `docs/tee.md` for what the hardware enforces there and the remaining
//! gaps (no bound on run time).
//!
//! **Isolation by ownership** holds in both modes: each TA is a single
//! object that owns all of its state; there are no shared mutable globals
//! (`#![forbid(unsafe_code)]`, no `static mut`, no interior-mutable
//! statics). A TA is called with `&mut self`, a private copy of its
//! parameters and a [`TaEnv`] that exposes only an RNG, the measurement and
//! keys derived for *that* TA's UUID — no reference to the core, to guest
//! memory, to EPT or paravisor types, or to other TAs. Sealing and tag keys
//! are derived from the platform root per TA UUID, so one TA cannot compute
//! another's keys; an isolated instance is only ever given its own root.
//! In-process (host tests, model scenarios, [`Tee::with_builtin_apps`]) this
//! is the only boundary; the TAs are also written so that guest input
//! cannot make them panic (checked arithmetic, no unchecked indexing,
//! property tests over random inputs).
//!
//! # Errors and origins
//!
//! | situation | code | origin |
//! |---|---|---|
//! | argument page unreadable / unwritable | R8 = `-EFAULT` | — |
//! | wrong function id, PFN overflow | R8 = `-EINVAL` | — |
//! | unknown SMC function | `args[0]` = `UNKNOWN_FUNCTION` | — |
//! | `optee_msg_arg` unreadable or misaligned | `args[0]` = `EBADADDR` | — |
//! | unknown message command (incl. DO_BOTTOM_HALF, STOP_ASYNC_NOTIF) | `args[0]` = `EBADCMD`, `ret` = `NOT_IMPLEMENTED` | COMMS |
//! | `num_params` > 6, bad attribute, META misuse, bad page list | `BAD_PARAMETERS` | COMMS |
//! | unknown TA UUID, unknown session, unknown shm cookie at UNREGISTER | `ITEM_NOT_FOUND` | TEE |
//! | login `TRUSTED_APP` from the guest | `ACCESS_DENIED` | TEE |
//! | sessions per TA at cap | `BUSY` | TEE |
//! | sessions in total, shm regions or shm pages at cap | `OUT_OF_MEMORY` | TEE |
//! | input memref or shm region above its cap | `EXCESS_DATA` | TEE |
//! | shm cookie already registered | `ACCESS_CONFLICT` | TEE |
//! | anything the TA returns (incl. `SHORT_BUFFER` with the size written back) | TA's code | TRUSTED_APP |
//! | an isolated TA died (fault, panic, bad reply), now or before | `TARGET_DEAD` | TEE |
//! | an isolated TA's heap would not fit the request, or ran out | `OUT_OF_MEMORY` | TEE |
//!
//! # Limits
//!
//! Core caps are in [`Limits`] (defaults: 8 sessions per TA, 32 in total,
//! 32 shm regions of at most 256 pages and 2048 pages in total, 64 KiB per
//! memref). Each TA documents its own (log size, key count and memory,
//! credentials, objects, PIN and record sizes).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

extern crate alloc;

pub mod client;
pub mod dispatch;
pub mod error;
pub mod fuzz;
pub mod mem;
pub mod msg;
pub mod params;
pub mod platform;
pub mod sandbox;
pub mod ta;
pub mod uuid;

pub use dispatch::{ClientIdentity, Limits, TaEnv, Tee, TrustedApp};
pub use error::{Origin, TeeError};
pub use mem::{GuestMemory, MemError, VecMemory};
pub use params::{Memref, ParamType, Params, TaParam};
pub use platform::{Measurement, Platform, StaticPlatform};
pub use uuid::Uuid;
