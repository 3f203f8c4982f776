"""Observability of a node: Prometheus metrics, log lines (text or JSON), the software version.

Metrics: a registry per node, scrape-time table collectors, the /metrics server, and the one /metrics of a host
process (every hosted node's series, labelled by node); log lines carry the node's clock
and id on each.

The names load on first use (lazy_loader reads __init__.pyi): the CLI sets up its logging without loading the
metrics stack (prometheus_client, the collectors' rooms).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
