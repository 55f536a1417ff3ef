#!/usr/bin/env python3
"""Regenerates the committed seed inputs of the heki-tdx fuzz targets.

Run from anywhere: `python3 heki-tdx/fuzz/seeds/gen-seeds.py`. The layouts are
documented at the top of each target in ../fuzz_targets/. The module-signature
seeds are cut from the committed fixtures in heki-tdx/tests/data (their
private keys are gone, so no new signatures can be made).
"""
import hashlib
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "tests", "data")
MAGIC = b"~Module signature appended~\n"
KVA = 0xFFFF_FFFF_8100_0000
MVA = 0xFFFF_FFFF_C000_0000


def out(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rng(va, pa, epa, attr):
    return struct.pack("<QQQQ", va, pa, epa, attr)


def heki_page(next_pa, ranges):
    return struct.pack("<QQQ", 0xFFFF_8880_DEAD_0000, next_pa, len(ranges)) + b"".join(ranges)


def heki_patch(pa0, pa1, code):
    return struct.pack("<QQB", pa0, pa1, len(code)) + code.ljust(5, b"\0") + b"\0\0"


def patch_info(patches, max_count=None):
    hdr = struct.pack("<I", 0).ljust(24, b"\0")
    hdr += struct.pack("<QQQ", MVA, len(patches), max_count or len(patches))
    return hdr + b"".join(patches)


# --- pages: header (cfg, total u16, first page, a1 u16, a2 page), then 256-byte page chunks.
def pages_seed(total, chunks, a1=0x20, a2=0, first=1, cfg=2):
    hdr = struct.pack("<BHBHB", cfg, total, first, a1, a2)
    return hdr + b"".join(c.ljust(256, b"\0") for c in chunks)


JMP5 = bytes([0xE9, 0x10, 0x20, 0x00, 0x00])
JMP2 = bytes([0xEB, 0x7F])
NOP5 = bytes([0x0F, 0x1F, 0x44, 0x00, 0x00])

kdata = pages_seed(
    3,
    [
        heki_page(0, [
            rng(KVA, 0x2000, 0x2005, 0),
            rng(KVA + 0x1000, 0x2010, 0x2015, 3),
            rng(KVA + 0x2000, 0x3000, 0x4000, 6),
        ]),
        b"CERTS".ljust(16, b"\0") + b"KINFO".ljust(16, b"\0") + heki_patch(0x5000, 0, b"\xcc"),
    ],
    a1=0x1020,
)
out("pages", "kdata", kdata)

info = patch_info([heki_patch(MVA & 0xFFFFF000 | 0x10, 0, JMP5)])
module = pages_seed(
    4,
    [
        heki_page(0, [
            rng(KVA, 0x2000, 0x2008, 7),
            rng(MVA, 0x3000, 0x4000, 0),
            rng(MVA + 0x2000, 0x4000, 0x5000, 2),
            rng(KVA + 0x1000, 0x2040, 0x2040 + len(info), 8),
        ]),
        b"\x7fELF\x02\x01\x01\0".ljust(0x40, b"\0") + info,
        b"\xcc" * 16,
    ],
)
out("pages", "module", module)

protect = pages_seed(
    9,
    [
        heki_page(0x2000, [rng(KVA + i * 0x1000, 0x10000 + i * 0x1000, 0x11000 + i * 0x1000, 3) for i in range(7)]),
        heki_page(0, [rng(KVA + 0x7000, 0x20000, 0x22000, 5), rng(KVA + 0x9000, 0x30000, 0x31000, 1)]),
    ],
)
out("pages", "protect", protect)

out("pages", "key", pages_seed(1, [heki_page(0, [rng(KVA + 3, 0x1103, 0x1110, 0)])]))
out("pages", "kexec", pages_seed(3, [heki_page(0, [
    rng(KVA, 0x1100, 0x1180, 0),
    rng(KVA + 0x1000, 0x1180, 0x11C0, 1),
    rng(KVA + 0x2000, 0x4000, 0x6000, 2),
])]))

# --- modsig_trailer: tiny signed files and blocklist slots.
def signed(content, cms):
    return content + cms + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, len(cms)) + MAGIC


out("modsig_trailer", "tiny", signed(b"hello", b"\x30\x00"))
out("modsig_trailer", "empty_content", signed(b"", b"\x30\x03\x02\x01\x00"))
slot = lambda s: s.ljust(133, b"\0")
out("modsig_trailer", "blocklist",
    slot(b"bin:" + hashlib.sha256(b"x").hexdigest().encode())
    + slot(b"tbs:" + hashlib.sha384(b"y").hexdigest().encode()) + slot(b""))

# --- modsig_verify: the CMS blobs of the fixtures (detached over content.bin),
# one whole signed module, and a secondary certificate.
mods = os.path.join(DATA, "modsig")
for ko in ["a_sha256", "b_sha384_attrs", "c_sha512_keyid", "d_sha256", "a_with_certs"]:
    f = open(os.path.join(mods, ko + ".ko"), "rb").read()
    assert f.endswith(MAGIC)
    sig_len = struct.unpack(">I", f[-len(MAGIC) - 4:-len(MAGIC)])[0]
    end = len(f) - len(MAGIC) - 12
    out("modsig_verify", ko + ".p7s", f[end - sig_len:end])
shutil.copy(os.path.join(mods, "a_sha256.ko"), os.path.join(HERE, "modsig_verify", "a_sha256.ko"))
shutil.copy(os.path.join(mods, "d.crt.der"), os.path.join(HERE, "modsig_verify", "d.crt.der"))

# --- elf: the fixture relocatable object.
out("elf", "mini.o", open(os.path.join(DATA, "elf", "mini.o"), "rb").read())

# --- patch: op byte + payload sequences (see fuzz_targets/patch.rs).
def op(kind, hi=0):
    return bytes([kind | hi << 3])


def step(which, site=0):
    return op(6, which) + bytes([site])


seq = (
    op(3) + heki_patch(0x1000, 0, NOP5)  # NOP5 in place before registration
    + op(1) + heki_patch(0x1000, 0, JMP5)
    + op(1) + heki_patch(0x1100, 0, JMP2)
    + op(1) + heki_patch(0x2FFE, 0x5000, JMP5)
    + step(0) + step(1) + step(3)  # NOP -> JMP at 0x1000
    + step(0) + step(2) + step(4)  # and back
    + step(0, 2) + step(1, 2) + step(3, 2)  # straddling site
    + op(0) + heki_patch(0x1100, 0, b"\xcc")
)
out("patch", "kernel_sites", seq)
mod = (
    op(5, 1) + patch_info([heki_patch(0x9000, 0, JMP5), heki_patch(0x9010, 0, JMP2)], 4)
    + op(2, 1) + heki_patch(0xA000, 0, JMP5)
    + op(2, 1 | 4) + heki_patch(0xA100, 0, JMP2)
    + step(0, 0) + step(2, 0)
    + op(4, 1 | 4) + op(4, 3) + op(4, 1)
)
out("patch", "module_sites", mod)
