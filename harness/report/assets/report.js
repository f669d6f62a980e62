// prunebench report: sortable and filterable leaderboard tables. No dependencies, no network; the
// page reads fine without it (tables in the report's own order, every row shown).
"use strict";

// A cell's sort key: its data-value (numbers; "Infinity" for diverged), else its text; null when empty.
function sortKey(cell) {
  if (!cell) return null;
  if (cell.dataset.value !== undefined) return parseFloat(cell.dataset.value);
  const text = cell.textContent.trim();
  return text === "" ? null : text.toLowerCase();
}

// Empty cells go last in either direction; numbers before text.
function compareKeys(a, b, direction) {
  if (a === null || b === null) return (a === null) - (b === null);
  if (typeof a !== typeof b) return typeof a === "number" ? -1 : 1;
  if (a === b) return 0;
  return (a < b ? -1 : 1) * direction;
}

function sortTable(table, header) {
  const index = Array.prototype.indexOf.call(header.parentElement.children, header);
  // The first click shows the best first: ascending where lower is better, descending where higher is.
  const first = header.dataset.better === "higher" ? "descending" : "ascending";
  const current = header.getAttribute("aria-sort");
  const next = current === first ? (first === "ascending" ? "descending" : "ascending") : first;
  for (const other of header.parentElement.children) other.setAttribute("aria-sort", "none");
  header.setAttribute("aria-sort", next);
  const direction = next === "ascending" ? 1 : -1;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows).map((row) => ({ row, key: sortKey(row.cells[index]), order: +row.dataset.order }));
  // Ties keep the report's own order, so a sort is the same whichever sort came before it.
  rows.sort((a, b) => compareKeys(a.key, b.key, direction) || a.order - b.order);
  for (const { row } of rows) body.appendChild(row);
}

function applyFilters() {
  const method = document.getElementById("method-filter").value;
  const needle = document.getElementById("text-filter").value.trim().toLowerCase();
  let shown = 0;
  let total = 0;
  for (const row of document.querySelectorAll("table.board tbody tr")) {
    const methodMatches = !method || row.dataset.method === method || row.dataset.method === "dense";
    const textMatches = !needle || row.textContent.toLowerCase().includes(needle);
    row.hidden = !(methodMatches && textMatches);
    total += 1;
    shown += row.hidden ? 0 : 1;
  }
  document.getElementById("filter-status").textContent =
    method || needle ? `showing ${shown} of ${total} rows` : "";
}

document.addEventListener("DOMContentLoaded", () => {
  for (const table of document.querySelectorAll("table.board")) {
    Array.from(table.tBodies[0].rows).forEach((row, order) => { row.dataset.order = order; });
    for (const header of table.tHead.rows[0].cells) {
      header.addEventListener("click", () => sortTable(table, header));
    }
  }
  const method = document.getElementById("method-filter");
  const text = document.getElementById("text-filter");
  if (method && text) {
    method.addEventListener("change", applyFilters);
    text.addEventListener("input", applyFilters);
    applyFilters(); // a reload may keep the form's values
  }
});
