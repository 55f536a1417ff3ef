//! Secure log TA: an append-only, SHA-256 hash-chained log.
//!
//! Entry `i` has the hash
//! `H("lvbs-tee/secure-log/entry/v1" || seq_le64 || prev || len_le32 || data)`
//! where `prev` is the hash of entry `i - 1`, and for entry 0 the genesis
//! hash `H("lvbs-tee/secure-log/genesis/v1" || measurement)`, which binds the
//! log to the image that wrote it.
//!
//! There is no command that changes or removes an entry, so a compromised
//! guest can add records but never rewrite past ones. A reader verifies the
//! chain inside the TA ([`cmd::VERIFY`]) or outside with [`verify_export`]
//! on the bytes of [`cmd::EXPORT`], against the head hash of [`cmd::HEAD`].
//! When the log is full it refuses further records
//! ([`TeeError::StorageNoSpace`]) rather than dropping old ones, which would
//! let an attacker flush evidence.

use alloc::vec::Vec;

use sha2::{Digest, Sha256};

use crate::dispatch::{ClientIdentity, TaEnv, TrustedApp};
use crate::error::TeeError;
use crate::params::{ParamType as T, Params};
use crate::uuid::Uuid;

/// UUID of the secure log TA.
pub const UUID: Uuid = Uuid::from_fields(
    0x6063_5c66,
    0x3824,
    0x415c,
    [0xaf, 0x20, 0xf6, 0x74, 0xc0, 0xa2, 0xf8, 0x03],
);

/// Command ids and their parameters.
pub mod cmd {
    /// `[MemrefInput record, ValueOutput (seq, 0), -, -]`: append a record.
    pub const APPEND: u32 = 0;
    /// `[ValueInput (seq, 0), MemrefOutput entry, -, -]`: one serialised entry.
    pub const READ: u32 = 1;
    /// `[ValueOutput (count, 0), MemrefOutput genesis || head (64 bytes), -, -]`.
    pub const HEAD: u32 = 2;
    /// `[ValueOutput (count, 0), -, -, -]`: re-verify the stored chain;
    /// `CORRUPT_OBJECT` if it does not verify.
    pub const VERIFY: u32 = 3;
    /// `[ValueInput (start, max_count), MemrefOutput entries, -, -]`: serialised
    /// entries `start..start + max_count` (clamped to the end).
    pub const EXPORT: u32 = 4;
}

/// Largest record.
pub const MAX_RECORD: usize = 1024;
/// Most entries.
pub const MAX_ENTRIES: usize = 1024;
/// Most record bytes in total.
pub const MAX_BYTES: usize = 128 * 1024;
/// Hash length.
pub const HASH_LEN: usize = 32;
/// Bytes of a serialised entry before its data: seq (8), len (4), prev (32), hash (32).
pub const ENTRY_HEADER: usize = 8 + 4 + HASH_LEN + HASH_LEN;

/// The genesis hash for a measurement.
pub fn genesis(measurement: &[u8]) -> [u8; HASH_LEN] {
    let mut h = Sha256::new();
    h.update(b"lvbs-tee/secure-log/genesis/v1");
    h.update(measurement);
    h.finalize().into()
}

/// The hash of an entry.
pub fn entry_hash(seq: u64, prev: &[u8; HASH_LEN], data: &[u8]) -> [u8; HASH_LEN] {
    let mut h = Sha256::new();
    h.update(b"lvbs-tee/secure-log/entry/v1");
    h.update(seq.to_le_bytes());
    h.update(prev);
    h.update((data.len() as u32).to_le_bytes());
    h.update(data);
    h.finalize().into()
}

fn serialize_entry(
    out: &mut Vec<u8>,
    seq: u64,
    prev: &[u8; HASH_LEN],
    hash: &[u8; HASH_LEN],
    data: &[u8],
) {
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(prev);
    out.extend_from_slice(hash);
    out.extend_from_slice(data);
}

