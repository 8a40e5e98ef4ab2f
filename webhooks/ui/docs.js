// The API reference at /docs: /openapi.json rendered in the page, with nothing from a CDN, so it
// works on a host with no way out. Schemas are expanded from their $refs a few levels deep.
import { h, clear } from "./dom.js";

const MAX_DEPTH = 4;

function resolve(doc, schema) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return [name, doc.components.schemas[name]];
  }
  return [null, schema];
}

function typeOf(doc, schema) {
  const [name, s] = resolve(doc, schema);
  if (name) return name;
  if (!s) return "any";
  if (s.anyOf) return s.anyOf.map((part) => typeOf(doc, part)).join(" | ");
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.type === "array") return `${typeOf(doc, s.items)}[]`;
  if (s.type === "object" && s.additionalProperties && typeof s.additionalProperties === "object") {
    return `{string: ${typeOf(doc, s.additionalProperties)}}`;
  }
  return s.format ? `${s.type} (${s.format})` : s.type || "any";
}

function properties(doc, schema, depth, seen) {
  const [name, s] = resolve(doc, schema);
  if (!s || depth > MAX_DEPTH || (name && seen.has(name))) return null;
  const target = s.type === "array" ? resolve(doc, s.items)[1] : s;
  if (!target || !target.properties) {
    if (target && target.anyOf) {
      const objectPart = target.anyOf.find((part) => resolve(doc, part)[1]?.properties);
      return objectPart ? properties(doc, objectPart, depth, seen) : null;
    }
    return null;
  }
  const inner = new Set(seen);
  if (name) inner.add(name);
  const required = new Set(target.required || []);
  return h(
    "ul",
    { class: "schema" },
    Object.entries(target.properties).map(([key, prop]) =>
      h(
        "li",
        {},
        key,
        required.has(key) ? h("span", { class: "req" }, "*") : null,
        ": ",
        h("span", { class: "type" }, typeOf(doc, prop)),
        prop.description ? ` — ${prop.description}` : null,
        properties(doc, prop, depth + 1, inner),
      ),
    ),
  );
}

function parameters(doc, params) {
  if (!params || params.length === 0) return null;
  return h(
    "table",
    { class: "params" },
    h("tr", {}, h("th", {}, "Parameter"), h("th", {}, "In"), h("th", {}, "Type"), h("th", {}, "")),
    params.map((p) =>
      h(
        "tr",
        {},
        h("td", {}, p.name, p.required ? h("span", { class: "req" }, "*") : null),
        h("td", {}, p.in),
        h("td", {}, typeOf(doc, p.schema)),
        h("td", {}, p.description || ""),
      ),
    ),
  );
}

function content(doc, c) {
  if (!c) return null;
  return Object.entries(c).map(([media, { schema }]) =>
    h("div", {}, h("code", {}, media), " ", h("span", { class: "type" }, typeOf(doc, schema)),
      properties(doc, schema, 0, new Set())),
  );
}

function operation(doc, path, method, op) {
  const responses = Object.entries(op.responses || {}).map(([status, r]) =>
    h("details", {}, h("summary", {}, h("strong", {}, status), " ", r.description || ""), content(doc, r.content)),
  );
  return h(
    "details",
    { class: "op", id: op.operationId },
    h("summary", {}, h("span", { class: `method ${method}` }, method), h("span", { class: "path" }, path),
      h("span", {}, op.summary || ""), h("span", { class: "scope" }, op["x-roomwarden-scope"] || "")),
    h(
      "div",
      { class: "body" },
      op.description ? h("p", {}, op.description) : null,
      parameters(doc, op.parameters),
      op.requestBody ? [h("h4", {}, "Body"), content(doc, op.requestBody.content)] : null,
      h("h4", {}, "Answers"),
      responses,
    ),
  );
}

function render(doc) {
  const main = clear(document.getElementById("docs"));
  const nav = clear(document.getElementById("docs-tags"));
  main.append(h("h1", {}, `${doc.info.title} ${doc.info.version}`), h("p", {}, doc.info.description || ""));
  for (const tag of doc.tags || []) {
    const ops = [];
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        if ((op.tags || []).includes(tag.name)) ops.push(operation(doc, path, method, op));
      }
    }
    if (ops.length === 0) continue;
    nav.append(h("a", { href: `#tag-${tag.name}` }, tag.name));
    main.append(h("h2", { id: `tag-${tag.name}` }, tag.name), ...ops);
  }
}

fetch("/openapi.json")
  .then((answer) => {
    if (!answer.ok) throw new Error(`/openapi.json answered ${answer.status}`);
    return answer.json();
  })
  .then(render)
  .catch((error) => {
    document.getElementById("docs-status").textContent = `Could not read the API document: ${error.message}`;
  });
