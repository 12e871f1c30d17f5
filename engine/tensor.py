"""Tensor: an array with autograd state, and PyTorch's Python surface over the table.

A Tensor holds its array (``_data``, numpy or cupy), ``requires_grad``,
``grad``, ``grad_fn`` and a version counter shared with its views. Every
method that computes is a thin call of ``apply(op, ...)`` with an entry of
``engine.ops``, which declares it (``method=``, ``inplace=``). The methods
written here translate PyTorch's signatures (``dim``, ``keepdim``, varargs
shapes, ``alpha``) into the table's parameters; the plain ones (``x.sin()``,
``x.mul(y)``, ``x.sin_()``) are generated from the declarations at the end.
"""

from __future__ import annotations

import itertools
import warnings

from engine import backend, ops
from engine.autograd import grad_mode

_grad_enabled = grad_mode._grad_enabled.get
# What Tensor methods call in modules that import this one; engine.wiring.connect() binds them
# when the engine is imported.
_apply = None  # engine.autograd.function.apply: run a table op, recording it
_apply_inplace = None  # engine.autograd.inplace.apply_inplace
_backward = None  # engine.autograd.backward.backward
_to_array = None  # engine.creation.to_array
_rand_array = None  # engine.creation.rand_array
# engine.compile's tracer sets this while a function is traced: ``value_hook(tensor, how)`` each
# time a tensor's value reaches Python (``item``, ``tolist``, ``numpy``; ``engine.tensor(t)``
# says "copy"), so a replay can guard it or the trace can stop.
value_hook = None
# Python numbers (and numpy scalars): the operands PyTorch takes as a Scalar argument.
_NUMBERS = (int, float, backend.numpy.generic)
# Ops without parameters share one empty dict (nothing mutates params).
_NO_PARAMS: dict = {}


def _shape_arg(shape) -> tuple:
    """Accept ``f(2, 3)``, ``f((2, 3))`` and ``f([2, 3])`` like PyTorch."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(n) for n in shape)


def _dims_arg(dims):
    if dims is None:
        return None
    if isinstance(dims, (tuple, list)):
        return tuple(int(d) for d in dims)
    return int(dims)


def _reduced_dims(dims):
    """``dim`` of sum, mean, var, std and norm: an empty list means every axis there, as in PyTorch."""
    dims = _dims_arg(dims)
    return None if dims == () else dims


def _needs_dims(tensor, message, error=RuntimeError):
    """PyTorch's error for a method that needs an axis to work along, called on a 0-d tensor."""
    if not tensor.ndim:
        raise error(message)