/// Why exported bytes do not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The bytes end inside an entry.
    Truncated,
    /// Entry `seq` has an unexpected sequence number.
    BadSequence(u64),
    /// Entry `seq` does not link to its predecessor.
    BadLink(u64),
    /// Entry `seq`'s hash does not match its contents.
    BadHash(u64),
    /// The chain does not end at the expected head.
    HeadMismatch,
}

/// A verified export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedExport {
    /// Sequence number of the first entry.
    pub first_seq: u64,
    /// The records, in order.
    pub records: Vec<Vec<u8>>,
    /// Hash of the last entry (or `prev` if there are none).
    pub last_hash: [u8; HASH_LEN],
}

/// Verifies serialised entries (from [`cmd::EXPORT`]) that start at
/// `first_seq` and link to `prev` (the genesis for `first_seq == 0`, else the
/// hash of entry `first_seq - 1`). If `expected_head` is given, the last
/// entry's hash must equal it, which detects truncation at the end.
pub fn verify_export(
    bytes: &[u8],
    first_seq: u64,
    prev: &[u8; HASH_LEN],
    expected_head: Option<&[u8; HASH_LEN]>,
) -> Result<VerifiedExport, VerifyError> {
    let mut rest = bytes;
    let mut expect_seq = first_seq;
    let mut last = *prev;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let hdr = rest.get(..ENTRY_HEADER).ok_or(VerifyError::Truncated)?;
        let (seq_b, tail) = hdr.split_at(8);
        let (len_b, tail) = tail.split_at(4);
        let (prev_b, hash_b) = tail.split_at(HASH_LEN);
        let seq = u64::from_le_bytes(seq_b.try_into().map_err(|_| VerifyError::Truncated)?);
        let len =
            u32::from_le_bytes(len_b.try_into().map_err(|_| VerifyError::Truncated)?) as usize;
        let data = rest
            .get(
                ENTRY_HEADER
                    ..ENTRY_HEADER
                        .checked_add(len)
                        .ok_or(VerifyError::Truncated)?,
            )
            .ok_or(VerifyError::Truncated)?;
        if seq != expect_seq {
            return Err(VerifyError::BadSequence(seq));
        }
        if prev_b != last {
            return Err(VerifyError::BadLink(seq));
        }
        let h = entry_hash(seq, &last, data);
        if hash_b != h {
            return Err(VerifyError::BadHash(seq));
        }
        records.push(data.to_vec());
        last = h;
        expect_seq = expect_seq.wrapping_add(1);
        rest = rest.get(ENTRY_HEADER + len..).unwrap_or(&[]);
    }
    if let Some(head) = expected_head {
        if *head != last {
            return Err(VerifyError::HeadMismatch);
        }
    }
    Ok(VerifiedExport {
        first_seq,
        records,
        last_hash: last,
    })
}

struct Entry {
    data: Vec<u8>,
    hash: [u8; HASH_LEN],
}

/// The secure log TA.
pub struct SecureLog {
    genesis: Option<[u8; HASH_LEN]>,
    entries: Vec<Entry>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for SecureLog {
    fn default() -> SecureLog {
        SecureLog::with_caps(MAX_ENTRIES, MAX_BYTES)
    }
}

impl SecureLog {
    /// A log with other caps (tests).
    pub fn with_caps(max_entries: usize, max_bytes: usize) -> SecureLog {
        SecureLog {
            genesis: None,
            entries: Vec::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    fn genesis(&mut self, env: &TaEnv<'_>) -> [u8; HASH_LEN] {
        *self
            .genesis
            .get_or_insert_with(|| genesis(env.measurement()))
    }

    fn prev_of(&self, genesis: &[u8; HASH_LEN], idx: usize) -> [u8; HASH_LEN] {
        match idx.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(e) => e.hash,
            None => *genesis,
        }
    }

    fn head(&self, genesis: &[u8; HASH_LEN]) -> [u8; HASH_LEN] {
        self.entries.last().map_or(*genesis, |e| e.hash)
    }

    /// Re-walks the chain; the index of the first bad entry on failure.
    fn verify_stored(&self, genesis: &[u8; HASH_LEN]) -> Result<usize, usize> {
        let mut prev = *genesis;
        for (i, e) in self.entries.iter().enumerate() {
            let h = entry_hash(i as u64, &prev, &e.data);
            if h != e.hash {
                return Err(i);
            }
            prev = h;
        }
        Ok(self.entries.len())
    }

    #[cfg(test)]
    pub(crate) fn tamper(&mut self, idx: usize, data: &[u8]) {
        if let Some(e) = self.entries.get_mut(idx) {
            e.data = data.to_vec();
        }
    }
}

impl TrustedApp for SecureLog {
    fn uuid(&self) -> Uuid {
        UUID
    }

