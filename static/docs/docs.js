// Renders /openapi.json as a readable page: operations, their bodies and responses,
// and the schemas. Written for this server; nothing is fetched from the internet.

const el = (tag, attrs = {}, ...kids) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const kid of kids) node.append(kid);
  return node;
};

const refName = (ref) => ref.split("/").pop();

function typeOf(schema) {
  if (!schema) return "";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.type === "array") return `${typeOf(schema.items)}[]`;
  return schema.type || "any";
}

function limits(schema) {
  const out = [];
  for (const [k, label] of [["minimum", "≥"], ["maximum", "≤"], ["minLength", "min length"],
    ["maxLength", "max length"], ["default", "default"]]) {
    if (schema && k in schema) out.push(`${label} ${JSON.stringify(schema[k])}`);
  }
  return out.join(", ");
}

function schemaTable(schema) {
  const props = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const table = el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"),
    el("th", {}, "notes")));
  for (const [name, prop] of Object.entries(props)) {
    table.append(el("tr", {},
      el("td", {}, el("code", {}, name + (required.has(name) ? "" : "?"))),
      el("td", {}, el("code", {}, typeOf(prop))),
      el("td", { class: "muted" }, [prop.description || "", limits(prop)].filter(Boolean)
        .join(" — "))));
  }
  return table;
}

function operation(path, method, op) {
  const card = el("article", { class: "op", id: op.operationId || `${method}-${path}` });
  card.append(el("h3", {}, el("span", { class: `method ${method}` }, method),
    el("code", {}, path), el("span", { class: "muted" }, op.summary || "")));
  if (op.description) card.append(el("p", {}, op.description));
  const sec = op.security && op.security.length
    ? op.security.map((s) => Object.keys(s).join("+")).join(" or ") : "none";
  card.append(el("p", { class: "muted" }, `Auth: ${sec}`));
  const body = op.requestBody && op.requestBody.content["application/json"];
  if (body) {
    card.append(el("p", {}, "Request body: ", el("code", {}, typeOf(body.schema))));
  }
  const rows = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"),
    el("th", {}, "content")));
  for (const [status, resp] of Object.entries(op.responses || {})) {
    const types = Object.entries(resp.content || {}).map(([mt, c]) =>
      `${mt}${c.schema && c.schema.$ref ? ` (${refName(c.schema.$ref)})` : ""}`).join(", ");
    rows.append(el("tr", {}, el("td", {}, el("code", {}, status)),
      el("td", {}, resp.description || ""), el("td", { class: "muted" }, types)));
  }
  card.append(rows);
  return card;
}

async function main() {
  const spec = await (await fetch("/openapi.json")).json();
  document.title = spec.info.title;
  document.querySelector("h1").textContent = `${spec.info.title} ${spec.info.version}`;
  document.getElementById("summary").textContent = spec.info.description;
  const ops = document.getElementById("ops");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) ops.append(operation(path, method, op));
  }
  const schemas = document.getElementById("schemas");
  for (const [name, schema] of Object.entries(spec.components.schemas)) {
    const box = el("details", { id: `schema-${name}` }, el("summary", {}, name));
    if (schema.description) box.append(el("p", { class: "muted" }, schema.description));
    box.append(schemaTable(schema));
    box.append(el("pre", {}, JSON.stringify(schema, null, 2)));
    schemas.append(box);
  }
  window.voxwireDocsReady = true;
}

main().catch((err) => {
  document.getElementById("summary").textContent = `Could not load /openapi.json: ${err}`;
});
