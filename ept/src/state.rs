//! The page-state machine and its transition rules.
#![forbid(unsafe_code)]

use crate::Policy;
use tdcall::attr::L2Attr;

/// What an immutable page was sealed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SealedKind {
    /// Read-only data.
    ReadOnly,
    /// Supervisor-executable text.
    Text,
}

/// The state of one 4 KiB page of L2 memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageState {
    /// No alias: L2 cannot touch it.
    Unmapped,
    /// Kernel data: R+W.
    KernelData,
    /// Kernel (or validated module) text: R+Xs.
    KernelText,
    /// Read-only data: R.
    Rodata,
    /// User-executable: R+Xu.
    UserExecutable,
    /// Immutable for the rest of the TD's life.
    Sealed(SealedKind),
    /// The paravisor's own memory: never accessible to L2.
    ParavisorPrivate,
}

impl PageState {
    /// The attribute before policy adjustments (MBEC, LVBS Xu convention).
    pub fn base_attr(self) -> L2Attr {
        match self {
            PageState::Unmapped | PageState::ParavisorPrivate => L2Attr::empty(),
            PageState::KernelData => L2Attr::R | L2Attr::W,
            PageState::KernelText | PageState::Sealed(SealedKind::Text) => L2Attr::R | L2Attr::XS,
            PageState::Rodata | PageState::Sealed(SealedKind::ReadOnly) => L2Attr::R,
            PageState::UserExecutable => L2Attr::R | L2Attr::XU,
        }
    }
}

/// Who asks for a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority {
    /// The guest kernel during boot (HEKI PROTECT_MEMORY and friends).
    Guest,
    /// A HEKI flow the paravisor validated (signed module, registered patch).
    Validated,
    /// The paravisor itself (its own memory, I/O sharing).
    Paravisor,
}

/// The boot phase of the protected kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before SIGNAL_END_OF_BOOT.
    Boot,
    /// After it: only validated requests may loosen.
    Locked,
}

/// A refused transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// The page is sealed.
    Sealed {
        /// Page GPA.
        page: u64,
    },
    /// Only the paravisor may map or unmap its own memory.
    ParavisorPrivate {
        /// Page GPA.
        page: u64,
    },
    /// After end of boot the request would loosen a page without validation.
    LoosenAfterBoot {
        /// Page GPA.
        page: u64,
    },
    /// The request touches more pages than allowed.
    TooLarge,
}

impl PolicyError {
    pub(crate) fn at(self, page: u64) -> Self {
        match self {
            PolicyError::Sealed { .. } => PolicyError::Sealed { page },
            PolicyError::ParavisorPrivate { .. } => PolicyError::ParavisorPrivate { page },
            PolicyError::LoosenAfterBoot { .. } => PolicyError::LoosenAfterBoot { page },
            PolicyError::TooLarge => PolicyError::TooLarge,
        }
    }
}

/// The transition rules for one page.
pub fn check_transition(
    phase: Phase,
    policy: Policy,
    from: PageState,
    to: PageState,
    authority: Authority,
) -> Result<(), PolicyError> {
    if from == to {
        return Ok(());
    }
    if matches!(from, PageState::Sealed(_)) {
        return Err(PolicyError::Sealed { page: 0 });
    }
    let private = from == PageState::ParavisorPrivate || to == PageState::ParavisorPrivate;
    if private && authority != Authority::Paravisor {
        return Err(PolicyError::ParavisorPrivate { page: 0 });
    }
    let (old, new) = (policy.attr(from), policy.attr(to));
    let loosens = !old.contains(new);
    if phase == Phase::Locked && loosens && authority == Authority::Guest {
        return Err(PolicyError::LoosenAfterBoot { page: 0 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [PageState; 8] = [
        PageState::Unmapped,
        PageState::KernelData,
        PageState::KernelText,
        PageState::Rodata,
        PageState::UserExecutable,
        PageState::Sealed(SealedKind::ReadOnly),
        PageState::Sealed(SealedKind::Text),
        PageState::ParavisorPrivate,
    ];

    #[test]
    fn no_state_is_writable_and_supervisor_executable() {
        for p in [
            Policy::LVBS,
            Policy {
                mbec: false,
                user_exec_on_readable: true,
            },
        ] {
            for s in ALL {
                let a = p.attr(s);
                assert!(!(a.contains(L2Attr::W) && a.contains(L2Attr::XS)), "{s:?}");
            }
        }
    }

    #[test]
    fn lvbs_convention() {
        let p = Policy::LVBS;
        assert_eq!(
            p.attr(PageState::KernelData),
            L2Attr::R | L2Attr::W | L2Attr::XU
        );
        assert_eq!(
            p.attr(PageState::KernelText),
            L2Attr::R | L2Attr::XS | L2Attr::XU
        );
        assert_eq!(p.attr(PageState::Rodata), L2Attr::R | L2Attr::XU);
        let strict = Policy {
            mbec: true,
            user_exec_on_readable: false,
        };
        assert_eq!(strict.attr(PageState::Rodata), L2Attr::R);
        assert_eq!(
            strict.attr(PageState::UserExecutable),
            L2Attr::R | L2Attr::XU
        );
        let no_mbec = Policy {
            mbec: false,
            user_exec_on_readable: false,
        };
        assert_eq!(no_mbec.attr(PageState::UserExecutable), L2Attr::R);
    }

    #[test]
    fn rules() {
        let p = Policy::LVBS;
        use Authority::*;
        use PageState::*;
        let ok = |ph, f, t, a| check_transition(ph, p, f, t, a).is_ok();
        assert!(ok(Phase::Boot, Unmapped, KernelText, Guest));
        assert!(!ok(
            Phase::Boot,
            Sealed(SealedKind::Text),
            KernelData,
            Paravisor
        ));
        assert!(!ok(
            Phase::Boot,
            Sealed(SealedKind::ReadOnly),
            Unmapped,
            Validated
        ));
        assert!(!ok(Phase::Boot, KernelData, ParavisorPrivate, Guest));
        assert!(!ok(Phase::Boot, ParavisorPrivate, KernelData, Validated));
        assert!(ok(Phase::Boot, Unmapped, ParavisorPrivate, Paravisor));
        // After end of boot: tightening is fine, loosening needs validation.
        assert!(ok(Phase::Locked, KernelData, Rodata, Guest));
        assert!(ok(
            Phase::Locked,
            KernelText,
            Sealed(SealedKind::Text),
            Guest
        ));
        assert!(!ok(Phase::Locked, Rodata, KernelData, Guest));
        assert!(!ok(Phase::Locked, KernelData, KernelText, Guest));
        assert!(ok(Phase::Locked, KernelData, KernelText, Validated));
        assert!(ok(Phase::Locked, KernelText, KernelData, Validated));
    }
}
