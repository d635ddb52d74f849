// HematoVision pages: upload preview, drag and drop, probability bars, heatmap and marks
// toggles, a reason asked before deleting. Loaded as a file: the CSP allows no inline script.
document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("file-input");
  const zone = document.getElementById("drop-zone");
  const preview = document.getElementById("preview");

  function showPreview(files) {
    if (!preview) return;
    preview.replaceChildren();
    for (const file of files) {
      if (!file.type.startsWith("image/")) continue;
      const img = document.createElement("img");
      img.alt = file.name;  // text only: never parsed as HTML
      img.src = URL.createObjectURL(file);
      preview.appendChild(img);
    }
  }

  if (input) input.addEventListener("change", () => showPreview(input.files));
  if (zone && input) {
    ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("dragover");
    }));
    ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("dragover")));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      input.files = e.dataTransfer.files;
      showPreview(input.files);
    });
  }

  document.querySelectorAll(".progress-bar[data-width]").forEach((bar) => {
    bar.style.width = bar.dataset.width + "%";
  });

  // the heatmap is made by the server when first asked for: load it on the first click
  document.querySelectorAll(".toggle-heatmap").forEach((button) => {
    button.addEventListener("click", () => {
      const card = button.closest(".prediction");
      const heat = card.querySelector(".heatmap-image");
      const cell = card.querySelector(".cell-image");
      if (!heat.getAttribute("src")) heat.src = heat.dataset.src;
      const showing = !heat.classList.contains("d-none");
      heat.classList.toggle("d-none", showing);
      cell.classList.toggle("d-none", !showing);
      button.textContent = showing ? "Show heatmap" : "Show image";
    });
  });

  document.querySelectorAll(".toggle-marks").forEach((box) => {
    box.addEventListener("change", () => {
      const img = box.closest(".smear-field").querySelector("img.annotated");
      img.src = box.checked ? img.dataset.marked : img.dataset.plain;
    });
  });

  // a delete asks why: no reason (or Cancel), no delete
  document.querySelectorAll("form[data-reason]").forEach((form) => {
    form.addEventListener("submit", (e) => {
      const reason = window.prompt(form.dataset.reason, "");
      if (!reason || !reason.trim()) { e.preventDefault(); return; }
      form.elements.reason.value = reason.trim();
    });
  });
});

