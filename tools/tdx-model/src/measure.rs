//! Measurements: MRTD accumulation (§5.4), RTMR extension (§5.5) and the
//! 1024-byte TDREPORT_STRUCT with a MAC under the model's key (§5.6).
#![forbid(unsafe_code)]

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha384};

/// Size of TDREPORT_STRUCT (§5.6).
pub const TDREPORT_SIZE: usize = 1024;
/// Size of REPORTMACSTRUCT (§5.6).
pub const REPORTMAC_SIZE: usize = 256;
/// Offset of the MAC inside REPORTMACSTRUCT (§5.6).
pub const MAC_OFFSET: usize = 224;
/// Bytes of REPORTMACSTRUCT the MAC covers: everything before the MAC.
const MAC_COVERED: usize = MAC_OFFSET;

/// Accumulates MRTD the way TDH.MEM.PAGE.ADD and TDH.MR.EXTEND do (§5.4).
#[derive(Clone, Debug, Default)]
pub struct MrtdBuilder {
    hasher: Sha384,
}

impl MrtdBuilder {
    /// An empty measurement (TDH.MNG.INIT).
    pub fn new() -> Self {
        Self::default()
    }

    /// TDH.MEM.PAGE.ADD of the page at `gpa`: a 128-byte record, contents not measured.
    pub fn page_add(&mut self, gpa: u64) {
        self.record(b"MEM.PAGE.ADD", gpa);
    }

    /// TDH.MR.EXTEND of the 256-byte chunk at `gpa`: record plus contents.
    pub fn mr_extend(&mut self, gpa: u64, chunk: &[u8; 256]) {
        self.record(b"MR.EXTEND", gpa);
        self.hasher.update(chunk);
    }

    /// A page added and fully extended: one ADD then 16 EXTENDs (§5.4 convention).
    pub fn add_measured_page(&mut self, gpa: u64, page: &[u8; 4096]) {
        self.page_add(gpa);
        for (i, chunk) in page.chunks_exact(256).enumerate() {
            let mut c = [0u8; 256];
            c.copy_from_slice(chunk);
            self.mr_extend(gpa + 256 * i as u64, &c);
        }
    }

    fn record(&mut self, op: &[u8], gpa: u64) {
        let mut rec = [0u8; 128];
        rec[..op.len()].copy_from_slice(op);
        rec[16..24].copy_from_slice(&gpa.to_le_bytes());
        self.hasher.update(rec);
    }

    /// TDH.MR.FINALIZE: the final MRTD.
    pub fn finish(self) -> [u8; 48] {
        self.hasher.finalize().into()
    }
}

/// `RTMR = SHA-384(RTMR ‖ data)` (§5.5).
pub fn rtmr_extend(rtmr: &mut [u8; 48], data: &[u8; 48]) {
    let mut h = Sha384::new();
    h.update(&rtmr[..]);
    h.update(data);
    *rtmr = h.finalize().into();
}

/// Inputs of a TDREPORT.
#[derive(Clone, Debug)]
pub struct ReportInputs<'a> {
    /// TD ATTRIBUTES.
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRTD.
    pub mrtd: &'a [u8; 48],
    /// MRCONFIGID.
    pub mrconfigid: &'a [u8; 48],
    /// MROWNER.
    pub mrowner: &'a [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: &'a [u8; 48],
    /// RTMR0..3.
    pub rtmr: &'a [[u8; 48]; 4],
    /// REPORTDATA.
    pub reportdata: &'a [u8; 64],
}

/// The model's stand-in TDX-module measurement (MRSEAM), SHA-384 of its name.
fn mrseam() -> [u8; 48] {
    Sha384::digest(b"lvbs-tdx TDX module model 1.5.01").into()
}

