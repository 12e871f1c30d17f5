"""Model states packed for the store (.npz) and as JSON: both round-trip to a model that continues exactly
as the original would (the same code on the same machine, so bit for bit)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from frontends.model_spec import TrainableModel
from service.codec import ElementBudget
from service.errors import ServiceError
from service.state_codec import pack_state, state_from_json, state_to_json, unpack_state


def trained_model():
    model = TrainableModel({"layers": [{"type": "linear", "in_features": 3, "out_features": 2}, {"type": "tanh"}],
                            "optimizer": {"type": "adam", "lr": 0.01},
                            "scheduler": {"type": "step", "step_size": 2}, "seed": 3})
    model.train([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], [[0.1, 0.2], [0.3, -0.4]], steps=3)
    model.backward([[1.0, 2.0, 3.0]], [[0.0, 0.0]])
    return model


def assert_same_continuation(a: TrainableModel, b: TrainableModel):
    x, y = [[0.3, 0.1, -0.2]], [[1.0, -1.0]]
    assert a.train(x, y, steps=2) == b.train(x, y, steps=2)
    for name, value in a.named_parameters().items():
        np.testing.assert_array_equal(b.named_parameters()[name], value)


def test_packed_state_round_trips_bit_for_bit():
    model = trained_model()
    blob = pack_state(model.state())
    restored = TrainableModel.from_state(unpack_state(blob))
    with np.load(io.BytesIO(blob)) as archive:  # an ordinary .npz
        np.testing.assert_array_equal(archive["parameters/0.weight"], model.named_parameters()["0.weight"])
    assert_same_continuation(model, restored)


@pytest.mark.parametrize("encoding", ["json", "base64"])
def test_json_state_round_trips_bit_for_bit(encoding):
    import orjson

    model = trained_model()
    wire = orjson.loads(orjson.dumps(state_to_json(model.state(), encoding), option=orjson.OPT_SERIALIZE_NUMPY))
    restored = TrainableModel.from_state(state_from_json(wire, ElementBudget(10**6, 10**6)))
    assert_same_continuation(model, restored)


def test_unpack_rejects_what_is_not_a_state():
    with pytest.raises(ServiceError):
        unpack_state(b"not a zip file")
