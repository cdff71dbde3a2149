// Campaign wizard (campaign_wizard.html): show the sections of the chosen kind only
// (<section data-kind="one_time recurring">). Without script every section shows.
"use strict";
(() => {
  const form = document.getElementById("wizard");
  if (!form) return;
  function show() {
    const kind = (form.querySelector("input[name=kind]:checked") || {}).value || "one_time";
    form.querySelectorAll("[data-kind]").forEach((el) => {
      el.hidden = !el.dataset.kind.split(" ").includes(kind);
    });
  }
  form.addEventListener("change", (ev) => { if (ev.target.name === "kind") show(); });
  show();
})();
