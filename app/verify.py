"""``livefeed verify``: an export against a signed checkpoint.

Offline (``--checkpoint`` and ``--key`` files), a complete export of ids
1..N is checked line by line and against the signed root
(:mod:`app.tlog.audit`).  With ``--url``, any export is checked event by
event against the server's inclusion proofs (:mod:`app.tlog.remote`); the
checkpoint and the key are then fetched from the server unless given as
files.  A key fetched from the server being verified proves little (a
server that forges checkpoints can serve a matching key), so that is said.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from app.cli_errors import CommandError, cannot_reach, refused
from app.tlog import Checkpoint, NoteError, VerifierKey, open_checkpoint
from app.tlog.audit import Report, verify_files
from app.tlog.exports import read_export
from app.tlog.remote import CONCURRENCY, verify_with_proofs

UNPINNED = (
    "note: the key was fetched from the server being verified, not pinned: a server that "
    "forges checkpoints can serve a key to match; pass --key with the key you pinned"
)


def verify(
    export: Path, checkpoint: Path | None, key: Path | None, url: str | None, token: str | None
) -> tuple[Report, list[str]]:
    """The report, and notes for the person (what was not pinned)."""
    if url is None:
        if checkpoint is None or key is None:
            raise CommandError(
                "offline verification needs --checkpoint and --key files; or pass --url BASE "
                "to check the export against the server's inclusion proofs"
            )
        return verify_files(export, checkpoint, key), []
    try:
        given = Given(
            checkpoint.read_bytes() if checkpoint else None, key.read_bytes() if key else None
        )
    except OSError as exc:
        return Report(problems=[f"checkpoint not verified: {exc}"]), []
    return asyncio.run(_verify_remotely(export, given, url, token))


@dataclass(frozen=True, slots=True)
class Given:
    """The checkpoint and key files' bytes, when given (else fetched)."""

    checkpoint: bytes | None
    key: bytes | None


async def _verify_remotely(
    export: Path, given: Given, url: str, token: str | None
) -> tuple[Report, list[str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=CONCURRENCY)
    try:
        async with httpx.AsyncClient(
            base_url=url, headers=headers, limits=limits, timeout=30
        ) as client:
            return await _verify_with(client, url, export, given)
    except httpx.InvalidURL as exc:
        raise CommandError(f"--url {url!r} is not a URL ({exc}); write e.g. http://host:8080")
    except httpx.TransportError as exc:
        raise cannot_reach(url, exc) from exc


async def _text(client: httpx.AsyncClient, url: str, path: str) -> bytes:
    response = await client.get(path)
    if response.status_code != 200:
        raise refused(url, response)
    return response.content


def _hashes(body: bytes) -> list[bytes]:
    """A proof's hashes; anything else is no proof (it cannot make a leaf verify)."""
    try:
        return [base64.b64decode(h, validate=True) for h in orjson.loads(body)["hashes"]]
    except (ValueError, KeyError, TypeError):
        return []


async def _verify_with(
    client: httpx.AsyncClient, url: str, export: Path, given: Given
) -> tuple[Report, list[str]]:
    report = Report()
    notes = [] if given.key else [UNPINNED]
    key = given.key or await _text(client, url, "/api/log/key")
    note = given.checkpoint or await _text(client, url, "/api/log/checkpoint")
    try:
        report.checkpoint = checkpoint = open_checkpoint(note, VerifierKey.parse(key.decode()))
    except (NoteError, UnicodeDecodeError) as exc:
        report.problems.append(f"checkpoint not verified: {exc}")
        return report, notes

    async def proof(index: int, size: int) -> Sequence[bytes]:
        params = {"id": str(index + 1), "tree_size": str(size)}
        response = await client.get("/api/log/proof/inclusion", params=params)
        if response.status_code != 200:
            raise refused(url, response)
        return _hashes(response.content)

    try:
        with export.open("rb") as stream:
            report.events, report.problems = await verify_with_proofs(
                read_export(stream), checkpoint, proof
            )
    except OSError as exc:
        report.problems.append(f"cannot read the export: {exc}")
    return report, notes


def summary(report: Report, checkpoint: Checkpoint, remote: bool) -> str:
    """The last line of a verification that found nothing wrong."""
    size, signed = checkpoint.size, f"signed by {checkpoint.origin}"
    if remote:
        return f"verified: {report.events} events, each in the tree of size {size}, {signed}"
    return f"verified: {report.events} events, ids 1..{size}, {signed}"
