"""RFC 9162 §2.1 written out from the RFC's own text, for checking app.tlog.

Nothing here imports the application: the recursive definitions (MTH, PATH,
SUBPROOF) give the expected roots and proofs, and the two verification
algorithms (§2.1.3.2 and §2.1.4.2, the bit-shifting ones) check proofs the
way a third-party auditor's client would.  Clarity first: the only help
for speed is that MTH remembers the lists it has hashed, so checking every
root of a 1000-entry log does not rehash the same complete subtrees a
thousand times.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(entries: Sequence[bytes]) -> bytes:
    """§2.1.1: the Merkle Tree Hash of a list of entries."""
    return _mth(tuple(entries))


@functools.lru_cache(maxsize=1 << 16)
def _mth(entries: tuple[bytes, ...]) -> bytes:
    n = len(entries)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + entries[0])
    k = largest_power_of_two_below(n)
    return sha256(b"\x01" + _mth(entries[:k]) + _mth(entries[k:]))


def path(m: int, entries: Sequence[bytes]) -> list[bytes]:
    """§2.1.3.1: PATH(m, D_n), the inclusion proof of entry m."""
    n = len(entries)
    if n == 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return [*path(m, entries[:k]), mth(entries[k:])]
    return [*path(m - k, entries[k:]), mth(entries[:k])]


def proof(m: int, entries: Sequence[bytes]) -> list[bytes]:
    """§2.1.4.1: PROOF(m, D_n) = SUBPROOF(m, D_n, true)."""
    return subproof(m, entries, True)


def subproof(m: int, entries: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [mth(entries)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*subproof(m, entries[:k], b), mth(entries[k:])]
    return [*subproof(m - k, entries[k:], False), mth(entries[:k])]


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf_hash: bytes, inclusion_path: Sequence[bytes], root: bytes
) -> bool:
    """§2.1.3.2, step by step."""
    if leaf_index >= tree_size:
        return False
    fn, sn = leaf_index, tree_size - 1
    r = leaf_hash
    for p in inclusion_path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = sha256(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, path: Sequence[bytes]
) -> bool:
    """§2.1.4.2, step by step (defined for first < second)."""
    if not path:
        return False
    path = list(path)
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = sha256(b"\x01" + c + fr)
            sr = sha256(b"\x01" + c + sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = sha256(b"\x01" + sr + c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_hash and sr == second_hash and sn == 0