    fn name(&self) -> &'static str {
        "secure-log"
    }

    fn open_session(
        &mut self,
        _env: &mut TaEnv<'_>,
        _session: u32,
        _client: &ClientIdentity,
        params: &mut Params,
    ) -> Result<(), TeeError> {
        params.expect([T::None; 4])
    }

    fn invoke(
        &mut self,
        env: &mut TaEnv<'_>,
        _session: u32,
        _client: &ClientIdentity,
        command: u32,
        p: &mut Params,
    ) -> Result<(), TeeError> {
        let genesis = self.genesis(env);
        match command {
            cmd::APPEND => {
                p.expect([T::MemrefInput, T::ValueOutput, T::None, T::None])?;
                let record = p.memref(0)?;
                if record.len() > MAX_RECORD {
                    return Err(TeeError::ExcessData);
                }
                if self.entries.len() >= self.max_entries
                    || self.bytes.saturating_add(record.len()) > self.max_bytes
                {
                    return Err(TeeError::StorageNoSpace);
                }
                let seq = self.entries.len();
                let prev = self.head(&genesis);
                let hash = entry_hash(seq as u64, &prev, record);
                let data = record.to_vec();
                self.bytes += data.len();
                self.entries.push(Entry { data, hash });
                p.set_value(1, seq as u32, 0)
            }
            cmd::READ => {
                p.expect([T::ValueInput, T::MemrefOutput, T::None, T::None])?;
                let (seq, _) = p.value(0)?;
                let idx = seq as usize;
                let e = self.entries.get(idx).ok_or(TeeError::ItemNotFound)?;
                let mut out = Vec::with_capacity(ENTRY_HEADER + e.data.len());
                serialize_entry(
                    &mut out,
                    idx as u64,
                    &self.prev_of(&genesis, idx),
                    &e.hash,
                    &e.data,
                );
                p.set_memref(1, &out)
            }
            cmd::HEAD => {
                p.expect([T::ValueOutput, T::MemrefOutput, T::None, T::None])?;
                let mut out = Vec::with_capacity(2 * HASH_LEN);
                out.extend_from_slice(&genesis);
                out.extend_from_slice(&self.head(&genesis));
                p.set_memref(1, &out)?;
                p.set_value(0, self.entries.len() as u32, 0)
            }
            cmd::VERIFY => {
                p.expect([T::ValueOutput, T::None, T::None, T::None])?;
                let n = self
                    .verify_stored(&genesis)
                    .map_err(|_| TeeError::CorruptObject)?;
                p.set_value(0, n as u32, 0)
            }
            cmd::EXPORT => {
                p.expect([T::ValueInput, T::MemrefOutput, T::None, T::None])?;
                let (start, max) = p.value(0)?;
                let start = start as usize;
                if start > self.entries.len() {
                    return Err(TeeError::ItemNotFound);
                }
                let end = start.saturating_add(max as usize).min(self.entries.len());
                let need: usize = self
                    .entries
                    .get(start..end)
                    .unwrap_or(&[])
                    .iter()
                    .map(|e| ENTRY_HEADER + e.data.len())
                    .sum();
                p.require(1, need)?;
                let mut out = Vec::with_capacity(need);
                for idx in start..end {
                    if let Some(e) = self.entries.get(idx) {
                        serialize_entry(
                            &mut out,
                            idx as u64,
                            &self.prev_of(&genesis, idx),
                            &e.hash,
                            &e.data,
                        );
                    }
                }
                p.set_memref(1, &out)
            }
            _ => Err(TeeError::NotSupported),
        }
    }

