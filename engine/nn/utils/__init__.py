"""``engine.nn.utils``: helpers around modules (``stateless.functional_call``)."""

from engine.nn.utils import stateless

__all__ = ["stateless"]
