"""engine: gradserve's autodiff library, with PyTorch's names (``import engine as torch``).

Tensors over numpy (cupy on GPU), one derivative table (``engine.ops``),
reverse mode with higher-order derivatives, grad modes, and PyTorch's
creation functions. ``engine.nn``, ``engine.optim`` and
``engine.autograd.functional`` build on the same table.
"""

from engine import (
    accelerator,
    autograd,
    backend,
    cuda,
    ops,
    wiring,
)
from engine.autograd.grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from engine.backend import Device, DType, device, float16, float32, float64, int32, int64
from engine.backend import bool_ as bool
from engine.compiler import compile
from engine.creation import (
    Generator,
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    get_default_device,
    initial_seed,
    linspace,
    logspace,
    manual_seed,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    seed,
    set_default_device,
    tensor,
    zeros,
    zeros_like,
)
from engine.functions import *  # noqa: F403 - the torch.<fn> namespace
from engine.tensor import Size, Tensor
from engine.thread_pools import get_num_threads, set_num_threads

# The modules that call each other are connected here, once, before anything runs (see engine.wiring).
wiring.connect()

float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001
dtype = DType

__version__ = "0.1.0"


def get_default_dtype() -> DType:
    return backend.default_dtype


def __getattr__(name):
    # nn, optim and the profiler load on first use, keeping `import engine` light.
    if name in ("nn", "optim", "profiler", "func"):
        import importlib

        return importlib.import_module(f"engine.{name}")
    if name == "vmap":  # torch.vmap is torch.func.vmap
        from engine.func import vmap

        return vmap
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
