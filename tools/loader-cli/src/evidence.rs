//! Attestation evidence as the attest guest prints it on the console: one
//! line with the TDREPORT and one with the event log, both hex.

use paravisor::measure::TDREPORT_BYTES;

use crate::{unhex, Error};

/// Console prefix of the report line.
pub const EVIDENCE_REPORT_PREFIX: &str = "attest: report ";
/// Console prefix of the event-log line.
pub const EVIDENCE_LOG_PREFIX: &str = "attest: log ";

/// A TDREPORT and the event log that came with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// TDREPORT_STRUCT.
    pub report: [u8; TDREPORT_BYTES],
    /// The encoded event log.
    pub log: Vec<u8>,
}

impl Evidence {
    /// The last report and log lines of a console transcript.
    pub fn from_console(text: &str) -> Result<Self, Error> {
        let mut report = None;
        let mut log = None;
        for line in text.lines() {
            if let Some(i) = line.find(EVIDENCE_REPORT_PREFIX) {
                report = Some(unhex(&line[i + EVIDENCE_REPORT_PREFIX.len()..])?);
            } else if let Some(i) = line.find(EVIDENCE_LOG_PREFIX) {
                log = Some(unhex(&line[i + EVIDENCE_LOG_PREFIX.len()..])?);
            }
        }
        let report = report.ok_or_else(|| Error("no `attest: report` line".into()))?;
        let report: [u8; TDREPORT_BYTES] = report
            .try_into()
            .map_err(|r: Vec<u8>| Error(format!("the report has {} bytes, not 1024", r.len())))?;
        let log = log.ok_or_else(|| Error("no `attest: log` line".into()))?;
        Ok(Evidence { report, log })
    }

    /// The two console lines of this evidence.
    pub fn to_console(&self) -> String {
        format!(
            "{EVIDENCE_REPORT_PREFIX}{}\n{EVIDENCE_LOG_PREFIX}{}\n",
            crate::hex(&self.report),
            crate::hex(&self.log)
        )
    }
}
