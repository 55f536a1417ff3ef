#!/bin/sh
# Regenerates the module-signature fixtures used by heki-tdx's unit tests
# (src/modsig/tests.rs). Needs openssl and python3. The outputs are committed,
# so the tests themselves need neither.
set -eu
cd "$(dirname "$0")"
rm -f ./*.pem ./*.der ./*.ko ./*.bin ./*.srl

cert() { # name bits subject
    openssl req -x509 -newkey "rsa:$2" -nodes -keyout "$1.key.pem" -out "$1.crt.pem" \
        -days 36500 -subj "$3" -sha256 2>/dev/null
    openssl x509 -in "$1.crt.pem" -outform DER -out "$1.crt.der"
}
cert a 2048 "/CN=heki test signer A"
cert b 3072 "/CN=heki test signer B"
cert c 4096 "/CN=heki test signer C"
cert weak 1024 "/CN=heki test weak key"
cert other 2048 "/CN=heki test signer A"  # same subject as A, different key and serial
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ec.key.pem \
    -out ec.crt.pem -days 36500 -subj "/CN=heki test ec" 2>/dev/null
openssl x509 -in ec.crt.pem -outform DER -out ec.crt.der
# D: a secondary key signed by A.
openssl req -new -newkey rsa:2048 -nodes -keyout d.key.pem -out d.csr.pem \
    -subj "/CN=heki test secondary D" 2>/dev/null
openssl x509 -req -in d.csr.pem -CA a.crt.pem -CAkey a.key.pem -CAcreateserial \
    -out d.crt.pem -days 36500 -sha256 2>/dev/null
openssl x509 -in d.crt.pem -outform DER -out d.crt.der
# E: claims to be signed by A but is self-signed by its own key.
openssl req -x509 -newkey rsa:2048 -nodes -keyout e.key.pem -out e.crt.pem \
    -days 36500 -subj "/CN=heki test signer A" -sha256 2>/dev/null
openssl x509 -in e.crt.pem -outform DER -out e.crt.der
rm -f d.csr.pem ./*.srl

python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 131 + 7) % 251 for i in range(5000)))' > content.bin

sig() { # out signer md extra-flags...
    out=$1; who=$2; md=$3; shift 3
    openssl cms -sign -binary -in content.bin -signer "$who.crt.pem" -inkey "$who.key.pem" \
        -md "$md" -outform DER -out "$out.p7s" "$@"
    python3 - "$out.p7s" "$out.ko" <<'PY'
import struct, sys
sig = open(sys.argv[1], 'rb').read()
body = open('content.bin', 'rb').read()
trailer = struct.pack('>BBBBB3xI', 0, 0, 2, 0, 0, len(sig)) + b'~Module signature appended~\n'
open(sys.argv[2], 'wb').write(body + sig + trailer)
PY
    rm -f "$out.p7s"
}
sig a_sha256        a sha256 -noattr -nocerts
sig b_sha384_attrs  b sha384 -nocerts
sig c_sha512_keyid  c sha512 -noattr -nocerts -keyid
sig a_with_certs    a sha256 -noattr
sig a_sha1          a sha1   -noattr -nocerts
sig d_sha256        d sha256 -noattr -nocerts
sig a_attached      a sha256 -noattr -nocerts -nodetach
# Private keys are throwaway: the tests only need certificates and signed files.
rm -f ./*.key.pem ./*.crt.pem
ls -l
