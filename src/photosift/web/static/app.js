// photosift gallery: score bars, the scan page's live progress (server-sent events) and the re-derivation banner.
// No framework.
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

  async function post(url, body) {
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

  startForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    errorEl.hidden = true;
    startBtn.disabled = true;
    try {
      show(await post("/scan/start", { folder: startForm.elements.folder.value }));
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
    try { show(await post("/scan/stop", {})); } catch (err) { errorEl.textContent = err.message; errorEl.hidden = false; }
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

document.addEventListener("DOMContentLoaded", () => {
  paintBars(document);
  setupScan();
  setupRederive();
});
