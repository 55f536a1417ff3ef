//! Property tests of the state machine: whatever a (hostile) guest asks, in
//! whatever order, no page becomes writable and supervisor-executable, sealed
//! pages never change, and after end of boot guest requests never loosen.

use ept::{Authority, Ept, GpaRange, PageState, Policy, SealedKind};
use proptest::prelude::*;
use tdcall::attr::L2Attr;
use tdcall::{L2Vm, Registers, Tdcall};

/// A TDX module stand-in that accepts every call (the state machine is under
/// test here; the planner is checked against the real model in tests/scenarios).
struct AcceptAll;

impl Tdcall for AcceptAll {
    fn tdcall(&mut self, regs: &mut Registers) {
        regs.rax = 0;
    }
}

fn state() -> impl Strategy<Value = PageState> {
    prop_oneof![
        Just(PageState::Unmapped),
        Just(PageState::KernelData),
        Just(PageState::KernelText),
        Just(PageState::Rodata),
        Just(PageState::UserExecutable),
        Just(PageState::Sealed(SealedKind::ReadOnly)),
        Just(PageState::Sealed(SealedKind::Text)),
        Just(PageState::ParavisorPrivate),
    ]
}

fn authority() -> impl Strategy<Value = Authority> {
    prop_oneof![
        Just(Authority::Guest),
        Just(Authority::Validated),
        Just(Authority::Paravisor)
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Request {
        first: u64,
        pages: u64,
        to: PageState,
        who: Authority,
    },
    EndBoot,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u64..32, 1u64..8, state(), authority())
            .prop_map(|(first, pages, to, who)| Step::Request { first, pages, to, who }),
        1 => Just(Step::EndBoot),
    ]
}

proptest! {
    #[test]
    fn invariants_hold(steps in proptest::collection::vec(step(), 1..60), mbec in any::<bool>()) {
        let policy = Policy { mbec, user_exec_on_readable: true };
        let mut ept = Ept::new(L2Vm::Vm1, policy);
        for s in steps {
            match s {
                Step::EndBoot => ept.end_boot(),
                Step::Request { first, pages, to, who } => {
                    let range = GpaRange::new(first * 0x1000, (first + pages) * 0x1000).unwrap();
                    let before: Vec<_> = range.pages().map(|p| (ept.state(p), ept.attr(p))).collect();
                    let locked = ept.phase() == ept::Phase::Locked;
                    let result = ept.transition(&mut AcceptAll, range, to, who);
                    for (page, (old_state, old_attr)) in range.pages().zip(before) {
                        let (new_state, new_attr) = (ept.state(page), ept.attr(page));
                        prop_assert!(!(new_attr.contains(L2Attr::W) && new_attr.contains(L2Attr::XS)));
                        if matches!(old_state, PageState::Sealed(_)) {
                            prop_assert_eq!(new_state, old_state);
                        }
                        if (old_state == PageState::ParavisorPrivate) != (new_state == PageState::ParavisorPrivate) {
                            prop_assert_eq!(who, Authority::Paravisor);
                        }
                        if locked && who == Authority::Guest {
                            prop_assert!(old_attr.contains(new_attr), "guest loosened {page:#x} after boot");
                        }
                        if result.is_err() {
                            prop_assert_eq!(new_state, old_state, "a refused request changed nothing");
                        }
                    }
                }
            }
        }
    }
}
