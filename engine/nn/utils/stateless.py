"""``torch.nn.utils.stateless.functional_call``: the same function as ``engine.func.functional_call``."""

from engine.func.stateless import functional_call

__all__ = ["functional_call"]
