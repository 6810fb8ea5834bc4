"""C2SP tlog-checkpoint: a log's signed tree head as a signed note's text.

The text is the origin, the tree size in decimal and the root hash in base64,
one per line; extension lines may follow and are kept but never trusted
(C2SP: they are not auditable).  The log signs with a key named after its
origin, so opening a checkpoint also checks that the two agree.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from app.tlog.merkle import HASH_SIZE
from app.tlog.note import NoteError, SignerKey, VerifierKey, open_note


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The log ``origin`` had ``size`` leaves with root ``root``."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    def sign(self, key: SignerKey) -> str:
        """The signed note served as the log's checkpoint."""
        if key.name != self.origin:
            raise NoteError(f"key {key.name!r} cannot sign for origin {self.origin!r}")
        return key.sign(self.text())

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or "" in lines[:-1]:
            raise NoteError("a checkpoint is three or more non-empty lines")
        origin, size, root, *extensions = lines[:-1]
        if not size.isascii() or not size.isdigit() or (size.startswith("0") and size != "0"):
            raise NoteError(f"checkpoint size {size[:30]!r} is not a decimal without leading 0")
        try:
            digest = base64.b64decode(root, validate=True)
        except ValueError:
            digest = b""
        if len(digest) != HASH_SIZE:
            raise NoteError(f"checkpoint root {root[:60]!r} is not base64 of a SHA-256 hash")
        return cls(origin, int(size), digest, tuple(extensions))


def open_checkpoint(note: bytes, key: VerifierKey) -> Checkpoint:
    """The checkpoint in ``note`` once its signature by ``key`` has verified."""
    checkpoint = Checkpoint.parse(open_note(note, key))
    if checkpoint.origin != key.name:
        raise NoteError(f"checkpoint origin {checkpoint.origin!r} is not the key's {key.name!r}")
    return checkpoint
