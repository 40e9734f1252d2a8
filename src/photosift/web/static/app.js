// photosift gallery: score bars, the scan page's live progress (server-sent events), bulk corrections with
// undo, keyboard navigation on the photo page, and the re-derivation banner. No framework.
"use strict";

const token = document.querySelector('meta[name="photosift-token"]')?.content || "";

// CSP forbids inline styles, so bar widths come from data-score (0..1) and are set here.
function paintBars(root) {
  for (const el of root.querySelectorAll("[data-score]")) {
    const v = Math.max(0, Math.min(1, parseFloat(el.dataset.score) || 0));
    el.style.width = (v * 100).toFixed(1) + "%";
  }
}

function fmtEta(s) {
  if (s === null || s === undefined) return "—";
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function setupScan() {
  const box = document.getElementById("scan-box");
  if (!box) return;
  const startForm = document.getElementById("scan-start");
  const stopForm = document.getElementById("scan-stop");
  const startBtn = startForm.querySelector("button");
  const stopBtn = stopForm.querySelector("button");
  const errorEl = document.getElementById("scan-error");
  let source = null;

  function show(s) {
    box.dataset.state = s.state;
    box.dataset.active = String(s.active);
    document.getElementById("scan-state").textContent = s.state;
    document.getElementById("scan-folder").textContent = s.folder;
    document.getElementById("scan-files").textContent = s.files_done + " / " + s.files_total;
    document.getElementById("scan-rate").textContent = s.photos_per_s.toFixed(1);
    document.getElementById("scan-eta").textContent = fmtEta(s.eta_s);
    document.getElementById("scan-errors").textContent = s.errors;
    document.getElementById("scan-message").textContent = s.message;
    const bar = document.getElementById("scan-bar");
    bar.dataset.score = s.files_total ? s.files_done / s.files_total : (s.state === "done" ? 1 : 0);
    paintBars(box);
    startBtn.disabled = s.active;
    stopBtn.disabled = !s.active || s.state === "stopping";
  }

  function listen() {
    if (source) source.close();
    source = new EventSource("/scan/events");
    source.addEventListener("progress", (ev) => {
      const s = JSON.parse(ev.data);
      show(s);
      if (!s.active) { source.close(); source = null; }
    });
  }

  startForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    errorEl.hidden = true;
    startBtn.disabled = true;
    try {
      show(await postForm("/scan/start", { folder: startForm.elements.folder.value }));
      listen();
    } catch (err) {
      errorEl.textContent = err.message;
      errorEl.hidden = false;
      startBtn.disabled = false;
    }
  });

  stopForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    stopBtn.disabled = true;
    try { show(await postForm("/scan/stop", {})); } catch (err) { errorEl.textContent = err.message; errorEl.hidden = false; }
  });

  if (box.dataset.active === "true") listen();
}

// While categories are re-derived in the background (other rules than the catalog's), keep the banner current.
function setupRederive() {
  const banner = document.getElementById("rederive");
  if (!banner || banner.dataset.active !== "true") return;
  const timer = setInterval(async () => {
    const res = await fetch("/api/recategorize", { headers: { "Accept": "application/json" } }).catch(() => null);
    if (!res || !res.ok) return;
    const s = await res.json();
    banner.querySelector("[data-rederive-done]").textContent = s.done;
    banner.querySelector("[data-rederive-total]").textContent = s.total;
    if (!s.active) {
      clearInterval(timer);
      banner.dataset.active = "false";
      banner.textContent = s.state === "done"
        ? "Categories updated to the current rules (" + s.message + "); reload to see them."
        : "Updating categories stopped: " + s.message;
    }
  }, 1000);
}

async function postForm(url, body) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Accept": "application/json", "X-Photosift-Token": token,
               "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(body),
  });
  const data = await res.json().catch(() => ({ detail: res.statusText }));
  if (!res.ok) throw new Error(data.detail || res.statusText);
  return data;
}

