"""`photosift webcheck`: does a model run in a browser, and does it give the answers it gives natively?

A model that runs in ONNX Runtime on a desktop is not automatically deployable in a web page: ONNX Runtime Web's
WASM backend is the CPU execution provider compiled to WebAssembly, without the x86-only kernels, and the page
decodes and resamples photos with the browser's own code. So the check, in this order:

1. **Static**: every node of the graph (subgraphs and model-local functions included) against the kernels the
   WASM build has (``ort_web_ops.json``, generated from the kernel registry of the onnxruntime release that
   web-assets/package.json pins, see tools/gen_web_ops.py): operator, domain, opset and input element types.
   A model with nodes the backend cannot run is refused naming them, before anything runs.
2. **The real session**: headless Chromium (Debian's, driven by Playwright) loads the page's own classifier
   (web/static/classify.js: the same module the gallery's "Classify here" page uses) and ONNX Runtime Web from
   the web package's static files; a session that ORT Web refuses is reported the same way.
3. **Agreement**: each photo is decoded and preprocessed *in the page* as the model card says (EXIF orientation,
   centre crop or cut-out framing, normalisation) and classified; top-1 is compared with native ONNX Runtime
   on the same files (core.imaging + models.session), with the logit differences and the time per photo.

Everything is served from a throwaway HTTP server on 127.0.0.1 (the photos, the model, the scripts); the browser
starts with its networking extras off, so nothing leaves the machine.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from photosift.core import imaging
from photosift.core.errors import ToolchainError, UnreadableImage
from photosift.models.card import ModelCard
from photosift.toolchain.modelfile import Agreement, list_images, load_checked, run_logits, session

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in a container has no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STATIC_DIR = Path(str(resources.files("photosift"))) / "web" / "static"
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
OPS_FILE = Path(__file__).with_name("ort_web_ops.json")
RESAMPLERS = ("pillow", "canvas")
PHOTOS_PER_CALL = 16  # photos per round trip into the page (bounded messages, steady progress)
# How ORT Web's session creation names an operator it has no kernel for (two wordings, by where it fails).
_NO_KERNEL = re.compile(r"implementation for (\w+)\((\d+)\) node with name '([^']*)'")
_NOT_REGISTERED = re.compile(r"([\w.]+):(\w+)\((-?\d+)\) is not a registered function/op")


class UnsupportedModel(ToolchainError):
    """The model has operators ONNX Runtime Web's WASM backend cannot run."""

    def __init__(self, model: Path, ops: list[UnsupportedOp], found_by: str) -> None:
        self.model = model
        self.ops = ops
        self.found_by = (
            found_by  # "static" (the graph against the kernel list) or "session" (ORT Web said so)
        )
        shown = "; ".join(str(op) for op in ops[:8]) + (f"; and {len(ops) - 8} more" if len(ops) > 8 else "")
        super().__init__(f"{model}: ONNX Runtime Web (WASM) cannot run this model: {shown}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "refused": True,
            "found_by": self.found_by,
            "unsupported_ops": [op.to_dict() for op in self.ops],
        }


@dataclass(frozen=True)
class UnsupportedOp:
    domain: str
    op_type: str
    opset: int | None  # the operator's version (schema since_version) the model uses
    reason: str
    nodes: int = 1
    types: tuple[str, ...] = ()

    def __str__(self) -> str:
        version = f"-{self.opset}" if self.opset else ""
        return f"{self.domain}:{self.op_type}{version} ×{self.nodes} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "types": list(self.types)}


