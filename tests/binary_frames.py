"""Binary frames (the Open Inference Protocol's binary-data extension) built and read the way a
client does it, with json and numpy alone: the tests check the service against this, not against
its own codec.

``frame(request)``: a request dict whose tensors are numpy arrays -> (body, headers). Each array
becomes ``{"shape", "dtype", "parameters": {"binary_data_size"}}`` and its bytes follow the JSON
in document order (json.dumps writes dicts in insertion order, which is the walk's order here).
``read_frame(response)``: a binary response -> its JSON with each binary tensor an array.
"""

from __future__ import annotations

import json

import numpy as np

BINARY = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
ACCEPT_BINARY = {"Accept": BINARY}


def frame(request: dict, *, pad: int = 0) -> tuple[bytes, dict]:
    """(body, headers) for ``request``; ``pad`` spaces after the JSON (counted in its length)."""
    chunks: list[bytes] = []

    def strip(value):
        if isinstance(value, np.ndarray):
            little = value.astype(value.dtype.newbyteorder("<"), copy=False)
            chunks.append(np.ascontiguousarray(little).tobytes())
            return {"shape": list(value.shape), "dtype": str(value.dtype),
                    "parameters": {"binary_data_size": value.nbytes}}
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [strip(item) for item in value]
        return value

    header = json.dumps(strip(request), separators=(",", ":")).encode() + b" " * pad
    return header + b"".join(chunks), {"Content-Type": BINARY, HEADER_LENGTH: str(len(header))}


def read_frame(response) -> dict:
    """A binary response's JSON, each ``binary_data_size`` tensor replaced by its array."""
    assert response.headers["content-type"] == BINARY, response.text[:500]
    body = response.content
    length = int(response.headers[HEADER_LENGTH])
    header = json.loads(body[:length])
    offset = length

    def fill(value):
        nonlocal offset
        if isinstance(value, dict):
            size = value.get("parameters", {}).get("binary_data_size") if isinstance(value.get("parameters"),
                                                                                    dict) else None
            if size is not None:
                array = np.frombuffer(body, dtype=np.dtype(value["dtype"]).newbyteorder("<"),
                                      count=int(np.prod(value["shape"], dtype=np.int64)), offset=offset)
                assert array.nbytes == size
                offset += size
                return array.reshape(value["shape"])
            return {key: fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [fill(item) for item in value]
        return value

    content = fill(header)
    assert offset == len(body), f"{len(body) - offset} bytes unaccounted for"
    return content


def from_json(value):
    """A JSON response's tensors (``{"shape", "dtype", "data"}``) as arrays, everything else as is."""
    if isinstance(value, dict):
        if set(value) == {"shape", "dtype", "data"}:
            data = [float(v) if isinstance(v, str) else v for v in value["data"]]  # "NaN", "Infinity"
            return np.asarray(data, dtype=value["dtype"]).reshape(value["shape"])
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def assert_same_numbers(binary, json_content, path: str = "", rtol: float = 0.0) -> None:
    """Two responses hold the same structure, and the same numbers within ``rtol``."""
    if isinstance(json_content, np.ndarray):
        assert isinstance(binary, np.ndarray), path
        assert binary.shape == json_content.shape and binary.dtype == json_content.dtype, path
        np.testing.assert_allclose(binary, json_content, rtol=rtol, atol=0, err_msg=path)
    elif isinstance(json_content, dict):
        assert isinstance(binary, dict) and set(binary) == set(json_content), (path, binary, json_content)
        for key in json_content:
            assert_same_numbers(binary[key], json_content[key], f"{path}.{key}", rtol)
    elif isinstance(json_content, list):
        assert isinstance(binary, list) and len(binary) == len(json_content), path
        for i, (b, j) in enumerate(zip(binary, json_content, strict=True)):
            assert_same_numbers(b, j, f"{path}.{i}", rtol)


# ---- one request per compute route, and how to check a route both ways --------------------------

rng = np.random.default_rng(18)


def values(*shape, dtype=np.float32):
    return rng.uniform(-1.5, 1.5, size=shape).astype(dtype)


def json_request(request: dict) -> dict:
    """The same request with every array as a JSON tensor (float32 values are exact as JSON decimals)."""
    if isinstance(request, np.ndarray):
        return {"data": request.reshape(-1).tolist(), "shape": list(request.shape), "dtype": str(request.dtype)}
    if isinstance(request, dict):
        return {key: json_request(item) for key, item in request.items()}
    if isinstance(request, list):
        return [json_request(item) for item in request]
    return request


def binary_and_json(client, path: str, request: dict, *, method: str = "POST", rtol: float = 1e-6):
    """Send ``request`` as a binary frame (asking for a binary answer) and as JSON; check they agree."""
    body, headers = frame(request)
    binary = client.request(method, path, content=body, headers={**headers, **ACCEPT_BINARY})
    assert binary.status_code == 200, binary.text[:800]
    plain = client.request(method, path, json=json_request(request))
    assert plain.status_code == 200, plain.text[:800]
    content = read_frame(binary)
    assert_same_numbers(content, from_json(plain.json()), rtol=rtol)
    return content


X = values(5)
COMPUTE_CASES = {
    "evaluate": {"inputs": {"x": X, "w": values(3, 5)}, "expr": "(w @ x.sin()).exp()"},
    "grad": {"inputs": {"x": X, "w": values(3, 5, dtype=np.float64)}, "program": "return (w * x).sin().sum()",
             "wrt": ["x", "w"]},
    "grad/grad_outputs": {"inputs": {"x": X}, "expr": "x * x.cos()", "wrt": ["x"], "grad_outputs": [values(5)]},
    "gradcheck": {"inputs": {"x": X.astype(np.float64)}, "expr": "(x * x.sin()).sum()"},
    "jacobian": {"inputs": {"x": X, "y": values(5)}, "expr": "x.exp() * y"},
    "hessian": {"inputs": {"x": X}, "expr": "(x.exp() * x).sum()"},
    "vjp": {"inputs": {"x": X}, "expr": "x.tanh() * 2", "v": values(5)},
    "jvp": {"inputs": {"x": X, "y": values(5)}, "expr": "2 * x.exp() + 3 * y", "v": [values(5), values(5)]},
    "hvp": {"inputs": {"x": X}, "expr": "(x.sin() * x).sum()", "v": values(5)},
    "vhp": {"inputs": {"x": X}, "expr": "(x.sin() * x).sum()", "v": values(5)},
    "profile": {"inputs": {"x": X}, "expr": "(x * x.sin()).sum()"},
}
