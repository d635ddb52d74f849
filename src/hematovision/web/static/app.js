// HematoVision pages: upload preview, drag and drop, probability bars, heatmap toggle.
// Loaded as a file: the Content-Security-Policy allows no inline script.
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

  document.querySelectorAll(".toggle-heatmap").forEach((button) => {
    button.addEventListener("click", () => {
      const card = button.closest(".prediction");
      const heat = card.querySelector(".heatmap-image");
      const cell = card.querySelector(".cell-image");
      const showing = !heat.classList.contains("d-none");
      heat.classList.toggle("d-none", showing);
      cell.classList.toggle("d-none", !showing);
      button.textContent = showing ? "Show heatmap" : "Show image";
    });
  });
});
