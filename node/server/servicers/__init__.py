"""gRPC servicers of a node: thin shells over the node's modules (reports, drill-down, ingest, enrolment)."""

from node.server.servicers.enrolment import EnrolmentServicer
from node.server.servicers.ingest import IngestServicer
from node.server.servicers.query import QueryServicer
from node.server.servicers.reports import ReportServicer, child_key_resolver

__all__ = [
    "EnrolmentServicer",
    "IngestServicer",
    "QueryServicer",
    "ReportServicer",
    "child_key_resolver",
]
