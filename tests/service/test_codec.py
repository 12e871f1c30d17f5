"""service.codec: every wire form in, both encodings out, non-finite values, limits."""

from __future__ import annotations

import base64
import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import engine
from service import codec
from service.codec import CodecError, ElementBudget


def budget(per_tensor=10**9, per_request=10**9):
    return ElementBudget(per_tensor, per_request)


def decode(value, dtype=engine.float32):
    return codec.decode_tensor(value, "inputs.x", dtype, budget())


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (3, np.float32(3)),
        (2.5, np.float32(2.5)),
        ([1, 2, 3], np.array([1, 2, 3], np.float32)),
        ([[1.5, 2], [3, 4]], np.array([[1.5, 2], [3, 4]], np.float32)),
        ({"data": [1, 2, 3, 4, 5, 6], "shape": [2, 3]}, np.arange(1, 7, dtype=np.float32).reshape(2, 3)),
        ({"data": [1, 2], "shape": [2], "dtype": "float64"}, np.array([1, 2], np.float64)),
        ({"data": [1, 2], "shape": [2], "datatype": "FP64"}, np.array([1, 2], np.float64)),
        ({"data": [1, 2], "datatype": "INT64"}, np.array([1, 2], np.int64)),
        ({"data": [True, False], "datatype": "BOOL"}, np.array([True, False])),
        ({"data": [7], "shape": []}, np.float32(7)),
        ([], np.zeros(0, np.float32)),
    ],
)
def test_decodes_every_json_form(wire, expected):
    tensor = decode(wire)
    array = tensor.numpy()
    assert array.dtype == np.asarray(expected).dtype
    assert array.shape == np.shape(expected)
    np.testing.assert_array_equal(array, expected)


def test_b64_is_little_endian_raw_bytes():
    values = np.array([[1.0, -2.5], [math.pi, 1e-30]], dtype="<f8")
    wire = {"b64": base64.b64encode(values.tobytes()).decode(), "shape": [2, 2], "dtype": "float64"}
    np.testing.assert_array_equal(decode(wire).numpy(), values)


def test_b64_tensor_is_writable_so_gradcheck_can_perturb_it():
    wire = {"b64": base64.b64encode(np.ones(3, "<f4").tobytes()).decode(), "shape": [3]}
    assert decode(wire).numpy().flags.writeable


def test_request_dtype_applies_to_plain_lists():
    assert decode([1, 2], engine.float64).dtype == engine.float64


def test_nonfinite_strings_decode_both_in_lists_and_alone():
    array = decode(["NaN", 1.0, "Infinity", "-Infinity"]).numpy()
    assert math.isnan(array[0]) and array[1] == 1.0 and array[2] == math.inf and array[3] == -math.inf
    assert decode("-Infinity").numpy() == -math.inf


def test_requires_grad_marks_a_leaf():
    tensor = decode({"data": [1.0, 2.0], "requires_grad": True})
    assert tensor.requires_grad and tensor.is_leaf and tensor.grad_fn is None


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ([[1, 2], [3]], "rectangular"),
        (["1.5"], "unexpected string"),
        ([{"a": 1}], "numbers"),
        ([None, 1], "numbers"),
        ({"data": [1, 2, 3], "shape": [2]}, "needs 2 elements"),
        ({"data": [1], "b64": "AA=="}, "exactly one"),
        ({"shape": [1]}, "exactly one"),
        ({"data": [1], "dtype": "complex64"}, "unknown dtype"),
        ({"data": [1], "shape": [-1]}, "non-negative"),
        ({"data": [1], "shape": "1"}, "list of integers"),
        ({"b64": "***", "shape": [1]}, "base64"),
        ({"b64": "AAA=", "shape": [1]}, "whole number"),
        ({"data": [1], "requires-grad": True}, "unknown tensor field"),
        ({"data": [1.5], "dtype": "int64"}, "whole numbers"),
        ({"data": [1, 2], "dtype": "int64", "requires_grad": True}, "floating point"),
        ({"data": [1], "requires_grad": "yes"}, "true or false"),
        (None, "expected a number"),
    ],
)
def test_rejects_malformed_tensors_naming_the_input(wire, message):
    with pytest.raises(CodecError, match=message) as caught:
        decode(wire)
    assert caught.value.input.startswith("inputs.x")
    assert not caught.value.too_large


