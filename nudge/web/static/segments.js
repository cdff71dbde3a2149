// Segment builder: show the fields of each condition's type; number the added rows.
"use strict";

document.addEventListener("change", (ev) => {
  if (ev.target.matches("[data-cond-type]")) {
    ev.target.closest("fieldset.cond").dataset.type = ev.target.value;
  }
});

document.addEventListener("htmx:configRequest", (ev) => {
  const b = ev.detail.elt;
  if (b && b.id === "add-condition") {
    ev.detail.parameters["i"] = b.dataset.next;
    b.dataset.next = String(Number(b.dataset.next) + 1);
  }
});
