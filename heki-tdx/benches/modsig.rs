//! Module-signature verification throughput on a 1 MiB module (4096-bit RSA,
//! no signed attributes, the Linux default), split into the digest and the
//! rest (CMS parsing, key lookup, RSA).
//!
//! `cargo bench -p heki-tdx` uses the host's SHA-2 backend. The paravisor
//! runs the portable one (`.cargo/config.toml`); to measure that on the host:
//! `RUSTFLAGS='--cfg sha2_backend="soft"' cargo bench -p heki-tdx`.
//! `tools/heki/bench-openssl.sh` times `openssl cms -verify` on the same input.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use heki_tdx::modsig::{append_signature, verify_module, Blocklist, DigestAlg, Keyring};
use std::hint::black_box;

const CERT: &[u8] = include_bytes!("../tests/data/modsig/bench.crt.der");
const SIG256: &[u8] = include_bytes!("../tests/data/modsig/bench_1m_sha256.p7s");
const SIG512: &[u8] = include_bytes!("../tests/data/modsig/bench_1m_sha512.p7s");

fn content() -> Vec<u8> {
    (0..1u32 << 20)
        .map(|i| ((i * 131 + 7) % 251) as u8)
        .collect()
}

fn bench(c: &mut Criterion) {
    let content = content();
    let mut ring = Keyring::new();
    ring.add_builtin(CERT, &Blocklist::new()).unwrap();
    let none = Blocklist::new();
    let mut g = c.benchmark_group("modsig_1MiB");
    g.throughput(Throughput::Bytes(content.len() as u64));
    for (name, sig, alg) in [
        ("sha256", SIG256, DigestAlg::Sha256),
        ("sha512", SIG512, DigestAlg::Sha512),
    ] {
        let file = append_signature(&content, sig).unwrap();
        verify_module(&file, &ring, &none).unwrap();
        g.bench_function(format!("verify_{name}"), |b| {
            b.iter(|| verify_module(black_box(&file), &ring, &none).unwrap())
        });
        g.bench_function(format!("digest_only_{name}"), |b| {
            b.iter(|| alg.digest(black_box(&content)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
