// The console's only script (the Content-Security-Policy allows no inline script).
// Everything from the store is text: it reaches the page through textContent, never
// innerHTML, and plot data arrives as JSON in <script type="application/json"> blocks.
"use strict";

(function () {
  function json(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  // <div data-figure="ID">: a Plotly figure from the JSON block ID
  function drawPlots() {
    if (!window.Plotly) return;
    document.querySelectorAll("[data-figure]").forEach(function (div) {
      const fig = json(div.dataset.figure);
      if (fig) {
        window.Plotly.newPlot(div, fig.data, fig.layout, { responsive: true, displaylogo: false });
      }
    });
  }

  // <form data-confirm="... {alias} ...">: ask before submitting
  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        const alias = form.elements.alias ? form.elements.alias.value : "";
        if (!window.confirm(form.dataset.confirm.replace("{alias}", alias))) {
          event.preventDefault();
        }
      });
    });
  }

  function text(id, value) {
    const el = document.getElementById(id);
    if (el) el.textContent = value;
  }

  function row(tag, values, className) {
    const tr = document.createElement("tr");
    if (className) tr.className = className;
    values.forEach(function (v) {
      const cell = document.createElement(tag);
      cell.textContent =
        v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
      tr.appendChild(cell);
    });
    return tr;
  }

  // <section id="scoring" data-api="URL">: refresh a scoring run while it runs
  async function poll(section) {
    const response = await fetch(section.dataset.api, { credentials: "same-origin" });
    if (!response.ok) return;
    const run = await response.json();
    const s = run.state || {};
    text("status", run.status);
    text("progress", run.progress == null ? "—" : Math.round(run.progress * 100) + "%");
    text("rps", s.records_per_s ? Math.round(s.records_per_s) : "—");
    text("dead", s.counts ? s.counts.bad : "—");
    text("model-version", s.model_version || "—");
    text("offsets", JSON.stringify(s.offsets || {}));
    text("state", JSON.stringify(s, null, 2));
    const rows = Array.isArray(s.latest) ? s.latest : [];
    const table = document.getElementById("latest");
    if (table && rows.length && rows[0] && typeof rows[0] === "object") {
      const cols = Object.keys(rows[0]);
      table.tHead.replaceChildren(row("th", cols));
      table.tBodies[0].replaceChildren.apply(
        table.tBodies[0],
        rows.map(function (r) {
          return row("td", cols.map(function (c) { return r[c]; }), "prediction");
        })
      );
    }
    if (run.status === "running") setTimeout(function () { poll(section); }, 500);
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawPlots();
    confirmForms();
    const scoring = document.getElementById("scoring");
    if (scoring && scoring.dataset.api) poll(scoring);
  });
})();
