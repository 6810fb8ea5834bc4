"""C2SP signed notes, keys and tlog-checkpoints: byte-exact with the reference encodings."""

from __future__ import annotations

import base64
import hashlib
import socket

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.tlog import (
    Checkpoint,
    NoteError,
    SignerKey,
    VerifierKey,
    default_origin,
    open_checkpoint,
)
from app.tlog.note import open_note

# The worked example in the documentation of Go's golang.org/x/mod/sumdb/note,
# the reference implementation of signed notes: Ed25519 is deterministic, so
# our signature over the same text with the same key must be these bytes.
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FF"
    "YC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ORIGIN = "example.org/log"


def independent_open(note: str, vkey: str) -> str:
    """Check a signed note by hand with `cryptography`, straight from the C2SP text."""
    name, key_hash, key_b64 = vkey.split("+", 2)
    raw = base64.b64decode(key_b64)
    assert raw[0] == 0x01 and len(raw) == 33
    expected_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert key_hash == expected_id.hex()
    text, signatures = note[: note.rindex("\n\n") + 1], note[note.rindex("\n\n") + 2 :]
    [line] = signatures.splitlines()
    dash, signer, sig_b64 = line.split(" ")
    assert dash == "\u2014" and signer == name
    sig = base64.b64decode(sig_b64)
    assert sig[:4] == expected_id and len(sig) == 4 + 64
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(sig[4:], text.encode())  # raises if bad
    return text


def test_signing_reproduces_the_reference_note_byte_for_byte():
    """Our signer, given Go's example key and text, writes Go's example note."""
    assert SignerKey.parse(GO_SIGNER).sign(GO_TEXT) == GO_NOTE


def test_reference_keys_parse_and_encode_unchanged():
    """Go's signer and verifier keys round-trip, and the signer derives the verifier."""
    signer = SignerKey.parse(GO_SIGNER)
    assert signer.encode() == GO_SIGNER
    assert signer.verifier().encode() == GO_VERIFIER
    assert VerifierKey.parse(GO_VERIFIER).encode() == GO_VERIFIER


def test_reference_note_opens_with_the_reference_key():
    """A note signed by Go's implementation verifies with our opener."""
    assert open_note(GO_NOTE.encode(), VerifierKey.parse(GO_VERIFIER)) == GO_TEXT


def test_our_note_verifies_with_an_independent_check():
    """A fresh key's note passes a hand-written C2SP check using `cryptography` alone."""
    signer = SignerKey.generate(ORIGIN)
    text = "hello\nworld\n"
    note = signer.sign(text)
    assert independent_open(note, signer.verifier().encode()) == text


