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
