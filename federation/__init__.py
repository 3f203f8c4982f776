"""supnet federation: the protocol between nodes, independent of the approval domain."""
