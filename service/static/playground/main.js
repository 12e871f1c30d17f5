// The playground: the form (function, inputs, options), running it, and drawing what came back.
// api.js talks to the server, charts.js draws, examples.js holds the tutorial's examples, models.js
// drives the models tab.

import { Problem, call, curlCommand, pythonCall } from "./api.js";
import { formatNumber, graphPicture, heatMap, lineChart } from "./charts.js";
import { EXAMPLES } from "./examples.js";
import { createTinyModel, setUpModels } from "./models.js";
import { showProblem } from "./problems.js";

const $ = (id) => document.getElementById(id);

// ---- tabs (WAI-ARIA tabs: arrow keys move between them, the panel follows) ----

function selectTab(tab) {
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
}

function setUpTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = tabs[(index + step + tabs.length) % tabs.length];
      selectTab(next);
      next.focus();
    });
  });
}

// ---- inputs by name ----

let inputCount = 0;

function inputRow(spec) {
  const id = `input-${inputCount++}`;
  const row = document.createElement("fieldset");
  row.className = "input-row";
  row.dataset.id = id;
  const legend = document.createElement("legend");
  legend.className = "visually-hidden";
  legend.textContent = "Input";
  row.append(legend);
  const field = (labelText, control, name) => {
    const label = document.createElement("label");
    control.id = `${id}-${name}`;
    control.dataset.field = name;
    label.htmlFor = control.id;
    label.textContent = labelText;
    const wrap = document.createElement("span");
    wrap.className = `field field-${name}`;
    wrap.append(label, control);
    row.append(wrap);
    return control;
  };
  const input = (type, value, extra = {}) => {
    const control = document.createElement("input");
    control.type = type;
    control.value = value;
    control.spellcheck = false;
    Object.assign(control, extra);
    return control;
  };
  field("name", input("text", spec.name ?? "", { size: 6, autocomplete: "off" }), "name");
  const kind = document.createElement("select");
  for (const [value, text] of [["linspace", "linspace"], ["values", "values"]]) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = text;
    kind.append(option);
  }
  kind.value = spec.kind ?? "values";
  field("as", kind, "kind");
  field("start", input("number", spec.start ?? 0, { step: "any" }), "start");
  field("stop", input("number", spec.stop ?? 1, { step: "any" }), "stop");
  field("steps", input("number", spec.steps ?? 25, { min: 1, max: 100000 }), "steps");
  const values = document.createElement("textarea");
  values.rows = 2;
  values.spellcheck = false;
  values.value = spec.values === undefined ? "" : JSON.stringify(spec.values);
  field("values (JSON or comma-separated)", values, "values");
  const grad = input("checkbox", "", { checked: Boolean(spec.requiresGrad) });
  field("requires_grad", grad, "requires-grad");
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  remove.setAttribute("aria-label", `Remove input ${spec.name ?? ""}`.trim());
  remove.addEventListener("click", () => {
    row.remove();
    refreshSnippets();
  });
  row.append(remove);
  const showKind = () => {
    const linspace = kind.value === "linspace";
    for (const name of ["start", "stop", "steps"]) row.querySelector(`.field-${name}`).hidden = !linspace;
    row.querySelector(".field-values").hidden = linspace;
  };
  kind.addEventListener("change", showKind);
  showKind();
  return row;
}

// "[[1, 2], [3, 4]]" is JSON (any shape); "1, 2, 3" or "1 2 3" a vector; a lone number a scalar.
function parseValues(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new Error("no values");
  if (trimmed.startsWith("[")) {
    try {
      return JSON.parse(trimmed);
    } catch (error) {
      throw new Error(`not JSON: ${error.message}`);
    }
  }
  const values = trimmed.split(/[\s,]+/).filter(Boolean).map((item) => {
    const value = Number(item);
    if (Number.isNaN(value)) throw new Error(`${item} is not a number`);
    return value;
  });
  return values.length === 1 ? values[0] : values;
}