    fn close_session(&mut self, _env: &mut TaEnv<'_>, _session: u32) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::TaParam;
    use crate::ta::testutil::{env_parts, mem_in, mem_out, val_in, val_out, Harness, ParamsExt};

    fn append(h: &mut Harness, log: &mut SecureLog, rec: &[u8]) -> Result<u32, TeeError> {
        let mut p = Params::new([mem_in(rec), val_out(), TaParam::None, TaParam::None]);
        h.invoke(log, cmd::APPEND, &mut p)?;
        Ok(p.value_out(1).0)
    }

    fn export(h: &mut Harness, log: &mut SecureLog, start: u32, max: u32) -> Vec<u8> {
        let mut p = Params::new([
            val_in(start, max),
            mem_out(64 * 1024),
            TaParam::None,
            TaParam::None,
        ]);
        h.invoke(log, cmd::EXPORT, &mut p).unwrap();
        p.memref_out(1).to_vec()
    }

    fn head(h: &mut Harness, log: &mut SecureLog) -> ([u8; 32], [u8; 32], u32) {
        let mut p = Params::new([val_out(), mem_out(64), TaParam::None, TaParam::None]);
        h.invoke(log, cmd::HEAD, &mut p).unwrap();
        let b = p.memref_out(1);
        (
            b[..32].try_into().unwrap(),
            b[32..].try_into().unwrap(),
            p.value_out(0).0,
        )
    }

    #[test]
    fn append_read_verify_and_export() {
        let mut h = Harness::new(1);
        let mut log = SecureLog::default();
        for i in 0..5u8 {
            assert_eq!(append(&mut h, &mut log, &[i; 10]), Ok(u32::from(i)));
        }
        let (gen, head_hash, count) = head(&mut h, &mut log);
        assert_eq!(count, 5);
        assert_eq!(gen, genesis(&env_parts().0));
        let bytes = export(&mut h, &mut log, 0, 100);
        let v = verify_export(&bytes, 0, &gen, Some(&head_hash)).unwrap();
        assert_eq!(v.records.len(), 5);
        assert_eq!(v.records[3], [3u8; 10]);
        // A partial export from the middle links to the entry before it.
        let part = export(&mut h, &mut log, 2, 2);
        let before = verify_export(&bytes[..2 * (ENTRY_HEADER + 10)], 0, &gen, None).unwrap();
        let v2 = verify_export(&part, 2, &before.last_hash, None).unwrap();
        assert_eq!(v2.records, [[2u8; 10].to_vec(), [3u8; 10].to_vec()]);
        // READ returns the same serialisation as EXPORT.
        let mut p = Params::new([val_in(1, 0), mem_out(200), TaParam::None, TaParam::None]);
        h.invoke(&mut log, cmd::READ, &mut p).unwrap();
        assert_eq!(
            p.memref_out(1),
            &bytes[ENTRY_HEADER + 10..2 * (ENTRY_HEADER + 10)]
        );
        let mut p = Params::new([val_out(), TaParam::None, TaParam::None, TaParam::None]);
        h.invoke(&mut log, cmd::VERIFY, &mut p).unwrap();
        assert_eq!(p.value_out(0).0, 5);
    }

    #[test]
    fn tampered_chain_is_detected() {
        let mut h = Harness::new(2);
        let mut log = SecureLog::default();
        for i in 0..4u8 {
            append(&mut h, &mut log, &[i; 3]).unwrap();
        }
        let (gen, head_hash, _) = head(&mut h, &mut log);
        let bytes = export(&mut h, &mut log, 0, 10);
        // Outside: flip a data byte, a link, a sequence number; drop the tail;
        // reorder two entries.
        let e = ENTRY_HEADER + 3;
        let mut t = bytes.clone();
        t[e + ENTRY_HEADER] ^= 1;
        assert_eq!(
            verify_export(&t, 0, &gen, Some(&head_hash)),
            Err(VerifyError::BadHash(1))
        );
        let mut t = bytes.clone();
        t[e + 12] ^= 1;
        assert_eq!(
            verify_export(&t, 0, &gen, Some(&head_hash)),
            Err(VerifyError::BadLink(1))
        );
        let mut t = bytes.clone();
        t[e] = 7;
        assert_eq!(
            verify_export(&t, 0, &gen, Some(&head_hash)),
            Err(VerifyError::BadSequence(7))
        );
        assert_eq!(
            verify_export(&bytes[..3 * e], 0, &gen, Some(&head_hash)),
            Err(VerifyError::HeadMismatch)
        );
        assert_eq!(
            verify_export(&bytes[..3 * e - 1], 0, &gen, None),
            Err(VerifyError::Truncated)
        );
        let mut t = bytes[e..2 * e].to_vec();
        t.extend_from_slice(&bytes[..e]);
        assert!(verify_export(&t, 0, &gen, None).is_err());
        // A chain recomputed from a different genesis (another image) fails.
        assert_eq!(
            verify_export(&bytes, 0, &[0; 32], None),
            Err(VerifyError::BadLink(0))
        );
        // Inside: corrupt stored data; VERIFY reports it.
        log.tamper(2, b"evil");
        let mut p = Params::new([val_out(), TaParam::None, TaParam::None, TaParam::None]);
        assert_eq!(
            h.invoke(&mut log, cmd::VERIFY, &mut p),
            Err(TeeError::CorruptObject)
        );
    }

    #[test]
    fn no_rewrite_and_caps() {
        let mut h = Harness::new(3);
        let mut log = SecureLog::with_caps(3, 100);
        append(&mut h, &mut log, b"boot ok").unwrap();
        let first = export(&mut h, &mut log, 0, 1);
        // Appending more never changes an earlier entry.
        append(&mut h, &mut log, b"attacker").unwrap();
        assert_eq!(export(&mut h, &mut log, 0, 1), first);
        // Record too large, log full (entries, then bytes), unknown command,
        // wrong parameter types, short buffer.
        assert_eq!(
            append(&mut h, &mut log, &[0; MAX_RECORD + 1]),
            Err(TeeError::ExcessData)
        );
        assert_eq!(
            append(&mut h, &mut log, &[0; 90]),
            Err(TeeError::StorageNoSpace)
        );
        append(&mut h, &mut log, b"x").unwrap();
        assert_eq!(
            append(&mut h, &mut log, b"y"),
            Err(TeeError::StorageNoSpace)
        );
        let mut p = Params::new([mem_in(b"x"), val_out(), TaParam::None, TaParam::None]);
        assert_eq!(h.invoke(&mut log, 99, &mut p), Err(TeeError::NotSupported));
        let mut p = Params::new([val_in(0, 0), val_out(), TaParam::None, TaParam::None]);
        assert_eq!(
            h.invoke(&mut log, cmd::APPEND, &mut p),
            Err(TeeError::BadParameters)
        );
        let mut p = Params::new([val_in(0, 3), mem_out(10), TaParam::None, TaParam::None]);
        assert_eq!(
            h.invoke(&mut log, cmd::EXPORT, &mut p),
            Err(TeeError::ShortBuffer)
        );
        let mut p = Params::new([val_in(9, 0), mem_out(100), TaParam::None, TaParam::None]);
        assert_eq!(
            h.invoke(&mut log, cmd::READ, &mut p),
            Err(TeeError::ItemNotFound)
        );
        let mut p = Params::new([val_in(4, 1), mem_out(100), TaParam::None, TaParam::None]);
        assert_eq!(
            h.invoke(&mut log, cmd::EXPORT, &mut p),
            Err(TeeError::ItemNotFound)
        );
    }
}
