"""Fixtures the frontends' tests share."""

from __future__ import annotations

import pytest

import engine


@pytest.fixture(params=[AttributeError, AssertionError], ids=lambda bug: bug.__name__)
def engine_bug(request, monkeypatch):
    """sin's forward broken by a bug in the engine itself (the exception class is returned): a
    frontend must let it through, not report it as the client's error."""
    bug = request.param

    def broken(xp, x):
        raise bug("an engine bug")

    monkeypatch.setattr(engine.ops.table["sin"], "forward", broken)
    return bug