@dataclass
class WebcheckReport:
    model: str
    photos: int  # compared (decoded both natively and in the browser)
    backend: str
    threads: int
    resampler: str
    cross_origin_isolated: bool
    ort_web_version: str
    agreement: float | None = None  # top-1, browser vs native
    ms_per_photo: float | None = None  # in the page: decode + preprocess + inference, after a warm-up
    ms_inference: float | None = None  # of which the model run
    native_ms_per_photo: float | None = None  # native ONNX Runtime, same files, same threads: decode + run
    native_ms_inference: float | None = None  # of which the model run
    unsupported_ops: list[dict[str, Any]] = field(default_factory=list)
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    top5_containment: float | None = None
    max_abs_diff: float | None = None
    sqnr_db: float | None = None
    ci95: tuple[float, float] | None = None
    skipped: list[tuple[str, str]] = field(
        default_factory=list
    )  # (file, why) native or browser could not read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the static check ------------------------------------------------------------------------------------------


@functools.cache
def _web_ops() -> dict[str, Any]:
    table: dict[str, Any] = json.loads(OPS_FILE.read_text())
    return table


def _elem_types(proto: Any) -> dict[str, str]:
    """Value name -> element type ('float', 'int8', …) for every value whose type is known or inferable."""
    import onnx

    try:
        graph = onnx.shape_inference.infer_shapes(proto, strict_mode=False).graph
    except Exception:  # contrib ops or odd graphs: what the file declares is still useful
        graph = proto.graph
    out: dict[str, str] = {}
    for init in graph.initializer:
        out[init.name] = onnx.TensorProto.DataType.Name(init.data_type).lower()
    for vi in (*graph.input, *graph.value_info, *graph.output):
        elem = vi.type.tensor_type.elem_type
        if elem:
            out[vi.name] = onnx.TensorProto.DataType.Name(elem).lower()
    return out


def _why_not(node: Any, domain: str, opset: int | None, types: dict[str, str]) -> tuple[str, int | None]:
    """('', since) when the WASM backend has a kernel for ``node``, else (the reason, since)."""
    table = _web_ops()
    if domain in table["not_in_wasm"]:
        return table["not_in_wasm"][domain], None
    if opset is None:
        return f"the model imports no opset for domain {domain}", None
    schemas = [s for s in table["schemas"].get(domain, {}).get(node.op_type, []) if s[0] <= opset]
    if not schemas:
        return "not an operator ONNX Runtime knows (a custom op?)", None
    since, inputs, variadic = schemas[-1]
    kernels = [k for k in table["kernels"].get(domain, {}).get(node.op_type, []) if k[0] <= since <= k[1]]
    if not kernels:
        if domain == "ai.onnx" and _is_function(node.op_type, opset):
            return "", since  # ORT expands a function operator into its body
        return f"no WASM kernel for opset version {since}", since
    for i, name in enumerate(node.input):
        constraint = inputs[i] if i < len(inputs) else (inputs[-1] if variadic and inputs else None)
        got = types.get(name) if name else None
        if constraint is None or got is None:
            continue
        allowed = {t for k in kernels for t in k[2].get(constraint, [])}
        if got == "float16" and "float" in allowed:
            continue  # ORT's InsertCastTransformer runs float16 nodes without a float16 kernel in float32
        if allowed and got not in allowed:
            return f"no WASM kernel for {got} inputs", since
    return "", since


def _is_function(op_type: str, opset: int) -> bool:
    import onnx

    try:
        schema = onnx.defs.get_schema(op_type, opset, "")
    except Exception:
        return False
    # (attributes of the C++ schema that onnx's type stubs do not list)
    return bool(
        getattr(schema, "has_function", False) or getattr(schema, "has_context_dependent_function", False)
    )


