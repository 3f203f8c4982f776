"""A whole province on one machine (``supnet simulate province``): its shape, the run, and the figures it prints."""

from node.simulate.province import (
    SEARCH_DEADLINE_SECONDS,
    SIMULATION_CONFIG,
    TARGETS,
    SimulationOptions,
    leaves_total,
    missed_targets,
    province_received,
    simulate_province,
    stored_cases,
)
from node.simulate.shape import Shape, province_topology

__all__ = [
    "SEARCH_DEADLINE_SECONDS",
    "SIMULATION_CONFIG",
    "TARGETS",
    "Shape",
    "SimulationOptions",
    "leaves_total",
    "missed_targets",
    "province_received",
    "province_topology",
    "simulate_province",
    "stored_cases",
]