class Tensor:
    """A multi-dimensional array that records the ops applied to it."""

    __slots__ = (
        "__weakref__",
        "_accumulator",
        "_base",
        "_data",
        "_grad",
        "_hooks",
        "_output_nr",
        "_requires_grad",
        "_retains_grad",
        "_tangents",
        "_version_counter",
        "_view_origin",
        "grad_fn",
    )
    # numpy defers to our reflected operators (``np.float32(2) * t`` gives a Tensor).
    __array_ufunc__ = None
    # The running vmaps a tensor is batched over (engine.func.batching.BatchedTensor): none here.
    _levels: tuple = ()

    def __init__(self, data=None, *, dtype=None, device=None, requires_grad=False):
        self._init(_to_array(data if data is not None else [], dtype, device))
        if requires_grad:
            self.requires_grad = True

    def _init(self, array):
        self._data = array
        self._requires_grad = False
        self._grad = None
        self.grad_fn = None
        self._output_nr = 0
        self._version_counter = [0]
        self._accumulator = None
        self._base = None
        self._view_origin = None
        self._hooks = None
        self._retains_grad = False
        self._tangents = None

    @classmethod
    def _make(cls, array):
        t = cls.__new__(cls)
        t._data = array
        t._requires_grad = False
        t._grad = None
        t.grad_fn = None
        t._output_nr = 0  # which output of grad_fn this is (custom Functions have several)
        t._version_counter = [0]
        t._accumulator = None
        t._base = None
        t._view_origin = None
        t._hooks = None
        t._retains_grad = False
        t._tangents = None
        return t

    # ---- metadata -------------------------------------------------------

    @property
    def shape(self):
        return Size(self._data.shape)

    def size(self, dim=None):
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[dim]

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    def numel(self) -> int:
        return int(self._data.size)

    nelement = numel

    @property
    def dtype(self):
        return backend.dtype_of(self._data)

    @property
    def device(self):
        return backend.device_of(self._data)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def is_floating_point(self) -> bool:
        return self._data.dtype.kind == "f"

    def element_size(self) -> int:
        return self._data.itemsize

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    # ---- autograd state ---------------------------------------------------

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool):
        if self.grad_fn is not None:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use a "
                "computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach()."
            )
        if value and self._data.dtype.kind != "f":
            raise RuntimeError("only Tensors of floating point dtype can require gradients")
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def grad(self):
        if self.grad_fn is not None and not self._retains_grad and self._grad is None:
            warnings.warn(
                "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its "
                ".grad attribute won't be populated during autograd.backward(). If you indeed want "
                "the .grad field to be populated for a non-leaf Tensor, use .retain_grad() on the "
                "non-leaf Tensor. If you access the non-leaf Tensor by mistake, make sure you access "
                "the leaf Tensor instead.",
                UserWarning,
                stacklevel=2,
            )
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got {type(value).__name__}")
            if value.shape != self.shape:
                raise RuntimeError(
                    f"assigned grad has data of a different size: {tuple(value.shape)} vs {tuple(self.shape)}"
                )
        self._grad = value

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    def retain_grad(self) -> None:
        if self.grad_fn is None:
            if not self._requires_grad:
                raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
            return  # leaves keep their grad anyway
        if not self._retains_grad:
            self._retains_grad = True
            if self.grad_fn.op is None:  # a custom Function's node: it keeps one per output
                self.grad_fn._retain_output(self)
            else:
                self.grad_fn.retained = _weak(self)

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned
        tensor replaces the gradient."""
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is not None:
            return self.grad_fn._register_tensor_hook(hook, self._output_nr)
        from engine.autograd.graph import _RemovableHandle

        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)
        return _RemovableHandle(self._hooks, hook)

    @property
    def _version(self) -> int:
        return self._version_counter[0]

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        _backward((self,), None if gradient is None else (gradient,), retain_graph, create_graph, inputs=inputs)

    def detach(self) -> Tensor:
        # Same memory and version counter, but no view for autograd (as PyTorch's): in-place ops
        # on views of it write through to it, not to this tensor's base.
        t = Tensor._make(self._data)
        t._version_counter = self._version_counter
        return t

    def detach_(self) -> Tensor:
        self.grad_fn = None
        self._output_nr = 0
        self._requires_grad = False
        return self

    @property
    def data(self) -> Tensor:
        """The same values with no history (shares memory and version with self)."""
        return self.detach()

    @data.setter
    def data(self, value: Tensor):
        self._data = value._data if isinstance(value, Tensor) else value

    # ---- conversion -------------------------------------------------------

    def item(self):
        if value_hook is not None:
            value_hook(self, "item")
        if self._data.size != 1:
            raise RuntimeError(
                f"a Tensor with {self._data.size} elements cannot be converted to Scalar"
            )
        return self._data.reshape(()).item()

    def tolist(self):
        if value_hook is not None:
            value_hook(self, "tolist")
        return backend.to_numpy(self._data).tolist()

    def numpy(self, *, force: bool = False):
        if value_hook is not None:
            value_hook(self, "numpy")
        if self._requires_grad and not force:
            raise RuntimeError(
                "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead."
            )
        if self.device.type != "cpu" and not force:
            raise TypeError(
                f"can't convert {self.device} device type tensor to numpy. "
                "Use Tensor.cpu() to copy the tensor to host memory first."
            )
        return backend.to_numpy(self._data)

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iub":
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(self.item())

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __repr__(self) -> str:
        from engine.format import format_tensor

        return format_tensor(self)

    def __hash__(self):
        return id(self)

    def __reduce__(self):
        return (_rebuild, (backend.to_numpy(self._data), self._requires_grad))

    # ---- dtype and device -------------------------------------------------

    def to(self, *args, dtype=None, device=None, copy=False, non_blocking=False):
        # non_blocking is accepted for PyTorch's signature; copies are ordered on the device anyway.
        for a in args:
            if isinstance(a, (backend.DType,)) or (isinstance(a, str) and a in backend.DTYPES):
                dtype = a
            elif isinstance(a, Tensor):
                dtype, device = a.dtype, a.device
            else:
                device = a
        result = self
        if dtype is not None and backend.dtype(dtype) is not self.dtype:
            result = _apply(ops.to_dtype, (result,), {"dtype": backend.dtype(dtype).name})
        if device is not None and backend.device(device) != self.device:
            result = _apply(ops.to_device, (result,), {"device": str(backend.device(device))})
        if copy and result is self:
            result = self.clone()
        return result

    def type(self, dtype=None):
        if dtype is None:
            return graph_type_name(self)
        return self.to(dtype)

    def float(self):
        return self.to(backend.float32)

    def double(self):
        return self.to(backend.float64)

    def half(self):
        return self.to(backend.float16)

    def long(self):
        return self.to(backend.int64)

    def int(self):
        return self.to(backend.int32)

    def bool(self):
        return self.to(backend.bool_)

    def cpu(self):
        return self.to(device="cpu")

    def cuda(self, device=None, non_blocking=False):
        if device is None or isinstance(device, int):  # None: the current device, as in PyTorch
            return self.to(device="cuda" if device is None else f"cuda:{device}")
        if backend.device(device).type != "cuda":
            raise RuntimeError("Invalid device, must be cuda device")
        return self.to(device=device)  # "cuda:1" or engine.device("cuda", 1)

    def contiguous(self):
        return self

    # ---- arithmetic -------------------------------------------------------

    def __add__(self, other):
        return _apply(ops.add, (self, other), _NO_PARAMS)

    def __radd__(self, other):
        # PyTorch computes ``2 + t`` as ``t.add(2)``: the tensor stays the first input.
        return _apply(ops.add, (self, other), _NO_PARAMS)

    def __sub__(self, other):
        return _apply(ops.sub, (self, other), _NO_PARAMS)

    def __rsub__(self, other):
        if isinstance(other, _NUMBERS):  # PyTorch's rsub (RsubBackward1), the number a parameter
            return _apply(ops.rsub, (self,), {"other": _scalar(other)})
        return _apply(ops.sub, (other, self), _NO_PARAMS)

    def __mul__(self, other):
        return _apply(ops.mul, (self, other), _NO_PARAMS)

    def __rmul__(self, other):
        return _apply(ops.mul, (self, other), _NO_PARAMS)

    def __truediv__(self, other):
        return _apply(ops.div, (self, other), _NO_PARAMS)

    def __rtruediv__(self, other):
        if isinstance(other, _NUMBERS):  # PyTorch computes 2 / t as t.reciprocal() * 2
            return _apply(ops.mul, (_apply(ops.reciprocal, (self,), _NO_PARAMS), other), _NO_PARAMS)
        return _apply(ops.div, (other, self), _NO_PARAMS)

    def __pow__(self, exponent):
        return self.pow(exponent)

    def __rpow__(self, base):
        if isinstance(base, _NUMBERS):  # PyTorch's pow with a Scalar base (PowBackward2)
            return _apply(ops.rpow, (self,), {"base": _scalar(base)})
        return _apply(ops.pow, (base, self), _NO_PARAMS)

    def __matmul__(self, other):
        return _matmul(self, other)

    def __rmatmul__(self, other):
        return _matmul(other, self)

    def __neg__(self):
        return _apply(ops.neg, (self,), _NO_PARAMS)

    def __pos__(self):
        return self

    def __abs__(self):
        return _apply(ops.abs, (self,), _NO_PARAMS)

    def __eq__(self, other):
        return _apply(ops.eq, (self, other), _NO_PARAMS)

    def __ne__(self, other):
        return _apply(ops.ne, (self, other), _NO_PARAMS)

    def __lt__(self, other):
        return _apply(ops.lt, (self, other), _NO_PARAMS)

    def __le__(self, other):
        return _apply(ops.le, (self, other), _NO_PARAMS)

    def __gt__(self, other):
        return _apply(ops.gt, (self, other), _NO_PARAMS)

    def __ge__(self, other):
        return _apply(ops.ge, (self, other), _NO_PARAMS)

    def __and__(self, other):
        return _apply(ops.logical_and, (self, other), _NO_PARAMS)

    def __or__(self, other):
        return _apply(ops.logical_or, (self, other), _NO_PARAMS)

    def __invert__(self):
        return _apply(ops.logical_not, (self,), _NO_PARAMS)

    def __getitem__(self, index):
        return _apply(ops.getitem, (self,), {"index": _index_arg(index)})

    def __setitem__(self, index, value):
        self._inplace(ops.index_put, (value,), {"index": _index_arg(index)})

    def add(self, other, *, alpha=1):
        return self + (other if alpha == 1 else other * alpha)

    def sub(self, other, *, alpha=1):
        return self - (other if alpha == 1 else other * alpha)

    def div(self, other, *, rounding_mode=None):
        if rounding_mode is not None:
            return _apply(ops.div_rounded, (self, other), {"rounding_mode": rounding_mode})
        return self / other

    divide, true_divide, subtract = div, div, sub

    def pow(self, exponent):
        if isinstance(exponent, Tensor):
            return _apply(ops.pow, (self, exponent), _NO_PARAMS)
        return _apply(ops.pow_scalar, (self,), {"exponent": exponent})

    def matmul(self, other):
        return _matmul(self, other)

    def mm(self, mat2):
        return _apply(ops.matmul, (self, mat2), _NO_PARAMS)

    def bmm(self, mat2):
        if self.ndim != 3 or getattr(mat2, "ndim", 0) != 3:
            raise RuntimeError(f"batch1 must be a 3D tensor, batch2 must be a 3D tensor (got {self.ndim}D "
                               f"and {getattr(mat2, 'ndim', 0)}D)")
        return _apply(ops.matmul, (self, mat2), _NO_PARAMS)

    def clamp(self, min=None, max=None):  # noqa: A002 - PyTorch's names
        return _apply(ops.clamp, (self,), {"min": min, "max": max})

    clip = clamp

    def where(self, condition, other):
        return _apply(ops.where, (condition, self, other), _NO_PARAMS)

    def equal(self, other) -> bool:
        return self.shape == _tensor_arg(other, "equal").shape and bool((self == other).all())

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
        other = _tensor_arg(other, "allclose").numpy(force=True)
        return bool(backend.numpy.allclose(self.numpy(force=True), other, rtol, atol, equal_nan))

    # ---- reductions -------------------------------------------------------

    def sum(self, dim=None, keepdim=False, *, dtype=None, axis=None):
        x = self if dtype is None else self.to(dtype)
        if x._data.dtype.kind in "bi" and dtype is None:
            x = x.to(backend.int64)
        return _apply(ops.sum, (x,), {"dim": _reduced_dims(axis if dim is None else dim), "keepdim": keepdim})

    def mean(self, dim=None, keepdim=False, *, dtype=None):
        x = self if dtype is None else self.to(dtype)
        if x._data.dtype.kind != "f":
            raise RuntimeError(
                f"mean(): could not infer output dtype. Input dtype must be either a floating point or "
                f"complex dtype. Got: {x.dtype.name.capitalize()}"
            )
        return _apply(ops.mean, (x,), {"dim": _reduced_dims(dim), "keepdim": keepdim})

    def prod(self, dim=None, keepdim=False):
        return _apply(ops.prod, (self,), {"dim": _dims_arg(dim), "keepdim": keepdim})

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        correction = _correction(unbiased, correction)
        return _apply(ops.var, (self,), {"dim": _reduced_dims(dim), "correction": correction, "keepdim": keepdim})

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        correction = _correction(unbiased, correction)
        return _apply(ops.std, (self,), {"dim": _reduced_dims(dim), "correction": correction, "keepdim": keepdim})

    def _extreme(self, op_all, op_dim, dim, keepdim, other):
        if isinstance(dim, Tensor):
            other, dim = dim, None
        if other is not None:
            return _apply(ops.maximum if op_dim is ops.max_dim else ops.minimum, (self, other), _NO_PARAMS)
        if dim is None:
            return _apply(op_all, (self,), {"dim": None, "keepdim": False})
        values, indices = _apply(op_dim, (self,), {"dim": int(dim), "keepdim": keepdim})
        return ReductionResult(values, indices)

    def max(self, dim=None, keepdim=False, *, other=None):
        return self._extreme(ops.max, ops.max_dim, dim, keepdim, other)

    def min(self, dim=None, keepdim=False, *, other=None):
        return self._extreme(ops.min, ops.min_dim, dim, keepdim, other)

    def amax(self, dim=(), keepdim=False):
        return _apply(ops.amax, (self,), {"dim": _dims_arg(dim) if dim != () else None, "keepdim": keepdim})

    def amin(self, dim=(), keepdim=False):
        return _apply(ops.amin, (self,), {"dim": _dims_arg(dim) if dim != () else None, "keepdim": keepdim})

    def argmax(self, dim=None, keepdim=False):
        return _apply(ops.argmax, (self,), {"dim": dim, "keepdim": keepdim})

    def argmin(self, dim=None, keepdim=False):
        return _apply(ops.argmin, (self,), {"dim": dim, "keepdim": keepdim})

    def all(self, dim=None, keepdim=False):
        return _apply(ops.all, (self,), {"dim": _dims_arg(dim), "keepdim": keepdim})

    def any(self, dim=None, keepdim=False):
        return _apply(ops.any, (self,), {"dim": _dims_arg(dim), "keepdim": keepdim})

    def norm(self, p="fro", dim=None, keepdim=False):
        if p == "fro" or p is None:
            p = 2
        return _apply(ops.norm, (self,), {"p": float(p), "dim": _reduced_dims(dim), "keepdim": keepdim})

    def logsumexp(self, dim, keepdim=False):
        return _apply(ops.logsumexp, (self,), {"dim": _dims_arg(dim), "keepdim": keepdim})

    def softmax(self, dim):
        return _apply(ops.softmax, (self,), {"dim": int(dim)})

    def log_softmax(self, dim):
        return _apply(ops.log_softmax, (self,), {"dim": int(dim)})

    def cumsum(self, dim):
        return _apply(ops.cumsum, (self,), {"dim": int(dim)})

    def flip(self, *dims):
        return _apply(ops.flip, (self,), {"dims": _shape_arg(dims)})

    # ---- shape ------------------------------------------------------------

    def reshape(self, *shape):
        shape = _shape_arg(shape)
        if self._requires_grad and _grad_enabled() and not _viewable(self._data, shape):
            # No view has the new shape: PyTorch copies first (UnsafeViewBackward0 over CloneBackward0).
            return _apply(ops.unsafe_view, (self.clone(),), {"shape": shape})
        return _apply(ops.reshape, (self,), {"shape": shape})

    def view(self, *shape):
        result = _apply(ops.reshape, (self,), {"shape": _shape_arg(shape)})
        if result._base is None and result._data.size:  # numpy had to copy: no view possible
            raise RuntimeError(
                "view size is not compatible with input tensor's size and stride (at least one "
                "dimension spans across two contiguous subspaces). Use .reshape(...) instead."
            )
        return result

    def view_as(self, other):
        return self.view(_tensor_arg(other, "view_as").shape)

    def reshape_as(self, other):
        return self.reshape(_tensor_arg(other, "reshape_as").shape)

    def flatten(self, start_dim=0, end_dim=-1):
        shape = self.shape
        if not shape:
            return self.reshape(1)
        start, end = start_dim % len(shape), end_dim % len(shape)
        if start >= end:
            return self
        merged = 1
        for n in shape[start : end + 1]:
            merged *= n
        return self.reshape(shape[:start] + (merged,) + shape[end + 1 :])

    def unflatten(self, dim, sizes):
        _needs_dims(self, "unflatten: Dimension specified as 0 but tensor has no dimensions")
        shape = self.shape
        dim %= len(shape)
        return self.reshape(shape[:dim] + tuple(sizes) + shape[dim + 1 :])

    def transpose(self, dim0, dim1):
        return _apply(ops.transpose, (self,), {"dim0": int(dim0), "dim1": int(dim1)})

    swapaxes = transpose

    @property
    def T(self):  # noqa: N802 - PyTorch's name
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self):  # noqa: N802 - PyTorch's name
        if self.ndim < 2:
            if not self.ndim:
                return self  # PyTorch: the identity on a 0-d tensor (deprecated there)
            raise RuntimeError("tensor.mT is only supported on matrices or batches of matrices. Got 1-D tensor.")
        return self.transpose(-2, -1)

    def permute(self, *dims):
        return _apply(ops.permute, (self,), {"dims": _shape_arg(dims)})

    def squeeze(self, dim=None):
        return _apply(ops.squeeze, (self,), {"dim": _dims_arg(dim)})

    def unsqueeze(self, dim):
        return _apply(ops.unsqueeze, (self,), {"dim": int(dim)})

    def expand(self, *shape):
        shape = _shape_arg(shape)
        lead = len(shape) - self.ndim
        for i, n in enumerate(shape[:lead]):
            if n == -1:
                raise RuntimeError(
                    f"The expanded size of the tensor (-1) isn't allowed in a leading, non-existing dimension {i}"
                )
        shape = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
        return _apply(ops.expand, (self,), {"shape": shape})

    def expand_as(self, other):
        return self.expand(_tensor_arg(other, "expand_as").shape)

    def broadcast_to(self, shape):
        return self.expand(shape)

    def repeat(self, *sizes):
        return _apply(ops.tile, (self,), {"reps": _shape_arg(sizes)})

    def split(self, split_size, dim=0):
        _needs_dims(self, "split expects at least a 1-dimensional tensor")
        size = self.shape[dim]
        if isinstance(split_size, int):
            bounds = list(range(0, size, split_size)) + [size]
        else:
            bounds = [0]
            for n in split_size:
                bounds.append(bounds[-1] + n)
        return tuple(
            self.narrow(dim, start, stop - start) for start, stop in itertools.pairwise(bounds)
        )

    def chunk(self, chunks, dim=0):
        _needs_dims(self, "chunk expects at least a 1-dimensional tensor")
        size = self.shape[dim]
        return self.split(-(-size // chunks), dim)

    def unbind(self, dim=0):
        _needs_dims(self, "Dimension specified as 0 but tensor has no dimensions", IndexError)
        return tuple(self.select(dim, i) for i in range(self.shape[dim]))

    def narrow(self, dim, start, length):
        _needs_dims(self, "narrow() cannot be applied to a 0-dim tensor.")
        index = (slice(None),) * (dim % self.ndim) + (slice(start, start + length),)
        return self[index]

    def select(self, dim, index):
        _needs_dims(self, "select() cannot be applied to a 0-dim tensor.", IndexError)
        return self[(slice(None),) * (dim % self.ndim) + (index,)]

    # ---- in-place ---------------------------------------------------------

    def _inplace(self, op, args, params):
        return _apply_inplace(self, op, args, params)

    def add_(self, other, *, alpha=1):
        return self._inplace(ops.add, (other if alpha == 1 else other * alpha,), _NO_PARAMS)

    def sub_(self, other, *, alpha=1):
        return self._inplace(ops.sub, (other if alpha == 1 else other * alpha,), _NO_PARAMS)

    def pow_(self, exponent):
        if isinstance(exponent, Tensor):
            return self._inplace(ops.pow, (exponent,), _NO_PARAMS)
        return self._inplace(ops.pow_scalar, (), {"exponent": exponent})

    def clamp_(self, min=None, max=None):  # noqa: A002
        return self._inplace(ops.clamp, (), {"min": min, "max": max})

    clip_ = clamp_

    def copy_(self, src):
        if isinstance(src, Tensor) and src.device != self.device:
            src = src.to(self.device)  # copies across devices, as PyTorch's; the gradient goes back through it
        return self._inplace(ops.copy_from, (src,), _NO_PARAMS)

    def fill_(self, value):
        if isinstance(value, Tensor):
            if value._data.ndim:
                raise RuntimeError(
                    f"fill_ only supports 0-dimension value tensor but got tensor with {value._data.ndim} dimensions."
                )
            # A 0-d tensor value stays in the graph: PyTorch differentiates fill_ with respect to it.
            return self.copy_(value)
        return self._inplace(ops.fill, (), {"value": float(value)})

    def zero_(self):
        return self.fill_(0.0)

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def uniform_(self, a=0.0, b=1.0, generator=None):
        sample = _rand_array("uniform", self._data.shape, self.dtype, self.device, generator, low=a, high=b)
        return self._inplace(ops.copy_from, (Tensor._make(sample),), _NO_PARAMS)

    def normal_(self, mean=0.0, std=1.0, generator=None):
        sample = _rand_array("normal", self._data.shape, self.dtype, self.device, generator, loc=mean, scale=std)
        return self._inplace(ops.copy_from, (Tensor._make(sample),), _NO_PARAMS)


class Size(tuple):
    """PyTorch's ``torch.Size``: a tuple that prints as ``engine.Size([2, 3])``."""

    def __repr__(self) -> str:
        return f"engine.Size([{', '.join(str(n) for n in self)}])"

    def numel(self) -> int:
        total = 1
        for n in self:
            total *= n
        return total


