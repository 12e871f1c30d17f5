"""Devices: tensors on "cuda", transfers, the same-device rule, and every op off the host.

Most tests run everywhere, with ``tests/fake_cupy.py`` standing in for cupy
(the ``fake_cuda`` fixture): it covers the seam between the engine and the GPU
backend (which namespace a tensor's ops use, explicit and differentiable
transfers, device errors, seeded random numbers, the memory pool, and that no
op copies device data back to the host). Tests marked ``gpu`` run on a real
CUDA device and skip, saying why, without one; there CPU and GPU results must
agree to float32 tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import backend, ops
from engine.autograd import functional
from tests import fake_cupy
from tests.engine.opcases import all_cases

# These tests place tensors themselves; --device leaves their default device alone.
pytestmark = pytest.mark.host_only

requires_gpu = pytest.mark.skipif(not engine.cuda.is_available(),
                                  reason=f"needs a CUDA GPU: {engine.cuda.unavailable_reason()}")
requires_no_gpu = pytest.mark.skipif(engine.cuda.is_available(), reason="checks the no-GPU errors")

SAME_DEVICE = "Expected all tensors to be on the same device, but found at least two devices, "


def on_device(t, device=None) -> bool:
    """Whether ``t`` is on a fake CUDA device (``device``, when given: "cuda:1"...)."""
    return isinstance(t._data, fake_cupy.ndarray) and (device is None or t.device == device)


@pytest.fixture
def two_gpus(monkeypatch):
    """The fake cupy with two devices, cuda:0 current."""
    return fake_cupy.install(monkeypatch, devices=2)


# Every op again on cuda:1 while cuda:0 is current: the fake's kernels refuse arrays of a device
# that is not current, so these catch any op run (or allocating) on the wrong device.
GPUS = pytest.mark.parametrize("gpu", ["cuda:0", "cuda:1"])


# ---- the fake itself: honest where the seam needs it -------------------------------------


def test_fake_arrays_are_their_own_type_and_refuse_host_arrays(fake_cuda):
    a = fake_cuda.asarray(np.arange(3.0))
    assert type(a) is not np.ndarray and backend.namespace_of(a) is fake_cuda
    assert backend.device_of(a) == "cuda:0" and backend.is_array(a)
    assert type(a.sum()) is fake_cupy.ndarray  # reductions stay on the device, 0-d
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type"):
        fake_cuda.maximum(np.ones(3), a)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        a.__array__()
    with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
        np.asarray(engine.tensor([1.0], device="cuda"))
    fake_cupy.reset_transfers()
    float(a[0])
    assert fake_cupy.transfers["to_host"] == 1


# ---- no GPU: every way of asking for one says what is missing -------------------------------


@requires_no_gpu
@pytest.mark.parametrize("make", [
    lambda: engine.tensor([1.0], device="cuda"),
    lambda: engine.zeros(2, device="cuda"),
    lambda: engine.randn(2, device="cuda"),
    lambda: engine.arange(3, device="cuda"),
    lambda: engine.ones(2).cuda(),
    lambda: engine.ones(2).to("cuda"),
    lambda: engine.cuda.current_device(),
], ids=["tensor", "zeros", "randn", "arange", "cuda()", "to", "current_device"])
def test_cuda_without_a_gpu_raises_naming_what_is_missing(make):
    missing = r"CUDA is not available( here)?: cupy is (not installed|installed but finds no)"
    with pytest.raises(RuntimeError, match=missing):
        make()


@requires_no_gpu
def test_cuda_module_reports_no_devices_without_a_gpu():
    assert engine.cuda.is_available() is False and engine.cuda.device_count() == 0
    assert "cupy" in engine.cuda.unavailable_reason()
    engine.cuda.synchronize()  # a no-op, as timing code expects
    assert engine.cuda.memory_allocated() == 0


def test_cupy_without_a_device_names_the_driver(fake_cuda, monkeypatch):
    monkeypatch.setattr(fake_cupy.runtime, "device_count", 0)
    assert not engine.cuda.is_available()
    with pytest.raises(RuntimeError, match="cupy is installed but finds no CUDA device"):
        engine.ones(2, device="cuda")


# ---- placement: creation, .to / .cuda / .cpu, engine.cuda ----------------------------------


@pytest.mark.parametrize("make", [
    lambda device: engine.tensor([[1.0, 2.0], [3.0, 4.0]], device=device),
    lambda device: engine.zeros(2, 3, device=device),
    lambda device: engine.ones(2, dtype=engine.float64, device=device),
    lambda device: engine.full((2,), 7, device=device),
    lambda device: engine.eye(3, device=device),
    lambda device: engine.arange(0, 5, 2, device=device),
    lambda device: engine.linspace(-1, 1, 5, device=device),
    lambda device: engine.rand(3, device=device),
    lambda device: engine.randn(2, 2, device=device),
    lambda device: engine.randint(0, 9, (4,), device=device),
    lambda device: engine.zeros_like(engine.ones(2, device=device)),
    lambda device: engine.randn_like(engine.ones(2, device=device)),
], ids=["tensor", "zeros", "ones", "full", "eye", "arange", "linspace", "rand", "randn", "randint", "zeros_like",
        "randn_like"])
@GPUS
def test_creation_places_tensors_on_the_device_with_the_cpu_values(two_gpus, make, gpu):
    engine.manual_seed(3)
    on_cpu = make("cpu")
    engine.manual_seed(3)
    on_gpu = make(gpu)
    assert on_device(on_gpu, gpu) and on_gpu._data.device.id == engine.device(gpu).index and on_gpu.is_cuda
    assert on_gpu.dtype is on_cpu.dtype and on_gpu.shape == on_cpu.shape
    np.testing.assert_array_equal(on_gpu.cpu().numpy(), on_cpu.numpy())


def test_to_cuda_cpu_and_the_device_property(fake_cuda):
    x = engine.tensor([1.0, 2.0])
    for moved in (x.cuda(), x.cuda(0), x.to("cuda"), x.to("cuda:0"), x.to(device="cuda"),
                  x.to("cuda", non_blocking=True), x.to(engine.device("cuda")), x.to(engine.ones(1, device="cuda"))):
        assert on_device(moved) and str(moved.device) == "cuda:0" and repr(moved.device) == \
            "device(type='cuda', index=0)"
    y = x.cuda()
    assert y.cuda() is y and y.to("cuda") is y  # already there: no copy, as PyTorch
    back = y.cpu()
    assert type(back._data) is np.ndarray and back.device == "cpu" and not back.is_cuda
    assert y.to("cuda", engine.float64).dtype is engine.float64 and on_device(y.to(engine.float64))
    assert x.to("cpu") is x


def test_numpy_of_a_cuda_tensor_asks_for_cpu_first(fake_cuda):
    y = engine.tensor([1.0, 2.0], device="cuda")
    with pytest.raises(TypeError, match=r"can't convert cuda:0 device type tensor to numpy\. Use Tensor\.cpu\(\)"):
        y.numpy()
    assert y.cpu().numpy().tolist() == [1.0, 2.0] and y.tolist() == [1.0, 2.0]
    assert y.sum().item() == 3.0 and float(y[1]) == 2.0
    assert "device='cuda:0'" in repr(y)


def test_cuda_module_with_a_device(fake_cuda):
    assert engine.cuda.is_available() and engine.cuda.device_count() == 1 and engine.cuda.current_device() == 0
    engine.cuda.synchronize()
    engine.cuda.synchronize(0)
    assert fake_cupy.Device.synchronized == 2
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        engine.zeros(1, device="cuda:1")
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        engine.ones(1).to("cuda:3")


def test_manual_seed_makes_cuda_draws_reproducible(fake_cuda):
    engine.cuda.manual_seed(7)
    first = engine.randn(5, device="cuda").cpu().numpy()
    engine.cuda.manual_seed(7)
    again = engine.randn(5, device="cuda").cpu().numpy()
    engine.manual_seed(7)
    on_cpu = engine.randn(5).numpy()
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, on_cpu)  # one generator for every device (engine/cuda.py)
    generator = engine.Generator(device="cuda").manual_seed(1)
    drawn = engine.rand(3, generator=generator, device="cuda")
    assert on_device(drawn)
    np.testing.assert_array_equal(drawn.cpu().numpy(), engine.rand(3, generator=engine.Generator().manual_seed(1))
                                  .numpy())
    inplace = engine.zeros(4, device="cuda").uniform_()
    assert on_device(inplace) and float(inplace.min()) >= 0.0


def test_default_device_for_creation_functions(fake_cuda):
    assert engine.get_default_device() == "cpu"
    with engine.device("cuda") as dev:
        assert dev == "cuda:0" and engine.get_default_device() == "cuda:0"
        assert on_device(engine.zeros(2)) and on_device(engine.tensor([1.0])) and on_device(engine.randn(2))
        with engine.device("cpu"):
            assert type(engine.ones(1)._data) is np.ndarray
        assert on_device(engine.ones(1))
        assert type(engine.ones(1, device="cpu")._data) is np.ndarray  # an explicit device wins
    assert type(engine.zeros(2)._data) is np.ndarray
    engine.set_default_device("cuda")
    try:
        assert on_device(engine.arange(3))
    finally:
        engine.set_default_device(None)
    assert engine.get_default_device() == "cpu"


def test_default_device_is_per_thread_context(fake_cuda):
    import threading

    seen = {}

    def other():
        seen["other"] = engine.get_default_device()

    with engine.device("cuda"):
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    assert seen["other"] == "cpu"


# ---- the same-device rule ------------------------------------------------------------------


@pytest.mark.parametrize("call, devices", [
    (lambda a, b: a + b, "cpu and cuda:0"),
    (lambda a, b: b * a, "cuda:0 and cpu"),
    (lambda a, b: a.unsqueeze(0) @ b.unsqueeze(1), "cpu and cuda:0"),
    (lambda a, b: engine.cat([a, b]), "cpu and cuda:0"),
    (lambda a, b: engine.stack([b, a]), "cuda:0 and cpu"),
    (lambda a, b: engine.where(a > 0, a, b), "cpu and cuda:0"),
], ids=["add", "mul", "matmul", "cat", "stack", "where"])
def test_ops_mixing_devices_raise_pytorchs_error(fake_cuda, call, devices):
    a = engine.tensor([1.0, -2.0])
    b = engine.tensor([3.0, 4.0], device="cuda")
    with pytest.raises(RuntimeError, match=SAME_DEVICE + devices + "!"):
        call(a, b)


# ---- transfers are ops: differentiable, gradients go back where the input lives -----------


def test_to_device_is_differentiable_both_ways(fake_cuda):
    x = engine.tensor([0.5, 1.0, 2.0], requires_grad=True)
    moved = x.cuda()
    assert moved.grad_fn.name() == "ToCopyBackward0" and moved.requires_grad
    (moved.sin() * moved).sum().backward()
    assert type(x.grad._data) is np.ndarray  # the gradient came back to the CPU leaf
    xs = np.array([0.5, 1.0, 2.0], dtype=np.float32)
    np.testing.assert_allclose(x.grad.numpy(), np.sin(xs) + xs * np.cos(xs), rtol=1e-6)

    w = engine.tensor([1.0, 3.0], device="cuda", requires_grad=True)
    (w.cpu() ** 2).sum().backward()
    assert on_device(w.grad)
    np.testing.assert_allclose(w.grad.cpu().numpy(), [2.0, 6.0])


def test_second_derivatives_through_a_transfer(fake_cuda):
    x = engine.tensor([0.3, -1.2], dtype=engine.float64, requires_grad=True)
    y = (x.cuda() ** 3).sum()
    (g,) = engine.autograd.grad(y, x, create_graph=True)
    assert type(g._data) is np.ndarray
    (h,) = engine.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * np.array([0.3, -1.2]))


# ---- several CUDA devices: cuda:1, the current device, transfers between devices --------------


def test_fake_devices_allocate_on_the_current_one_and_refuse_other_devices_arrays(two_gpus):
    cupy = two_gpus
    a = cupy.asarray(np.arange(3.0))
    assert a.device.id == 0 and cupy.cuda.Device().id == 0 and cupy.cuda.runtime.getDevice() == 0
    with cupy.cuda.Device(1):
        assert cupy.cuda.Device().id == 1 and cupy.cuda.runtime.getDevice() == 1
        b = cupy.zeros(3)
        assert b.device.id == 1 and (b + 1).device.id == 1 and b.reshape(3, 1).device.id == 1
        with pytest.raises(ValueError, match=r"resides \(0\) is different from the current device \(1\)"):
            a + b
        fake_cupy.reset_transfers()
        moved = cupy.asarray(a)  # cupy copies another device's array to the current one
        assert moved.device.id == 1 and fake_cupy.transfers == {"to_host": 0, "to_device": 0, "between_devices": 1}
    assert cupy.cuda.runtime.getDevice() == 0  # restored on leaving the block
    with pytest.raises(ValueError, match=r"resides \(1\) is different from the current device \(0\)"):
        b.sum()
    with pytest.raises(ValueError, match="different from the current device"):
        b.astype(np.float32)
    assert float(b[0]) == 0.0 and b.get().tolist() == [0.0, 0.0, 0.0]  # copies to the host work from anywhere
    cupy.cuda.runtime.setDevice(1)
    assert cupy.empty(2).device.id == 1
    with pytest.raises(RuntimeError, match="invalid device ordinal 2"):
        cupy.cuda.Device(2)


def test_to_cuda_n_and_transfers_between_devices(two_gpus):
    x = engine.tensor([1.0, 2.0])
    for moved in (x.cuda(1), x.cuda("cuda:1"), x.cuda(engine.device("cuda", 1)), x.to("cuda:1"),
                  x.to(engine.device("cuda", 1)), x.to(engine.ones(1, device="cuda:1")),
                  engine.tensor(x, device="cuda:1"), engine.tensor([1.0, 2.0], device="cuda:1")):
        assert on_device(moved, "cuda:1") and repr(moved.device) == "device(type='cuda', index=1)"
        assert moved.tolist() == [1.0, 2.0]
    y0 = x.cuda()
    fake_cupy.reset_transfers()
    y1 = y0.to("cuda:1")
    assert on_device(y1, "cuda:1") and on_device(y0, "cuda:0")
    assert fake_cupy.transfers == {"to_host": 0, "to_device": 0, "between_devices": 1}  # not through the host
    assert y1.cuda(1) is y1 and on_device(y1.to("cuda:0"), "cuda:0") and on_device(y1.cuda(0), "cuda:0")
    back = y1.cpu()
    assert type(back._data) is np.ndarray and back.tolist() == [1.0, 2.0]
    assert "device='cuda:1'" in repr(y1)
    assert on_device(engine.tensor(y0, device="cuda:1"), "cuda:1") and on_device(engine.zeros_like(y1), "cuda:1")
    assert two_gpus.cuda.runtime.getDevice() == 0


def test_cuda_module_with_two_devices(two_gpus):
    assert engine.cuda.device_count() == 2 and engine.cuda.current_device() == 0
    with engine.cuda.device(1):
        assert engine.cuda.current_device() == 1
        # "cuda" without an index is the current device, as in PyTorch
        assert on_device(engine.zeros(2, device="cuda"), "cuda:1") and on_device(engine.ones(2).cuda(), "cuda:1")
        with engine.cuda.device("cuda:0"):
            assert engine.cuda.current_device() == 0
        assert engine.cuda.current_device() == 1
    assert engine.cuda.current_device() == 0
    with engine.cuda.device(None):  # as in PyTorch, None changes nothing
        assert engine.cuda.current_device() == 0
    engine.cuda.set_device(1)
    assert engine.cuda.current_device() == 1 and on_device(engine.randn(2, device="cuda"), "cuda:1")
    engine.cuda.set_device(engine.device("cuda:0"))
    assert on_device(engine.tensor([1.0]).cuda(), "cuda:0")
    for bad in (lambda: engine.zeros(1, device="cuda:2"), lambda: engine.ones(1).to("cuda:2"),
                lambda: engine.ones(1).cuda(5), lambda: engine.cuda.set_device(2),
                lambda: engine.cuda.device(2).__enter__(), lambda: engine.ones(1, device="cuda:-1")):
        with pytest.raises(RuntimeError, match="CUDA error: invalid device ordinal"):
            bad()
    with pytest.raises(ValueError, match="Expected a cuda device"):
        engine.cuda.set_device("cpu")


@pytest.mark.parametrize("call", [
    lambda a, b: a + b,
    lambda a, b: a * b,
    lambda a, b: a.unsqueeze(0) @ b.unsqueeze(1),
    lambda a, b: engine.cat([a, b]),
    lambda a, b: engine.where(a > 0, a, b),
], ids=["add", "mul", "matmul", "cat", "where"])
def test_ops_mixing_cuda_devices_raise_pytorchs_error(two_gpus, call):
    a = engine.tensor([1.0, -2.0], device="cuda:0")
    b = engine.tensor([3.0, 4.0], device="cuda:1")
    with pytest.raises(RuntimeError, match=SAME_DEVICE + "cuda:0 and cuda:1!"):
        call(a, b)
    with pytest.raises(RuntimeError, match=SAME_DEVICE + "cuda:1 and cuda:0!"):
        call(b, a)


def test_op_placement_is_pytorchs_device_rule(two_gpus):
    # the one seam autograd asks where an op runs: (device the CPU scalars move to, scope to enter)
    cupy = two_gpus
    on_0 = cupy.asarray(np.ones(3))
    with cupy.cuda.Device(1):
        on_1, scalar_1 = cupy.asarray(np.ones(3)), cupy.asarray(np.float64(2.0))
    host, host_scalar = np.ones(3), np.asarray(2.0)
    assert backend.op_placement([host, host_scalar], "mul", True) == (None, None)
    assert backend.op_placement([on_0, on_0], "mul", True) == (None, None)  # cuda:0 is current already
    scalars_to, scope = backend.op_placement([on_0, host_scalar], "mul", True)
    assert scalars_to == engine.device("cuda:0") and scope is None
    scalars_to, scope = backend.op_placement([host_scalar, on_1], "mul", True)  # the scalar may come first
    assert scalars_to == engine.device("cuda:1") and scope is None
    scalars_to, scope = backend.op_placement([on_1, on_1], "mul", True)
    assert scalars_to is None
    with scope:
        assert cupy.cuda.runtime.getDevice() == 1
    assert cupy.cuda.runtime.getDevice() == 0
    for arrays, scalars_move, pair in [
        ([on_0, host_scalar], False, "cuda:0 and cpu"),  # only elementwise ops take a CPU scalar
        ([on_0, host], True, "cuda:0 and cpu"),  # and only a 0-d one
        ([host, on_0], True, "cpu and cuda:0"),
        ([scalar_1, host], True, "cuda:1 and cpu"),  # a 0-d CUDA tensor never moves to the CPU
        ([on_0, on_1], True, "cuda:0 and cuda:1"),
    ]:
        with pytest.raises(RuntimeError, match=SAME_DEVICE + pair + r"! \(when checking arguments for mul\)"):
            backend.op_placement(arrays, "mul", scalars_move)


def test_on_device_makes_a_device_current_and_restores_the_previous_one(two_gpus):
    cupy = two_gpus
    with cupy.cuda.Device(1):
        on_1 = cupy.zeros(2)
    for where in (on_1, engine.device("cuda:1")):
        with backend.on_device(where):
            assert cupy.cuda.runtime.getDevice() == 1 and cupy.zeros(1).device.id == 1
        assert cupy.cuda.runtime.getDevice() == 0
    cupy.cuda.runtime.setDevice(1)
    with backend.on_device(engine.device("cuda:0")):
        assert cupy.cuda.runtime.getDevice() == 0
    assert cupy.cuda.runtime.getDevice() == 1
    with backend.on_device(np.ones(2)), backend.on_device(engine.device("cpu")):  # the host: nothing to switch
        assert cupy.cuda.runtime.getDevice() == 1
    with pytest.raises(RuntimeError, match="CUDA error: invalid device ordinal: cuda:2 requested, 2 device"):
        backend.on_device(engine.device("cuda:2"))


def test_backward_on_cuda_1_puts_gradients_there(two_gpus):
    xs = np.array([0.5, 1.0, 2.0])
    x = engine.tensor(xs, device="cuda:1", requires_grad=True)
    hidden = x.sin() * x
    hidden.retain_grad()
    loss = hidden.sum() + (x ** 2).mean()
    loss.backward(create_graph=True)
    assert on_device(x.grad, "cuda:1") and on_device(hidden.grad, "cuda:1")
    np.testing.assert_allclose(x.grad.detach().cpu().numpy(), np.sin(xs) + xs * np.cos(xs) + 2 * xs / 3, rtol=1e-12)
    (second,) = engine.autograd.grad(x.grad.sum(), x)  # d/dx of the first derivative
    assert on_device(second, "cuda:1")
    np.testing.assert_allclose(second.cpu().numpy(), 2 * np.cos(xs) - xs * np.sin(xs) + 2 / 3, rtol=1e-12)
    assert two_gpus.cuda.runtime.getDevice() == 0  # the pass switched devices and switched back


def test_backward_through_transfers_between_devices(two_gpus):
    xs = np.array([0.5, -1.0, 2.0])
    x0 = engine.tensor(xs, device="cuda:0", requires_grad=True)
    total = (x0.to("cuda:1") ** 2).sum().to("cuda:0") + (x0 * 3).sum()
    total.backward()
    assert on_device(x0.grad, "cuda:0")
    np.testing.assert_allclose(x0.grad.cpu().numpy(), 2 * xs + 3)
    x1 = engine.tensor(xs, device="cuda:1", requires_grad=True)
    (x1.to("cuda:0") ** 3).sum().to("cuda:1").add(x1.sum()).backward()  # both paths meet at x1 on cuda:1
    assert on_device(x1.grad, "cuda:1")
    np.testing.assert_allclose(x1.grad.cpu().numpy(), 3 * xs**2 + 1)
    assert two_gpus.cuda.runtime.getDevice() == 0


def test_in_place_ops_and_optimizers_on_cuda_1(two_gpus):
    y = engine.tensor([1.0, 2.0, 3.0], device="cuda:1")
    y.add_(1)
    y[0] = 5.0
    assert on_device(y, "cuda:1") and y.tolist() == [5.0, 3.0, 4.0]
    assert on_device(engine.zeros(3, device="cuda:1").uniform_(), "cuda:1")
    for optimizer in (engine.optim.SGD, engine.optim.Adam, engine.optim.RMSprop, engine.optim.Adagrad):
        w = engine.tensor([1.0, 2.0], device="cuda:1", requires_grad=True)
        w_cpu = engine.tensor([1.0, 2.0], requires_grad=True)
        for param in (w, w_cpu):
            step = optimizer([param], lr=0.1)
            for _ in range(2):
                step.zero_grad()
                (param * param).sum().backward()
                step.step()
        assert on_device(w, "cuda:1") and on_device(w.grad, "cuda:1"), optimizer.__name__
        np.testing.assert_allclose(w.detach().cpu().numpy(), w_cpu.detach().numpy(), rtol=1e-6,
                                   err_msg=optimizer.__name__)


def test_losses_and_dropout_that_make_their_own_arrays_run_on_cuda_1(two_gpus):
    functional_nn = engine.nn.functional
    logits = np.random.default_rng(0).normal(size=(5, 3))
    target = [0, 2, 1, 2, 0]
    results = {}
    for device in ("cpu", "cuda:1"):
        x = engine.tensor(logits, device=device, requires_grad=True)
        t = engine.tensor(target, device=device)
        loss = functional_nn.cross_entropy(x, t) + functional_nn.nll_loss(x.log_softmax(1), t, ignore_index=2)
        loss.backward()
        results[device] = (loss, x.grad)
    loss, grad = results["cuda:1"]
    assert on_device(loss, "cuda:1") and on_device(grad, "cuda:1")
    np.testing.assert_allclose(loss.item(), results["cpu"][0].item(), rtol=1e-12)
    np.testing.assert_allclose(grad.cpu().numpy(), results["cpu"][1].numpy(), rtol=1e-12)
    dropped = functional_nn.dropout(engine.ones(1000, device="cuda:1"), 0.5)
    assert on_device(dropped, "cuda:1") and set(np.unique(dropped.cpu().numpy())) <= {0.0, 2.0}


# ---- a 0-dim CPU tensor may join a CUDA op (PyTorch's CPU-scalar rule) -----------------------


@GPUS
def test_a_0d_cpu_tensor_joins_cuda_ops_and_its_gradient_comes_back_to_the_cpu(two_gpus, gpu):
    xs = np.array([0.5, 1.0, 2.0])
    x = engine.tensor(xs, dtype=engine.float64, device=gpu, requires_grad=True)
    s = engine.tensor(2.0, dtype=engine.float64, requires_grad=True)
    fake_cupy.reset_transfers()
    y, z, w = s * x, x - s, engine.where(x > 1, s, x)
    assert all(on_device(t, gpu) for t in (y, z, w))
    # only the scalar travels, host to device, once per op; nothing of the CUDA operand comes back
    assert fake_cupy.transfers == {"to_host": 0, "to_device": 3, "between_devices": 0}
    assert y.grad_fn.next_functions[0][0].name() == "ToCopyBackward0"  # the move is the to_device op
    ((y * x).sum() + z.sum() + w.sum()).backward()
    assert type(s.grad._data) is np.ndarray and s.grad.device == "cpu"
    # d/ds = sum(x^2) - 3 + #(x > 1);  d/dx = 2 s x + 1 + [x <= 1]
    np.testing.assert_allclose(s.grad.item(), (xs**2).sum() - 3 + (xs > 1).sum(), rtol=1e-12)
    assert on_device(x.grad, gpu)
    np.testing.assert_allclose(x.grad.cpu().numpy(), 4 * xs + 1 + (xs <= 1), rtol=1e-12)
    plain = engine.tensor(3.0) * x.detach()  # no grad: no graph, the same placement
    assert on_device(plain, gpu) and plain.grad_fn is None and plain.cpu().tolist() == (3 * xs).tolist()


def test_a_0d_leaf_fed_by_two_paths_gets_an_array_gradient():
    # numpy's full reductions give scalars; a leaf's .grad must still be a writable 0-d array
    s, x = engine.tensor(2.0, requires_grad=True), engine.ones(3)
    ((s * x).sum() + (x - s).sum()).backward()
    assert type(s.grad._data) is np.ndarray and s.grad.item() == 0.0
    s.grad.zero_()
    engine.optim.SGD([s], lr=0.1).zero_grad(set_to_none=False)


@pytest.mark.parametrize("call, devices", [
    (lambda s, c, g: c * g, "cpu and cuda:0"),
    (lambda s, c, g: g + c, "cuda:0 and cpu"),
    (lambda s, c, g: engine.tensor(1.0, device="cuda") + c, "cuda:0 and cpu"),  # only CPU scalars move
    (lambda s, c, g: engine.stack([s, g.sum()]), "cpu and cuda:0"),  # not elementwise: PyTorch refuses too
], ids=["1d-cpu-first", "1d-cpu-second", "0d-cuda-with-1d-cpu", "stack"])
def test_other_cpu_cuda_mixes_still_raise(fake_cuda, call, devices):
    s, c, g = engine.tensor(2.0), engine.ones(3), engine.ones(3, device="cuda")
    with pytest.raises(RuntimeError, match=SAME_DEVICE + devices + "!"):
        call(s, c, g)


MIXES = {
    "add": lambda lib, a, b: a + b,
    "mul": lambda lib, a, b: b * a,
    "maximum": lambda lib, a, b: lib.maximum(a, b),
    "where": lambda lib, a, b: lib.where(b > 0, a, b),
    "stack": lambda lib, a, b: lib.stack([a, b]),
}


@pytest.mark.parametrize("name", list(MIXES))
def test_which_cpu_and_device_mixes_are_allowed_matches_pytorch(fake_cuda, torch, name):
    """PyTorch's rule observed on its "meta" device (a non-CPU device every build has) against ours
    on the fake cuda: which operand pairs (CPU or device, 0-d or not) may mix, and where the result is."""
    import itertools

    def run(lib, other):
        try:
            return MIXES[name](lib, a(lib, other), b(lib, other)).device.type
        except (RuntimeError, ValueError):  # the devices (or, for stack, the shapes) do not fit
            return None

    for a_on, a_dims, b_on, b_dims in itertools.product(("cpu", "other"), (0, 1), ("cpu", "other"), (0, 1)):
        def a(lib, other, a_on=a_on, a_dims=a_dims):
            return lib.ones((3,) if a_dims else (), device=other if a_on == "other" else "cpu")

        def b(lib, other, b_on=b_on, b_dims=b_dims):
            return lib.full((3,) if b_dims else (), 2.0, device=other if b_on == "other" else "cpu")

        ours, theirs = run(engine, "cuda"), run(torch, "meta")
        combination = f"{name}({a_on} {a_dims}-d, {b_on} {b_dims}-d)"
        assert (ours is None) == (theirs is None), f"{combination}: ours {ours}, PyTorch {theirs}"
        if ours is not None:
            assert {"cuda": "meta"}.get(ours, ours) == theirs, combination



# ---- every op of the table runs on the device, without host round trips --------------------

# Ops whose rules must read a device value on the host, and why. A new entry needs a reason.
HOST_READS = {
    # An IndexError for an out-of-range index array needs one boolean read on the host (PyTorch
    # raises a device-side assert instead; cupy would wrap silently). One per normalization of
    # the index: the forward's, and the backward's getitem_adjoint or getitem.
    "getitem": ("index bounds check", 2),
    "getitem_adjoint": ("index bounds check", 2),
    "index_put": ("index bounds check", 2),
    "embedding": ("index bounds check", 1),  # the forward's; its vjp scatters without checking again
    "to_device": ("the copy to the CPU that the case asks for (the value; in forward mode its tangent too)", 2),
}

CASES = list(all_cases(ops.table))


def _to_device_value(value, xp, device="cuda:0"):
    """Host arrays inside op params (index arrays) copied to ``device``."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        with xp.cuda.Device(engine.device(device).index):
            return xp.asarray(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device_value(v, xp, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device_value(v, xp, device) for k, v in value.items()}
    return value


@GPUS
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_op_runs_on_the_device_like_on_the_cpu(two_gpus, case, gpu):
    """Forward and backward of each table op on device tensors: results stay on the device, equal the
    CPU results, and nothing is copied back to the host on the way."""
    op = ops.table[case.op]
    arrays = case.arrays(seed=0)
    params = dict(case.params)

    def run(device):
        def as_tensor(a, differentiable):
            t = engine.tensor(a, dtype=engine.float64 if a.dtype.kind == "f" else None, device=device)
            return t.requires_grad_(True) if differentiable and t.is_floating_point() and not op.nondiff else t

        flags = case.differentiable()
        if case.variadic:
            inputs = [[as_tensor(a, True) for a in arrays[0]]]
            leaves = inputs[0]
        else:
            inputs = [as_tensor(a, d) for a, d in zip(arrays, flags)]
            leaves = [t for t in inputs if t.requires_grad]
        run_params = params if device == "cpu" else _to_device_value(params, two_gpus, device)
        fake_cupy.reset_transfers()
        out = engine.autograd.function.apply(op, inputs, run_params)
        out = out[0] if isinstance(out, tuple) else out
        grads = []
        if leaves and out.requires_grad:
            g = engine.ones(tuple(out.shape), dtype=out.dtype, device=out.device) * 0.5  # where out is
            grads = engine.autograd.grad(out, leaves, g, allow_unused=True)
        reads = fake_cupy.transfers["to_host"]
        return out, grads, reads

    out_cpu, grads_cpu, _ = run("cpu")
    out_gpu, grads_gpu, reads = run(gpu)
    assert two_gpus.cuda.runtime.getDevice() == 0, f"{case.op}: the current device changed"
    if case.op != "to_device":  # the one op whose output goes where its params say
        assert on_device(out_gpu, gpu), f"{case.op}: forward left the device"
    array_index = any(isinstance(part, np.ndarray) for part in params.get("index", ()))
    array_index = array_index or isinstance(params.get("indices"), np.ndarray)
    allowed = HOST_READS[case.op][1] if case.op in HOST_READS and (array_index or case.op == "to_device") else 0
    assert reads <= allowed, f"{case.op}: {reads} device->host copies in forward+backward, at most {allowed}"
    np.testing.assert_allclose(out_gpu.detach().cpu().numpy(), out_cpu.detach().numpy(), rtol=1e-12, atol=0)
    for got, want in zip(grads_gpu, grads_cpu):
        assert (got is None) == (want is None)
        if got is not None:
            assert on_device(got, gpu), f"{case.op}: a gradient left the device"
            np.testing.assert_allclose(got.cpu().numpy(), want.numpy(), rtol=1e-12, atol=1e-15)


FORWARD_CASES = [c for c in CASES if not ops.table[c.op].nondiff and ops.table[c.op].jvp is not None]


@GPUS
@pytest.mark.parametrize("case", FORWARD_CASES, ids=[c.id for c in FORWARD_CASES])
def test_every_jvp_rule_runs_on_the_device_like_on_the_cpu(two_gpus, case, gpu):
    """Forward mode (dual tensors driven by the jvp rules) on device tensors: the tangent stays on
    the device, equals the CPU tangent, and is computed without host round trips."""
    from engine.autograd import forward_ad

    op = ops.table[case.op]
    arrays = case.arrays(seed=0)
    rng = np.random.default_rng(1)
    flags = [True] * len(arrays[0]) if case.variadic else case.differentiable()
    flat = list(arrays[0]) if case.variadic else list(arrays)
    tangents = [rng.standard_normal(np.shape(a)) if d else None for a, d in zip(flat, flags)]

    def run(device):
        params = case.params if device == "cpu" else _to_device_value(case.params, two_gpus, device)
        with forward_ad.dual_level():
            duals = []
            for a, d, t in zip(flat, flags, tangents):
                x = engine.tensor(a, dtype=engine.float64 if a.dtype.kind == "f" else None, device=device)
                if d and x.is_floating_point():
                    x = forward_ad.make_dual(x, engine.tensor(t, dtype=engine.float64, device=device))
                duals.append(x)
            fake_cupy.reset_transfers()
            out = engine.autograd.function.apply(op, [duals] if case.variadic else duals, params)
            out = out[0] if isinstance(out, tuple) else out
            tangent = forward_ad.unpack_dual(out).tangent
            return tangent, fake_cupy.transfers["to_host"]

    want, _ = run("cpu")
    got, reads = run(gpu)
    if want is None:
        assert got is None
        return
    if case.op != "to_device":
        assert on_device(got, gpu), f"{case.op}: the tangent left the device"
    array_index = any(isinstance(part, np.ndarray) for part in case.params.get("index", ()))
    array_index = array_index or isinstance(case.params.get("indices"), np.ndarray)
    allowed = HOST_READS[case.op][1] if case.op in HOST_READS and (array_index or case.op == "to_device") else 0
    assert reads <= allowed, f"{case.op}: {reads} device->host copies in the forward-mode pass"
    np.testing.assert_allclose(got.cpu().numpy(), want.numpy(), rtol=1e-12, atol=1e-15)


# ---- composite work on the device: transforms, forward mode, nn and optim, the profiler -----


@GPUS
def test_jacobian_and_hessian_on_the_device(two_gpus, gpu):
    engine.manual_seed(0)
    w = engine.randn(4, 3, dtype=engine.float64)
    x = engine.randn(3, dtype=engine.float64)

    def f(v):
        return engine.tanh(w_dev @ v)

    w_dev = w.to(gpu)
    fake_cupy.reset_transfers()
    jac = functional.jacobian(f, x.to(gpu), vectorize=True)
    assert on_device(jac, gpu) and fake_cupy.transfers["to_host"] == 0
    jac_forward = functional.jacobian(f, x.to(gpu), vectorize=True, strategy="forward-mode")
    assert on_device(jac_forward, gpu)
    w_dev = w
    np.testing.assert_allclose(jac.cpu().numpy(), functional.jacobian(f, x, vectorize=True).numpy(), rtol=1e-12)
    np.testing.assert_allclose(jac_forward.cpu().numpy(), jac.cpu().numpy(), rtol=1e-12)
    hess = functional.hessian(lambda v: (v.sin() * v).sum(), x.to(gpu))
    assert on_device(hess, gpu)
    np.testing.assert_allclose(hess.cpu().numpy(), functional.hessian(lambda v: (v.sin() * v).sum(), x).numpy(),
                               rtol=1e-12)


@GPUS
def test_forward_mode_on_the_device(two_gpus, gpu):
    x = engine.tensor([0.1, 0.7], dtype=engine.float64)
    v = engine.tensor([1.0, -2.0], dtype=engine.float64)
    out, tangent = functional.jvp(lambda t: t.exp() * t, x.to(gpu), v.to(gpu))
    assert on_device(out, gpu) and on_device(tangent, gpu)
    _, want = functional.jvp(lambda t: t.exp() * t, x, v)
    np.testing.assert_allclose(tangent.cpu().numpy(), want.numpy(), rtol=1e-12)


@GPUS
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop", "adagrad"])
def test_a_model_trains_on_the_device_as_on_the_cpu(two_gpus, optimizer, gpu):
    from frontends.model_spec import TrainableModel

    spec = {"layers": [{"type": "linear", "in_features": 3, "out_features": 4}, {"type": "tanh"},
                       {"type": "linear", "in_features": 4, "out_features": 1}],
            "optimizer": {"type": optimizer, "lr": 0.05}, "seed": 0, "dtype": "float64"}
    rng = np.random.default_rng(0)
    inputs, targets = rng.normal(size=(8, 3)).tolist(), rng.normal(size=(8, 1)).tolist()
    on_cpu = TrainableModel(spec)
    on_gpu = TrainableModel({**spec, "device": gpu})
    assert all(on_device(p, gpu) for p in on_gpu.model.parameters())
    losses_cpu = on_cpu.train(inputs, targets, steps=3)
    losses_gpu = on_gpu.train(inputs, targets, steps=3)
    np.testing.assert_allclose(losses_gpu, losses_cpu, rtol=1e-12)
    for (name, p_gpu), (_, p_cpu) in zip(on_gpu.model.named_parameters(), on_cpu.model.named_parameters()):
        assert on_device(p_gpu, gpu) and on_device(p_gpu.grad, gpu), name
        np.testing.assert_allclose(p_gpu.detach().cpu().numpy(), p_cpu.detach().numpy(), rtol=1e-12, err_msg=name)
    output, _ = on_gpu.forward(inputs)
    assert on_device(output, gpu)
    state = on_gpu.state()  # exported through the host: plain numpy arrays
    assert all(type(v) is np.ndarray for v in state["parameters"].values())


def test_nn_module_to_moves_parameters_and_grads(fake_cuda):
    layer = engine.nn.Linear(3, 2)
    layer(engine.ones(1, 3)).sum().backward()
    layer.to("cuda")
    assert on_device(layer.weight) and on_device(layer.weight.grad)
    assert isinstance(layer.weight, engine.nn.Parameter)
    assert on_device(layer(engine.ones(1, 3, device="cuda")))


def test_profiler_records_device_time_with_cuda_events(fake_cuda):
    from engine.profiler import profile

    x = engine.ones(3, device="cuda", requires_grad=True)
    with profile(use_device="cuda") as prof:
        (x * 2).sum().backward()
    assert prof.use_device == "cuda"
    rows = {row.key: row for row in prof.key_averages()}
    assert rows["engine::mul"].device_time_total > 0  # the fake clock: 1 us per event
    assert "CUDA" in prof.key_averages().table()


# ---- the memory pool ------------------------------------------------------------------------


def test_memory_limit_goes_to_the_pool(fake_cuda):
    engine.cuda.set_per_process_memory_limit(1 << 20)
    assert fake_cupy.memory_pool.get_limit() == 1 << 20
    assert backend.memory_stats()["limit_bytes"] == 1 << 20
    engine.cuda.set_per_process_memory_limit(None)
    assert fake_cupy.memory_pool.get_limit() == 0
    error = fake_cupy.OutOfMemoryError(2048, 0, 1024)
    assert engine.cuda.is_out_of_memory(error) and not engine.cuda.is_out_of_memory(MemoryError())


@requires_no_gpu
def test_memory_limit_without_a_gpu_says_what_is_missing():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        engine.cuda.set_per_process_memory_limit(1 << 20)
    assert engine.cuda.is_out_of_memory(MemoryError()) is False


# ---- on a real GPU ---------------------------------------------------------------------------


requires_two_gpus = pytest.mark.skipif(
    engine.cuda.device_count() < 2,
    reason=f"needs two CUDA GPUs (cuda:1), {engine.cuda.device_count()} visible: "
           f"{engine.cuda.unavailable_reason() or 'one GPU only'}")
# cuda:1 while cuda:0 stays current: every op must switch devices for its kernels and results.
REAL_GPUS = pytest.mark.parametrize("gpu", ["cuda:0", pytest.param("cuda:1", marks=requires_two_gpus)])


@pytest.mark.gpu
@requires_gpu
@REAL_GPUS
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_op_agrees_with_the_cpu_on_a_real_gpu(case, gpu):
    op = ops.table[case.op]
    arrays = case.arrays(seed=0)

    def run(device):
        inputs = ([[engine.tensor(a, dtype=engine.float32, device=device).requires_grad_() for a in arrays[0]]]
                  if case.variadic else
                  [engine.tensor(a, dtype=engine.float32 if a.dtype.kind == "f" else None, device=device)
                   for a in arrays])
        leaves = inputs[0] if case.variadic else [t for t, d in zip(inputs, case.differentiable())
                                                  if d and t.is_floating_point() and not op.nondiff]
        for t in leaves:
            t.requires_grad_(True)
        params = case.params if device == "cpu" else _to_real_device(case.params, device)
        out = engine.autograd.function.apply(op, inputs, params)
        out = out[0] if isinstance(out, tuple) else out
        grads = engine.autograd.grad(out, leaves, engine.ones_like(out), allow_unused=True) \
            if leaves and out.requires_grad else []
        return out, grads

    out_cpu, grads_cpu = run("cpu")
    out_gpu, grads_gpu = run(gpu)
    if case.op != "to_device":
        assert out_gpu.device == gpu and out_gpu._data.device.id == engine.device(gpu).index
    np.testing.assert_allclose(out_gpu.detach().cpu().numpy(), out_cpu.detach().numpy(), rtol=2e-5, atol=1e-5)
    assert engine.cuda.current_device() == 0
    for got, want in zip(grads_gpu, grads_cpu):
        if got is not None:
            assert got.device == gpu and got._data.device.id == engine.device(gpu).index
            np.testing.assert_allclose(got.cpu().numpy(), want.numpy(), rtol=2e-5, atol=1e-5)


def _to_real_device(value, device):
    if isinstance(value, np.ndarray) and value.dtype != object:
        return backend.to_device(value, backend.device(device))
    if isinstance(value, (list, tuple)):
        return type(value)(_to_real_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_real_device(v, device) for k, v in value.items()}
    return value


@pytest.mark.gpu
@requires_gpu
def test_real_gpu_transfers_and_same_device_rule():
    x = engine.randn(1000, requires_grad=True)
    y = x.cuda()
    assert y.is_cuda and type(y._data).__module__.startswith("cupy")
    (y.sin() * y).sum().backward()
    assert not x.grad.is_cuda
    with pytest.raises(RuntimeError, match=SAME_DEVICE):
        x + y
    engine.cuda.synchronize()


@pytest.mark.gpu
@requires_gpu
def test_real_gpu_takes_a_0d_cpu_tensor_and_sends_its_gradient_back():
    xs = np.linspace(-1.0, 1.0, 1000)
    x = engine.tensor(xs, dtype=engine.float64, device="cuda", requires_grad=True)
    s = engine.tensor(2.0, dtype=engine.float64, requires_grad=True)
    (s * x.sin()).sum().backward()
    assert not s.grad.is_cuda and x.grad.is_cuda
    np.testing.assert_allclose(s.grad.item(), np.sin(xs).sum(), rtol=1e-10)
    np.testing.assert_allclose(x.grad.cpu().numpy(), 2 * np.cos(xs), rtol=1e-10)
    with pytest.raises(RuntimeError, match=SAME_DEVICE + "cpu and cuda:0!"):
        engine.ones(1000, dtype=engine.float64) + x


@pytest.mark.gpu
@requires_gpu
@requires_two_gpus
def test_real_second_gpu_placement_backward_transfers_and_errors():
    xs = np.linspace(-1.0, 1.0, 1000)
    x = engine.tensor(xs, dtype=engine.float64, device="cuda:1", requires_grad=True)
    assert x._data.device.id == 1 and engine.cuda.current_device() == 0
    s = engine.tensor(2.0, dtype=engine.float64, requires_grad=True)
    loss = (s * x.sin() * x).sum() + (x.to("cuda:0") ** 2).sum().to("cuda:1")
    assert loss.device == "cuda:1" and loss._data.device.id == 1
    loss.backward()
    assert x.grad._data.device.id == 1 and not s.grad.is_cuda and engine.cuda.current_device() == 0
    np.testing.assert_allclose(x.grad.cpu().numpy(), 2 * (np.sin(xs) + xs * np.cos(xs)) + 2 * xs, rtol=1e-10)
    with pytest.raises(RuntimeError, match=SAME_DEVICE + "cuda:0 and cuda:1!"):
        x.detach().cuda(0) + x
    with engine.cuda.device(1):
        assert engine.zeros(2, device="cuda")._data.device.id == 1 and engine.ones(2).cuda()._data.device.id == 1
    layer = engine.nn.Linear(4, 2).to("cuda:1")
    optimizer = engine.optim.Adam(layer.parameters(), lr=0.01)
    layer(engine.ones(3, 4, device="cuda:1")).sum().backward()
    optimizer.step()
    assert all(p._data.device.id == 1 and p.grad._data.device.id == 1 for p in layer.parameters())
    engine.cuda.synchronize(1)


# ---- the GPU benchmark's workloads, small, on the fake device and against PyTorch's CPU ------


def test_gpu_benchmark_workloads_run_on_the_device(fake_cuda, monkeypatch, torch):
    from bench import bench_gpu

    for name, value in (("ELEMENTS", 1000), ("MATMUL", 16), ("BATCH", 8), ("WIDTH", 12), ("JACOBIAN_N", 6)):
        monkeypatch.setattr(bench_gpu, name, value)
    for _, make in bench_gpu.WORKLOADS:
        ours_step, ours_result = make(engine, "cuda", engine.cuda.synchronize,
                                      *((functional,) if make is bench_gpu.tanh_jacobian else ()))
        ours_step()
        assert on_device(ours_result()), make.__name__
        theirs_step, theirs_result = make(torch, "cpu", lambda: None,
                                          *((torch.autograd.functional,) if make is bench_gpu.tanh_jacobian else ()))
        theirs_step()
        np.testing.assert_allclose(ours_result().cpu().numpy(), theirs_result().detach().numpy(),
                                   rtol=2e-4, atol=1e-5, err_msg=make.__name__)


def test_gpu_benchmark_without_a_gpu_says_so(monkeypatch):
    from bench import bench_gpu

    monkeypatch.setattr(backend, "cupy", None)
    (table,) = bench_gpu.run()
    assert "skipped: cupy is not installed" in table.markdown()


# ---- copies across devices, and gradients handed to backward ----------------------------


def test_copy_across_devices_copies_and_sends_the_gradient_back(fake_cuda):
    src = engine.tensor([1.0, -2.0, 3.0], requires_grad=True)  # on the CPU
    dst = engine.zeros(3, device="cuda")
    dst.copy_(src * 2)
    assert on_device(dst)
    np.testing.assert_array_equal(dst.detach().cpu().numpy(), [2.0, -4.0, 6.0])
    assert dst.grad_fn is not None  # the copy is in the graph
    (dst * engine.tensor([1.0, 10.0, 100.0], device="cuda")).sum().backward()
    assert not on_device(src.grad)
    np.testing.assert_array_equal(src.grad.numpy(), [2.0, 20.0, 200.0])  # d/dsrc of sum(w * 2 src)
    back = engine.zeros(3)
    back.copy_(dst.detach())
    np.testing.assert_array_equal(back.numpy(), [2.0, -4.0, 6.0])


def test_backward_refuses_a_gradient_on_another_device(fake_cuda, torch):
    y = engine.ones(3, device="cuda", requires_grad=True) * 2
    with pytest.raises(RuntimeError) as ours:
        y.backward(engine.ones(3))
    theirs_y = torch.ones(3, device="meta", requires_grad=True) * 2  # PyTorch's check, without a GPU
    with pytest.raises(RuntimeError) as theirs:
        theirs_y.backward(torch.ones(3))
    assert str(ours.value) == str(theirs.value).replace("meta", "cuda:0")


def test_cuda_with_a_cpu_device_is_refused_as_in_pytorch(fake_cuda, torch):
    with pytest.raises(RuntimeError) as theirs:
        torch.ones(2).cuda("cpu")
    with pytest.raises(RuntimeError, match=str(theirs.value)):
        engine.ones(2).cuda("cpu")


def test_device_properties_memory_and_cache(two_gpus):
    props = two_gpus.cuda.runtime.getDeviceProperties(1)
    ours = engine.cuda.get_device_properties("cuda:1")
    assert ours.name == engine.cuda.get_device_name(1) == props["name"].decode()
    assert (ours.major, ours.minor) == engine.cuda.get_device_capability(1) == (props["major"], props["minor"])
    assert ours.total_memory == props["totalGlobalMem"]
    # PyTorch's documented attribute names (its CPU build lacks the class to compare with)
    assert set(vars(ours)) == {"name", "major", "minor", "total_memory", "multi_processor_count"}
    free, total = engine.cuda.mem_get_info()
    assert total == props["totalGlobalMem"] and 0 <= free <= total
    engine.cuda.empty_cache()
    assert engine.cuda.memory_allocated("cuda:1") == engine.cuda.memory_reserved(1) == 0


@requires_no_gpu
def test_device_properties_without_a_gpu_say_what_is_missing():
    with pytest.raises(RuntimeError, match="CUDA is not available: cupy"):
        engine.cuda.get_device_name()
    engine.cuda.empty_cache()  # a no-op, as timing code expects
    assert engine.cuda.memory_allocated() == 0


def test_one_parameter_group_across_two_gpus_and_the_cpu(two_gpus):
    rng = np.random.default_rng(3)
    start = [rng.normal(size=(3,)) for _ in range(3)]
    grads = [rng.normal(size=(3,)) for _ in range(3)]

    def train(devices):
        params = [engine.tensor(s, device=d, requires_grad=True) for s, d in zip(start, devices, strict=True)]
        optimizer = engine.optim.Adam(params, lr=0.1)
        for _ in range(2):
            for p, g in zip(params, grads, strict=True):
                p.grad = engine.tensor(g, device=p.device)
            optimizer.step()
        return params

    mixed = train(["cuda:0", "cuda:1", "cpu"])
    assert [str(p.device) for p in mixed] == ["cuda:0", "cuda:1", "cpu"]
    for got, want in zip(mixed, train(["cpu"] * 3), strict=True):
        np.testing.assert_array_equal(got.detach().cpu().numpy(), want.detach().numpy())
    assert two_gpus.cuda.runtime.getDevice() == 0
