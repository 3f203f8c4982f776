"""Tests of node.drilldown: queries routed hop by hop over a real tree of gRPC nodes (tests.harness.tree),
authorization, paging and masking, personal data kept out of reports, the case listing against the ORM, and
``supnet verify``.

No folder fixtures: each module builds its own module-scoped tree (tests.harness.tree.running_tree).
"""
