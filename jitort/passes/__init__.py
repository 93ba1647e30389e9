"""Graph optimization passes, specialized to one Signature. See pipeline.optimize."""

from .base import BASIC, EXTENDED, LAYOUT, NONE, NearMiss, PassContext, graph_pass  # noqa: F401
