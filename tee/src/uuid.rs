//! UUIDs as OP-TEE and GlobalPlatform use them.

use core::fmt;

/// A 16-byte RFC 4122 UUID, stored in its canonical (big-endian field) byte order.
///
/// On the wire, `optee_msg` carries a UUID in two `u64` value fields that the
/// Linux driver fills with `get_unaligned_le64` of the 16 canonical bytes
/// ([`Uuid::from_optee_msg`]). The GlobalPlatform `TEE_UUID` view
/// (`timeLow`, `timeMid`, `timeHiAndVersion`, `clockSeqAndNode`) reads the
/// first three fields big-endian from those bytes ([`Uuid::from_fields`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uuid([u8; 16]);

impl Uuid {
    /// The nil UUID (public login uses it as the client UUID).
    pub const NIL: Uuid = Uuid([0; 16]);

    /// From the canonical 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Uuid {
        Uuid(bytes)
    }

    /// The canonical 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// From the `TEE_UUID` fields.
    pub const fn from_fields(
        time_low: u32,
        time_mid: u16,
        time_hi_and_version: u16,
        clock_seq_and_node: [u8; 8],
    ) -> Uuid {
        let tl = time_low.to_be_bytes();
        let tm = time_mid.to_be_bytes();
        let th = time_hi_and_version.to_be_bytes();
        let c = clock_seq_and_node;
        Uuid([
            tl[0], tl[1], tl[2], tl[3], tm[0], tm[1], th[0], th[1], c[0], c[1], c[2], c[3], c[4],
            c[5], c[6], c[7],
        ])
    }

    /// From the two value words of an `optee_msg` META parameter.
    pub fn from_optee_msg(a: u64, b: u64) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes());
        Uuid(bytes)
    }

    /// The two value words of an `optee_msg` META parameter.
    pub fn to_optee_msg(&self) -> (u64, u64) {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&self.0[..8]);
        b.copy_from_slice(&self.0[8..]);
        (u64::from_le_bytes(a), u64::from_le_bytes(b))
    }

    /// The UUID as four big-endian 32-bit words, the layout of the
    /// `GET_OS_UUID`/`CALLS_UID` SMC replies (`a0..a3`).
    pub fn to_smc_words(&self) -> [u32; 4] {
        let mut w = [0u32; 4];
        for (i, chunk) in self.0.chunks_exact(4).enumerate() {
            let mut b = [0u8; 4];
            b.copy_from_slice(chunk);
            if let Some(slot) = w.get_mut(i) {
                *slot = u32::from_be_bytes(b);
            }
        }
        w
    }

    /// Inverse of [`Uuid::to_smc_words`].
    pub fn from_smc_words(w: [u32; 4]) -> Uuid {
        let mut bytes = [0u8; 16];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(w) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        Uuid(bytes)
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn fields_and_wire_forms() {
        let u = Uuid::from_fields(
            0x6063_5c66,
            0x3824,
            0x415c,
            [0xaf, 0x20, 0xf6, 0x74, 0xc0, 0xa2, 0xf8, 0x03],
        );
        assert_eq!(format!("{u}"), "60635c66-3824-415c-af20-f674c0a2f803");
        let (a, b) = u.to_optee_msg();
        // The Linux driver reads the canonical bytes little-endian.
        assert_eq!(a, 0x5c41_2438_665c_6360);
        assert_eq!(Uuid::from_optee_msg(a, b), u);
        assert_eq!(Uuid::from_smc_words(u.to_smc_words()), u);
        assert_eq!(u.to_smc_words()[0], 0x6063_5c66);
    }
}
