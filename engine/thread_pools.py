"""How many threads numpy's BLAS may use: ``engine.set_num_threads`` / ``get_num_threads``.

numpy's OpenBLAS (or MKL, BLIS...) starts one thread per core and wakes them for
every matrix product, however small. For the products autodiff runs all day (the
tutorial's 16 x 1000 model: a step of 0.3 ms) waking and joining the pool costs
more than the arithmetic: that step took 31x as long on a Xeon and 45x on a 2-core
VM. A server that runs several requests at once oversubscribes the cores on top. So ``import engine``
limits the BLAS pools to ``DEFAULT_THREADS`` (1), unless the environment already
says how many threads to use (``EXPLICIT_VARIABLES``): an explicit choice is kept.
Large products lose by it (a 2048² float32 matmul runs ~1.4x slower on one thread
of two cores); ``set_num_threads(n)`` raises the limit for such work.

Limits go through threadpoolctl, which finds the BLAS libraries loaded in the
process and calls their own setters (``openblas_set_num_threads``,
``mkl_set_num_threads``...). Only BLAS pools are touched: OpenMP runtimes loaded
here belong to other libraries (PyTorch's libgomp), and limiting them would
silently put those on one thread too. ``backend`` owns this module: it calls
``apply_default`` once numpy is loaded and ``rescan`` after loading another
BLAS (scipy.linalg's, for the optimizers' axpy).
"""

from __future__ import annotations

import operator
import os
import threading

from threadpoolctl import ThreadpoolController

try:  # threadpoolctl >= 3.8 lets one thread at a time set a process-wide (non-OpenMP) OpenBLAS
    # pool, the first that tried, and makes the others' calls do nothing, silently.
    from threadpoolctl import OpenBLASController

    _clear_openblas_control = OpenBLASController.clear_controlling_thread
except (ImportError, AttributeError):  # older threadpoolctl: any thread may set it
    _clear_openblas_control = None

DEFAULT_THREADS = 1
# Any of these in the environment is the user's choice of BLAS threads (OpenBLAS reads the
# first and falls back to OMP_NUM_THREADS; MKL reads the last): import leaves the pools alone.
EXPLICIT_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_lock = threading.Lock()
_controller: ThreadpoolController | None = None  # the BLAS libraries loaded when it was built
_requested: int | None = None  # the engine's limit; None: the environment's choice stands
_library_default: int | None = None  # the BLAS pools' size before the engine first limited them


def _blas() -> ThreadpoolController:
    global _controller
    if _controller is None:
        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def explicit_environment() -> dict[str, str]:
    """The thread variables the user set (non-empty), which ``import engine`` respects."""
    return {name: os.environ[name] for name in EXPLICIT_VARIABLES if os.environ.get(name, "").strip()}


def apply_default() -> None:
    """At import: one BLAS thread, unless the environment chose a number."""
    global _library_default
    with _lock:
        _library_default = _max_threads(_blas().info())
    if not explicit_environment():
        set_num_threads(DEFAULT_THREADS)


def rescan() -> None:
    """A BLAS library was just loaded: hold it to the engine's limit too."""
    global _controller
    with _lock:
        _controller = None
        if _requested is not None:
            _limit(_requested)


def _limit(n: int) -> None:
    # engine.set_num_threads is process-wide from any thread, as in PyTorch: take OpenBLAS's
    # control from whichever thread holds it, and give it up after, so that the caller's own
    # threadpoolctl calls keep working from any thread too.
    if _clear_openblas_control is not None:
        _clear_openblas_control(force=True)
    _blas().limit(limits=n, user_api="blas")
    if _clear_openblas_control is not None:
        _clear_openblas_control()


def set_num_threads(n: int) -> None:
    """Set how many threads numpy's BLAS may use for one operation (PyTorch's intra-op threads).

    The limit is process-wide, as in PyTorch, and holds every BLAS library the engine uses.
    """
    global _requested
    try:
        if isinstance(n, bool):
            raise TypeError
        n = operator.index(n)  # ints and numpy's integers, as PyTorch takes them
    except TypeError:
        raise RuntimeError(f"set_num_threads expects an int, but got {type(n).__name__}") from None
    if n < 1:
        raise RuntimeError("set_num_threads expects a positive integer")
    with _lock:
        _requested = n
        _limit(n)


def get_num_threads() -> int:
    """The most threads one BLAS operation of the engine may use (what the libraries report)."""
    with _lock:
        found = _max_threads(_blas().info())
    return found if found is not None else (_requested or DEFAULT_THREADS)


def library_default_threads() -> int | None:
    """The BLAS pools' size as the libraries chose it, before the engine limited them (None: no BLAS found)."""
    return _library_default


def blas_info() -> list[dict]:
    """Each BLAS library loaded: name, file name, version, CPU kernel, threading layer, threads now."""
    with _lock:
        found = _blas().info()
    # The file name tells numpy's copy from scipy's without putting the server's paths in a response.
    return [{"library": lib["internal_api"], "file": os.path.basename(lib["filepath"]), "version": lib.get("version"),
             "architecture": lib.get("architecture"), "threading_layer": lib.get("threading_layer"),
             "threads": lib["num_threads"]} for lib in found]


def _max_threads(info: list[dict]) -> int | None:
    counts = [lib["num_threads"] for lib in info if lib.get("num_threads") is not None]
    return max(counts) if counts else None