export function linspace(start, stop, steps) {
  if (steps === 1) return [start];
  // Twelve significant digits: float32 on the server keeps fewer, and the curl command stays readable.
  return Array.from({ length: steps }, (_, i) => Number((start + ((stop - start) * i) / (steps - 1)).toPrecision(12)));
}

// Each input row read back as a spec, and its values. A bad row is marked and named.
function readInputs() {
  const specs = [];
  for (const row of $("inputs").querySelectorAll(".input-row")) {
    const get = (name) => row.querySelector(`[data-field="${name}"]`);
    const spec = { name: get("name").value.trim(), kind: get("kind").value, requiresGrad: get("requires-grad").checked };
    for (const control of row.querySelectorAll("input, textarea")) control.removeAttribute("aria-invalid");
    const fail = (control, message) => {
      control.setAttribute("aria-invalid", "true");
      throw new Error(`input ${spec.name || "(unnamed)"}: ${message}`);
    };
    if (!/^[A-Za-z_]\w*$/.test(spec.name)) fail(get("name"), "a name is a Python identifier");
    if (spec.kind === "linspace") {
      spec.start = Number(get("start").value);
      spec.stop = Number(get("stop").value);
      spec.steps = Number(get("steps").value);
      if (!Number.isFinite(spec.start)) fail(get("start"), "start is not a number");
      if (!Number.isFinite(spec.stop)) fail(get("stop"), "stop is not a number");
      if (!Number.isInteger(spec.steps) || spec.steps < 1) fail(get("steps"), "steps is a positive integer");
      spec.data = linspace(spec.start, spec.stop, spec.steps);
    } else {
      try {
        spec.values = parseValues(get("values").value);
      } catch (error) {
        fail(get("values"), error.message);
      }
      spec.data = spec.values;
    }
    specs.push(spec);
  }
  return specs;
}

function setInputs(specs) {
  $("inputs").replaceChildren(...specs.map(inputRow));
}

// ---- the editor: line numbers, and a problem's line and column marked ----

function source() {
  return $("source").value;
}

function form() {
  return document.querySelector('input[name="form"]:checked').value;
}

function updateGutter(errorLine = null) {
  const lines = source().split("\n").length;
  const gutter = $("gutter");
  gutter.replaceChildren();
  for (let i = 1; i <= lines; i++) {
    const number = document.createElement("span");
    number.textContent = String(i);
    if (i === errorLine) number.className = "error-line";
    gutter.append(number, "\n");
  }
  gutter.scrollTop = $("source").scrollTop;
}

function markSource(line, column) {
  const editor = $("source");
  editor.setAttribute("aria-invalid", "true");
  updateGutter(line);
  const lines = source().split("\n");
  if (line < 1 || line > lines.length) return;
  const offset = lines.slice(0, line - 1).reduce((sum, text) => sum + text.length + 1, 0);
  // The problem's column counts from 1 (frontends/program.py); select from there to the line's end.
  const start = offset + Math.min(Math.max((column ?? 1) - 1, 0), lines[line - 1].length);
  editor.setSelectionRange(start, offset + lines[line - 1].length);
  editor.dataset.errorLine = String(line);
  editor.dataset.errorColumn = String(column ?? "");
}

function clearMarks() {
  const editor = $("source");
  editor.removeAttribute("aria-invalid");
  delete editor.dataset.errorLine;
  delete editor.dataset.errorColumn;
  updateGutter();
}

// ---- the request ----

function endpoint() {
  return $("endpoint").value;
}

