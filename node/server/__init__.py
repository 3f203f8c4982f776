"""Serving a node: the gRPC server and its servicers, health, the enrolment listener, the scheduler, ServingNode.

NodeHost: several nodes served by one process (node.server.hosting).

The names load on first use (lazy_loader reads __init__.pyi): ``supnet health`` probes a node without loading the
servicers, the web console and the scheduler.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
