//! What the TEE needs from the platform: randomness, the TD measurement and a
//! sealing root key.
//!
//! The paravisor supplies these from the hardware (RDSEED/RDRAND, the
//! MRTD/RTMR values of the TDREPORT, a key derived from a TD-bound secret);
//! tests use [`StaticPlatform`] with a seeded `rand_chacha` generator.

use core::fmt;

use hkdf::Hkdf;
use rand_core::{TryCryptoRng, TryRng};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::TeeError;
use crate::uuid::Uuid;

/// A 48-byte (SHA-384 sized) measurement of the running image: MRTD
/// extended with the RTMRs that cover the paravisor, the L2 kernel and the
/// HEKI policy.
pub type Measurement = [u8; 48];

/// The platform services the TEE core uses.
pub trait Platform {
    /// A cryptographic RNG. It may fail (an exhausted RDSEED); a failure
    /// becomes [`TeeError::Generic`] for the request, never a panic.
    type Rng: TryCryptoRng;
    /// The RNG.
    fn rng(&mut self) -> &mut Self::Rng;
    /// The measurement that sealed data is bound to.
    fn measurement(&self) -> Measurement;
    /// The platform sealing root. TAs never see it: the core derives one key
    /// per TA from it ([`TaEnv::sealing_key`](crate::dispatch::TaEnv::sealing_key)).
    fn sealing_root(&self) -> Zeroizing<[u8; 32]>;
}

/// A fixed measurement and sealing root with any [`TryCryptoRng`]; a test and
/// emulator platform.
pub struct StaticPlatform<R> {
    /// The RNG.
    pub rng: R,
    /// The measurement.
    pub measurement: Measurement,
    /// The sealing root.
    pub sealing_root: [u8; 32],
}

impl<R> fmt::Debug for StaticPlatform<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticPlatform").finish_non_exhaustive()
    }
}

impl<R: TryCryptoRng> Platform for StaticPlatform<R> {
    type Rng = R;
    fn rng(&mut self) -> &mut R {
        &mut self.rng
    }
    fn measurement(&self) -> Measurement {
        self.measurement
    }
    fn sealing_root(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.sealing_root)
    }
}

/// The platform RNG failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RngError;

impl fmt::Display for RngError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("platform RNG failure")
    }
}

impl core::error::Error for RngError {}

impl From<RngError> for TeeError {
    fn from(_: RngError) -> TeeError {
        TeeError::Generic
    }
}

/// Object-safe view of a fallible RNG.
pub(crate) trait DynRng {
    fn fill(&mut self, dst: &mut [u8]) -> Result<(), RngError>;
}

impl<R: TryCryptoRng + ?Sized> DynRng for R {
    fn fill(&mut self, dst: &mut [u8]) -> Result<(), RngError> {
        self.try_fill_bytes(dst).map_err(|_| RngError)
    }
}

/// The RNG handed to a TA: the platform RNG behind a uniform error type,
/// usable where RustCrypto wants a [`TryCryptoRng`].
pub struct TaRng<'a>(pub(crate) &'a mut dyn DynRng);

impl fmt::Debug for TaRng<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaRng")
    }
}

impl TryRng for TaRng<'_> {
    type Error = RngError;
    fn try_next_u32(&mut self) -> Result<u32, RngError> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, RngError> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngError> {
        self.0.fill(dst)
    }
}

impl TryCryptoRng for TaRng<'_> {}

/// Derives the per-TA root key: HKDF-SHA256 over the platform sealing root
/// with the TA UUID in the info string, so that no TA can compute another
/// TA's keys. The core derives it; an isolated TA instance receives only its
/// own ([`crate::sandbox::IsolatedApp::start`]).
pub fn ta_root_key(sealing_root: &[u8; 32], ta: &Uuid) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(b"lvbs-tee/ta-root/v1"), sealing_root);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below the HKDF-SHA256 output limit.
    let _ = hk.expand(ta.as_bytes(), out.as_mut());
    out
}

/// Derives a TA sealing key bound to `measurement` and `label`.
pub(crate) fn sealing_key(
    ta_root: &[u8; 32],
    measurement: &Measurement,
    label: &[u8],
) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(measurement), ta_root);
    let mut out = Zeroizing::new([0u8; 32]);
    let _ = hk.expand_multi_info(&[b"lvbs-tee/seal/v1/", label], out.as_mut());
    out
}