def unsupported_operators(proto: Any) -> list[UnsupportedOp]:
    """The operators of ``proto`` (an onnx.ModelProto) that ONNX Runtime Web's WASM backend has no kernel for."""
    types = _elem_types(proto)
    local = {(f.domain, f.name): f for f in proto.functions}
    found: dict[tuple[str, str, int | None, str], list[str]] = {}

    def visit(nodes: Sequence[Any], opsets: dict[str, int]) -> None:
        for node in nodes:
            for attr in node.attribute:  # If / Loop / Scan bodies
                for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    visit(g.node, opsets)
            if (node.domain, node.op_type) in local:
                fn = local[(node.domain, node.op_type)]
                visit(fn.node, {**opsets, **{o.domain or "ai.onnx": o.version for o in fn.opset_import}})
                continue
            domain = node.domain or "ai.onnx"
            reason, since = _why_not(node, domain, opsets.get(domain), types)
            if reason:
                got = tuple(sorted({types[n] for n in node.input if n in types}))
                found.setdefault((domain, node.op_type, since, reason), []).append(",".join(got))

    visit(proto.graph.node, {o.domain or "ai.onnx": o.version for o in proto.opset_import})
    return [
        UnsupportedOp(d, op, since, reason, len(v), tuple(sorted({t for s in v for t in s.split(",") if t})))
        for (d, op, since, reason), v in found.items()
    ]


def _session_refusal(proto: Any, error: str) -> list[UnsupportedOp]:
    """What ORT Web's own session error names, as UnsupportedOps (empty when it names no operator)."""
    if match := _NOT_REGISTERED.search(error):
        domain, op = match.group(1), match.group(2)
        nodes = sum(1 for n in proto.graph.node if n.domain == domain and n.op_type == op)
        return [UnsupportedOp(domain, op, None, "ORT Web: not a registered operator", max(1, nodes))]
    if match := _NO_KERNEL.search(error):
        op, since, name = match.group(1), int(match.group(2)), match.group(3)
        domain = next((n.domain or "ai.onnx" for n in proto.graph.node if n.name == name), "ai.onnx")
        return [UnsupportedOp(domain, op, since, f"ORT Web: no kernel (node {name!r})")]
    return []


# -- the browser ---------------------------------------------------------------------------------------------


def ort_web_dir() -> Path:
    """The ONNX Runtime Web files in the web package (make web-assets puts them there from npm)."""
    ort = STATIC_DIR / "ort"
    missing = [f for f in ORT_FILES if not (ort / f).is_file()]
    if missing:
        raise ToolchainError(
            f"{ort}: ONNX Runtime Web is not installed (no {missing[0]}): run `make web-assets`"
        )
    return ort


