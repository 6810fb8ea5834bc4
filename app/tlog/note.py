"""C2SP signed notes with Ed25519 keys, in the encodings Go's sumdb and every
C2SP tool use, so that their verifiers accept our checkpoints and ours theirs.

- signature line: ``— <name> <base64(key ID || signature)>`` (U+2014, em dash)
- key ID: ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``
- verifier key: ``<name>+<hex key ID>+<base64(0x01 || public key)>``
- signer key: ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``

A key name is non-empty, holds no Unicode space and no ``+``; keys are parsed
by splitting on the first ``+`` signs only, since base64 may contain ``+``.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01  # the signature type byte C2SP assigns to Ed25519
SIGNATURE_PREFIX = "\u2014 "
PRIVATE_PREFIX = "PRIVATE+KEY+"
MAX_SIGNATURES = 100  # C2SP: accept at least 16; more only costs the verifier time
KEY_ID_SIZE = 4


class NoteError(ValueError):
    """A note or key that is malformed, or a signature that does not verify."""


def valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def default_origin() -> str:
    """``livefeed/<hostname>``: the key name (and checkpoint origin) of a new key."""
    return f"livefeed/{socket.gethostname()}"


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID C2SP recommends for an Ed25519 key."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _split_key(text: str, parts: int, what: str) -> list[str]:
    fields = text.strip().split("+", parts - 1)
    if len(fields) != parts:
        raise NoteError(f"a {what} has {parts} fields separated by '+'")
    return fields


def _key_material(name: str, hex_id: str, encoded: str, what: str) -> tuple[bytes, bytes]:
    """Check a key's name, ID and payload; returns (key ID, 32 key bytes)."""
    if not valid_name(name):
        raise NoteError(f"{what} name {name!r} is empty or holds a space or '+'")
    try:
        ident = bytes.fromhex(hex_id) if len(hex_id) == 2 * KEY_ID_SIZE else b""
        payload = base64.b64decode(encoded, validate=True)
    except ValueError:  # binascii.Error, and non-ASCII text
        ident = payload = b""
    if len(ident) != KEY_ID_SIZE:
        raise NoteError(f"{what} ID {hex_id!r} is not 8 hex digits")
    if len(payload) != 33 or payload[0] != ED25519:
        raise NoteError(f"{what} is not base64 of 0x01 and a 32-byte Ed25519 key")
    return ident, payload[1:]


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A log's public key under its name: what an auditor pins."""

    name: str
    id: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        name, hex_id, encoded = _split_key(text, 3, "verifier key")
        ident, raw = _key_material(name, hex_id, encoded, "verifier key")
        if key_id(name, raw) != ident:
            raise NoteError(f"verifier key ID {hex_id} does not match its name and key")
        return cls(name, ident, Ed25519PublicKey.from_public_bytes(raw))

    def encode(self) -> str:
        raw = bytes([ED25519]) + _raw_public(self.public_key)
        return f"{self.name}+{self.id.hex()}+{base64.b64encode(raw).decode()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class SignerKey:
    """A log's private key under its name; its encoding starts PRIVATE+KEY+."""

    name: str
    id: bytes
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> SignerKey:
        if not valid_name(name):
            raise NoteError(f"key name {name!r} is empty or holds a space or '+'")
        private = Ed25519PrivateKey.generate()
        return cls(name, key_id(name, _raw_public(private.public_key())), private)

    @classmethod
    def parse(cls, text: str) -> SignerKey:
        if not text.strip().startswith(PRIVATE_PREFIX):
            raise NoteError("a signer key starts with PRIVATE+KEY+")
        name, hex_id, encoded = _split_key(text.strip()[len(PRIVATE_PREFIX) :], 3, "signer key")
        ident, seed = _key_material(name, hex_id, encoded, "signer key")
        private = Ed25519PrivateKey.from_private_bytes(seed)
        if key_id(name, _raw_public(private.public_key())) != ident:
            raise NoteError(f"signer key ID {hex_id} does not match its name and key")
        return cls(name, ident, private)

    def encode(self) -> str:
        seed = self.private_key.private_bytes_raw()
        payload = base64.b64encode(bytes([ED25519]) + seed).decode()
        return f"{PRIVATE_PREFIX}{self.name}+{self.id.hex()}+{payload}"

    def verifier(self) -> VerifierKey:
        return VerifierKey(self.name, self.id, self.private_key.public_key())

    def sign(self, text: str) -> str:
        """The signed note: ``text`` (ending in a newline), a blank line, our signature."""
        _check_text(text)
        signature = self.id + self.private_key.sign(text.encode())
        return f"{text}\n{SIGNATURE_PREFIX}{self.name} {base64.b64encode(signature).decode()}\n"


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    _check_characters(text)


def _check_characters(text: str) -> None:
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise NoteError("a note holds no control character other than newline")


def open_note(note: bytes, key: VerifierKey) -> str:
    """The text of ``note`` once ``key``'s signature on it has verified.

    As C2SP requires: signatures by other keys are ignored (witness
    cosignatures, a rotated key), one by ``key`` that fails rejects the note,
    and a note without a good signature by ``key`` is rejected."""
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"the note is not UTF-8 (byte {exc.start})")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise NoteError("the note has no blank line before its signatures")
    _check_characters(decoded)
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("the note's signature lines end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has more than {MAX_SIGNATURES} signatures")
    verified = False
    for line in lines:
        name, signature = _signature_line(line)
        if name == key.name and signature[:KEY_ID_SIZE] == key.id:
            if not key.verify(text.encode(), signature[KEY_ID_SIZE:]):
                raise NoteError(f"the signature by {key.name}+{key.id.hex()} does not verify")
            verified = True
    if not verified:
        raise NoteError(f"the note has no signature by {key.name}+{key.id.hex()}")
    return text


def _signature_line(line: str) -> tuple[str, bytes]:
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError(f"signature line {line[:40]!r} does not start with an em dash and a space")
    name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except ValueError:
        signature = b""
    if not valid_name(name) or len(signature) <= KEY_ID_SIZE:
        raise NoteError(f"signature line {line[:40]!r} is malformed")
    return name, signature
