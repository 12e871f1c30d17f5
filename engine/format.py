"""``repr`` of a Tensor, laid out as PyTorch prints it.

Four significant decimals; scientific notation when the magnitudes span more
than 1000x (or leave [1e-4, 1e8]); integer-valued floats as ``2.``; lines
wrapped at 80 columns; more than 1000 elements summarized with ``...``;
suffixes ``grad_fn=<...>``, ``requires_grad=True`` and a non-default dtype.
"""

from __future__ import annotations

import math

from engine import backend

PRECISION = 4
LINEWIDTH = 80
THRESHOLD = 1000
EDGEITEMS = 3


class _Formatter:
    def __init__(self, values, floating: bool):
        self.floating = floating
        self.int_mode = True
        self.sci_mode = False
        self.width = 1
        if not floating:
            self.width = max((len(str(v)) for v in values), default=1)
            return
        # As PyTorch: mode and width come from the nonzero finite values only (zeros, nan and
        # inf are padded to that width, never widen it).
        shown = [v for v in values if math.isfinite(v) and v != 0]
        if not shown:
            return
        magnitudes = [abs(v) for v in shown]
        low, high = min(magnitudes), max(magnitudes)
        self.int_mode = all(v == math.ceil(v) for v in shown)
        if self.int_mode:
            self.sci_mode = high / low > 1000.0 or high > 1e8
        else:
            self.sci_mode = high / low > 1000.0 or high > 1e8 or low < 1e-4
        self.width = max(len(self.text(v)) for v in shown)

    def text(self, value) -> str:
        if not self.floating:
            return str(value)
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        if self.sci_mode:
            return f"{value:.{PRECISION}e}"
        if self.int_mode:
            return f"{value:.0f}."
        return f"{value:.{PRECISION}f}"

    def format(self, value) -> str:
        return self.text(value).rjust(self.width)


def _vector(values, formatter, indent, summarize) -> str:
    per_line = max(1, (LINEWIDTH - indent) // (formatter.width + 2))
    if summarize and len(values) > 2 * EDGEITEMS:
        items = [formatter.format(v) for v in values[:EDGEITEMS]] + [" ..."] + [
            formatter.format(v) for v in values[-EDGEITEMS:]
        ]
    else:
        items = [formatter.format(v) for v in values]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _nested(data, formatter, indent, summarize) -> str:
    if data.ndim == 0:
        return formatter.format(data.item())
    if data.ndim == 1:
        return _vector(data.tolist(), formatter, indent, summarize)
    count = data.shape[0]
    if summarize and count > 2 * EDGEITEMS:
        rows = [_nested(data[i], formatter, indent + 1, summarize) for i in range(EDGEITEMS)] + ["..."] + [
            _nested(data[i], formatter, indent + 1, summarize) for i in range(count - EDGEITEMS, count)
        ]
    else:
        rows = [_nested(data[i], formatter, indent + 1, summarize) for i in range(count)]
    separator = "," + "\n" * (data.ndim - 1) + " " * (indent + 1)
    return "[" + separator.join(rows) + "]"


def _summary_values(data):
    """The elements a summarized print shows (the formatter's width comes from these)."""
    np = backend.numpy
    if data.ndim == 0:
        return data.reshape(1)
    if data.shape[0] > 2 * EDGEITEMS:
        data = np.concatenate([data[:EDGEITEMS], data[-EDGEITEMS:]])
    return np.concatenate([_summary_values(row).reshape(-1) for row in data]) if data.ndim > 1 else data


def format_array(data, prefix: str = "tensor(") -> str:
    """The body PyTorch prints for an array, starting after ``prefix``."""
    indent = len(prefix)
    summarize = data.size > THRESHOLD
    floating = data.dtype.kind == "f"
    shown = _summary_values(data) if summarize else data.reshape(-1)
    values = [float(v) for v in shown.tolist()] if floating else shown.tolist()
    formatter = _Formatter(values, floating)
    return _nested(data, formatter, indent, summarize)


def format_tensor(tensor) -> str:
    data = backend.to_numpy(tensor._data)
    prefix = "tensor("
    suffixes = []
    if data.size == 0:
        body = "[]"
        if data.shape != (0,):
            suffixes.append(f"size={tuple(data.shape)}")
    else:
        body = format_array(data, prefix)
    device = tensor.device
    if device.type != "cpu":
        suffixes.append(f"device='{device}'")
    dtype = backend.dtype_of(data)
    implicit = (backend.default_dtype, backend.int64, backend.bool_)
    if dtype not in implicit:
        suffixes.append(f"dtype={dtype!r}")
    if tensor.grad_fn is not None:
        suffixes.append(f"grad_fn=<{tensor.grad_fn.name()}>")
    elif tensor.requires_grad:
        suffixes.append("requires_grad=True")
    return _add_suffixes(prefix + body, suffixes, len(prefix))


def _add_suffixes(text: str, suffixes, indent: int) -> str:
    parts = [text]
    last_line = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if last_line + len(suffix) + 2 > LINEWIDTH:
            parts.append(",\n" + " " * indent + suffix)
            last_line = indent + len(suffix)
        else:
            parts.append(", " + suffix)
            last_line += len(suffix) + 2
    parts.append(")")
    return "".join(parts)