class ReductionResult(tuple):
    """``(values, indices)`` as PyTorch's ``max(dim)`` returns them."""

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]


def _matmul(x, y):
    """``x @ y``, composed as PyTorch composes it when there is a graph to record, so that the
    graph reads as PyTorch's: dot, mv and mm are one node; a batch of matrices times a matrix or
    vector is folded into one mm or mv (UnsafeViewBackward0 over MmBackward0); other batched
    products are one bmm of the operands expanded to their common batch shape
    (UnsafeViewBackward0 over BmmBackward0). Every piece is a table op, so every node's vjp is
    its own. With nothing to record, one table op computes them all."""
    if (
        not isinstance(x, Tensor)
        or not isinstance(y, Tensor)
        or not (x._requires_grad or y._requires_grad)
        or x._levels
        or y._levels
        or not _grad_enabled()
        or min(x._data.ndim, y._data.ndim) == 0
        or max(x._data.ndim, y._data.ndim) <= 2
    ):
        return _apply(ops.matmul, (x, y), _NO_PARAMS)
    if x._data.ndim >= 3 and y._data.ndim <= 2:
        return _folded_matmul(x, y)
    if x._data.ndim <= 2 and x._requires_grad:
        # PyTorch folds y^T's batches instead (for a contiguous y, only when x requires grad):
        # x @ y = y^T x for a vector x, else (y^T x^T)^T made contiguous again (a clone).
        if x._data.ndim == 1:
            return _folded_matmul(y.mT, x)
        return _folded_matmul(y.mT, x.t()).mT.clone()
    return _batched_matmul(x, y)


