"""Binary tensors on the wire (the Open Inference Protocol's binary-data extension), in-process.

Every route that takes or returns tensors answers a binary request with the numbers it gives the
same request in JSON; every malformed frame is the stated 4xx problem, never a 5xx; and
``codec.decode_frame`` survives fuzzed header lengths and sizes (hypothesis). Frames are built
and read by ``tests/binary_frames.py`` (json and numpy alone), not by the service's codec.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import codec
from service.app import create_app
from service.config import Settings
from tests.binary_frames import (
    ACCEPT_BINARY,
    BINARY,
    COMPUTE_CASES,
    HEADER_LENGTH,
    X,
    assert_same_numbers,
    binary_and_json,
    frame,
    from_json,
    json_request,
    read_frame,
    values,
)
from tests.problems import assert_problem


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(max_tensor_elements=10_000, max_body_bytes=200_000, max_response_elements=50_000))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("case", sorted(COMPUTE_CASES))
def test_every_compute_route_answers_a_binary_frame_with_the_json_numbers(client, case):
    route = case.split("/")[0]
    content = binary_and_json(client, f"/v1/{route}", COMPUTE_CASES[case])
    if route != "gradcheck":  # its answer holds no tensors; every other one's travel as bytes
        assert count_arrays(content) > 0


def count_arrays(value) -> int:
    if isinstance(value, np.ndarray):
        return 1
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return sum(count_arrays(item) for item in items)


def test_the_sin_example_is_right_and_the_identity_is_bit_for_bit(client):
    x = np.linspace(-3, 3, 1001, dtype=np.float32)
    body, headers = frame({"inputs": {"x": x}, "expr": "x", "encoding": "binary"})
    echoed = read_frame(client.post("/v1/evaluate", content=body, headers=headers))["outputs"][0]
    np.testing.assert_array_equal(echoed, x)  # a copy of the bytes: exact by construction
    body, headers = frame({"inputs": {"a": x}, "expr": "a.sin().sum()", "wrt": ["a"]})
    grads = read_frame(client.post("/v1/grad", content=body, headers={**headers, **ACCEPT_BINARY}))["grads"]
    np.testing.assert_allclose(grads["a"], np.cos(x.astype(np.float64)), rtol=1e-6, atol=1e-6)


def test_binary_request_alone_answers_json_unless_asked(client):
    body, headers = frame({"inputs": {"x": X}, "expr": "x * 2"})
    response = client.post("/v1/evaluate", content=body, headers=headers)
    assert response.headers["content-type"] == "application/json"
    np.testing.assert_array_equal(from_json(response.json())["outputs"][0], X * 2)


def test_json_request_answers_binary_when_accepted(client):
    response = client.post("/v1/evaluate", json=json_request({"inputs": {"x": X}, "expr": "x * 2"}),
                           headers=ACCEPT_BINARY)
    np.testing.assert_array_equal(read_frame(response)["outputs"][0], X * 2)
    response = client.post("/v1/evaluate", json=json_request({"inputs": {"x": X}, "expr": "x * 2"}),
                           headers={"Accept": f"{BINARY};q=0, application/json"})
    assert response.headers["content-type"] == "application/json"


def test_dtypes_shapes_and_json_tensors_mix_in_one_frame(client):
    request = {"inputs": {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": {"data": [1.5, 2.5, 3.5]},
                          "m": np.array([True, False, True]), "s": np.array(2.0),
                          "e": np.zeros((0, 3), np.float32)},
               "expr": "(a * b * m * s, e.sum(0))"}
    content = binary_and_json(client, "/v1/evaluate", request, rtol=0)
    np.testing.assert_array_equal(content["outputs"][0], np.arange(6).reshape(2, 3) * [1.5, 0, 3.5] * 2)
    assert content["outputs"][1].shape == (3,)


def test_header_padding_and_unaligned_tensors(client):
    x = values(7).astype(np.float64)
    for pad in range(8):  # every alignment of the first tensor's bytes
        body, headers = frame({"inputs": {"x": x}, "expr": "x * 3", "encoding": "binary"}, pad=pad)
        response = client.post("/v1/evaluate", content=body, headers=headers)
        assert int(response.headers[HEADER_LENGTH]) % 8 == 0  # the answer's own tensors start aligned
        np.testing.assert_array_equal(read_frame(response)["outputs"][0], x * 3)


def test_gradcheck_perturbs_binary_inputs_in_place_without_harm(client):
    # gradcheck writes into its inputs: the views of the body must be writable (or copied).
    body, headers = frame({"inputs": {"x": values(4, dtype=np.float64)}, "expr": "(x.exp() * x).sum()"})
    response = client.post("/v1/gradcheck", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["passed"] is True, response.text


# ---- models ---------------------------------------------------------------------------------------

SPEC = {"layers": [{"type": "linear", "in_features": 2, "out_features": 4}, {"type": "relu"},
                   {"type": "linear", "in_features": 4, "out_features": 1}],
        "optimizer": {"type": "sgd", "lr": 0.1}, "seed": 3}


def test_model_routes_take_and_give_binary_tensors(client):
    created = client.post("/v1/models", json=SPEC)
    assert created.status_code == 201, created.text
    model = f"/v1/models/{created.json()['id']}"
    inputs, targets = values(8, 2), values(8, 1)
    binary_and_json(client, f"{model}/forward", {"input": inputs, "target": targets})

    body, headers = frame({"input": inputs, "target": targets})
    backward = client.post(f"{model}/backward", content=body, headers=headers)
    assert backward.status_code == 200, backward.text
    plain = client.post(f"{model}/forward", json=json_request({"input": inputs, "target": targets}))
    assert backward.json()["loss"] == pytest.approx(plain.json()["loss"], rel=1e-6)

    params_binary = read_frame(client.get(f"{model}/parameters", headers=ACCEPT_BINARY))
    params_json = from_json(client.get(f"{model}/parameters").json())
    assert_same_numbers(params_binary, params_json)
    assert read_frame(client.get(f"{model}/parameters?encoding=binary"))["version"] == params_json["version"]

    state = client.get(f"{model}/state", headers=ACCEPT_BINARY)
    exported = read_frame(state)
    assert_same_numbers(exported, from_json(client.get(f"{model}/state").json()))

    body, headers = frame({"inputs": inputs, "targets": targets, "steps": 3})
    trained = client.post(f"{model}/train", content=body, headers=headers)
    assert trained.status_code == 200, trained.text
    changed = from_json(client.get(f"{model}/parameters").json())["parameters"]
    assert not np.array_equal(changed["0.weight"], exported["parameters"]["0.weight"])

    # The exported binary state, sent back as a frame, restores the parameters exactly.
    body, headers = frame(exported)
    restored = client.put(f"{model}/state", content=body, headers=headers)
    assert restored.status_code == 200, restored.text
    back = read_frame(client.get(f"{model}/parameters", headers=ACCEPT_BINARY))["parameters"]
    for name, array in exported["parameters"].items():
        np.testing.assert_array_equal(back[name], array)
    # An .npz body without the header is still an .npz archive.
    npz = client.get(f"{model}/state", headers={"Accept": "application/x-npz"}).content
    assert client.put(f"{model}/state", content=npz, headers={"Content-Type": BINARY}).status_code == 200


# ---- malformed frames -----------------------------------------------------------------------------

GOOD = {"inputs": {"x": np.arange(3, dtype=np.float32)}, "expr": "x.sin()"}


def good_frame():
    return frame(GOOD)


def with_header(text: str) -> tuple[bytes, dict]:
    """A frame whose JSON header is ``text`` and whose binary bytes are 12 zero bytes."""
    header = text.encode()
    return header + bytes(12), {"Content-Type": BINARY, HEADER_LENGTH: str(len(header))}


def tensor_header(**fields) -> str:
    x = {"shape": [3], "dtype": "float32", "parameters": {"binary_data_size": 12}, **fields}
    return json.dumps({"inputs": {"x": {k: v for k, v in x.items() if v is not None}}, "expr": "x.sin()"})


def malformed():
    body, headers = good_frame()
    length = int(headers[HEADER_LENGTH])
    yield "no header length", body, {"Content-Type": BINARY}, 400, "invalid-binary-frame"
    for bad in ("abc", "-1", "1.5", "", "0x10", "+12", "1_2"):
        yield f"header length {bad!r}", body, {**headers, HEADER_LENGTH: bad}, 400, "invalid-binary-frame"
    yield "header length beyond the body", body, {**headers, HEADER_LENGTH: str(len(body) + 1)}, 400, \
        "invalid-binary-frame"
    yield "header length cuts the JSON", body, {**headers, HEADER_LENGTH: str(length - 1)}, 400, \
        "invalid-binary-frame"
    yield "header length takes tensor bytes", body, {**headers, HEADER_LENGTH: str(length + 4)}, 400, \
        "invalid-binary-frame"
    yield "invalid JSON header", *with_header("{not json" + " " * 20), 400, "invalid-binary-frame"
    yield "truncated tensor bytes", body[:-1], headers, 400, "invalid-binary-frame"
    yield "trailing bytes", body + b"\0", headers, 400, "invalid-binary-frame"
    yield "size disagrees with shape", *with_header(tensor_header(shape=[4])), 400, "invalid-binary-frame"
    yield "size disagrees with dtype", *with_header(tensor_header(dtype="float64")), 400, "invalid-binary-frame"
    for size in (-12, 12.0, "12", True, None):
        yield f"binary_data_size {size!r}", *with_header(tensor_header(parameters={"binary_data_size": size})), \
            400, "invalid-binary-frame"
    yield "sizes sum past the body", *with_header(tensor_header(shape=[6], parameters={"binary_data_size": 24})), \
        400, "invalid-binary-frame"
    yield "bytes and data both", *with_header(tensor_header(data=[1, 2, 3])), 400, "invalid-binary-frame"
    yield "unknown dtype", *with_header(tensor_header(dtype="float12")), 422, "invalid-tensor"
    yield "no dtype", *with_header(tensor_header(dtype=None)), 422, "invalid-tensor"
    yield "no shape", *with_header(tensor_header(shape=None)), 422, "invalid-tensor"
    yield "negative shape", *with_header(tensor_header(shape=[-3])), 422, "invalid-tensor"
    yield "unknown tensor field", *with_header(tensor_header(colour="red")), 422, "invalid-tensor"
    big = json.dumps({"inputs": {"x": {"shape": [0, 2**70], "dtype": "float32",
                                       "parameters": {"binary_data_size": 0}}}, "expr": "x"})
    yield "a shape numpy cannot hold", big.encode(), {"Content-Type": BINARY, HEADER_LENGTH: str(len(big))}, \
        422, "invalid-tensor"
    root = json.dumps({"shape": [3], "dtype": "float32", "parameters": {"binary_data_size": 12}})
    yield "the root is a tensor", *with_header(root), 400, "invalid-binary-frame"
    many = np.zeros(10_001, np.float32)
    yield "too many elements", *frame({"inputs": {"x": many}, "expr": "x"}), 413, "tensor-too-large"
    yield "body over the limit", *frame({"inputs": {"x": np.zeros(60_000, np.float32)}, "expr": "x"}), 413, \
        "body-too-large"
    yield "binary tensor where a string belongs", *with_header(json.dumps(
        {"inputs": {}, "expr": {"shape": [3], "dtype": "float32", "parameters": {"binary_data_size": 12}}})), \
        422, "validation-error"


MALFORMED = list(malformed())


@pytest.mark.parametrize(("body", "headers", "status", "slug"), [case[1:] for case in MALFORMED],
                         ids=[case[0] for case in MALFORMED])
def test_malformed_frames_are_the_stated_problem(client, body, headers, status, slug):
    response = client.post("/v1/evaluate", content=body, headers={**headers, **ACCEPT_BINARY})
    assert_problem(response, status)
    assert response.json()["type"].endswith("/" + slug), response.text


def test_binary_form_in_a_json_body_is_refused_by_name(client):
    response = client.post("/v1/evaluate", content=tensor_header(), headers={"Content-Type": "application/json"})
    assert_problem(response, 422)
    assert "binary_data_size" in response.json()["detail"] and "octet-stream" in response.json()["detail"]


def test_errors_stay_problem_json_whatever_the_accept(client):
    body, headers = frame({"inputs": {"x": X}, "expr": "x.nosuch()"})
    assert_problem(client.post("/v1/evaluate", content=body, headers={**headers, **ACCEPT_BINARY}), 400)
    body, headers = frame({"inputs": {"x": values(300)}, "expr": "(x * x).sum()"})
    too_large = client.post("/v1/hessian", content=body, headers={**headers, **ACCEPT_BINARY})
    assert_problem(too_large, 413)  # 300^2 > max_response_elements, refused before encoding
    assert too_large.json()["type"].endswith("/response-too-large")


def test_the_openapi_document_describes_the_binary_framing(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/evaluate", "/v1/grad", "/v1/gradcheck", "/v1/jacobian", "/v1/hessian", "/v1/vjp",
                 "/v1/jvp", "/v1/hvp", "/v1/vhp", "/v1/profile", "/v1/models/{model_id}/forward",
                 "/v1/models/{model_id}/backward", "/v1/models/{model_id}/train"):
        body = spec["paths"][path]["post"]["requestBody"]
        assert set(body["content"]) >= {"application/json", BINARY}, path
        assert HEADER_LENGTH in body["description"] and "binary_data_size" in body["description"], path
    evaluate = spec["paths"]["/v1/evaluate"]["post"]
    assert BINARY in evaluate["responses"]["200"]["content"]
    # The worked example in the prose is a frame the server accepts, with the numbers it says.
    prose = evaluate["requestBody"]["description"]
    header = next(line.strip() for line in prose.splitlines() if line.strip().startswith('{"inputs"'))
    assert f"Inference-Header-Content-Length: {len(header)}" in prose
    raw = bytes.fromhex("00 00 00 00 00 00 00 3f 00 00 80 3f")
    assert raw.hex(" ") in prose
    response = client.post("/v1/evaluate", content=header.encode() + raw,
                           headers={"Content-Type": BINARY, HEADER_LENGTH: str(len(header)), **ACCEPT_BINARY})
    np.testing.assert_allclose(read_frame(response)["outputs"][0], np.sin([0, 0.5, 1]), rtol=1e-6)


# ---- the parser, fuzzed ---------------------------------------------------------------------------

DTYPES = ["float32", "float64", "float16", "int32", "int64", "bool"]


@st.composite
def frames(draw):
    """A frame near a valid one: tensors of drawn shapes and dtypes, then sizes, lengths and bytes
    perturbed, or not."""
    tensors, chunks = {}, []
    for i in range(draw(st.integers(0, 3))):
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        dtype = draw(st.sampled_from(DTYPES))
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        declared = draw(st.one_of(st.just(size), st.integers(-2, 200), st.sampled_from([2**63, 2**64 + 1, 1.5])))
        tensors[f"t{i}"] = {"shape": draw(st.one_of(st.just(shape), st.lists(st.integers(-1, 2**40), max_size=3))),
                            "dtype": draw(st.one_of(st.just(dtype), st.sampled_from(["FP32", "x", 3]))),
                            "parameters": {"binary_data_size": declared}}
        chunks.append(draw(st.binary(min_size=size, max_size=size)))
    header = json.dumps({"inputs": tensors, "expr": "0"}).encode()
    body = header + b"".join(chunks)
    body = draw(st.one_of(st.just(body), st.binary(max_size=8).map(lambda extra: body + extra),
                          st.integers(0, len(body)).map(lambda cut: body[:cut])))
    length = draw(st.one_of(st.just(str(len(header))), st.integers(-5, len(body) + 5).map(str),
                            st.sampled_from(["", "x", "1e3", " 7 ", None])))
    return body, length


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_decode_frame_accepts_or_refuses_cleanly(case):
    body, length = case
    try:
        content = codec.decode_frame(bytearray(body), length)
    except codec.CodecError:  # FrameError (400) or an invalid tensor (422): never anything else
        return
    arrays = [t.array for t in content["inputs"].values() if isinstance(t, codec.BinaryTensor)]
    assert int(length) + sum(a.nbytes for a in arrays) == len(body)  # every byte accounted for, none twice


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(frames())
def test_the_app_never_answers_a_fuzzed_frame_with_a_5xx(client, case):
    body, length = case
    headers = {"Content-Type": BINARY, **({} if length is None else {HEADER_LENGTH: length})}
    response = client.post("/v1/evaluate", content=body, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.headers["content-type"] == "application/problem+json"


def test_float64_bytes_compute_in_float64_whatever_the_encoding(client):
    # A 0-d float32 times a float64 vector is float64 (PyTorch's promotion). Arrays viewing bytes with
    # an explicitly little-endian dtype object computed in float32 before, in base64 as in binary.
    y = np.arange(4, dtype=np.float64)
    request = {"inputs": {"x": {"data": [1.0, 2.0]}, "y": y}, "expr": "(x.sum() * y).sum()"}
    body, headers = frame(request)
    binary = read_frame(client.post("/v1/evaluate", content=body, headers={**headers, **ACCEPT_BINARY}))
    b64 = {"b64": base64.b64encode(y.tobytes()).decode(), "shape": [4], "dtype": "float64"}
    encoded = client.post("/v1/evaluate", json={**request, "inputs": {**request["inputs"], "y": b64}}).json()
    plain = client.post("/v1/evaluate", json=json_request(request)).json()
    assert binary["outputs"][0].dtype == np.float64
    assert encoded["outputs"][0]["dtype"] == plain["outputs"][0]["dtype"] == "float64"


def test_kserve_datatype_names_are_accepted_in_binary_tensors(client):
    x = np.array([0.25, -2.0], np.float64)
    header = json.dumps({"inputs": {"x": {"shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}},
                         "expr": "x * 4"}).encode()
    response = client.post("/v1/evaluate", content=header + x.tobytes(),
                           headers={"Content-Type": BINARY, HEADER_LENGTH: str(len(header)), **ACCEPT_BINARY})
    np.testing.assert_array_equal(read_frame(response)["outputs"][0], x * 4)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/x-npz"])
def test_bodies_neither_json_nor_a_frame_are_415(client, content_type):
    body, _ = frame({"inputs": {"x": X}, "expr": "x"})
    response = client.post("/v1/grad", content=body, headers={"Content-Type": content_type})
    assert_problem(response, 415)
    assert "application/octet-stream" in response.json()["detail"]
    ok = client.post("/v1/grad", json=json_request({"inputs": {"x": X}, "expr": "x"}),
                     headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_binary_tensors_are_found_at_any_depth_in_document_order():
    body, headers = frame({"v": [0.5, np.ones((2, 2)), [{"data": [[1], [2]]}, np.arange(3, dtype=np.int32)]],
                           "inputs": {"a": np.array(7, np.float32)}})
    content = codec.decode_frame(bytearray(body), headers[HEADER_LENGTH])
    np.testing.assert_array_equal(content["v"][1].array, np.ones((2, 2)))
    np.testing.assert_array_equal(content["v"][2][1].array, [0, 1, 2])
    assert content["v"][2][0] == {"data": [[1], [2]]} and content["inputs"]["a"].array == 7
    header = json.dumps({"v": [1, [2, {"shape": [3], "dtype": "float32", "parameters": {"binary_data_size": 20}}]]})
    with pytest.raises(codec.FrameError, match=r"^v\.1\.1: binary_data_size is 20"):
        codec.decode_frame(bytearray(header.encode() + bytes(20)), str(len(header)))
