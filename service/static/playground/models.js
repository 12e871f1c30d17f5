// The models tab: create a model from its spec, look at one step (the tutorial's cells: a weight
// slice and its gradient before backward, after backward, after step), and train it while the
// loss curve grows from the /train event stream.

import { Problem, call, curlCommand, stream } from "./api.js";
import { formatNumber, lineChart } from "./charts.js";
import { TINY_MODEL_SPEC } from "./examples.js";
import { showProblem } from "./problems.js";

const $ = (id) => document.getElementById(id);
let model = null;

// A seeded standard normal sample (mulberry32 and Box-Muller), so a page reload gives the same batch.
function normalSampler(seed) {
  let state = seed >>> 0;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 1) / 4294967297;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

function matrix(rows, cols, sample) {
  return Array.from({ length: rows }, () => Array.from({ length: cols }, () => Number(sample().toFixed(6))));
}

function batch(spec) {
  const linear = spec.layers.filter((layer) => layer.type === "linear");
  if (!linear.length) throw new Error("the playground builds its data from the first and last linear layers");
  const rows = Number($("model-batch").value) || 16;
  const sample = normalSampler(Number($("model-seed").value) || 0);
  return { input: matrix(rows, linear[0].in_features, sample),
    target: matrix(rows, linear.at(-1).out_features, sample) };
}

function facts(entries) {
  $("model-facts").replaceChildren(...entries.flatMap(([term, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    return [dt, dd];
  }));
}

function showFacts() {
  facts([["id", model.id], ["parameters", Object.entries(model.parameters).map(([name, shape]) =>
    `${name} [${shape.join(", ")}]`).join(", ")], ["parameter count", String(model.parameter_count)],
  ["optimizer steps", String(model.step)], ["version (ETag)", String(model.version)]]);
}

function status(text) {
  $("model-status").textContent = text;
}

function showCurl(method, path, body, headers) {
  $("model-curl").textContent = curlCommand(method, path, body, headers);
}

async function guarded(work) {
  $("model-problem").hidden = true;
  try {
    await work();
  } catch (error) {
    showProblem($("model-problem"), error instanceof Problem ? error : { message: error.message });
    status(error instanceof Problem ? `${error.status}` : "not sent");
    $("panel-models").dataset.status = "problem";
  }
}

async function createModel() {
  const spec = JSON.parse($("model-spec").value);
  status("POST /v1/models …");
  showCurl("POST", "v1/models", spec);
  model = await call("POST", "v1/models", spec);
  model.batch = batch(spec);
  model.losses = [];
  showFacts();
  $("model-step").disabled = false;
  $("model-train").disabled = false;
  $("loss-box").hidden = true;
  $("step-box").hidden = true;
  status(`created ${model.id}`);
  $("panel-models").dataset.status = "created";
}

// The last linear layer's weight, row 0, first ten columns: the tutorial's model.layer2.weight[0][0:10].
function watchedParameter() {
  const names = Object.keys(model.parameters).filter((name) => name.endsWith(".weight"));
  const name = names.at(-1);
  const cols = Math.min(10, model.parameters[name].at(-1));
  return { name, index: `0,0:${cols}` };
}

async function parameters(watched) {
  const query = `name=${encodeURIComponent(watched.name)}&index=${encodeURIComponent(watched.index)}`;
  const result = await call("GET", `v1/models/${model.id}/parameters?${query}`);
  const grad = result.grads ? result.grads[watched.name] : null;
  Object.assign(model, { step: result.step, version: result.version });
  return { values: result.parameters[watched.name].data.map(Number), grad: grad ? grad.data.map(Number) : null };
}

async function oneStep() {
  const watched = watchedParameter();
  const base = `v1/models/${model.id}`;
  status("zero_grad, backward, step …");
  await call("POST", `${base}/zero_grad`, { set_to_none: true });
  const before = await parameters(watched);
  const { loss } = await call("POST", `${base}/backward`, model.batch);
  const afterBackward = await parameters(watched);
  showCurl("POST", `${base}/step`);
  await call("POST", `${base}/step`);
  const after = await parameters(watched);
  showFacts();
  const head = $("step-table").tHead;
  const row = (cells, header = false) => {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement(header ? "th" : "td");
      if (header) td.scope = "col";
      td.textContent = cell;
      tr.append(td);
    }
    return tr;
  };
  head.replaceChildren(row([`${watched.name}[${watched.index}]`, "before", "grad before backward",
    "grad after backward", "after step", "change"], true));
  $("step-table").tBodies[0].replaceChildren(...before.values.map((value, i) => {
    const tr = row([String(i), formatNumber(value), before.grad ? formatNumber(before.grad[i]) : "None",
      formatNumber(afterBackward.grad[i]), formatNumber(after.values[i]), formatNumber(after.values[i] - value)]);
    tr.dataset.before = value;
    tr.dataset.grad = afterBackward.grad[i];
    tr.dataset.after = after.values[i];
    return tr;
  }));
  $("step-title").textContent = `Weights and gradients around one step (loss ${formatNumber(Number(loss))})`;
  $("step-box").hidden = false;
  status("one step taken");
  $("panel-models").dataset.status = "stepped";
}

async function train() {
  const steps = Number($("model-steps").value) || 1;
  const body = { inputs: model.batch.input, targets: model.batch.target, steps };
  const path = `v1/models/${model.id}/train`;
  showCurl("POST", path, body, { Accept: "text/event-stream" });
  $("model-train").disabled = true;
  $("panel-models").dataset.status = "training";
  $("loss-box").hidden = false;
  const start = model.losses.length;
  let drawing = false;
  const draw = () => {
    drawing = false;
    lineChart($("loss-chart"), [{ name: "loss", points: model.losses.map((loss, i) => [i + 1, loss]) }],
      { xLabel: "step", label: "training loss by step" });
  };
  try {
    await stream(path, body, (kind, data) => {
      if (kind === "progress") {
        model.losses.push(Number(data.loss));
        status(`step ${model.losses.length - start} of ${steps}: loss ${formatNumber(Number(data.loss))}`);
        // One redraw per frame, however fast the events come.
        if (!drawing) {
          drawing = true;
          requestAnimationFrame(draw);
        }
      } else if (kind === "result") {
        status(`trained ${steps} steps`);
        Object.assign(model, { step: data.step, version: data.version });
        showFacts();
      } else if (kind === "error") {
        throw new Problem(data.status, data);
      }
    });
    draw();
    $("panel-models").dataset.status = "trained";
  } finally {
    $("model-train").disabled = false;
  }
}

export function loadTinyModel() {
  $("model-spec").value = JSON.stringify(TINY_MODEL_SPEC, null, 2);
}

// The TinyModel example: its spec, created at once, so that training is the next click.
export function createTinyModel() {
  loadTinyModel();
  return guarded(createModel);
}

export function setUpModels() {
  loadTinyModel();
  $("model-create").addEventListener("click", () => guarded(createModel));
  $("model-step").addEventListener("click", () => guarded(oneStep));
  $("model-train").addEventListener("click", () => guarded(train));
}
