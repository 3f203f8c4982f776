"""supnet federation: the protocol between nodes, independent of the approval domain.

The names load on first use (lazy_loader reads __init__.pyi): a module needing only the errors does not load the
protocol stack (grpc, cryptography, SQLAlchemy).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
