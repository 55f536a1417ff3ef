//! The verifier: a TDREPORT and its event log against the image's expected
//! measurements and the verifier's nonce.

use paravisor::measure::{
    self, report, AdmissionKind, EventLog, NUM_RTMRS, RTMR_ADMISSIONS, RTMR_BOOT, RTMR_CONFIG,
};
use tdx_model::measure::verify_reportmac;

use crate::{hex, Evidence, Measurement};

/// One named check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The field or property checked ("MAC", "MRTD", "RTMR1", "nonce", …).
    pub field: String,
    /// Whether it holds.
    pub ok: bool,
    /// What was compared.
    pub detail: String,
}

/// Every check of one verification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The checks in order.
    pub checks: Vec<Check>,
}

impl Verdict {
    fn check(&mut self, field: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            field: field.into(),
            ok,
            detail: detail.into(),
        });
    }

    /// Whether every check passed.
    pub fn accepted(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The fields of the failed checks, in order, without duplicates.
    pub fn refused_fields(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for c in self.checks.iter().filter(|c| !c.ok) {
            if !v.contains(&c.field) {
                v.push(c.field.clone());
            }
        }
        v
    }
}

fn short(d: &[u8]) -> String {
    let h = hex(d);
    format!("{}…", &h[..h.len().min(16)])
}

/// Verifies `evidence` against `expected` (from the image), the verifier's
/// `nonce` and the report MAC `key`.
pub fn verify(
    expected: &Measurement,
    evidence: &Evidence,
    nonce: &[u8; 64],
    key: &[u8; 32],
) -> Verdict {
    let r = &evidence.report;
    let mut v = Verdict::default();
    v.check(
        "REPORTTYPE",
        r[0] == 0x81 && r[1] == 0,
        format!("type {:#x} subtype {}", r[0], r[1]),
    );
    let mac_ok = verify_reportmac(r[..256].try_into().expect("256 bytes"), key);
    v.check(
        "MAC",
        mac_ok,
        if mac_ok {
            "REPORTMACSTRUCT MAC verifies under the model key".to_string()
        } else {
            "REPORTMACSTRUCT MAC does not verify under the model key".to_string()
        },
    );
    let tcb_ok = r[32..80] == measure::sha384(&r[256..495]);
    v.check("TEE_TCB_INFO_HASH", tcb_ok, "SHA-384 of TEE_TCB_INFO");
    let info_ok = r[80..128] == measure::sha384(&r[512..1024]);
    v.check(
        "TEE_INFO_HASH",
        info_ok,
        "SHA-384 of TDINFO (binds MRTD and the RTMRs to the MAC)",
    );
    let mrtd = &r[report::MRTD..report::MRTD + 48];
    v.check(
        "MRTD",
        mrtd == expected.mrtd,
        format!("report {} image {}", hex(mrtd), hex(&expected.mrtd)),
    );
    let rtmr_of = |i: usize| &r[report::RTMR0 + 48 * i..report::RTMR0 + 48 * (i + 1)];

    // The log must replay to the report's RTMRs.
    let log = match EventLog::parse(&evidence.log) {
        Ok(l) => l,
        Err(e) => {
            v.check("event log", false, format!("{e}"));
            check_nonce(&mut v, r, nonce);
            return v;
        }
    };
    v.check(
        "event log",
        true,
        format!(
            "{} events, {} bytes",
            log.events().len(),
            evidence.log.len()
        ),
    );
    let replayed = measure::replay(log.events());
    for (i, rep) in replayed.iter().enumerate().take(NUM_RTMRS) {
        v.check(
            format!("RTMR{i}"),
            rtmr_of(i) == rep,
            format!("report {} log replay {}", short(rtmr_of(i)), short(rep)),
        );
    }
    for (n, e) in log.events().iter().enumerate() {
        if e.self_describing_ok() == Some(false) {
            v.check(
                format!("RTMR{}", e.rtmr),
                false,
                format!(
                    "event {n} ({}): digest is not SHA-384 of its data",
                    e.name()
                ),
            );
        }
    }

    // The boot events must be the image's, event by event.
    let boot = &expected.boot_events;
    for (n, want) in boot.iter().enumerate() {
        let field = format!("RTMR{}", want.rtmr);
        match log.events().get(n) {
            Some(got) if got == want => {}
            Some(got) if got.rtmr == want.rtmr && got.name() == want.name() => v.check(
                field,
                false,
                format!(
                    "event {n} ({}): log digest {} but the image gives {}",
                    want.name(),
                    hex(&got.digest),
                    hex(&want.digest)
                ),
            ),
            Some(got) => v.check(
                field,
                false,
                format!(
                    "event {n}: log has RTMR{} {} where the image expects RTMR{} {}",
                    got.rtmr,
                    got.name(),
                    want.rtmr,
                    want.name()
                ),
            ),
            None => v.check(
                field,
                false,
                format!("event {n} ({}) missing from the log", want.name()),
            ),
        }
    }
    for i in [RTMR_CONFIG, RTMR_BOOT] {
        let i = i as usize;
        v.check(
            format!("RTMR{i}"),
            rtmr_of(i) == expected.rtmr[i],
            format!(
                "report {} image {}",
                short(rtmr_of(i)),
                short(&expected.rtmr[i])
            ),
        );
    }
    // After boot: only code admissions, into RTMR2.
    let mut admissions = 0;
    for (n, e) in log.events().iter().enumerate().skip(boot.len()) {
        let known = e.tag().and_then(AdmissionKind::from_tag).is_some();
        if e.rtmr != RTMR_ADMISSIONS || !known {
            v.check(
                format!("RTMR{}", e.rtmr),
                false,
                format!(
                    "event {n} ({}) after boot is not a code admission",
                    e.name()
                ),
            );
        } else {
            admissions += 1;
        }
    }
    v.check(
        "RTMR2",
        true,
        format!("{admissions} code admission(s) replayed"),
    );
    v.check(
        "RTMR3",
        rtmr_of(3) == [0u8; 48],
        format!("spare: {}", short(rtmr_of(3))),
    );
    check_nonce(&mut v, r, nonce);
    v
}

fn check_nonce(v: &mut Verdict, r: &[u8; 1024], nonce: &[u8; 64]) {
    let got = &r[report::REPORTDATA..report::REPORTDATA + 64];
    v.check(
        "nonce",
        got == nonce,
        format!("REPORTDATA {} expected {}", short(got), short(nonce)),
    );
}
