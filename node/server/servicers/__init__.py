"""gRPC servicers of a node: thin shells over the node's modules (reports, drill-down, ingest)."""
