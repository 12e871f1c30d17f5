"""The exceptions that mean "the caller's input is wrong" when the engine raises them.

The engine reports a caller's mistake with Python's own exceptions, as PyTorch
does: ``RuntimeError`` for shapes, devices, in-place and backward misuse;
``ValueError`` and ``TypeError`` for bad arguments (a number where a tensor
belongs is a ``TypeError``); ``IndexError`` for dims and indices out of range;
``KeyError`` for a missing entry of a state to load; ``ArithmeticError`` for
overflows; ``NotImplementedError`` for a derivative the table does not define;
``MemoryError`` for a result too large to allocate. Code that runs a caller's
functions on top of the engine (an interpreter, a graph runner, a server)
reports exactly these as the caller's error. Anything else
escaping the engine, an ``AttributeError`` or an ``AssertionError`` above all,
is a bug in the engine and stays one, never the caller's error.
"""

from __future__ import annotations

ENGINE_ERRORS = (
    RuntimeError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    ArithmeticError,
    NotImplementedError,
    MemoryError,
)

__all__ = ["ENGINE_ERRORS"]