/// Builds a TDREPORT_STRUCT (§5.6) and MACs it with `key`.
pub fn build_report(inputs: &ReportInputs<'_>, key: &[u8; 32]) -> [u8; TDREPORT_SIZE] {
    let mut r = [0u8; TDREPORT_SIZE];
    // TEE_TCB_INFO at 256: VALID bitmap, TEE_TCB_SVN (module 1.5), MRSEAM.
    r[256..264].copy_from_slice(&0x301FFu64.to_le_bytes());
    r[264] = 5; // minor SVN
    r[265] = 1; // major SVN
    r[280..328].copy_from_slice(&mrseam());
    // TDINFO_STRUCT at 512.
    r[512..520].copy_from_slice(&inputs.attributes.to_le_bytes());
    r[520..528].copy_from_slice(&inputs.xfam.to_le_bytes());
    r[528..576].copy_from_slice(inputs.mrtd);
    r[576..624].copy_from_slice(inputs.mrconfigid);
    r[624..672].copy_from_slice(inputs.mrowner);
    r[672..720].copy_from_slice(inputs.mrownerconfig);
    for (i, m) in inputs.rtmr.iter().enumerate() {
        r[720 + 48 * i..768 + 48 * i].copy_from_slice(m);
    }
    // REPORTMACSTRUCT.
    r[0] = 0x81; // TDX
    let tcb_hash: [u8; 48] = Sha384::digest(&r[256..495]).into();
    let info_hash: [u8; 48] = Sha384::digest(&r[512..1024]).into();
    r[32..80].copy_from_slice(&tcb_hash);
    r[80..128].copy_from_slice(&info_hash);
    r[128..192].copy_from_slice(inputs.reportdata);
    let mac = report_mac(&r[..REPORTMAC_SIZE], key);
    r[MAC_OFFSET..MAC_OFFSET + 32].copy_from_slice(&mac);
    r
}

/// HMAC-SHA-256 over the REPORTMACSTRUCT bytes before the MAC.
pub fn report_mac(reportmac: &[u8], key: &[u8; 32]) -> [u8; 32] {
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(&reportmac[..MAC_COVERED.min(reportmac.len())]);
    m.finalize().into_bytes().into()
}

/// TDG.MR.VERIFYREPORT's check: the MAC of a REPORTMACSTRUCT is the model's.
pub fn verify_reportmac(reportmac: &[u8; REPORTMAC_SIZE], key: &[u8; 32]) -> bool {
    report_mac(reportmac, key) == reportmac[MAC_OFFSET..MAC_OFFSET + 32]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmr_extend_matches_definition() {
        let mut r = [0u8; 48];
        let data = [7u8; 48];
        rtmr_extend(&mut r, &data);
        let mut h = Sha384::new();
        h.update([0u8; 48]);
        h.update(data);
        let expect: [u8; 48] = h.finalize().into();
        assert_eq!(r, expect);
    }

    #[test]
    fn mrtd_record_layout() {
        let mut b = MrtdBuilder::new();
        b.page_add(0x1000);
        let mut rec = [0u8; 128];
        rec[..12].copy_from_slice(b"MEM.PAGE.ADD");
        rec[16..24].copy_from_slice(&0x1000u64.to_le_bytes());
        let expect: [u8; 48] = Sha384::digest(rec).into();
        assert_eq!(b.finish(), expect);
    }

    #[test]
    fn report_mac_detects_tampering() {
        let z = [0u8; 48];
        let rt = [[1u8; 48]; 4];
        let rd = [9u8; 64];
        let inputs = ReportInputs {
            attributes: 0,
            xfam: 3,
            mrtd: &z,
            mrconfigid: &z,
            mrowner: &z,
            mrownerconfig: &z,
            rtmr: &rt,
            reportdata: &rd,
        };
        let key = [5u8; 32];
        let rep = build_report(&inputs, &key);
        let mut mac = [0u8; 256];
        mac.copy_from_slice(&rep[..256]);
        assert!(verify_reportmac(&mac, &key));
        assert_eq!(&rep[128..192], &rd);
        assert_eq!(&rep[720..768], &[1u8; 48]);
        mac[130] ^= 1;
        assert!(!verify_reportmac(&mac, &key));
        let mut m2 = [0u8; 256];
        m2.copy_from_slice(&rep[..256]);
        assert!(!verify_reportmac(&m2, &[6u8; 32]));
    }
}
