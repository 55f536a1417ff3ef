//! Model scenarios (design.md §5 tier 2): the paravisor core (`paravisor`)
//! against the TDX-module model (`tdx-model`) with its scripted L2 engine and
//! scripted host. One module per exit handler; every scenario asserts concrete
//! register values, host-side records, engine trace entries or injected events.
//!
//! Everything here is test code; the crate has no non-test items.

#[cfg(test)]
mod harness;

#[cfg(test)]
mod attacks;
#[cfg(test)]
mod cpuid;
#[cfg(test)]
mod cr;
#[cfg(test)]
mod desc;
#[cfg(test)]
mod enter_loop;
#[cfg(test)]
mod ept;
#[cfg(test)]
mod ept_planner;
#[cfg(test)]
mod heki;
#[cfg(test)]
mod hlt;
#[cfg(test)]
mod interrupts;
#[cfg(test)]
mod io;
#[cfg(test)]
mod measure;
#[cfg(test)]
mod mmio;
#[cfg(test)]
mod msr;
#[cfg(test)]
mod setup;
#[cfg(test)]
mod tee;
#[cfg(test)]
mod vmcall;
