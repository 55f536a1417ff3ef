#!/bin/sh
# Regenerates the signatures used by benches/modsig.rs: a throwaway 4096-bit
# key signs the 1 MiB pattern content (byte i = (i * 131 + 7) % 251), which the
# bench rebuilds itself, so only the certificate and the DER signatures are
# committed. Needs openssl and python3.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey rsa:4096 -nodes -keyout "$tmp/k.pem" -out "$tmp/c.pem" \
    -days 36500 -subj "/CN=heki bench signer" -sha256 2>/dev/null
openssl x509 -in "$tmp/c.pem" -outform DER -out bench.crt.der
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 131 + 7) % 251 for i in range(1 << 20)))' > "$tmp/content"
for md in sha256 sha512; do
    openssl cms -sign -binary -noattr -nocerts -in "$tmp/content" -signer "$tmp/c.pem" \
        -inkey "$tmp/k.pem" -md "$md" -outform DER -out "bench_1m_$md.p7s"
done
ls -l bench*
