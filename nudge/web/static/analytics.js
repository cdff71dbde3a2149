// Analytics and segment pages: draw ECharts options the server built (data-echarts) and
// export a chart as PNG (ECharts getDataURL). No inline scripts: the CSP forbids them.
"use strict";

function drawOptions(root) {
  if (!window.echarts) return;
  root.querySelectorAll("[data-echarts]").forEach((el) => {
    if (el.dataset.drawn) return;
    const chart = echarts.init(el, null, {renderer: "canvas"});
    chart.setOption(JSON.parse(el.dataset.echarts));
    el.dataset.drawn = "1";
    window.addEventListener("resize", () => chart.resize());
  });
}

document.addEventListener("DOMContentLoaded", () => drawOptions(document));
document.addEventListener("htmx:afterSettle", (ev) => drawOptions(ev.target));

document.addEventListener("click", (ev) => {
  const t = ev.target.closest("[data-png]");
  if (!t || !window.echarts) return;
  const chart = echarts.getInstanceByDom(document.querySelector(t.dataset.png));
  if (!chart) return;
  const a = document.createElement("a");
  a.href = chart.getDataURL({type: "png", pixelRatio: 2, backgroundColor: "#fff"});
  a.download = t.dataset.name || "chart.png";
  document.body.appendChild(a);
  a.click();
  a.remove();
});
