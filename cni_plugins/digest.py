"""SHA-256 for names and tags derived from configuration (nft set names, owner tags, layout versions).

Through the interpreter's built-in ``_sha256``: ``hashlib`` loads OpenSSL (~2.5 ms), a noticeable share
of a standalone plugin run that only ever hashes a few short strings. Same digests either way.
"""

try:
    from _sha256 import sha256
except ImportError:  # an interpreter built without it
    from hashlib import sha256


def sha256_hex(text: str) -> str:
    return sha256(text.encode()).hexdigest()


def sha256_bytes(text: str) -> bytes:
    return sha256(text.encode()).digest()
