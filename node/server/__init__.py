"""Serving a node: the gRPC server and its servicers, the enrolment listener, the scheduler."""