def test_key_id_is_the_c2sp_hash_of_name_type_and_key():
    """Key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    key = SignerKey.generate(ORIGIN)
    public = key.private_key.public_key().public_bytes_raw()
    assert key.id == hashlib.sha256(f"{ORIGIN}\n".encode() + b"\x01" + public).digest()[:4]
    assert key.verifier().encode().split("+")[1] == key.id.hex()


def test_a_verifier_key_whose_base64_holds_plus_signs_parses():
    """Keys split on their first two '+' only: base64 may contain '+'."""
    for seed in range(256):
        key = SignerKey.parse(_signer_text(ORIGIN, bytes([seed]) * 32))
        vkey = key.verifier().encode()
        if "+" in vkey.split("+", 2)[2]:
            assert VerifierKey.parse(vkey) == VerifierKey.parse(vkey + "\n")
            assert VerifierKey.parse(vkey).encode() == vkey
            return
    pytest.fail("no seed gave a key with '+' in its base64")


def _signer_text(name: str, seed: bytes) -> str:
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    ident = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4].hex()
    payload = base64.b64encode(b"\x01" + seed).decode()
    return f"PRIVATE+KEY+{name}+{ident}+{payload}"


@pytest.mark.parametrize(
    "text",
    [
        "PeterNeumann+c74f20a3",  # two fields
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong ID
        "PeterNeumann+c74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # short ID
        "PeterNeumann+c74f20a3+ApC2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # type 0x02
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # truncated key
        "Othername+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # ID of another name
    ],
)
def test_malformed_verifier_keys_are_refused(text):
    """Every malformed or mismatched verifier key raises NoteError."""
    with pytest.raises(NoteError):
        VerifierKey.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        GO_VERIFIER,  # a verifier key where a signer key belongs
        GO_SIGNER.replace("c74f20a3", "c74f20a4"),
        GO_SIGNER.replace("PeterNeumann", "PeterNeumann2"),
        GO_SIGNER[:-4],
    ],
)
def test_malformed_signer_keys_are_refused(text):
    """A signer key must start PRIVATE+KEY+ and its ID must match the derived key."""
    with pytest.raises(NoteError):
        SignerKey.parse(text)


def test_generated_keys_round_trip_and_keep_the_name():
    """A generated signer key parses back to the same key and signs alike."""
    key = SignerKey.generate(ORIGIN)
    again = SignerKey.parse(key.encode())
    assert again.name == ORIGIN and again.id == key.id
    assert again.sign("x\n") == key.sign("x\n")  # Ed25519 is deterministic


def test_default_origin_names_this_machine():
    """With no LIVEFEED_LOG_ORIGIN a key is named livefeed/<hostname>."""
    assert default_origin() == f"livefeed/{socket.gethostname()}"


def _flip_signature_byte(note: str) -> str:
    head, _, b64 = note.rstrip("\n").rpartition(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    return f"{head} {base64.b64encode(bytes(raw)).decode()}\n"


def test_notes_that_must_not_open():
    """Bad signature, other key, broken layout or characters: each refused with a reason."""
    key = SignerKey.generate(ORIGIN)
    good = key.sign("a\nb\n")
    impostor = SignerKey.generate(ORIGIN).sign("a\nb\n")
    cases = {
        "does not verify": _flip_signature_byte(good),
        "no signature by": impostor,
        "blank line": good.replace("\n\n", "\n"),
        "end with a newline": good.rstrip("\n"),
        "control character": good.replace("a\n", "a\t\n"),
        "em dash": good.replace("\u2014", "-"),
        "malformed": good.replace(f"{ORIGIN} ", f"{ORIGIN}  "),
    }
    for reason, note in cases.items():
        with pytest.raises(NoteError, match=reason):
            open_note(note.encode(), key.verifier())
    with pytest.raises(NoteError, match="UTF-8"):
        open_note(good.encode() + b"\xff", key.verifier())


def test_other_signatures_are_ignored_and_ours_still_counts():
    """A witness's cosignature on the note does not stop our key verifying it."""
    key, witness = SignerKey.generate(ORIGIN), SignerKey.generate("witness.example/w1")
    note = key.sign("a\n")
    cosigned = note + witness.sign("a\n").split("\n\n", 1)[1]
    assert open_note(cosigned.encode(), key.verifier()) == "a\n"
    assert open_note(cosigned.encode(), witness.verifier()) == "a\n"


def test_checkpoint_text_is_origin_size_and_base64_root():
    """The note text is exactly three lines; its signature line is in the origin's name."""
    key = SignerKey.generate(ORIGIN)
    root = hashlib.sha256(b"root").digest()
    note = Checkpoint(ORIGIN, 12, root).sign(key)
    text = f"{ORIGIN}\n12\n{base64.b64encode(root).decode()}\n"
    assert note.startswith(text + "\n\u2014 " + ORIGIN + " ")
    assert independent_open(note, key.verifier().encode()) == text
    assert open_checkpoint(note.encode(), key.verifier()) == Checkpoint(ORIGIN, 12, root)


def test_checkpoint_extension_lines_are_kept():
    """Lines after the root hash are C2SP extensions: parsed, kept, not required."""
    root = hashlib.sha256(b"").digest()
    checkpoint = Checkpoint(ORIGIN, 0, root, ("Timestamp: 1",))
    assert Checkpoint.parse(checkpoint.text()) == checkpoint


@pytest.mark.parametrize(
    "text",
    [
        "o\n12\n",
        "o\n012\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n1\nAAAA\n",
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\nx\n",
        "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    ],
)
def test_malformed_checkpoints_are_refused(text):
    """Size in plain decimal, a 32-byte base64 root, no empty line: else NoteError."""
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def test_a_checkpoint_must_be_signed_in_its_origins_name():
    """Signing or opening a checkpoint under another name than its origin fails."""
    key = SignerKey.generate("other.example/log")
    checkpoint = Checkpoint(ORIGIN, 1, hashlib.sha256(b"").digest())
    with pytest.raises(NoteError, match="cannot sign"):
        checkpoint.sign(key)
    with pytest.raises(NoteError, match="origin"):
        open_checkpoint(key.sign(checkpoint.text()).encode(), key.verifier())
