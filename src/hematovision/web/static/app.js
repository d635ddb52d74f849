// HematoVision pages: upload preview, drag and drop, probability bars, heatmap and marks
// toggles, confirmation before deleting. Loaded as a file: the CSP allows no inline script.
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

  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (e) => {
      if (!window.confirm(form.dataset.confirm)) e.preventDefault();
    });
  });
});
