"""The verifiable log over HTTP: the signed checkpoint, the verifier key, and
RFC 9162 inclusion and consistency proofs (docs/verifiable-log.md).

The size of the tree is the log's head read from the database itself when
the request arrives, so a checkpoint covers every event acknowledged before
it was asked for, whichever worker or node acknowledged it.

The checkpoint and the key are public.  Proofs need the read credential when
one is set, and any valid one will do, whatever channels it allows: a proof
is hashes only.  (The hash next to a leaf is its neighbour's leaf hash; it
confirms a guess about that event only if the guess is right to the
microsecond of its ``ts`` and to every byte of its data.)

Every parameter is checked: a missing, malformed, repeated, unknown or
out-of-range one is ``400 bad_parameter`` naming it, never a proof of
something other than what was asked.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence

import orjson
from pydantic import BaseModel, Field
from quart import Blueprint, Response, request
from quart_schema import document_querystring, document_response

from app.errors import bad_request
from app.http.common import authorize_read, json_response, runtime
from app.http.schemas import Error
from app.tlog import Checkpoint, consistency_proof, inclusion_proof, root_hash

verifiable_log = Blueprint("verifiable_log", __name__)

TEXT = "text/plain; charset=utf-8"
MAX_ID = 2**63 - 1
CREDENTIALS = frozenset({"access_token", "_"})  # and jQuery-style cache busters
_WHOLE = re.compile(r"[0-9]{1,19}")  # ASCII only: int() also takes " 4", "4_2", "١٢"


class InclusionQuery(BaseModel):
    id: int = Field(description="the event: 1..tree_size")
    tree_size: int | None = Field(None, description="1..the log's size; default: the size now")


class ConsistencyQuery(BaseModel):
    first: int = Field(description="the older tree's size: 1..second")
    second: int = Field(description="the newer tree's size: first..the log's size")


class InclusionProof(BaseModel):
    leaf_index: int
    tree_size: int
    hashes: list[str]  # base64, RFC 9162 §2.1.3 order (leaf end first)


class ConsistencyProof(BaseModel):
    first: int
    second: int
    hashes: list[str]  # base64, RFC 9162 §2.1.4 order


def _text(body: str) -> Response:
    return Response(body, content_type=TEXT, headers={"Cache-Control": "no-store"})


def _numbers(
    params: Mapping[str, Sequence[str]], required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, int]:
    """The named whole numbers of a query (the optional ones only when given)."""
    known = {*required, *optional}
    unknown = sorted(set(params) - known - CREDENTIALS)
    if unknown:
        names = ", ".join(sorted(known))
        raise bad_request("bad_parameter", f"unknown parameter {unknown[0][:40]!r}; use {names}")
    numbers: dict[str, int] = {}
    for name in (*required, *optional):
        values = params.get(name, [])
        if not values:
            if name in required:
                raise bad_request("bad_parameter", f"{name} is missing: give it as {name}=N")
            continue
        if len(values) > 1:
            raise bad_request("bad_parameter", f"{name} is given {len(values)} times; give it once")
        raw = values[0]
        if not _WHOLE.fullmatch(raw) or int(raw) > MAX_ID:
            raise bad_request(
                "bad_parameter", f"{name}={raw[:40]!r} is not a whole number in ASCII digits"
            )
        numbers[name] = int(raw)
    return numbers


def _within(name: str, value: int, low: int, high: int, high_is: str) -> None:
    if high < low:
        raise bad_request("bad_parameter", f"{name}={value}: the log is empty, nothing to prove")
    if not low <= value <= high:
        raise bad_request(
            "bad_parameter", f"{name}={value} is out of range: use {low}..{high} ({high_is})"
        )


def _hashes(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


@verifiable_log.get("/api/log/checkpoint")
async def checkpoint() -> Response:
    """The log's current size and root, signed: a C2SP signed note (text/plain)."""
    store = runtime().store
    size = (await store.bounds()).latest_id
    signer = store.signer
    root = await root_hash(size, store.read_nodes)
    return _text(Checkpoint(signer.name, size, root).sign(signer))


@verifiable_log.get("/api/log/key")
async def key() -> Response:
    """The C2SP verifier key checkpoints are signed with: pin it once, out of band."""
    return _text(runtime().store.signer.verifier().encode() + "\n")


@verifiable_log.get("/api/log/proof/inclusion")
@document_querystring(InclusionQuery)
@document_response(InclusionProof)
@document_response(Error, 400)
async def inclusion() -> Response:
    """RFC 9162 inclusion proof of event ``id`` in the tree of ``tree_size`` (default:
    now) events."""
    rt = runtime()
    params = request.args.to_dict(flat=False)
    await authorize_read(rt, params)
    asked = _numbers(params, ("id",), ("tree_size",))
    size = (await rt.store.bounds()).latest_id
    tree_size = asked.get("tree_size", size)
    _within("tree_size", tree_size, 1, size, "the log's size now")
    _within("id", asked["id"], 1, tree_size, "the tree size")
    proof = await inclusion_proof(asked["id"] - 1, tree_size, rt.store.read_nodes)
    body = {"leaf_index": asked["id"] - 1, "tree_size": tree_size, "hashes": _hashes(proof)}
    return json_response(orjson.dumps(body))


@verifiable_log.get("/api/log/proof/consistency")
@document_querystring(ConsistencyQuery)
@document_response(ConsistencyProof)
@document_response(Error, 400)
async def consistency() -> Response:
    """RFC 9162 proof that the tree of ``first`` events is a prefix of the tree of
    ``second``."""
    rt = runtime()
    params = request.args.to_dict(flat=False)
    await authorize_read(rt, params)
    asked = _numbers(params, ("first", "second"))
    size = (await rt.store.bounds()).latest_id
    _within("second", asked["second"], 1, size, "the log's size now")
    _within("first", asked["first"], 1, asked["second"], "second")
    proof = await consistency_proof(asked["first"], asked["second"], rt.store.read_nodes)
    body = {"first": asked["first"], "second": asked["second"], "hashes": _hashes(proof)}
    return json_response(orjson.dumps(body))