// Grid pages: tick photos, correct them in one go, undo.
function setupBulk() {
  const bar = document.getElementById("bulk");
  if (!bar) return;
  const boxes = () => [...document.querySelectorAll(".tile .pick input")];
  const picked = () => boxes().filter((b) => b.checked);
  const count = document.getElementById("bulk-count");
  const done = document.getElementById("bulk-done");
  const msg = document.getElementById("bulk-msg");
  const undo = document.getElementById("bulk-undo");
  let previous = null;

  function refresh() {
    const n = picked().length;
    bar.hidden = n === 0;
    count.textContent = n + " selected";
    for (const b of boxes()) b.closest(".tile").classList.toggle("picked", b.checked);
  }
  function badge(id, category) {
    const tile = document.querySelector(`.tile[data-id="${id}"]`);
    if (!tile) return;
    let el = tile.querySelector(".badge");
    if (!category) { if (el) el.remove(); return; }
    if (!el) { el = document.createElement("span"); el.className = "badge"; tile.appendChild(el); }
    el.textContent = category;
  }
  async function apply(category) {
    const ids = picked().map((b) => b.value);
    if (!ids.length) return;
    try {
      const res = await postForm("/photos/correct", { ids: ids.join(","), category: category || "" });
      previous = res.previous;
      for (const id of ids) badge(id, category);
      msg.textContent = category ? `${res.changed} photos corrected to ${category}.` : `${res.changed} corrections cleared.`;
      undo.hidden = false;
      done.hidden = false;
      for (const b of boxes()) b.checked = false;
      refresh();
    } catch (err) { msg.textContent = err.message; done.hidden = false; undo.hidden = true; }
  }
  bar.addEventListener("submit", (ev) => { ev.preventDefault(); apply(bar.elements.category.value); });
  bar.addEventListener("click", (ev) => {
    const what = ev.target.dataset?.bulk;
    if (what === "clear") apply("");
    if (what === "all" || what === "none") { for (const b of boxes()) b.checked = what === "all"; refresh(); }
  });
  undo.addEventListener("click", async () => {
    if (!previous) return;
    try {
      await postForm("/photos/correct", { restore: JSON.stringify(previous) });
      for (const [id, category] of Object.entries(previous)) badge(id, category);
      msg.textContent = "Undone.";
      previous = null;
      undo.hidden = true;
    } catch (err) { msg.textContent = err.message; }
  });
  document.addEventListener("change", (ev) => { if (ev.target.closest(".pick")) refresh(); });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "a" && !typing(ev)) { for (const b of boxes()) b.checked = true; refresh(); }
    if (ev.key === "Escape" && picked().length) { for (const b of boxes()) b.checked = false; refresh(); }
  });
  refresh();
}

function typing(ev) {
  const t = ev.target;
  return ev.ctrlKey || ev.metaKey || ev.altKey || (t && (t.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(t.tagName)));
}

// Photo page and full view: arrow keys step through the list the photo came from; f opens the full view.
function setupKeys() {
  document.addEventListener("keydown", (ev) => {
    if (typing(ev)) return;
    const go = (sel) => { const a = document.querySelector(sel); if (a) { ev.preventDefault(); location.href = a.href; } };
    if (ev.key === "ArrowLeft") go("#nav-prev");
    else if (ev.key === "ArrowRight") go("#nav-next");
    else if (ev.key === "f") go("#open-full");
    else if (ev.key === "Escape") go("#full-back");
  });
  const full = document.getElementById("full-photo");
  if (full) full.addEventListener("click", () => full.classList.toggle("actual"));
  const clear = document.getElementById("clear-correction");
  if (clear) clear.addEventListener("click", async () => {
    try { await postForm("/photos/correct", { ids: clear.dataset.id, category: "" }); location.reload(); }
    catch (err) { clear.textContent = err.message; }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  paintBars(document);
  setupScan();
  setupBulk();
  setupKeys();
  setupRederive();
});
