// Talking to the server the page came from: JSON calls, problems, the training event stream, and
// the same request written as curl and as a gradserve_client call. Every URL is relative to the
// page, so the playground works behind a proxy's path prefix and never leaves its origin.

const keyInput = () => document.getElementById("api-key");

export function apiUrl(path) {
  return new URL(path, document.baseURI).href;
}

function headers(extra = {}) {
  const result = { "Content-Type": "application/json", ...extra };
  const key = keyInput().value;
  if (key) result["X-API-Key"] = key;
  return result;
}

// A problem (RFC 9457) the server answered, with its extra fields (line, column, input, ...).
export class Problem extends Error {
  constructor(status, body) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function problemFrom(response) {
  let body;
  try {
    body = await response.json();
  } catch {
    body = { title: response.statusText, detail: `HTTP ${response.status}` };
  }
  return new Problem(response.status, body);
}

export async function call(method, path, body, extraHeaders = {}) {
  const response = await fetch(apiUrl(path), {
    method,
    headers: headers(extraHeaders),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await problemFrom(response);
  return response.status === 204 ? null : response.json();
}

// POST with Accept: text/event-stream, handing each event to onEvent(kind, data) as it arrives.
// EventSource cannot POST, so the stream is read from fetch's body and split on blank lines.
export async function stream(path, body, onEvent) {
  const response = await fetch(apiUrl(path), {
    method: "POST", headers: headers({ Accept: "text/event-stream" }), body: JSON.stringify(body),
  });
  if (!response.ok) throw await problemFrom(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      onEvent(kind, JSON.parse(data.join("\n")));
    }
  }
}

// ---- the same request elsewhere ----

function shellQuote(text) {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

export function curlCommand(method, path, body, extraHeaders = {}) {
  const parts = [`curl -s -X ${method} ${shellQuote(apiUrl(path))}`];
  if (body !== undefined) parts.push("-H 'Content-Type: application/json'");
  for (const [name, value] of Object.entries(extraHeaders)) parts.push(`-H ${shellQuote(`${name}: ${value}`)}`);
  // The key itself is not printed: the command reads it from the environment.
  if (keyInput().value) parts.push(`-H "X-API-Key: $GRADSERVE_API_KEY"`);
  if (body !== undefined) parts.push(`-d ${shellQuote(JSON.stringify(body))}`);
  return parts.join(" \\\n  ");
}

function pythonLiteral(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : `float("${value}")`;
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(pythonLiteral).join(", ")}]`;
  return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pythonLiteral(v)}`).join(", ")}}`;
}

// The client call for a compute request: Client(url).<endpoint>(expr=..., inputs=..., ...).
// Inputs built with the linspace helper are written as numpy.linspace, so the call reads as the
// tutorial does; literal values are written as lists.
export function pythonCall(endpoint, body, inputSpecs) {
  const args = [];
  if (body.expr !== undefined) args.push(`expr=${JSON.stringify(body.expr)}`);
  if (body.program !== undefined) args.push(`program=${JSON.stringify(body.program)}`);
  const inputs = inputSpecs.map((spec) => {
    const value = spec.kind === "linspace"
      ? `np.linspace(${spec.start}, ${spec.stop}, ${spec.steps}, dtype=np.float32)`
      : `np.array(${pythonLiteral(spec.values)}, dtype=np.float32)`;
    return `"${spec.name}": ${value}`;
  });
  args.push(`inputs={${inputs.join(", ")}}`);
  const wrt = inputSpecs.filter((spec) => spec.requiresGrad).map((spec) => JSON.stringify(spec.name));
  if (endpoint === "grad" && wrt.length) args.push(`requires_grad=[${wrt.join(", ")}]`);
  if (body.grad_outputs !== undefined) args.push(`grad_outputs=${pythonLiteral(body.grad_outputs)}`);
  if (body.repeat !== undefined) args.push(`repeat=${body.repeat}`);
  if (body.backward) args.push("backward=True");
  const key = keyInput().value ? ', api_key=os.environ["GRADSERVE_API_KEY"]' : "";
  const base = new URL(".", document.baseURI).href.replace(/\/$/, "");
  return [
    ...(key ? ["import os", ""] : []),
    "import numpy as np",
    "from gradserve_client import Client",
    "",
    `result = Client(${JSON.stringify(base)}${key}).${endpoint}(`,
    ...args.map((arg) => `    ${arg},`),
    ")",
  ].join("\n");
}
