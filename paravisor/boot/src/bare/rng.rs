//! RDRAND and RDSEED for the TEE's RNG (`paravisor::tee::Entropy`): the only
//! `unsafe` of the TEE path. Both instructions run natively in a TD (and in
//! an SVM guest), never exit, and touch no memory.

use core::arch::x86_64::__cpuid_count;

use paravisor::tee::Entropy;

/// The CPU's random-number instructions, as CPUID reports them.
#[derive(Clone, Copy, Debug)]
pub struct CpuEntropy {
    rdrand: bool,
    rdseed: bool,
}

impl CpuEntropy {
    /// Reads CPUID.1:ECX[30] (RDRAND) and CPUID.(7,0):EBX[18] (RDSEED).
    pub fn detect() -> Self {
        // CPUID leaves 1 and 7 are answered by the TDX module without a #VE;
        // under the emulator L1 CPUID is an intercept answered by the host.
        let l1 = __cpuid_count(1, 0);
        let l7 = __cpuid_count(7, 0);
        CpuEntropy {
            rdrand: l1.ecx & (1 << 30) != 0,
            rdseed: l7.ebx & (1 << 18) != 0,
        }
    }

    /// Whether RDRAND and RDSEED exist.
    pub fn available(&self) -> (bool, bool) {
        (self.rdrand, self.rdseed)
    }
}

impl Entropy for CpuEntropy {
    fn rdrand64(&mut self) -> Option<u64> {
        if !self.rdrand {
            return None;
        }
        let value: u64;
        let ok: u8;
        // SAFETY: CPUID said RDRAND exists; it writes the destination register
        // and the flags (CF = 1 when the value is valid) and touches no memory.
        unsafe {
            core::arch::asm!(
                "rdrand {v}",
                "setc {ok}",
                v = out(reg) value,
                ok = out(reg_byte) ok,
                options(nomem, nostack),
            );
        }
        (ok != 0).then_some(value)
    }

    fn rdseed64(&mut self) -> Option<u64> {
        if !self.rdseed {
            return None;
        }
        let value: u64;
        let ok: u8;
        // SAFETY: CPUID said RDSEED exists; like RDRAND it only writes the
        // destination register and the flags.
        unsafe {
            core::arch::asm!(
                "rdseed {v}",
                "setc {ok}",
                v = out(reg) value,
                ok = out(reg_byte) ok,
                options(nomem, nostack),
            );
        }
        (ok != 0).then_some(value)
    }
}

/// The deployer's sealing secret, `LVBS_TEE_SEALING_SECRET` (64 hex digits)
/// at build time, compiled into the image (so it is part of MRTD): empty
/// when unset or malformed. See `paravisor::tee` and docs/tee.md for what it
/// protects (sealed blobs against L2) and what not (anyone with the image).
pub fn deployer_secret() -> alloc::vec::Vec<u8> {
    let Some(hex) = option_env!("LVBS_TEE_SEALING_SECRET") else {
        return alloc::vec::Vec::new();
    };
    let bytes: Option<alloc::vec::Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    match bytes {
        Some(b) if b.len() == 32 => b,
        _ => {
            log::error!("LVBS_TEE_SEALING_SECRET is not 64 hex digits: ignored");
            alloc::vec::Vec::new()
        }
    }
}