function buildRequest() {
  const specs = readInputs();
  const body = { [form()]: source() };
  body.inputs = Object.fromEntries(specs.map((spec) => [spec.name,
    spec.requiresGrad ? { data: spec.data, requires_grad: true } : spec.data]));
  const kind = endpoint();
  const gradOutputs = $("grad-outputs").value.trim();
  if (kind === "grad" && gradOutputs) {
    try {
      body.grad_outputs = JSON.parse(gradOutputs);
    } catch {
      $("grad-outputs").setAttribute("aria-invalid", "true");
      throw new Error("grad_outputs is not JSON: a list with one tensor (or null) per output");
    }
  }
  $("grad-outputs").removeAttribute("aria-invalid");
  if (kind === "profile") {
    body.repeat = Number($("repeat").value) || 1;
    if ($("profile-backward").checked) body.backward = true;
  }
  return { body, specs };
}

function refreshSnippets() {
  try {
    const { body, specs } = buildRequest();
    $("curl").textContent = curlCommand("POST", `v1/${endpoint()}`, body);
    $("python").textContent = pythonCall(endpoint(), body, specs);
  } catch (error) {
    $("curl").textContent = `# ${error.message}`;
    $("python").textContent = `# ${error.message}`;
  }
}

function showOptions() {
  $("grad-outputs-row").hidden = endpoint() !== "grad";
  $("profile-row").hidden = endpoint() !== "profile";
  $("source-label").textContent = form() === "expr" ? "Expression" : "Program";
}

// ---- results ----

const numbers = (tensor) => tensor.data.map(Number);
const numel = (shape) => shape.reduce((a, b) => a * b, 1);

function describeTensor(label, tensor) {
  if (tensor === null || tensor === undefined) return `${label}: None`;
  const values = numbers(tensor);
  const shown = values.slice(0, 60).map(formatNumber).join(", ");
  const more = values.length > 60 ? `, … (${values.length} numbers)` : "";
  return `${label}: shape [${tensor.shape.join(", ")}] ${tensor.dtype}\n  [${shown}${more}]`;
}

function showOutputs(result) {
  const lines = (result.outputs || []).map((tensor, i) => describeTensor(`output ${i}`, tensor));
  for (const [name, grad] of Object.entries(result.grads || {})) lines.push(describeTensor(`${name}.grad`, grad));
  $("outputs").textContent = lines.join("\n");
  $("outputs-box").hidden = lines.length === 0;
}

// f and f' against x, as the tutorial plots sin(a) and a.grad against a: x is the first 1-D input
// (a linspace first), f every output with x's size, f' x's gradient.
function showChart(result, specs) {
  const flat = specs.filter((spec) => !Array.isArray(spec.data[0]) && Array.isArray(spec.data));
  const x = flat.find((spec) => spec.kind === "linspace") || flat.find((spec) => spec.requiresGrad) || flat[0];
  const series = [];
  if (x && x.data.length > 1) {
    (result.outputs || []).forEach((tensor, i) => {
      if (tensor && numel(tensor.shape) === x.data.length) {
        series.push({ name: `f: output ${i}`, points: numbers(tensor).map((y, k) => [x.data[k], y]) });
      }
    });
    const grad = (result.grads || {})[x.name];
    if (grad) series.push({ name: `f': ${x.name}.grad`, points: numbers(grad).map((y, k) => [x.data[k], y]) });
  }
  $("chart-box").hidden = series.length === 0;
  if (series.length) {
    $("chart-caption").textContent = `${series.map((s) => s.name).join(" and ")} against ${x.name}`;
    lineChart($("chart"), series, { xLabel: x.name, label: $("chart-caption").textContent });
  }
}