def test_element_limits_per_tensor_and_per_request():
    with pytest.raises(CodecError, match="at most 3") as caught:
        codec.decode_tensor([1, 2, 3, 4], "inputs.x", engine.float32, budget(per_tensor=3))
    assert caught.value.too_large
    shared = budget(per_tensor=10, per_request=5)
    codec.decode_tensor([1, 2, 3], "inputs.x", engine.float32, shared)
    with pytest.raises(CodecError, match="more than 5 elements") as caught:
        codec.decode_tensor([1, 2, 3], "inputs.y", engine.float32, shared)
    assert caught.value.too_large and caught.value.input == "inputs.y"


def roundtrip_json(tensor):
    return orjson.loads(codec.dumps(codec.encode_tensor(tensor, "json")))


def test_json_out_is_flat_row_major_with_shape_and_dtype():
    tensor = engine.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert roundtrip_json(tensor) == {"shape": [2, 3], "dtype": "float32", "data": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}


def test_scalar_keeps_an_empty_shape():
    assert roundtrip_json(engine.tensor(25.0)) == {"shape": [], "dtype": "float32", "data": [25.0]}


def test_nonfinite_values_are_strings_never_null():
    tensor = engine.tensor([float("nan"), float("inf"), -float("inf"), 1.5])
    assert roundtrip_json(tensor)["data"] == ["NaN", "Infinity", "-Infinity", 1.5]


def test_float32_values_survive_the_json_round_trip_exactly():
    values = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    wire = roundtrip_json(engine.from_numpy(values))
    np.testing.assert_array_equal(decode(wire).numpy(), values)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "bool"])
def test_both_encodings_round_trip_every_dtype(dtype):
    values = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    tensor = engine.from_numpy(values)
    for encoding in ("json", "base64"):
        wire = orjson.loads(codec.dumps(codec.encode_tensor(tensor, encoding)))
        assert wire["dtype"] == dtype and wire["shape"] == [2, 3]
        back = codec.decode_to_array(wire)
        assert back.dtype == values.dtype
        np.testing.assert_array_equal(back, values)


def test_base64_out_is_little_endian_bytes():
    tensor = engine.tensor([1.0, -2.0], dtype=engine.float64)
    wire = codec.encode_tensor(tensor, "base64")
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(wire["b64"]), "<f8"), [1.0, -2.0])


def test_non_contiguous_results_are_written_in_row_major_order():
    tensor = engine.tensor([[1.0, 2.0], [3.0, 4.0]]).t()
    assert roundtrip_json(tensor)["data"] == [1.0, 3.0, 2.0, 4.0]
    wire = codec.encode_tensor(tensor, "base64")
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(wire["b64"]), "<f4"), [1.0, 3.0, 2.0, 4.0])


def test_nested_results_keep_torch_functional_nesting():
    a, b = engine.ones(1), engine.zeros(2)
    encoded = codec.encode_nested(((a, b), (b, None)))
    assert [[t["shape"] if t else None for t in row] for row in encoded] == [[[1], [2]], [[2], None]]
    assert codec.encode_nested(a)["shape"] == [1]


def test_numbers_from_a_function_become_tensors():
    assert roundtrip_json(2.5) == {"shape": [], "dtype": "float32", "data": [2.5]}
    assert roundtrip_json(3)["dtype"] == "int64"


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
        elements={"allow_nan": True, "allow_infinity": True},
    ),
    st.sampled_from(["json", "base64"]),
)
def test_any_float_array_round_trips_bit_for_bit(values, encoding):
    wire = orjson.loads(codec.dumps(codec.encode_tensor(engine.from_numpy(values.copy()), encoding)))
    back = codec.decode_to_array(wire)
    assert back.dtype == values.dtype and back.shape == values.shape
    np.testing.assert_array_equal(back, values)  # NaN == NaN here; infinities keep their sign


# ---- responses: bounded before they are encoded, large tensors written piecewise ---------------