def _folded_matmul(x, y):
    """A batch of matrices ``x`` times a matrix or vector ``y``: one mm (mv) of all x's rows."""
    shape = x._data.shape
    rows = x.reshape(_product(shape[:-1]), shape[-1])
    out = _apply(ops.matmul, (rows, y), _NO_PARAMS)
    return _apply(ops.unsafe_view, (out,), {"shape": shape[:-1] + y._data.shape[1:]})


def _batched_matmul(x, y):
    """One bmm of both operands expanded to their common batch shape (a vector y as a column)."""
    x_shape, y_shape = x._data.shape, y._data.shape
    n, k = (x_shape[-2] if len(x_shape) > 1 else 1), x_shape[-1]
    k2, p = (y_shape[-2], y_shape[-1]) if len(y_shape) > 1 else (y_shape[0], 1)
    batch = _broadcast_batch(x_shape[:-2], y_shape[:-2])
    count = _product(batch)
    left = x.expand(batch + (n, k)).reshape(count, n, k)
    right = (y if len(y_shape) > 1 else y.unsqueeze(-1)).expand(batch + (k2, p)).reshape(count, k2, p)
    out = _apply(ops.matmul, (left, right), _NO_PARAMS)
    if len(y_shape) == 1:
        out = out.squeeze(-1)
    shape = batch + ((n,) if len(x_shape) > 1 else ()) + ((p,) if len(y_shape) > 1 else ())
    return _apply(ops.unsafe_view, (out,), {"shape": shape})


