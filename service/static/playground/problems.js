// A problem (RFC 9457) shown as the server said it: status and title, detail, then every extra
// field it carries (line, column, construct, op, input, node, limit, ...).

import { Problem } from "./api.js";

export function showProblem(box, problem) {
  box.replaceChildren();
  const heading = document.createElement("h2");
  const body = problem instanceof Problem ? problem.body : { title: "Not sent", detail: problem.message };
  heading.textContent = problem instanceof Problem ? `${problem.status} ${body.title || ""}` : body.title;
  const detail = document.createElement("p");
  detail.className = "detail";
  detail.textContent = body.detail || "";
  box.append(heading, detail);
  const extra = Object.entries(body).filter(([key]) => !["title", "detail", "status"].includes(key));
  if (extra.length) {
    const list = document.createElement("dl");
    for (const [key, value] of extra) {
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.textContent = typeof value === "string" ? value : JSON.stringify(value);
      list.append(dt, dd);
    }
    box.append(list);
  }
  box.hidden = false;
  return body;
}
