// Property filter rows for editors that build JSON in the page (the journey canvas): each
// row is a clone of the segment builder's filter row (templates/filter_row.html, rendered
// into <template id="filter-row">), with the same operators. Values are typed the way the
// segment builder types them on the server (segments.py `_value`): nothing for
// exists/not_exists, a comma list for in/not_in/between, JSON when it parses (numbers,
// booleans, lists), else the text.
"use strict";
window.NudgeFilterRows = (() => {
  const NO_VALUE = ["exists", "not_exists"], LIST = ["in", "not_in", "between"];
  function typed(text, op) {
    text = text.trim();
    if (NO_VALUE.includes(op)) return undefined;
    if (LIST.includes(op) && !text.startsWith("[")) {
      return text.split(",").filter((p) => p.trim()).map((p) => typed(p, "eq"));
    }
    try { return JSON.parse(text); } catch (e) { return text; }
  }
  function shown(value) {
    if (value === undefined || value === null) return "";
    if (Array.isArray(value) && value.every((v) => typeof v !== "object")) return value.join(", ");
    return typeof value === "string" ? value : JSON.stringify(value);
  }
  function filterOf(row) {
    const prop = row.querySelector("[data-filter=property] input").value.trim();
    if (!prop) return null;
    const op = row.querySelector("[data-filter=op] select").value;
    const f = {property: prop, op};
    const v = typed(row.querySelector("[data-filter=value] input").value, op);
    if (v !== undefined) f.value = v;
    return f;
  }
  // A fieldset with one row per filter, "Add filter" and a remove button per row. `set` gets
  // the list of complete filters (rows without a property are left out) after every edit.
  // `max` rows at most (1 for a single filter such as a profile condition). `noOp`: rows of
  // property and value only (update_profile's properties): the operator is hidden, "eq".
  function rows(legend, filters, set, {editable = true, max = 20, name = legend, noOp = false} = {}) {
    const tpl = document.getElementById("filter-row");
    const fs = document.createElement("fieldset");
    fs.className = "filters";
    fs.dataset.filters = name;
    const lg = document.createElement("legend");
    lg.textContent = legend;
    const list = document.createElement("div");
    const add = document.createElement("button");
    add.type = "button"; add.className = "secondary"; add.textContent = noOp ? "Add property" : "Add filter";
    add.setAttribute("aria-label", `${add.textContent}: ${legend}`);
    const emit = () => {
      set([...list.children].map(filterOf).filter(Boolean));
      add.hidden = !editable || list.children.length >= max;
    };
    function addRow(f) {
      const row = document.createElement("div");
      row.className = "filter-row";
      row.append(tpl.content.cloneNode(true));
      for (const el of row.querySelectorAll("input, select")) { el.removeAttribute("name"); el.disabled = !editable; }
      const n = list.children.length + 1;
      row.querySelector("[data-filter=property] input").value = f.property || "";
      row.querySelector("[data-filter=op] select").value = f.op || "eq";
      row.querySelector("[data-filter=value] input").value = shown(f.value);
      if (noOp) row.querySelector("[data-filter=op]").hidden = true;
      row.querySelector("[data-filter=property] input").setAttribute("aria-label", `${legend}: property ${n}`);
      row.querySelector("[data-filter=op] select").setAttribute("aria-label", `${legend}: operator ${n}`);
      row.querySelector("[data-filter=value] input").setAttribute("aria-label", `${legend}: value ${n}`);
      if (editable) {
        const rm = document.createElement("button");
        rm.type = "button"; rm.className = "secondary"; rm.textContent = "Remove";
        rm.setAttribute("aria-label", `Remove ${noOp ? "property" : "filter"} ${n}: ${legend}`);
        rm.addEventListener("click", () => { row.remove(); emit(); });
        row.append(rm);
      }
      row.addEventListener("input", emit);
      row.addEventListener("change", emit);
      list.append(row);
    }
    for (const f of filters || []) addRow(f);
    add.addEventListener("click", () => {
      addRow({});
      add.hidden = !editable || list.children.length >= max;
      list.lastElementChild.querySelector("input").focus();
    });
    add.hidden = !editable || list.children.length >= max;
    fs.append(lg, list, add);
    return fs;
  }
  return {rows, typed, shown};
})();
