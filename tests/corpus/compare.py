"""Compare what a program printed under PyTorch with what it printed under the engine.

Text must match exactly once object addresses are masked; every number in the
text (not a digit inside a name, as in ``AddBackward0``) is compared as a number,
within float32 tolerance or one unit of the last printed digit, whichever is
larger: PyTorch prints 4 decimals, so values that differ in the eighth
significant digit may round to neighbouring printed values. Whole numbers
(shapes, counts, ``tensor([1., 2.])``) must agree to float32 tolerance.

Two differences are not differences: the module's own name (the engine prints
``engine.float64`` and ``engine.Size`` where PyTorch prints ``torch.``: the
program imported the engine under that name), and whitespace
(PyTorch pads a column for a minus sign that a value within tolerance, such
as ``-0.0000`` against ``0.0000``, may or may not carry).
"""

from __future__ import annotations

import math
import re

NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?\b(?:nan|inf)\b")
ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
ENGINE_NAME = re.compile(r"\bengine\.")
SPACES = re.compile(r"\s+")
RELATIVE = 1e-4


def _last_digit(token: str) -> float:
    """The value of one unit in the last printed place of ``token``; 0 for a whole number
    (``3``, or ``3.`` as PyTorch prints a tensor of whole values), which is exact."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    if not decimals and not exponent:
        return 0.0
    return 10.0 ** (int(exponent or 0) - decimals)


def _numbers_agree(a: str, b: str) -> bool:
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    slack = max(RELATIVE * max(abs(x), abs(y)), 1.01 * max(_last_digit(a), _last_digit(b)), 1e-6)
    return abs(x - y) <= slack


def differences(expected: str, actual: str) -> list[str]:
    """Lines where ``actual`` departs from ``expected``, each said with both versions."""
    expected_lines = ADDRESS.sub("0x?", expected).splitlines()
    actual_lines = ADDRESS.sub("0x?", ENGINE_NAME.sub("torch.", actual)).splitlines()
    found = []
    if len(expected_lines) != len(actual_lines):
        found.append(f"{len(actual_lines)} lines printed, PyTorch printed {len(expected_lines)}")
    for number, (want, got) in enumerate(zip(expected_lines, actual_lines), start=1):
        want_numbers, got_numbers = NUMBER.findall(want), NUMBER.findall(got)
        same_text = SPACES.sub("", NUMBER.sub("#", want)) == SPACES.sub("", NUMBER.sub("#", got))
        if not same_text or len(want_numbers) != len(got_numbers) or not all(
            _numbers_agree(a, b) for a, b in zip(want_numbers, got_numbers)
        ):
            found.append(f"line {number}:\n  torch : {want}\n  engine: {got}")
    return found
