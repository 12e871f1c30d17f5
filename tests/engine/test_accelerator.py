"""``engine.accelerator`` (engine/accelerator.py): the current accelerator, as PyTorch reports it."""

from __future__ import annotations

import engine


def test_without_a_gpu_there_is_no_accelerator(monkeypatch):
    monkeypatch.setattr(engine.cuda, "is_available", lambda: False)
    assert engine.accelerator.is_available() is False
    assert engine.accelerator.current_accelerator() is None
    assert engine.accelerator.device_count() == 0


def test_with_a_gpu_it_is_cuda(fake_cuda):
    assert engine.accelerator.is_available()
    assert engine.accelerator.current_accelerator() == engine.device("cuda")
    assert engine.accelerator.device_count() == engine.cuda.device_count() >= 1


def test_agrees_with_pytorch_on_this_machine(torch):
    if engine.cuda.is_available() != torch.cuda.is_available():
        return  # (cupy and torch see different GPUs: nothing to compare)
    assert engine.accelerator.is_available() == torch.accelerator.is_available()
    assert engine.accelerator.device_count() == torch.accelerator.device_count()
    ours, theirs = engine.accelerator.current_accelerator(), torch.accelerator.current_accelerator()
    assert (ours is None) == (theirs is None)
