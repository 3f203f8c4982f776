"""Supervision of the local approval data: alerts, rules, complaints, evaluations, scores, stats, metrics, 问责.

The names load on first use (lazy_loader reads __init__.pyi): a command that needs the stats or the measures does
not load the rules engine and the importer's listeners with them.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
