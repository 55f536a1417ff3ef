//! Checked TDG.VP.RD / TDG.VP.WR of L2 VMCS and per-VM fields (§2.4, §2.5, §2.7).
//!
//! Every access returns a [`FieldAccessError`] that names the field, so a setup
//! or exit-handling failure says *which* write the module refused.

use core::fmt;

use tdcall::field::{vmcs, FieldId, VmcsField};
use tdcall::leaves::{FieldWrite, VpRd, VpWr};
use tdcall::{L2Vm, Tdcall, TdxError};

/// A TDG.VP.RD or TDG.VP.WR the TDX module refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldAccessError {
    /// Human-readable field name (the VMCS field name for VMCS classes).
    pub name: &'static str,
    /// The field id that was used.
    pub field: FieldId,
    /// `true` for a write, `false` for a read.
    pub write: bool,
    /// The module's status.
    pub error: TdxError,
}

impl fmt::Display for FieldAccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.write { "TDG.VP.WR" } else { "TDG.VP.RD" };
        write!(
            f,
            "{op} {} ({:?}) failed: {}",
            self.name, self.field, self.error
        )
    }
}

/// The name `tdcall::field::vmcs` gives `field`, or `"VMCS field"` if unnamed.
pub fn vmcs_name(field: VmcsField) -> &'static str {
    vmcs::ALL
        .iter()
        .find(|(_, f)| *f == field)
        .map(|(n, _)| *n)
        .unwrap_or("VMCS field")
}

/// TDG.VP.WR of `field` with `value` under `mask`; returns the old value (§2.4).
pub fn write<T: Tdcall + ?Sized>(
    tdcall: &mut T,
    name: &'static str,
    field: FieldId,
    value: u64,
    mask: u64,
) -> Result<u64, FieldAccessError> {
    tdcall::call(tdcall, &VpWr(FieldWrite { field, value, mask })).map_err(|error| {
        FieldAccessError {
            name,
            field,
            write: true,
            error,
        }
    })
}

/// TDG.VP.RD of `field` (§1.4).
pub fn read<T: Tdcall + ?Sized>(
    tdcall: &mut T,
    name: &'static str,
    field: FieldId,
) -> Result<u64, FieldAccessError> {
    tdcall::call(tdcall, &VpRd(field))
        .map(|v| v.value)
        .map_err(|error| FieldAccessError {
            name,
            field,
            write: false,
            error,
        })
}

/// TDG.VP.WR of an L2 VMCS field of `vm` (§2.5).
pub fn write_vmcs<T: Tdcall + ?Sized>(
    tdcall: &mut T,
    vm: L2Vm,
    field: VmcsField,
    value: u64,
    mask: u64,
) -> Result<u64, FieldAccessError> {
    write(
        tdcall,
        vmcs_name(field),
        FieldId::l2_vmcs(vm, field),
        value,
        mask,
    )
}

/// TDG.VP.RD of an L2 VMCS field of `vm` (§2.5).
pub fn read_vmcs<T: Tdcall + ?Sized>(
    tdcall: &mut T,
    vm: L2Vm,
    field: VmcsField,
) -> Result<u64, FieldAccessError> {
    read(tdcall, vmcs_name(field), FieldId::l2_vmcs(vm, field))
}
