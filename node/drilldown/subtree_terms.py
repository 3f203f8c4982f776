"""What a subtree (province-wide) query and its answer share: body types, limits, rows of a part, resume tokens.

A subtree query is one SubtreeQueryBody signed by the requester (:func:`build_subtree_query`); its answer is a
stream of signed envelopes (SubtreePart, SubtreeGap, SubtreeCut). The resume token the CLI shows after an answer
cut by its limit is the SubtreeResume message, base64: opaque to the user, checked when read back.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError

from federation import InvalidArgumentError, body_type_of, serialize, sign_envelope
from federation.proto.v1 import subtree_pb2 as st
from federation.proto.v1.common_pb2 import SignedEnvelope
from node.drilldown.query_terms import day_range

SUBTREE_QUERY_BODY_TYPE = body_type_of(st.SubtreeQueryBody)
PART_BODY_TYPE = body_type_of(st.SubtreePart)
GAP_BODY_TYPE = body_type_of(st.SubtreeGap)
CUT_BODY_TYPE = body_type_of(st.SubtreeCut)
ANSWER_BODY_TYPES = frozenset({PART_BODY_TYPE, GAP_BODY_TYPE, CUT_BODY_TYPE})

# Rows in a whole answer: the default, and the most one query may ask for (page on with the resume token).
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
# Rows per signed part (one page of one node's own rows).
DEFAULT_PART_ROWS = 200
MAX_PART_ROWS = 1000
# The whole search's deadline when the asker names none (seconds).
DEFAULT_DEADLINE_SECONDS = 5.0

# The request kinds a subtree query may carry (the field of the ``request`` oneof), and their rows' field in a part.
KINDS = ("cases", "alerts", "complaints", "directives", "ranking")
_ROWS_FIELD = {"cases": "cases", "alerts": "alerts", "complaints": "complaints", "directives": "directives"}

# Why a child is missing, as a hop reports it in a SubtreeGap.
GAP_UNREACHABLE = "unreachable"
GAP_DEADLINE = "deadline"
GAP_REFUSED = "refused"
GAP_ERROR = "error"


def check_request(body: st.SubtreeQueryBody) -> None:
    """InvalidArgumentError for a request every node would refuse alike (bad days), before anything is asked."""
    kind = body.WhichOneof("request")
    request: Any = getattr(body, kind) if kind else None
    if request is not None and hasattr(request, "day_from"):
        day_range(request.day_from, request.day_to)


def limit_of(requested: int) -> int:
    """The row limit to use: the default for 0, never above the maximum."""
    return DEFAULT_LIMIT if requested <= 0 else min(requested, MAX_LIMIT)


def part_rows_of(requested: int, limit: int) -> int:
    """Rows per part: the default for 0, never above the maximum nor the limit."""
    rows = DEFAULT_PART_ROWS if requested <= 0 else min(requested, MAX_PART_ROWS)
    return max(1, min(rows, limit))


def rows_of(part: st.SubtreePart) -> list[Any]:
    """The rows a part carries (cases, alerts, complaints, directives, or its one ranking entry)."""
    kind = part.WhichOneof("rows")
    if kind is None:
        return []
    if kind == "ranking":
        return [part.ranking]
    container = getattr(part, kind)
    return list(getattr(container, _ROWS_FIELD[kind]))


def row_count(part: st.SubtreePart) -> int:
    """How many rows a part carries (without copying them)."""
    kind = part.WhichOneof("rows")
    if kind is None:
        return 0
    if kind == "ranking":
        return 1
    return len(getattr(getattr(part, kind), _ROWS_FIELD[kind]))


def encode_resume(resume: st.SubtreeResume) -> str:
    """The resume token a user passes back to continue a cut answer."""
    return base64.urlsafe_b64encode(serialize(resume)).decode("ascii")


def decode_resume(token: str) -> st.SubtreeResume | None:
    """The SubtreeResume in a token from :func:`encode_resume`; None for no token; InvalidArgumentError if not ours."""
    if not token:
        return None
    resume = st.SubtreeResume()
    try:
        resume.ParseFromString(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, binascii.Error, DecodeError) as exc:
        raise InvalidArgumentError("续查令牌无效 (the resume token is not one a subtree answer gave)") from exc
    return resume


def build_subtree_query(
    private_key: Ed25519PrivateKey,
    requester_id: str,
    target_id: str,
    *,
    limit: int = 0,
    page_size: int = 0,
    resume: st.SubtreeResume | None = None,
    certificate_chain: Sequence[bytes] = (),
    issued_at: float | None = None,
    **request: object,
) -> SignedEnvelope:
    """A subtree query signed by the requester, its report certificate chain attached (every hop verifies it).

    ``request``: one of cases=, alerts=, complaints=, directives=, ranking= (the drill-down request messages).
    """
    kinds = [kind for kind in request if kind in KINDS]
    if len(kinds) != 1 or len(request) != 1:
        raise InvalidArgumentError(f"a subtree query asks for exactly one of {', '.join(KINDS)}; got {sorted(request)}")
    body = st.SubtreeQueryBody(
        target_id=target_id,
        requester_id=requester_id,
        issued_at_ms=int((time.time() if issued_at is None else issued_at) * 1000),
        nonce=os.urandom(16),
        page_size=page_size,
        limit=limit,
        **request,  # type: ignore[arg-type]
    )
    if resume is not None:
        body.resume.CopyFrom(resume)
    return sign_envelope(private_key, requester_id, SUBTREE_QUERY_BODY_TYPE, serialize(body), certificate_chain)
