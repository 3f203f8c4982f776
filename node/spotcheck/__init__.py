"""Spot checks (抽查): commitments to the records behind reported figures, and checks that open sampled records.

tree (the Merkle sum tree and its paths), records (a bucket's records as leaves; re-judging one), commitments (the
target: commitments at report time, openings on request), check (the ancestor: drawing, verifying, probabilities),
service (the ancestor's audit entry, alert and directive text). The drill-down request kind that carries a check is
in node.drilldown; the command is ``supnet spotcheck``.
"""

from node.spotcheck.check import (
    Asker,
    Finding,
    SpotCheckPlan,
    SpotCheckResult,
    detection_probability,
    judge_answer,
    plan_check,
    run_spot_check,
)
from node.spotcheck.commitments import MAX_OPENINGS, bucket_commitments, leaf_tree, open_leaves, openings
from node.spotcheck.records import BucketKey, Leaf, bucket_leaves, leaf_sums, rejudge, salt_key
from node.spotcheck.service import (
    AUDIT_ACTION,
    directive_text,
    pick_targets,
    record_failure,
    record_result,
    recorded_check,
    result_text,
)
from node.spotcheck.tree import EMPTY_DIGEST, SUM_FIELDS, PathNode, SumTree, leaf_digest, root_from_path

__all__ = [
    "AUDIT_ACTION",
    "EMPTY_DIGEST",
    "MAX_OPENINGS",
    "SUM_FIELDS",
    "Asker",
    "BucketKey",
    "Finding",
    "Leaf",
    "PathNode",
    "SpotCheckPlan",
    "SpotCheckResult",
    "SumTree",
    "bucket_commitments",
    "bucket_leaves",
    "detection_probability",
    "directive_text",
    "judge_answer",
    "leaf_digest",
    "leaf_sums",
    "leaf_tree",
    "open_leaves",
    "openings",
    "pick_targets",
    "plan_check",
    "record_failure",
    "record_result",
    "recorded_check",
    "rejudge",
    "result_text",
    "root_from_path",
    "run_spot_check",
    "salt_key",
]
