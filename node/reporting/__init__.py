"""Reporting upward: build, sign and send reports of this node's subtree; apply the children's."""
