//! Self-checks the paravisor runs before it enters L2: deliberately illegal
//! TDCALLs that must fail with the exact status the TDX module gives (the
//! emulator must not hide L1 bugs, design.md §3), and read-backs of what boot
//! programmed. Each prints `check <name>: PASS|FAIL <detail>`.

use alloc::format;
use alloc::string::String;

use tdcall::field::{vmcs, FieldId};
use tdcall::leaves::{
    FieldWrite, MemPageAccept, MemPageAttrRd, MemPageAttrWr, VpEnter, VpRd, VpWr,
};
use tdcall::{
    AttrWrFlags, GpaAttr, GpaMapping, InvdTranslations, L2Attr, L2Vm, OperandId, PageLevel,
    StatusCode, Tdcall, TdxError, VpEnterFlags,
};

use crate::bootinfo::L2Layout;
use crate::memory::{L2_FULL, L2_RO_TEST};

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Short name, no spaces.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, passed: bool, detail: String) -> Self {
        let c = Check {
            name,
            passed,
            detail,
        };
        c.report();
        c
    }

    /// Logs the `check <name>: PASS|FAIL <detail>` line.
    pub fn report(&self) {
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        log::info!("check {}: {verdict} {}", self.name, self.detail);
    }
}

/// Passed and failed counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
}

impl Tally {
    /// Counts `c`.
    pub fn add(&mut self, c: &Check) {
        if c.passed {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }
}

/// `Err(e)` with `e.code() == code` (and operand `op`, if given) passes.
fn expect_error<R: core::fmt::Debug>(
    result: Result<R, TdxError>,
    code: StatusCode,
    op: Option<OperandId>,
) -> (bool, String) {
    match result {
        Err(e) if e.code() == code && (op.is_none() || e.operand_id() == op) => {
            (true, format!("{e}"))
        }
        Err(e) => (false, format!("wrong status {e}")),
        Ok(v) => (false, format!("succeeded ({v:?})")),
    }
}

fn expect_check<R: core::fmt::Debug>(
    name: &'static str,
    result: Result<R, TdxError>,
    code: StatusCode,
    op: Option<OperandId>,
    tally: &mut Tally,
) {
    let (passed, detail) = expect_error(result, code, op);
    tally.add(&Check::new(name, passed, detail));
}

/// Checks that need no L2 setup yet; run them before `setup_l2_vm` (the
/// TDG.VP.ENTER one needs the vAPIC page still unset).
pub fn before_setup<T: Tdcall + ?Sized>(
    t: &mut T,
    vm: L2Vm,
    guest_state_gpa: u64,
    shared_bit: u64,
    free_page: u64,
    tally: &mut Tally,
) {
    // PIN_BASED_CTLS has an L1 write mask of 0 (§2.5). Write back the current
    // value, so even a wrongly accepted write changes nothing.
    let pin = FieldId::l2_vmcs(vm, vmcs::PIN_BASED_CTLS);
    let current = tdcall::call(t, &VpRd(pin)).map(|v| v.value).unwrap_or(0);
    expect_check(
        "vp_wr_readonly_field",
        tdcall::call(
            t,
            &VpWr(FieldWrite {
                field: pin,
                value: current,
                mask: u64::MAX,
            }),
        ),
        StatusCode::METADATA_FIELD_NOT_WRITABLE,
        None,
        tally,
    );

    let enter = |gpa| VpEnter {
        flags: VpEnterFlags {
            vm,
            invd: InvdTranslations::None,
        },
        guest_state_gpa: gpa,
    };
    expect_check(
        "vp_enter_misaligned_buffer",
        tdcall::call(t, &enter(guest_state_gpa + 0x80)),
        StatusCode::OPERAND_INVALID,
        Some(OperandId::RDX),
        tally,
    );

    expect_check(
        "vp_enter_without_vapic",
        tdcall::call(t, &enter(guest_state_gpa)),
        StatusCode::OPERAND_INVALID,
        Some(OperandId::L2_VAPIC_GPA),
        tally,
    );

    expect_check(
        "accept_shared_gpa",
        tdcall::call(
            t,
            &MemPageAccept {
                gpa: free_page | shared_bit,
                level: PageLevel::Size4K,
            },
        ),
        StatusCode::OPERAND_INVALID,
        Some(OperandId::RCX),
        tally,
    );
}

fn attr_of<T: Tdcall + ?Sized>(t: &mut T, vm: L2Vm, gpa: u64) -> Result<L2Attr, TdxError> {
    tdcall::call(t, &MemPageAttrRd { gpa }).map(|a| a.attr.slot(vm))
}

/// Checks of the L2 aliases; run after aliasing.
pub fn after_alias<T: Tdcall + ?Sized>(
    t: &mut T,
    vm: L2Vm,
    layout: &L2Layout,
    l1_page: u64,
    tally: &mut Tally,
) {
    let probes = [
        (layout.ro_page, L2_RO_TEST),
        (layout.base, L2_FULL),
        (layout.pml4, L2_FULL),
        (l1_page, L2Attr::empty()),
    ];
    let mut detail = String::new();
    let mut ok = true;
    for (gpa, want) in probes {
        match attr_of(t, vm, gpa) {
            Ok(got) => {
                ok &= got == want;
                detail += &format!("{gpa:#x}={:#06x} ", got.bits());
            }
            Err(e) => {
                ok = false;
                detail += &format!("{gpa:#x}: {e} ");
            }
        }
    }
    tally.add(&Check::new("attr_rd_l2_aliases", ok, detail));

    // W without R is illegal (§3.2): the module must refuse and change nothing.
    let req = MemPageAttrWr {
        mapping: GpaMapping::new(layout.ro_page, PageLevel::Size4K),
        attr: GpaAttr::for_vm(vm, L2Attr::VALID | L2Attr::W),
        flags: AttrWrFlags::for_vm(vm, L2Attr::R | L2Attr::W, false),
    };
    let (mut passed, mut detail) =
        expect_error(tdcall::call(t, &req), StatusCode::PAGE_ATTR_INVALID, None);
    match attr_of(t, vm, layout.ro_page) {
        Ok(a) if a == L2_RO_TEST => {}
        other => {
            passed = false;
            detail += &format!("; RO page attribute afterwards {other:?}");
        }
    }
    tally.add(&Check::new("attr_wr_illegal_w_without_r", passed, detail));
}
