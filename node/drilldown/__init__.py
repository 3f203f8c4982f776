"""Drill-down: answers to ancestors' queries about this node's subtree, answered locally or routed one hop down."""
