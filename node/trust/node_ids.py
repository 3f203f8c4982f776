"""Node ids as certificates name them: the ``supnet://`` URI, the DNS name, and the subtree rule between ids.

Every certificate binds one node id twice in its subjectAltName: the identity, a URI ``supnet://gd/gz/py``,
and a DNS name ``py.gz.gd.supnet`` (the id's segments reversed under ``supnet``) that TLS stacks can match.

Why the DNS name: X.509 URI name constraints are matched on the URI's *host* only (RFC 5280 4.2.1.10), so a
constraint cannot express the path-style subtree ``supnet://gd/gz/``. Measured with cryptography 50 and
grpcio 1.85 (BoringSSL): cryptography's verifier refuses every chain holding a URI (or directoryName) constraint
("unsupported name constraint"), and BoringSSL refuses a ``supnet://gd/gz/`` constraint even for a URI inside
it, because it compares the host ``gd`` with the whole constraint. DNS constraints, on the other hand, are
hierarchical and enforced by both: a node CA carries a permitted DNS subtree ``gz.gd.supnet``, so neither a
TLS handshake nor cryptography's verifier accepts a certificate it issued for ``sz.gd.supnet``. The URI is
still the identity, and :func:`node.trust.chains.verify_node_chain` enforces the subtree rule
(:func:`is_ancestor`) on the URIs ITSELF at every step (the issuer's id must be an ancestor of the subject's
id), so the rule holds even for a certificate that leaves out its DNS name.
"""

from __future__ import annotations

import re

from federation import InvalidArgumentError

__all__ = [
    "DNS_SUFFIX",
    "URI_SCHEME",
    "is_ancestor",
    "node_dns_name",
    "node_id_from_uri",
    "node_uri",
    "validate_node_id",
]

URI_SCHEME = "supnet"
DNS_SUFFIX = "supnet"

# A node id segment usable both in the id and as a DNS label: letters, digits, inner hyphens.
_SEGMENT = re.compile(r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$")


def validate_node_id(node_id: str) -> str:
    """Return node_id if it can appear in a certificate; InvalidArgumentError naming the bad segment if not.

    A segment becomes a DNS label, so ``_`` and a trailing ``-`` are refused (as the config's pattern does) rather
    than producing certificates that TLS stacks reject later.
    """
    if not node_id:
        raise InvalidArgumentError("node id must not be empty")
    for segment in node_id.split("."):
        if not _SEGMENT.match(segment):
            raise InvalidArgumentError(
                f"node id {node_id!r}: segment {segment!r} must be 1-32 lowercase letters, digits or inner "
                "hyphens starting with a letter (it becomes a DNS label in certificates)"
            )
    return node_id


def node_uri(node_id: str) -> str:
    """The URI SAN of a node: ``gd.gz.py`` -> ``supnet://gd/gz/py``."""
    return f"{URI_SCHEME}://" + "/".join(validate_node_id(node_id).split("."))


def node_id_from_uri(uri: str) -> str:
    """The node id of a supnet URI: ``supnet://gd/gz/py`` -> ``gd.gz.py``; InvalidArgumentError otherwise."""
    prefix = f"{URI_SCHEME}://"
    if not uri.startswith(prefix):
        raise InvalidArgumentError(f"URI {uri!r} is not a {prefix} node URI")
    path = uri[len(prefix) :]
    if not path or any(mark in path for mark in "?#:@") or "." in path:
        raise InvalidArgumentError(f"URI {uri!r} must be {prefix}segment/segment/... with no host extras")
    try:
        return validate_node_id(".".join(path.split("/")))
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"URI {uri!r}: {error}") from error


def node_dns_name(node_id: str) -> str:
    """The DNS SAN of a node: ``gd.gz.py`` -> ``py.gz.gd.supnet`` (reversed, so subtrees are DNS subtrees)."""
    return ".".join([*reversed(validate_node_id(node_id).split(".")), DNS_SUFFIX])


def is_ancestor(ancestor: str, descendant: str, *, or_self: bool = False) -> bool:
    """True if ``ancestor`` is a proper prefix of ``descendant`` in the tree (or equal, with or_self)."""
    if ancestor == descendant:
        return or_self
    return descendant.startswith(ancestor + ".")
