"""``engine.nn.utils``: helpers around modules (``stateless.functional_call``), gradient clipping
and parameters as one vector, as ``torch.nn.utils``."""

from engine.nn.utils import stateless
from engine.nn.utils.clip_grad import clip_grad_norm_, clip_grad_value_
from engine.nn.utils.convert_parameters import parameters_to_vector, vector_to_parameters

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "stateless", "vector_to_parameters"]
