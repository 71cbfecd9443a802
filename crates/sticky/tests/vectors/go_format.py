#!/usr/bin/env python3
"""Cookie values in the Go reference's formats (vulcand/oxy roundrobin), computed with
Python's standard library and `cryptography` (an implementation independent of the Rust
crates), for the interop tests in `../interop.rs`. Run: python3 go_format.py"""
import base64
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FNV_OFFSET = 14695981039346656037  # published FNV-1a 64 offset basis
FNV_PRIME = 1099511628211  # published FNV 64 prime


def hash_value(salt, url):
    """HashValue.Get: fnv.New64a over salt then url, fmt.Sprintf("%x")."""
    h = FNV_OFFSET
    for b in (salt + url).encode():
        h = ((h ^ b) * FNV_PRIME) % 2**64
    return format(h, "x")


def go_nonce(unix_nano, rand4):
    """AESValue.Get's nonce: binary.PutVarint(nonce, UnixNano()), then bytes 8..12 random."""
    ux = ((unix_nano << 1) ^ (unix_nano >> 63)) % 2**64  # zigzag
    out = bytearray(12)
    i = 0
    while ux >= 0x80 and i < 12:
        out[i] = (ux & 0x7F) | 0x80
        ux >>= 7
        i += 1
    if i < 12:
        out[i] = ux
    out[8:12] = rand4
    return bytes(out)


def aes_value(key, plaintext, unix_nano, rand4):
    """AESValue.Get: base64.RawURLEncoding(Seal(plaintext) ‖ nonce)."""
    nonce = go_nonce(unix_nano, rand4)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), None)
    return base64.urlsafe_b64encode(sealed + nonce).rstrip(b"=").decode()


for salt, url in [("foo", "http://10.0.0.1:8080"), ("", "http://10.0.0.2:8080/api"), ("s", "https://backend.example:443")]:
    print(f"hash {salt!r} {url} {hash_value(salt, url)}")
for key, plaintext in [
    (bytes(range(16)), "http://10.0.0.1:8080"),
    (bytes(range(24)), "http://10.0.0.2:8080/api?x=1|1700003600"),
    (bytes(range(32)), "https://backend.example:443|1700003600"),
]:
    print(f"aes {len(key)} {plaintext} {aes_value(key, plaintext, 1_700_000_000_123_456_789, b'RAND')}")