// A Jacobian or Hessian, nested as torch.autograd.functional nests it, as 2-D blocks: each block's
// columns are its input's elements (the last index names the input), its rows the rest.
function matrixBlocks(nested, specs, kind) {
  const blocks = [];
  const names = specs.map((spec) => spec.name);
  const visit = (value, path) => {
    if (Array.isArray(value)) {
      value.forEach((item, i) => visit(item, [...path, i]));
      return;
    }
    const inputIndex = specs.length === 1 ? 0 : path.at(-1) ?? 0;
    const cols = Math.max(1, numel(specs[inputIndex] ? shapeOf(specs[inputIndex].data) : [1]));
    const total = numel(value.shape);
    let label;
    if (kind === "hessian") {
      const first = specs.length === 1 ? names[0] : names[path[0] ?? 0];
      label = `∂²f / ∂${first} ∂${names[inputIndex]}`;
    } else {
      const output = specs.length === 1 ? path[0] ?? 0 : path.length > 1 ? path[0] : 0;
      label = `∂output${output} / ∂${names[inputIndex]}`;
    }
    blocks.push({ label, rows: Math.max(1, total / cols), cols, values: numbers(value) });
  };
  visit(nested, []);
  return blocks;
}

function shapeOf(data) {
  const shape = [];
  for (let level = data; Array.isArray(level); level = level[0]) shape.push(level.length);
  return shape;
}

const MAX_HEAT_MAP_CELLS = 40000;

function showMatrix(result, specs, kind) {
  const nested = result[kind];
  $("heatmap-box").hidden = nested === undefined;
  if (nested === undefined) return;
  const blocks = matrixBlocks(nested, specs, kind);
  const cells = blocks.reduce((sum, block) => sum + block.rows * block.cols, 0);
  if (cells > MAX_HEAT_MAP_CELLS) {
    // One SVG rect per number would stall the page; the numbers are in the response all the same.
    $("heatmap").replaceChildren();
    $("heatmap-caption").textContent = `The ${kind}: ${cells} numbers, more than the ${MAX_HEAT_MAP_CELLS} a heat`
      + " map here draws; the curl command below gives them all.";
    $("heatmap-readout").textContent = "";
    return;
  }
  $("heatmap-caption").textContent = `The ${kind === "hessian" ? "Hessian" : "Jacobian"}: ${blocks.length} block(s),`
    + " blue below zero, red above";
  $("heatmap-readout").textContent = "Point at a cell, or focus the map and use the arrow keys (Page Up/Down: next block).";
  heatMap($("heatmap"), blocks, $("heatmap-readout"));
}

function showGraph(result) {
  const roots = (result.graph || []).filter(Boolean);
  $("graph-box").hidden = roots.length === 0;
  if (roots.length) graphPicture($("graph"), roots);
}

function showProfile(result) {
  $("profile-box").hidden = !result.rows;
  if (!result.rows) return;
  const rows = [...result.rows].sort((a, b) => b.self_cpu_time_total_us - a.self_cpu_time_total_us);
  $("profile-table").tBodies[0].replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.name = row.name;
    tr.dataset.count = row.count;
    for (const value of [row.name, row.count, formatNumber(row.self_cpu_time_total_us),
      formatNumber(row.cpu_time_total_us)]) {
      const td = document.createElement("td");
      td.textContent = String(value);
      tr.append(td);
    }
    return tr;
  }));
  $("profile-text").textContent = result.table || "";
}

// Where the problem points: an input (its name field marked), and a program's line and column (the
// line number marked in the gutter, the text from the column selected, the line quoted with a caret).
function showWhere(body) {
  if (body.input) {
    for (const row of $("inputs").querySelectorAll(".input-row")) {
      const name = row.querySelector('[data-field="name"]');
      // The service names an input "x" or by its place in the body, "inputs.x" (or deeper).
      const path = `inputs.${name.value}`;
      if ([name.value, path].includes(body.input) || String(body.input).startsWith(`${path}.`)) {
        name.setAttribute("aria-invalid", "true");
      }
    }
  }
  if (!Number.isInteger(body.line)) return;
  markSource(body.line, body.column);
  const text = source().split("\n")[body.line - 1] ?? "";
  const excerpt = document.createElement("pre");
  const where = body.column ? `line ${body.line}, column ${body.column}` : `line ${body.line}`;
  excerpt.className = "excerpt";
  excerpt.setAttribute("aria-label", where);
  const caret = " ".repeat(Math.min(Math.max((body.column ?? 1) - 1, 0), text.length)) + "^";
  excerpt.textContent = `${where}:\n${text}\n${caret}`;
  $("problem").append(excerpt);
}

