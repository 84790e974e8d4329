// A small offline reader of /openapi.json (FastAPI's own /docs page loads Swagger UI from a CDN).
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function resolve(spec, schema) {
  if (schema && schema.$ref) return spec.components.schemas[schema.$ref.split("/").pop()];
  return schema || {};
}

function typeOf(prop) {
  if (prop.anyOf) return prop.anyOf.map((p) => p.type).join(" | ");
  if (prop.contentMediaType) return "file";
  return prop.type || "";
}

function limits(prop) {
  const parts = [];
  if (prop.minimum !== undefined) parts.push(`≥ ${prop.minimum}`);
  if (prop.maximum !== undefined) parts.push(`≤ ${prop.maximum}`);
  if (prop.pattern) parts.push(prop.pattern);
  return parts.join(", ");
}

function fieldsTable(spec, body) {
  const table = el("table");
  const head = el("tr");
  for (const h of ["field", "type", "default", "limits", "meaning"]) head.append(el("th", h));
  const thead = el("thead");
  thead.append(head);
  table.append(thead);
  const rows = el("tbody");
  for (const [media, content] of Object.entries(body.content || {})) {
    const schema = resolve(spec, content.schema);
    const required = new Set(schema.required || []);
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      const tr = el("tr");
      tr.append(el("td", name + (required.has(name) ? " *" : "")), el("td", typeOf(prop)),
                el("td", prop.default === undefined ? "" : JSON.stringify(prop.default)), el("td", limits(prop)),
                el("td", prop.description || ""));
      rows.append(tr);
    }
    table.prepend(el("caption", media));
  }
  table.append(rows);
  return table;
}

async function render() {
  const main = document.getElementById("api");
  const spec = await (await fetch("/openapi.json")).json();
  main.replaceChildren();
  const intro = el("section");
  intro.append(el("h2", `${spec.info.title} ${spec.info.version}`), el("p", spec.info.description || ""));
  main.append(intro);
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const sec = el("section");
      sec.append(el("h2", `${method.toUpperCase()} ${path}`), el("p", op.summary || ""));
      if (op.description) sec.append(el("p", op.description, "muted"));
      if (op.requestBody) sec.append(fieldsTable(spec, op.requestBody));
      const list = el("ul");
      for (const [code, answer] of Object.entries(op.responses || {})) {
        const kinds = Object.keys(answer.content || {}).join(", ");
        list.append(el("li", `${code}: ${answer.description || ""}${kinds ? ` (${kinds})` : ""}`));
      }
      sec.append(list);
      main.append(sec);
    }
  }
}

render();