// The review screen: keyboard first (arrows move; a digit per class reclassifies; c or Enter
// confirms; x, s, a exclude as debris, smudge, artefact; h shows the heatmap), or drag a cell
// onto a group. Each decision is posted at once and the differential redrawn from the answer.
document.addEventListener("DOMContentLoaded", () => {
  const review = document.getElementById("review");
  if (!review) return;
  const classes = review.dataset.classes.split(",");
  const locked = review.dataset.locked === "true";
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const exclusions = { x: "debris", s: "smudge", a: "artefact" };
  let selected = null;

  const tiles = () => Array.from(review.querySelectorAll(".cell-tile"));
  function select(tile) {
    if (selected) selected.classList.remove("selected");
    selected = tile || null;
    if (selected) { selected.classList.add("selected"); selected.focus(); }
  }

  function showError(message) {
    let box = document.getElementById("review-error");
    if (!box) {
      box = document.createElement("div");
      box.id = "review-error";
      box.className = "alert alert-danger";
      box.setAttribute("role", "alert");
      review.prepend(box);
    }
    box.textContent = message;
  }

  function redraw(d) {
    const set = (field, value) => {
      const el = review.querySelector(`#sample-differential [data-field="${field}"]`);
      if (el) el.textContent = value;
    };
    set("counted", d.white_cells_counted);
    set("to_review", d.to_review);
    set("nrbc", d.nucleated_red_cells.count);
    set("nrbc100", d.nucleated_red_cells.per_100_white_cells ?? "—");
    set("platelets", d.platelets);
    set("nrbc_flag", d.nucleated_red_cells.flag ?? "");
    const outside = document.getElementById("outside-reference");
    const names = JSON.parse(outside?.dataset.names || "{}"); // as the page names them
    set("outside", d.outside_reference.map((label) => names[label] ?? label).join(", "));
    if (outside) outside.hidden = !d.outside_reference.length;
    for (const [label, v] of Object.entries(d.white_cells)) {
      const row = review.querySelector(`#sample-differential tr[data-class="${label}"]`);
      if (!row) continue;
      row.querySelector('[data-field="count"]').textContent = v.count;
      row.querySelector('[data-field="percent"]').textContent = v.percent.toFixed(1);
      row.querySelector('[data-field="ci95"]').textContent = `${v.ci95[0].toFixed(1)}–${v.ci95[1].toFixed(1)}`;
      row.querySelector('[data-field="flag"]').textContent = v.flag ?? "";
    }
    const bar = document.getElementById("count-progress");
    if (bar) bar.style.width = (100 * d.progress) + "%";
    review.querySelectorAll(".review-group").forEach((group) => {
      group.querySelector(".group-count").textContent = group.querySelectorAll(".cell-tile").length;
    });
  }

  async function decide(tile, body) {
    if (locked || !tile) return;
    const all = tiles();
    const next = all[all.indexOf(tile) + 1] || tile;
    const url = review.dataset.reviewUrl.replace("/cells/0/", `/cells/${tile.dataset.cellId}/`);
    const answer = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": token },
      body: JSON.stringify(body),
    });
    const data = await answer.json();
    if (!answer.ok) { showError(data.error ? data.error.message : "refused"); return; }
    const cell = data.cell;
    tile.dataset.label = cell.label;
    tile.dataset.status = cell.status;
    tile.querySelector(".cell-label").textContent = cell.label;
    tile.querySelector(".cell-status").textContent = cell.status + (cell.exclusion ? ": " + cell.exclusion : "");
    const group = cell.status === "excluded" ? "excluded" : cell.label;
    review.querySelector(`.group-cells[data-group="${group}"]`).appendChild(tile);
    redraw(data.differential);
    select(next === tile ? tile : next);
  }

  function toggleHeatmap(tile) {
    const img = tile.querySelector("img");
    if (!tile.dataset.heatmap) return;
    if (!tile.dataset.picture) tile.dataset.picture = img.src;
    img.src = img.src === tile.dataset.picture ? tile.dataset.heatmap : tile.dataset.picture;
  }

  review.addEventListener("click", (e) => {
    const tile = e.target.closest(".cell-tile");
    if (tile) select(tile);
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    const all = tiles();
    if (!all.length) return;
    const at = selected ? all.indexOf(selected) : -1;
    if (["ArrowRight", "ArrowDown"].includes(e.key)) { select(all[Math.min(at + 1, all.length - 1)]); }
    else if (["ArrowLeft", "ArrowUp"].includes(e.key)) { select(all[Math.max(at - 1, 0)]); }
    else if (!selected) { return; }
    else if (/^[1-9]$/.test(e.key) && classes[Number(e.key) - 1]) {
      decide(selected, { action: "reclassify", label: classes[Number(e.key) - 1] });
    } else if (e.key === "c" || e.key === "Enter") { decide(selected, { action: "confirm" }); }
    else if (exclusions[e.key]) { decide(selected, { action: "exclude", exclusion: exclusions[e.key] }); }
    else if (e.key === "h") { toggleHeatmap(selected); }
    else { return; }
    e.preventDefault();
  });

  if (locked) return;
  review.addEventListener("dragstart", (e) => {
    const tile = e.target.closest(".cell-tile");
    if (tile) e.dataTransfer.setData("text/plain", tile.dataset.cellId);
  });
  review.querySelectorAll(".group-cells").forEach((zone) => {
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragover"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragover"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("dragover");
      const tile = review.querySelector(`.cell-tile[data-cell-id="${e.dataTransfer.getData("text/plain")}"]`);
      const group = zone.dataset.group;
      if (!tile || group === "to_review") return;
      decide(tile, group === "excluded" ? { action: "exclude", exclusion: "debris" } : { action: "reclassify", label: group });
    });
  });
});

document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("print");
  if (button) button.addEventListener("click", () => window.print());
});
