#!/bin/sh
# Regenerates the committed, test-only fixtures of the paravisor's HEKI module
# tests from test_module.S: needs gcc, openssl and the heki CLI (built here).
#
#   test_module.o            the unsigned object (the "module")
#   test_module.ko           signed by signer (SHA-256, Linux sign-file format)
#   signer.crt.der           the trusted certificate (LOAD_KDATA type 0)
#   secondary.crt.der        a certificate signed by signer (COPY_SECONDARY_KEY)
#   test_module_secondary.ko test_module.o signed by the secondary key
#   rogue.crt.der            self-signed, claims signer's subject (refused)
#
# The private keys are throwaway and deleted; nothing here is a real key.
set -eu
cd "$(dirname "$0")"
root=$(cd ../../.. && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -c -o test_module.o test_module.S
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/signer.key" -out "$tmp/signer.crt" \
    -days 36500 -subj "/CN=lvbs-tdx HEKI test signer" -sha256 2>/dev/null
openssl x509 -in "$tmp/signer.crt" -outform DER -out signer.crt.der
openssl req -new -newkey rsa:2048 -nodes -keyout "$tmp/secondary.key" -out "$tmp/secondary.csr" \
    -subj "/CN=lvbs-tdx HEKI test secondary" 2>/dev/null
openssl x509 -req -in "$tmp/secondary.csr" -CA "$tmp/signer.crt" -CAkey "$tmp/signer.key" \
    -CAcreateserial -CAserial "$tmp/serial" -out "$tmp/secondary.crt" -days 36500 -sha256 2>/dev/null
openssl x509 -in "$tmp/secondary.crt" -outform DER -out secondary.crt.der
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/rogue.key" -out "$tmp/rogue.crt" \
    -days 36500 -subj "/CN=lvbs-tdx HEKI test signer" -sha256 2>/dev/null
openssl x509 -in "$tmp/rogue.crt" -outform DER -out rogue.crt.der
heki() { cargo run -q --manifest-path "$root/Cargo.toml" -p heki-cli --bin heki -- "$@"; }
heki sign-module --key "$tmp/signer.key" --cert "$tmp/signer.crt" test_module.o -o test_module.ko
heki sign-module --key "$tmp/secondary.key" --cert "$tmp/secondary.crt" test_module.o \
    -o test_module_secondary.ko
heki verify-module --cert signer.crt.der test_module.ko
ls -l
