"""gRPC servicers of a node: thin shells over its modules (reports, drill-down, directives, ingest, enrolment)."""

from node.server.servicers.directives import DirectiveServicer
from node.server.servicers.enrolment import EnrolmentServicer
from node.server.servicers.ingest import IngestServicer
from node.server.servicers.query import QueryServicer
from node.server.servicers.reports import ReportServicer, child_key_resolver

__all__ = [
    "DirectiveServicer",
    "EnrolmentServicer",
    "IngestServicer",
    "QueryServicer",
    "ReportServicer",
    "child_key_resolver",
]