def _broadcast_batch(a, b) -> tuple:
    ndim = max(len(a), len(b))
    a, b = (1,) * (ndim - len(a)) + tuple(a), (1,) * (ndim - len(b)) + tuple(b)
    for i, (m, n) in enumerate(zip(a, b)):
        if m != n and m != 1 and n != 1:
            raise RuntimeError(
                f"The size of tensor a ({m}) must match the size of tensor b ({n}) at non-singleton dimension {i}"
            )
    return tuple(max(m, n) if m and n else 0 for m, n in zip(a, b))


def _viewable(data, shape) -> bool:
    """Whether ``data`` can be reshaped to ``shape`` without a copy."""
    if data.flags.c_contiguous or not data.size:
        return True
    try:
        return backend.aliases(data.reshape(shape), data)
    except ValueError:
        return True  # a shape that does not fit: the reshape op says so


def _product(shape) -> int:
    total = 1
    for n in shape:
        total *= n
    return total


def _tensor_arg(value, function: str, argument: str = "other"):
    """``value``, a Tensor; anything else is PyTorch's TypeError naming the function and argument."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{function}(): argument '{argument}' must be Tensor, not {type(value).__name__}")
    return value


def _scalar(value):
    """A number as Python's own type: numpy scalars are not weakly typed in numpy's promotion."""
    return value.item() if isinstance(value, backend.numpy.generic) else value


def _correction(unbiased, correction):
    if correction is not None:
        return float(correction)
    return 1.0 if unbiased is None or unbiased else 0.0


def _index_arg(index):
    """Turn an index into plain Python and arrays: tensors become arrays, lists arrays."""
    if isinstance(index, slice) and index == slice(None):
        # PyTorch slices on a bare ``x[:]`` (SliceBackward0) but skips a ``:`` among other parts
        # (``x[:, :]`` is AliasBackward0); ``0:`` selects the same and says it is a slice.
        index = slice(0, None)
    if not isinstance(index, tuple):
        index = (index,)
    parts = []
    for part in index:
        if isinstance(part, Tensor):
            part = part._data
        elif isinstance(part, list):
            part = backend.numpy.asarray(part)
        parts.append(part)
    return tuple(parts)


def _weak(tensor):
    import weakref

    return weakref.ref(tensor)


def graph_type_name(tensor) -> str:
    from engine.autograd.graph import describe_tensor

    return describe_tensor((), tensor._data.dtype)[1:-4].strip()


def _rebuild(array, requires_grad):
    t = Tensor._make(array)
    t._requires_grad = requires_grad
    return t


# ---- methods generated from the table's declarations ------------------------------------


def _generated_method(name, op):
    """``Tensor.<name>``: ``op`` on self and the other operand, in place for an ``inplace`` name."""
    if op is None:
        return None  # not a plain call of one op: written by hand above
    if name in op.inplace:
        if op.arity == 1:
            def method(self):
                return self._inplace(op, (), _NO_PARAMS)
        else:
            def method(self, other):
                return self._inplace(op, (other,), _NO_PARAMS)
    elif op.arity == 1:
        def method(self):
            return _apply(op, (self,), _NO_PARAMS)
    else:
        def method(self, other):
            return _apply(op, (self, other), _NO_PARAMS)
    method.__name__, method.__qualname__, method.__doc__ = name, f"Tensor.{name}", op.doc
    return method


for _kind in ("methods", "inplace"):
    _made = ops.table.missing_variants(_kind, vars(Tensor), _generated_method, "engine/tensor.py")
    for _name, _method in _made.items():
        setattr(Tensor, _name, _method)
