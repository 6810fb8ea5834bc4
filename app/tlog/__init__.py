"""The verifiable log: RFC 9162 Merkle tree, C2SP signed checkpoints, audits.

Pure code, no HTTP and no database, so that the server, the ``verify``
command and the tests share one implementation:

- :mod:`app.tlog.merkle`: leaf and node hashes, proof shapes, proof checks;
- :mod:`app.tlog.tree`: the stored tree (nodes, frontier, proofs and roots
  from O(log n) node reads through the store's :data:`ReadNodes`);
- :mod:`app.tlog.note`, :mod:`app.tlog.checkpoint`: keys, signed notes and
  tlog-checkpoints in C2SP's encodings;
- :mod:`app.tlog.exports`, :mod:`app.tlog.audit`: reading exports back into
  leaves, and verifying a complete export offline.
"""

from app.tlog.checkpoint import Checkpoint, open_checkpoint
from app.tlog.merkle import (
    EMPTY_ROOT,
    ProofError,
    TreeRangeError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from app.tlog.note import NoteError, SignerKey, VerifierKey, default_origin
from app.tlog.tree import (
    Frontier,
    MissingNodesError,
    Node,
    ReadNodes,
    consistency_proof,
    inclusion_proof,
    root_hash,
)

__all__ = [
    "EMPTY_ROOT",
    "Checkpoint",
    "Frontier",
    "MissingNodesError",
    "Node",
    "NoteError",
    "ProofError",
    "ReadNodes",
    "SignerKey",
    "TreeRangeError",
    "VerifierKey",
    "consistency_proof",
    "default_origin",
    "inclusion_proof",
    "leaf_hash",
    "open_checkpoint",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]