function clearResults() {
  for (const id of ["outputs-box", "chart-box", "graph-box", "heatmap-box", "profile-box", "problem"]) {
    $(id).hidden = true;
  }
}

async function run() {
  const results = $("results");
  clearMarks();
  clearResults();
  let request;
  try {
    request = buildRequest();
  } catch (error) {
    showProblem($("problem"), error);
    results.dataset.status = "invalid";
    return;
  }
  refreshSnippets();
  const kind = endpoint();
  results.dataset.status = "running";
  $("run-status").textContent = `POST /v1/${kind} …`;
  const started = performance.now();
  try {
    const result = await call("POST", `v1/${kind}`, request.body);
    $("run-status").textContent = `${kind}: answered in ${Math.round(performance.now() - started)} ms`;
    showOutputs(result);
    if (kind === "grad" || kind === "evaluate") showChart(result, request.specs);
    showGraph(result);
    if (kind === "jacobian" || kind === "hessian") showMatrix(result, request.specs, kind);
    showProfile(result);
    results.dataset.status = "done";
  } catch (error) {
    if (!(error instanceof Problem)) throw error;
    $("run-status").textContent = `${kind}: ${error.status}`;
    const body = showProblem($("problem"), error);
    showWhere(body);
    if (error.status === 401) $("api-key-row").hidden = false;
    results.dataset.status = "problem";
  }
}

function loadExample(name) {
  if (name === "tiny_model") {
    selectTab($("tab-models"));
    $("tab-models").focus();
    createTinyModel();
    return;
  }
  const example = EXAMPLES[name];
  $("endpoint").value = example.endpoint;
  document.querySelector(`input[name="form"][value="${example.form}"]`).checked = true;
  $("source").value = example.source;
  $("grad-outputs").value = example.gradOutputs ?? "";
  $("repeat").value = "1";
  $("profile-backward").checked = false;
  setInputs(example.inputs);
  document.body.dataset.example = name;
  clearMarks();
  clearResults();
  showOptions();
  refreshSnippets();
}

// Copy a snippet: the Clipboard API where the page is a secure context (localhost is), otherwise
// the selection and execCommand, which plain http on another host still allows.
async function copy(button) {
  const target = $(button.dataset.copy);
  const text = target.textContent;
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch {
    const selection = window.getSelection();
    selection.selectAllChildren(target);
    copied = document.execCommand("copy");
  }
  button.textContent = copied ? "Copied" : "Select and copy";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function setUp() {
  if (document.body.dataset.apiKey === "required") $("api-key-row").hidden = false;
  setUpTabs();
  for (const button of document.querySelectorAll("[data-example]")) {
    button.addEventListener("click", () => loadExample(button.dataset.example));
  }
  for (const button of document.querySelectorAll("button.copy")) button.addEventListener("click", () => copy(button));
  $("add-input").addEventListener("click", () => {
    const row = inputRow({ name: `x${$("inputs").children.length}`, kind: "values", values: [1, 2, 3] });
    $("inputs").append(row);
    row.querySelector("input").focus();
    refreshSnippets();
  });
  $("function-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  $("function-form").addEventListener("input", () => {
    showOptions();
    refreshSnippets();
  });
  $("function-form").addEventListener("change", () => {
    showOptions();
    refreshSnippets();
  });
  $("api-key").addEventListener("input", refreshSnippets);
  const editor = $("source");
  editor.addEventListener("input", () => updateGutter());
  editor.addEventListener("scroll", () => { $("gutter").scrollTop = editor.scrollTop; });
  editor.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("function-form").requestSubmit();
    }
  });
  setUpModels();
  loadExample("sin");
  document.body.dataset.ready = "true";
}

setUp();
