#!/bin/sh
# Wall-clock comparison of `heki verify-module` and `openssl cms -verify` on
# the same signed modules (4096-bit RSA, SHA-256, no signed attributes, made
# with `heki sign-module`, which is byte-identical to Linux's sign-file).
# Both tools pay process start-up, so each is timed on a 1 MiB and a 64 MiB
# module: the 1 MiB time is the end-to-end cost, the slope between the two is
# the per-MiB verification throughput. In-process numbers: `cargo bench -p heki-tdx`.
#
#   tools/heki/bench-openssl.sh [runs]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-20}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo build --quiet --release -p heki-cli --manifest-path "$root/Cargo.toml"
heki="${CARGO_TARGET_DIR:-$root/target}/release/heki"
openssl req -x509 -newkey rsa:4096 -nodes -keyout "$tmp/k.pem" -out "$tmp/c.pem" \
    -days 30 -subj "/CN=heki bench" 2>/dev/null
for mib in 1 64; do
    head -c $((mib << 20)) /dev/urandom > "$tmp/$mib.in"
    "$heki" sign-module --key "$tmp/k.pem" --cert "$tmp/c.pem" "$tmp/$mib.in" -o "$tmp/$mib.ko"
    "$heki" extract-signature "$tmp/$mib.ko" --content "$tmp/$mib.bin" --signature "$tmp/$mib.p7s" >/dev/null
done

t() { # command... -> microseconds per run
    start=$(date +%s%N)
    i=0
    while [ $i -lt "$runs" ]; do "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; i=$((i + 1)); done
    echo $(( ($(date +%s%N) - start) / runs / 1000 ))
}
ossl() {
    openssl cms -verify -binary -inform DER -noverify -nointern -certfile "$tmp/c.pem" \
        -in "$tmp/$1.p7s" -content "$tmp/$1.bin" -out /dev/null
}
h1=$(t "$heki" verify-module --cert "$tmp/c.pem" "$tmp/1.ko")
h64=$(t "$heki" verify-module --cert "$tmp/c.pem" "$tmp/64.ko")
o1=$(t ossl 1)
o64=$(t ossl 64)
echo "runs: $runs; microseconds per verification, process start-up included"
printf '%-22s %10s %10s %16s %16s\n' tool "1 MiB" "64 MiB" "1 MiB: MiB/s" "slope: MiB/s"
for row in "heki_verify-module $h1 $h64" "openssl_cms_-verify $o1 $o64"; do
    set -- $row
    printf '%-22s %10d %10d %16.0f %16.0f\n' "$(echo "$1" | tr _ ' ')" "$2" "$3" \
        "$(echo "1000000 / $2" | bc -l)" "$(echo "63 * 1000000 / ($3 - $2)" | bc -l)"
done
