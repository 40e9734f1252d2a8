// The gallery's "Classify here" page: photos chosen or dropped are decoded, classified and categorised in
// this page (classify.js); nothing is sent anywhere. Results are also kept in window.photosiftResults.
import * as photosift from "./classify.js";

const box = document.getElementById("classify-box");
const input = document.getElementById("classify-input");
const drop = document.getElementById("classify-drop");
const statusEl = document.getElementById("classify-status");
const list = document.getElementById("classify-results");
window.photosiftResults = [];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

function pct(x) { return Math.round(100 * x) + "%"; }

function render(file, result) {
  const bars = el("ol", { class: "bars" });
  for (const t of result.top5) {
    const fill = el("span");
    fill.style.width = (100 * t.score).toFixed(1) + "%"; // CSSOM, not an inline style attribute: CSP-safe
    bars.append(el("li", {}, el("span", { class: "lbl", title: t.label }, t.label),
      el("span", { class: "bar" }, fill), el("span", { class: "sc" }, pct(t.score))));
  }
  const cat = result.category;
  const img = el("img", { alt: file.name });
  img.src = URL.createObjectURL(file);
  img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
  list.prepend(el("li", { class: "result", "data-category": cat.category, "data-label": result.top5[0].label },
    img,
    el("div", {},
      el("p", { class: "fname" }, file.name),
      el("p", { class: "category" }, el("span", { class: "cat-name" }, cat.category),
        " ", el("span", { class: "muted" }, pct(cat.score) + (cat.fine ? " · " + cat.fine : ""))),
      bars)));
}

function renderError(file, message) {
  list.prepend(el("li", { class: "result failed", "data-error": message },
    el("div", {}, el("p", { class: "fname" }, file.name), el("p", { class: "error" }, "Could not read it: " + message))));
}

async function main() {
  const info = await (await fetch(box.dataset.model)).json();
  if (!info.card) throw new Error(info.detail || "no model");
  const model = await photosift.loadModel(box.dataset.weights, info.card);
  const threads = model.threads > 1 ? `${model.threads} threads` : "1 thread";
  statusEl.textContent = `Ready: ${info.name} in your browser (WebAssembly, ${threads}).`;
  box.dataset.state = "ready";
  input.disabled = false;
  let queue = Promise.resolve();

  function classifyFiles(files) {
    for (const file of files) {
      queue = queue.then(async () => {
        box.dataset.state = "busy";
        statusEl.textContent = `Classifying ${file.name}…`;
        try {
          const out = await photosift.classifyBlob(model, file, info.framing);
          const probs = photosift.softmax(out.logits);
          const result = {
            file: file.name,
            top5: photosift.topK(probs, 5, info.card.labels),
            category: photosift.categorize(probs, info.rules),
            probs: Array.from(probs),
            ms: out.ms_preprocess + out.ms_inference,
          };
          window.photosiftResults.push(result);
          render(file, result);
        } catch (err) {
          window.photosiftResults.push({ file: file.name, error: String(err.message || err) });
          renderError(file, String(err.message || err));
        }
        box.dataset.state = "ready";
        statusEl.textContent = `Done: ${window.photosiftResults.length} photo(s), nothing uploaded.`;
      });
    }
  }

  input.addEventListener("change", () => { classifyFiles([...input.files]); input.value = ""; });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    classifyFiles([...ev.dataTransfer.files].filter((f) => f.type.startsWith("image/") || f.type === ""));
  });
}

main().catch((err) => {
  box.dataset.state = "failed";
  statusEl.textContent = "The model could not be loaded here: " + (err.message || err);
});