def ort_web_version() -> str:
    try:
        return str(json.loads((ort_web_dir() / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


HARNESS = b"""<!doctype html><html><head><meta charset="utf-8"><title>photosift webcheck</title>
<script type="module">import * as photosift from "/static/classify.js"; window.photosift = photosift;</script>
</head><body>photosift webcheck</body></html>"""

_TYPES = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
}


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET only; / (the harness), /static/… (the web package's static files), /model.onnx, /photo/N."""

    routes: dict[str, Path | bytes]
    host: str

    def do_GET(self) -> None:
        if self.headers.get("Host") != self.host:
            self.send_error(400, "unexpected Host")
            return
        path = self.path.split("?", 1)[0]
        body = self.routes.get(path)
        if body is None and path.startswith("/static/"):
            candidate = (STATIC_DIR / path[len("/static/") :]).resolve()
            if candidate.is_file() and STATIC_DIR.resolve() in candidate.parents:
                body = candidate
        if body is None:
            self.send_error(404)
            return
        data = body.read_bytes() if isinstance(body, Path) else body
        suffix = Path(path).suffix
        self.send_response(200)
        self.send_header(
            "Content-Type", _TYPES.get(suffix, "text/html" if path == "/" else "application/octet-stream")
        )
        self.send_header("Content-Length", str(len(data)))
        # Cross-origin isolation: SharedArrayBuffer, hence WASM threads.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _serve(routes: dict[str, Path | bytes]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    handler = type("Handler", (_Handler,), {"routes": routes, "host": f"127.0.0.1:{port}"})
    server.RequestHandlerClass = handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def chromium_page(chromium: Path = CHROMIUM) -> Iterator[Any]:
    """A page in headless Chromium (Playwright, the system's browser: nothing is downloaded)."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ToolchainError("webcheck needs Playwright: pip install 'photosift[webcheck]'") from None
    if not Path(chromium).is_file():
        raise ToolchainError(
            f"{chromium}: Chromium not found (apt-get install chromium, or give --chromium PATH)"
        )
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        except PlaywrightError as exc:
            raise ToolchainError(
                f"{chromium}: could not start Chromium ({str(exc).splitlines()[0]})"
            ) from None
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(120_000)
            yield page
        finally:
            browser.close()


_LOAD = """async ({card, threads}) => {
  try { window.model = await window.photosift.loadModel("/model.onnx", card, {threads}); }
  catch (e) { return {error: String(e && e.message || e)}; }
  // Warm-up: V8 runs WASM in its baseline compiler first and tiers hot code up in the background, so the first
  // runs are several times slower; time only what a page that classifies a library would see.
  const s = card.preprocess.input_size, zeros = new Float32Array(3 * s * s), start = performance.now();
  for (let i = 0; i < 30 && (i < 5 || performance.now() - start < 3000); i++) await window.photosift.logits(window.model, zeros);
  const m = window.model;
  return {backend: m.backend, threads: m.threads, isolated: m.isolated, version: window.photosift.ORT_VERSION};
}"""

_CLASSIFY = """async ({first, count, framing, resampler}) => {
  const out = [];
  for (let i = first; i < first + count; i++) {
    try {
      const blob = await (await fetch("/photo/" + i)).blob();
      const r = await window.photosift.classifyBlob(window.model, blob, framing, resampler);
      out.push({logits: Array.from(r.logits), ms_preprocess: r.ms_preprocess, ms_inference: r.ms_inference});
    } catch (e) { out.push({error: String(e && e.message || e)}); }
  }
  return out;
}"""


@dataclass
class _BrowserRun:
    results: list[dict[str, Any]]
    backend: str
    threads: int
    isolated: bool
    version: str


def _run_in_browser(
    model: Path,
    card: ModelCard,
    photos: list[bytes],
    chromium: Path,
    threads: int | None,
    resampler: str,
    proto: Any,
    progress: Callable[[str], None],
) -> _BrowserRun:
    ort_web_dir()
    routes: dict[str, Path | bytes] = {"/": HARNESS, "/model.onnx": model}
    routes.update({f"/photo/{i}": data for i, data in enumerate(photos)})
    with _serve(routes) as url, chromium_page(chromium) as page:
        blocked: list[str] = []

        def only_this_server(route: Any) -> None:  # nothing the page asks for may leave the machine
            if route.request.url.startswith(url + "/"):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        page.route("**/*", only_this_server)
        page.goto(url + "/")
        page.wait_for_function("() => window.photosift !== undefined")
        info = page.evaluate(_LOAD, {"card": json.loads(card.to_json()), "threads": threads or 0})
        if "error" in info:
            ops = _session_refusal(proto, info["error"])
            if ops:
                raise UnsupportedModel(model, ops, "session")
            raise ToolchainError(
                f"{model}: ONNX Runtime Web could not load the model ({info['error'][:300]})"
            )
        progress(f"ONNX Runtime Web {info['version']}: {info['backend']}, {info['threads']} thread(s)")
        results: list[dict[str, Any]] = []
        for first in range(0, len(photos), PHOTOS_PER_CALL):
            count = min(PHOTOS_PER_CALL, len(photos) - first)
            results += page.evaluate(
                _CLASSIFY,
                {"first": first, "count": count, "framing": imaging.cutout_framing(), "resampler": resampler},
            )
            progress(f"browser: {len(results)}/{len(photos)} photos")
        if blocked:
            raise ToolchainError(
                f"{model}: the page tried to reach {blocked[0]} (blocked; nothing may leave)"
            )
    return _BrowserRun(
        results, info["backend"], int(info["threads"]), bool(info["isolated"]), info["version"]
    )


# -- the check -----------------------------------------------------------------------------------------------


def webcheck(
    model: Path | str,
    images: Path,
    *,
    chromium: Path = CHROMIUM,
    threads: int | None = None,
    resampler: str = "pillow",
    progress: Callable[[str], None] = lambda _m: None,
) -> WebcheckReport:
    """Check ``model`` in ONNX Runtime Web on the photos under ``images``; see the module docstring.

    ``threads``: WASM threads (None: up to 4 when the page is cross-origin isolated, which it is here); native
    ONNX Runtime uses as many. ``resampler``: "pillow" (the page's default: Pillow's filter in JS) or "canvas"
    (the browser's drawImage). Raises :class:`UnsupportedModel` for a model the backend cannot run.
    """
    if resampler not in RESAMPLERS:
        raise ToolchainError(f"unknown resampler {resampler!r} (choose from {', '.join(RESAMPLERS)})")
    checked = load_checked(Path(model))
    path, card = checked.path, checked.card
    ops = unsupported_operators(checked.proto)
    if ops:
        raise UnsupportedModel(path, ops, "static")
    files = list_images(images)
    if not files:
        raise ToolchainError(f"{images}: no images found")
    progress(f"{len(files)} photos; native ONNX Runtime first")
    kept: list[Path] = []
    datas: list[bytes] = []
    tensors: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    for f in files:
        try:
            data = imaging.read_bytes(f)
            tensors.append(imaging.load_tensor(f, card.preprocess, data))
        except UnreadableImage as exc:
            skipped.append((str(f), f"native: {exc.reason}"))
            continue
        kept.append(f)
        datas.append(data)
    if not kept:
        raise ToolchainError(f"{images}: none of the {len(files)} images could be read")
    decode_s = time.perf_counter() - t0

    run = _run_in_browser(path, card, datas, chromium, threads, resampler, checked.proto, progress)
    sess = session(path, threads=run.threads)
    x = np.stack(tensors)
    run_logits(sess, card, np.repeat(x[:1], 5, axis=0), batch=1)  # warm-up, as the page does
    t0 = time.perf_counter()
    native = run_logits(sess, card, x, batch=1)
    run_s = time.perf_counter() - t0

    rows = [i for i, r in enumerate(run.results) if "error" not in r]
    skipped += [
        (str(kept[i]), f"browser: {r['error'][:200]}") for i, r in enumerate(run.results) if "error" in r
    ]
    report = WebcheckReport(
        str(path), len(rows), run.backend, run.threads, resampler, run.isolated, run.version, skipped=skipped
    )
    report.native_ms_per_photo = round(1000 * (decode_s + run_s) / len(kept), 1)
    report.native_ms_inference = round(1000 * run_s / len(kept), 1)
    if not rows:
        return report
    got = np.asarray([run.results[i]["logits"] for i in rows], dtype=np.float32)
    ref = native[rows]
    agree = Agreement.of(ref, got)
    pre = [run.results[i]["ms_preprocess"] for i in rows]
    inf = [run.results[i]["ms_inference"] for i in rows]
    report.agreement = agree.top1
    report.top5_containment = agree.top5_containment
    report.max_abs_diff = agree.max_abs_diff
    report.sqnr_db = agree.sqnr_db
    report.ci95 = agree.ci95
    report.ms_per_photo = round(float(np.mean(pre) + np.mean(inf)), 1)
    report.ms_inference = round(float(np.mean(inf)), 1)
    labels = card.labels
    for n, i in enumerate(rows):
        b, r = int(got[n].argmax()), int(ref[n].argmax())
        if b != r:
            report.disagreements.append(
                {
                    "file": str(kept[i]),
                    "browser": labels[b],
                    "native": labels[r],
                    "logit_gap_native": round(float(np.sort(ref[n])[-1] - np.sort(ref[n])[-2]), 4),
                }
            )
    return report


__all__ = [
    "CHROMIUM",
    "UnsupportedModel",
    "UnsupportedOp",
    "WebcheckReport",
    "chromium_page",
    "ort_web_dir",
    "unsupported_operators",
    "webcheck",
]
