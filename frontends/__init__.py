"""frontends: the languages clients write their functions and models in, on top of ``engine``.

- ``program``: the safe interpreter for one expression or a small restricted-Python
  program (parsed with ``ast``, walked by our own evaluator over a whitelist);
- ``program_library``: what programs may call and touch (functions, tensor methods
  and attributes, constants), derived from the derivative table's declarations;
- ``graph``: ONNX-like JSON graphs, validated node by node, then run as engine calls;
- ``model_spec``: model specs (a dict of layers, loss, optimizer, scheduler, seed)
  -> a trainable model, and its whole training state as plain data;
- ``budget``: the limits on what client code may do (steps, nodes, elements, deadline),
  enforced on every table op through the engine's op-observer seam.

Layers point one way: ``service -> frontends -> engine -> backend``. This package
imports ``engine`` and never ``service`` or any web framework; ``engine`` never
imports this package (``tests/test_layers.py`` holds both to it). Its errors are
Python exceptions whose messages speak of Python names; the service turns them
into HTTP problems in one place (``service.errors``).
"""
