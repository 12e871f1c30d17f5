// The tutorial's examples (shared/seeds: PyTorch's autograd tutorial), each as the playground's form
// state: endpoint, function, inputs (a linspace or literal values) and options.

const TWO_PI = 6.283185307179586;

export const EXAMPLES = {
  sin: {
    endpoint: "grad",
    form: "program",
    source: [
      "# The tutorial's first cell: out = (2 * sin(a) + 1).sum(); out.backward()",
      "b = sin(a)",
      "c = 2 * b",
      "d = c + 1",
      "out = d.sum()",
      "# b is returned detached, only to be plotted: backward runs from out alone",
      "return out, b.detach()",
    ].join("\n"),
    inputs: [{ name: "a", kind: "linspace", start: 0, stop: TWO_PI, steps: 25, requiresGrad: true }],
  },
  doubling: {
    endpoint: "grad",
    form: "program",
    source: "y = x * 2\nwhile y.data.norm() < 1000:\n    y = y * 2\nreturn y",
    inputs: [{ name: "x", kind: "values", values: [0.3, -1.1, 2.0], requiresGrad: true }],
    gradOutputs: "[[0.1, 1.0, 0.0001]]",
  },
  exp_adder: {
    endpoint: "jacobian",
    form: "program",
    source: "# def exp_adder(x, y): return 2 * x.exp() + 3 * y\nreturn 2 * x.exp() + 3 * y",
    inputs: [
      { name: "x", kind: "values", values: [0.2341, 0.8013, 0.4697], requiresGrad: false },
      { name: "y", kind: "values", values: [0.5918, 0.1146, 0.7309], requiresGrad: false },
    ],
  },
  hessian: {
    endpoint: "hessian",
    form: "expr",
    source: "x.sum().sin() * (x ** 2).sum()",
    inputs: [{ name: "x", kind: "linspace", start: -0.5, stop: 1.5, steps: 6, requiresGrad: false }],
  },
  profiler: {
    endpoint: "profile",
    form: "program",
    source: "z = z0\nfor _ in range(1000):\n    z = (z / x) * y\nreturn z",
    inputs: [
      { name: "x", kind: "values", values: [[1.5410, -0.2934, -2.1788], [0.5684, -1.0845, -1.3986]],
        requiresGrad: true },
      { name: "y", kind: "values", values: [[0.4963, 0.7682, 0.0885], [0.1320, 0.3074, 0.6341]],
        requiresGrad: true },
      { name: "z0", kind: "values", values: [[1, 1, 1], [1, 1, 1]], requiresGrad: true },
    ],
  },
};

// The tutorial's TinyModel: 1000 -> 100 -> ReLU -> 10, squared-error loss, SGD at lr 0.001.
export const TINY_MODEL_SPEC = {
  layers: [
    { type: "linear", in_features: 1000, out_features: 100 },
    { type: "relu" },
    { type: "linear", in_features: 100, out_features: 10 },
  ],
  loss: { type: "mse", reduction: "sum" },
  optimizer: { type: "sgd", lr: 0.001 },
  seed: 0,
};