LARGE = codec.INLINE_ELEMENTS + 3 * codec.SPLICE_CHUNK + 17  # several pieces, a short last one


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
@pytest.mark.parametrize("encoding", ["json", "base64"])
def test_large_tensors_are_written_piecewise_as_orjson_would_write_them(dtype, encoding):
    values = np.random.default_rng(0).standard_normal(LARGE) * 1e3
    if dtype == "bool":
        values = values > 0
    array = values.astype(dtype).reshape(-1, 1)
    if dtype.startswith("float"):
        array[[5, LARGE // 2, LARGE - 1], 0] = [np.nan, np.inf, -np.inf]
    tensor = engine.from_numpy(array)
    with codec.response_limit(10**9):
        content = {"before": "x", "outputs": [codec.encode_tensor(tensor, encoding), codec.encode_tensor(tensor[:2])],
                   "after": [1, 2]}
    parts = codec.dumps_parts(content)
    assert len(parts) > 4  # the large tensor went around orjson's buffer, in pieces
    assert b"".join(parts) == codec.dumps(content)
    body = orjson.loads(codec.dumps(content))
    assert body["before"] == "x" and body["after"] == [1, 2] and body["outputs"][1]["shape"] == [2, 1]
    back = codec.decode_to_array(body["outputs"][0])
    assert back.shape == array.shape and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)  # NaN == NaN here


def test_a_placeholder_cannot_be_forged_by_content():
    tensor = engine.zeros(LARGE)
    lookalikes = ['"0"', "0:0", ":0", '":0"']
    with codec.response_limit(10**9):
        body = orjson.loads(codec.dumps({"strings": lookalikes, "t": codec.encode_tensor(tensor)}))
    assert body["strings"] == lookalikes and len(body["t"]["data"]) == LARGE


def test_the_response_limit_refuses_before_anything_is_copied():
    view = engine.zeros(1).expand(10**9)  # 4 GB if it were made contiguous
    with codec.response_limit(1000) as budget_of_response:
        codec.encode_tensor(engine.zeros(600))
        with pytest.raises(codec.ResponseTooLargeError) as raised:
            codec.encode_tensor(view, what="outputs[1]")
    assert raised.value.limit == 1000 and raised.value.elements == 600 + 10**9
    assert "outputs[1]" in raised.value.message and "600 are taken already" in raised.value.message
    assert budget_of_response.elements == 600


def test_check_response_refuses_a_result_at_once():
    with codec.response_limit(100), pytest.raises(codec.ResponseTooLargeError) as raised:
        codec.check_response(101, "the Hessian of inputs [[10]]")
    assert raised.value.elements == 101 and "the Hessian of inputs [[10]]" in raised.value.message
    codec.check_response(10**12, "anything")  # no limit active: nothing to refuse


def test_outside_a_response_tensors_are_plain_data():
    """A client (or a test) building a request body gets the wire object as before: no placeholders."""
    wire = codec.encode_tensor(engine.zeros(LARGE))
    assert isinstance(wire["data"], np.ndarray) and wire["data"].size == LARGE


def test_only_the_first_numbers_of_a_response_go_through_orjsons_buffer():
    with codec.response_limit(10**9):
        small = [codec.encode_tensor(engine.zeros(1000)) for _ in range(codec.INLINE_ELEMENTS // 1000 + 5)]
    inline = [type(t["data"]).__name__ != "_Spliced" for t in small]
    assert inline[0] and not inline[-1] and sum(inline) == codec.INLINE_ELEMENTS // 1000


PRLIMIT = pytest.mark.skipif(not __import__("shutil").which("prlimit"), reason="needs prlimit (util-linux)")


def _run_capped(code: str, cap_bytes: int) -> str:
    import subprocess
    import sys

    done = subprocess.run(["prlimit", f"--as={cap_bytes}", sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300, cwd=__import__("pathlib").Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-2000:]  # a segfault in orjson would be -11
    return done.stdout


@PRLIMIT
def test_under_an_address_space_limit_running_out_is_a_memory_error():
    """orjson dies writing, and stalls parsing, when it cannot allocate: both are refused first."""
    out = _run_capped(
        "from service import codec\n"
        "import engine\n"
        "body = b'[' + b'[],' * 10_000_000 + b'[]]'\n"
        "try:\n    codec.loads(body)\nexcept MemoryError:\n    print('parse refused')\n"
        "t = engine.full((40_000_000,), 0.123456789, dtype=engine.float64)\n"
        "try:\n    with codec.response_limit(10**9):\n        codec.dumps({'t': codec.encode_tensor(t)})\n"
        "except MemoryError:\n    print('write refused')\n",
        1200 << 20)
    assert out.split() == ["parse", "refused", "write", "refused"]


def test_long_lists_are_written_piecewise():
    events = [{"name": f"engine::op{i}", "ph": "X", "ts": i * 0.5, "args": {"n": [i]}} for i in range(5000)]
    content = {"trace": {"traceEvents": codec.spliced_list(events), "displayTimeUnit": "ms"}, "n": 1}
    parts = codec.dumps_parts(content)
    assert len(parts) > 3
    assert orjson.loads(b"".join(parts)) == {"trace": {"traceEvents": events, "displayTimeUnit": "ms"}, "n": 1}
    assert codec.spliced_list(events[:10]) == events[:10]  # short lists stay plain
