"""Test scaffolding for trees of CAs: a child's CA made in one step, without the enrolment flow.

Production creates a child's CA only through enrolment (a one-time token and CSRs, node.trust's
EnrolmentAuthority, or provision_tree for a whole tree); tests that examine chains need the CAs alone.
"""

from __future__ import annotations

import datetime as dt

from node.trust import CertificateAuthority, CertificateRole, generate_ec_key


def child_authority(
    parent: CertificateAuthority, child_id: str, *, now: dt.datetime, validity: dt.timedelta | None = None
) -> CertificateAuthority:
    """A CA for a node of parent's subtree: a fresh key and its CA certificate issued by parent."""
    key = generate_ec_key()
    certificate = parent.issue(child_id, CertificateRole.CA, key.public_key(), now=now, validity=validity)
    return CertificateAuthority(
        node_id=child_id,
        private_key=key,
        certificate=certificate,
        root=parent.root,
        intermediates=tuple(parent.issuer_chain),
    )
