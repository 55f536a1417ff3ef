//! The `ept` planner and applier against the TDX-module model: planned
//! TDG.MEM.PAGE.ATTR.WR calls produce exactly the requested attributes, use
//! 2 MiB calls where possible, survive TDX_OPERAND_BUSY, and fail closed.

use ept::{Authority, Ept, EptError, GpaRange, PageState, Policy, SealedKind};
use proptest::prelude::*;
use tdcall::attr::L2Attr;
use tdcall::{L2Vm, Leaf, StatusCode, TdxStatus};
use tdx_model::engine::ScriptedEngine;
use tdx_model::host::ScriptedHost;
use tdx_model::{TdConfig, TdxModel};

const MIB: u64 = 1 << 20;
/// 4 KiB-mapped (added at build) below, 2 MiB-mapped pending above.
const ACCEPTED: u64 = 4 * MIB;

type Model = TdxModel<ScriptedHost, ScriptedEngine>;

fn model() -> Model {
    let mut c = TdConfig::new(16 * MIB);
    c.accepted_bytes = ACCEPTED;
    TdxModel::new(c, ScriptedHost::default(), ScriptedEngine::new(0))
}

fn with_valid(a: L2Attr) -> L2Attr {
    if a.is_empty() {
        L2Attr::empty()
    } else {
        a | L2Attr::VALID
    }
}

fn assert_matches(m: &Model, ept: &Ept, range: GpaRange) {
    for p in range.pages() {
        assert_eq!(
            m.page_attr(p, L2Vm::Vm1),
            with_valid(ept.attr(p)),
            "page {p:#x}"
        );
    }
}

#[test]
fn whole_2m_blocks_take_one_call() {
    let mut m = model();
    let mut ept = Ept::new(L2Vm::Vm1, Policy::LVBS);
    let range = GpaRange::new(8 * MIB, 12 * MIB).unwrap();
    let r = ept
        .transition(&mut m, range, PageState::KernelData, Authority::Guest)
        .unwrap();
    assert_eq!((r.calls, r.calls_2m, r.splits), (2, 2, 0));
    assert_eq!(m.stats().invept[1], 1, "one flush");
    assert_matches(&m, &ept, range);
    // Text inside the block: 4 KiB calls for the changed pages only.
    let text = GpaRange::new(8 * MIB + 0x3000, 8 * MIB + 0x5000).unwrap();
    let r = ept
        .transition(&mut m, text, PageState::KernelText, Authority::Guest)
        .unwrap();
    assert_eq!((r.calls, r.calls_2m), (2, 0));
    assert_matches(&m, &ept, range);
    assert_eq!(
        m.page_attr(8 * MIB + 0x3000, L2Vm::Vm1),
        L2Attr::VALID | L2Attr::R | L2Attr::XS | L2Attr::XU
    );
}

#[test]
fn host_4k_leaves_split_a_2m_call() {
    let mut m = model();
    let mut ept = Ept::new(L2Vm::Vm1, Policy::LVBS);
    let range = GpaRange::new(2 * MIB, 4 * MIB).unwrap();
    let r = ept
        .transition(&mut m, range, PageState::Rodata, Authority::Guest)
        .unwrap();
    assert_eq!((r.splits, r.calls, r.calls_2m), (1, 512, 0));
    assert_matches(&m, &ept, range);
}

#[test]
fn busy_is_retried() {
    let mut m = model();
    m.inject_busy(Leaf::MemPageAttrWr, 5);
    let mut ept = Ept::new(L2Vm::Vm1, Policy::LVBS);
    let range = GpaRange::new(0x10_0000, 0x10_4000).unwrap();
    let r = ept
        .transition(&mut m, range, PageState::KernelData, Authority::Guest)
        .unwrap();
    assert_eq!((r.busy_retries, r.calls), (5, 4));
    assert_matches(&m, &ept, range);
}

#[test]
fn failure_rolls_back_loosening() {
    let mut m = model();
    let mut ept = Ept::new(L2Vm::Vm1, Policy::LVBS);
    let range = GpaRange::new(0x10_0000, 0x10_8000).unwrap();
    ept.transition(&mut m, range, PageState::Rodata, Authority::Guest)
        .unwrap();
    ept.end_boot();
    // A validated loosening (Rodata → KernelData) fails at the fourth call.
    let fail = TdxStatus::new(StatusCode::L2_SEPT_WALK_FAILED, 0x1_0000);
    m.inject_status(Leaf::MemPageAttrWr, 3, fail);
    let err = ept
        .transition(&mut m, range, PageState::KernelData, Authority::Validated)
        .unwrap_err();
    let EptError::Apply(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.error.code(), StatusCode::L2_SEPT_WALK_FAILED);
    assert_eq!(e.restored.len(), 3);
    assert!(e.removed.is_empty() && e.unknown.is_empty());
    for p in range.pages() {
        assert_eq!(ept.state(p), PageState::Rodata);
        assert_eq!(
            m.page_attr(p, L2Vm::Vm1),
            L2Attr::VALID | L2Attr::R | L2Attr::XU,
            "{p:#x} not loosened"
        );
    }
}

#[test]
fn refused_requests_issue_no_calls() {
    let mut m = model();
    let mut ept = Ept::new(L2Vm::Vm1, Policy::LVBS);
    let range = GpaRange::new(0x10_0000, 0x10_2000).unwrap();
    ept.transition(
        &mut m,
        range,
        PageState::Sealed(SealedKind::Text),
        Authority::Guest,
    )
    .unwrap();
    let calls = m.stats().attr_writes;
    let err = ept
        .transition(&mut m, range, PageState::KernelData, Authority::Paravisor)
        .unwrap_err();
    assert!(matches!(
        err,
        EptError::Policy(ept::PolicyError::Sealed { page: 0x10_0000 })
    ));
    assert_eq!(m.stats().attr_writes, calls);
}

fn state() -> impl Strategy<Value = PageState> {
    prop_oneof![
        Just(PageState::Unmapped),
        Just(PageState::KernelData),
        Just(PageState::KernelText),
        Just(PageState::Rodata),
        Just(PageState::UserExecutable),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Applying the planned calls to the model gives exactly the requested
    /// attributes, for random sequences of ranges crossing 2 MiB boundaries and
    /// the 4 KiB/2 MiB host-mapping boundary, with random BUSY injections.
    #[test]
    fn plans_produce_exactly_the_requested_attributes(
        reqs in proptest::collection::vec((0u64..1536, 1u64..1100, state(), 0u32..3), 1..12),
        mbec in any::<bool>(),
    ) {
        let mut m = model();
        let mut ept = Ept::new(L2Vm::Vm1, Policy { mbec, user_exec_on_readable: true });
        let mut seen_min = u64::MAX;
        let mut seen_max = 0;
        for (first, pages, to, busy) in reqs {
            let start = 2 * MIB + first * 0x1000;
            let range = GpaRange::new(start, start + pages * 0x1000).unwrap();
            m.inject_busy(Leaf::MemPageAttrWr, busy);
            let before = m.stats().attr_writes;
            let report = ept.transition(&mut m, range, to, Authority::Guest).unwrap();
            prop_assert_eq!(m.stats().attr_writes - before, report.calls as u64);
            seen_min = seen_min.min(range.start);
            seen_max = seen_max.max(range.end);
        }
        let all = GpaRange::new(seen_min, seen_max).unwrap();
        for p in all.pages() {
            prop_assert_eq!(m.page_attr(p, L2Vm::Vm1), with_valid(ept.attr(p)), "page {:#x}", p);
        }
    }
}
