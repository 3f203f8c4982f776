"""One ``/metrics`` for every node a host process serves: the nodes' registries merged, each series labelled ``node``.

A host (node.server.hosting) keeps one registry per node (node.observability.metrics.NodeMetrics), so counts never
mix; only the exposition is shared. At each scrape every node's registry is collected in turn, each sample gets the
node's id as its ``node`` label (``supnet_build_info`` already carries it), and families of the same name are merged
into one, so the text has one HELP and one TYPE per family however many nodes it covers. Names and the other labels
stay exactly those of a standalone node's endpoint (README.md, "Metrics").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# The label naming the node a series belongs to; supnet_build_info has had it from the start.
NODE_LABEL = "node"


class HostedNodesCollector(Collector):
    """The series of several nodes' registries, each labelled with its node id, one family per name."""

    def __init__(self, registries: Mapping[str, CollectorRegistry]) -> None:
        self._registries = dict(registries)

    def describe(self) -> list[Metric]:
        # No names up front: registering must not collect (the table collectors would read every database).
        return []

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for node_id, registry in self._registries.items():
            try:
                families = list(registry.collect())
            except Exception:
                # One node's failing collector must not fail the scrape of all the others.
                log.exception("metrics: collecting the series of node %s failed; left out of this scrape", node_id)
                continue
            for family in families:
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                elif into.type != family.type:
                    log.warning(
                        "metrics: %s of node %s is a %s, not a %s as before; left out",
                        family.name,
                        node_id,
                        family.type,
                        into.type,
                    )
                    continue
                for sample in family.samples:
                    into.samples.append(sample._replace(labels={**sample.labels, NODE_LABEL: node_id}))
        yield from merged.values()


def hosted_registry(registries: Mapping[str, CollectorRegistry]) -> CollectorRegistry:
    """A registry serving the series of every node in ``registries`` (node id -> its registry), labelled by node."""
    registry = CollectorRegistry()
    registry.register(HostedNodesCollector(registries))
    return registry
