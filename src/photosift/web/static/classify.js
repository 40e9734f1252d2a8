// photosift in the browser: decode and preprocess a photo the way core/imaging.py does, run a carded model with
// ONNX Runtime Web (WASM), and decide its album category the way album/rules.py does. Shared by the gallery's
// "Classify here" page and `photosift webcheck`. Nothing leaves the page: the photo is read from a File/Blob,
// drawn on an OffscreenCanvas and fed to the model in memory.
import * as ort from "./ort/ort.wasm.min.mjs";

export const ORT_VERSION = ort.env.versions?.web || "";

// Threads need SharedArrayBuffer, which browsers give only to cross-origin isolated pages (COOP + COEP).
export function defaultThreads() {
  if (!self.crossOriginIsolated) return 1;
  return Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1));
}

// `threads`: WASM threads (default: up to 4 when the page is cross-origin isolated, else 1).
export async function loadModel(modelUrl, card, { threads } = {}) {
  ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;
  ort.env.wasm.numThreads = threads || defaultThreads();
  ort.env.logLevel = "error";
  const session = await ort.InferenceSession.create(modelUrl, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  return { session, card, backend: "wasm", threads: ort.env.wasm.numThreads, isolated: !!self.crossOriginIsolated };
}

// Python's round(): halves go to the even neighbour (imaging.py's box math uses it; Math.round would not).
export function pyRound(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

function isJpeg(bytes) {
  return bytes.length > 2 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

// Decode with the EXIF orientation applied and no colour-profile conversion (Pillow applies neither ICC nor
// colour management either). A photo whose alpha makes it a cut-out gets the box of its opaque pixels, as
// imaging.decode records it: enough transparent pixels (alpha < 128), then the bounding box of alpha >= 128.
export async function decode(blob, framing) {
  const head = new Uint8Array(await blob.slice(0, 3).arrayBuffer());
  const bitmap = await createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none" });
  const jpeg = isJpeg(head);
  const cutout = jpeg ? null : cutoutBox(bitmap, framing.cutout_min_transparent);
  return { bitmap, cutout, jpeg };
}

function cutoutBox(bitmap, minTransparent) {
  const { width: w, height: h } = bitmap;
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const px = ctx.getImageData(0, 0, w, h).data;
  let transparent = 0;
  let left = w, top = h, right = -1, bottom = -1;
  for (let y = 0, i = 3; y < h; y++) {
    for (let x = 0; x < w; x++, i += 4) {
      if (px[i] < 128) { transparent++; continue; }
      if (x < left) left = x;
      if (x > right) right = x;
      if (y < top) top = y;
      if (y > bottom) bottom = y;
    }
  }
  if (transparent / Math.max(1, w * h) < minTransparent || right < 0) return null;
  return [left, top, right + 1, bottom + 1]; // exclusive right/bottom, as PIL's getbbox
}

// The source box and where it lands in the size x size input: imaging.to_tensor's centre crop (the crop box
// mapped back to source coordinates, resized in one pass) or frame_cutout's square around the object.
export function inputBox(width, height, cutout, pre, framing) {
  const size = pre.input_size;
  if (cutout) {
    const [l, t, r, b] = cutout;
    const side = Math.max(r - l, b - t) * (1 + 2 * framing.cutout_margin);
    const x0 = (l + r) / 2 - side / 2;
    const y0 = (t + b) / 2 - side / 2;
    const scale = size / side;
    const ix0 = Math.max(0, x0), iy0 = Math.max(0, y0);
    const ix1 = Math.min(width, x0 + side), iy1 = Math.min(height, y0 + side);
    const dx = pyRound((ix0 - x0) * scale), dy = pyRound((iy0 - y0) * scale);
    const dw = Math.max(1, Math.min(size - dx, pyRound((ix1 - ix0) * scale)));
    const dh = Math.max(1, Math.min(size - dy, pyRound((iy1 - iy0) * scale)));
    return { src: [ix0, iy0, ix1 - ix0, iy1 - iy0], dst: [dx, dy, dw, dh] };
  }
  const scale = pre.resize_size / Math.min(width, height);
  const newW = Math.max(size, pyRound(width * scale)), newH = Math.max(size, pyRound(height * scale));
  const left = pyRound((newW - size) / 2), top = pyRound((newH - size) / 2);
  const sx = width / newW, sy = height / newH;
  return { src: [left * sx, top * sy, size * sx, size * sy], dst: [0, 0, size, size] };
}

// Pillow's resampling (libImaging/Resample.c), so the page feeds the model the pixels core/imaging.py feeds it:
// a separable convolution whose support widens with the downscale factor (antialiasing), 22-bit fixed-point
// weights, a rounded 8-bit intermediate after the horizontal pass. `box` is the source rectangle (floats).
const FILTERS = {
  bilinear: { support: 1, f: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; } },
  bicubic: {
    support: 2,
    f: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};
const PRECISION_BITS = 22;

function coefficients(inSize, in0, in1, outSize, filter) {
  // Pillow takes the box as C floats and computes the scale in float: round as it does, or fractional boxes
  // land a level off.
  in0 = Math.fround(in0);
  in1 = Math.fround(in1);
  const scale = Math.fround(in1 - in0) / outSize;
  const filterScale = Math.max(1, scale);
  const ss = 1 / filterScale; // multiplied, not divided: the same float rounding as Resample.c
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let total = 0;
    for (let x = 0; x < xmax; x++) total += w[x] = filter.f((x + xmin - center + 0.5) * ss);
    for (let x = 0; x < xmax; x++) {
      const v = total !== 0 ? w[x] / total : w[x];
      kk[xx * ksize + x] = Math.trunc(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v) {
  if (v >= 255 * (1 << PRECISION_BITS)) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / (1 << PRECISION_BITS));
}

// RGBA pixels (w x h) -> RGBA pixels (outW x outH) of `box` = [x0, y0, x1, y1].
export function resamplePillow(px, w, h, box, outW, outH, interpolation) {
  const filter = FILTERS[interpolation] || FILTERS.bilinear;
  const horiz = coefficients(w, box[0], box[2], outW, filter);
  const vert = coefficients(h, box[1], box[3], outH, filter);
  const needH = outW !== w || box[0] !== 0 || box[2] !== outW;
  const needV = outH !== h || box[1] !== 0 || box[3] !== outH;
  const half = 1 << (PRECISION_BITS - 1);
  let src = px, srcW = w, rowOffset = 0;
  const yFirst = vert.bounds[0];
  const yLast = vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1];
  if (needH) {
    const rows = yLast - yFirst;
    const tmp = new Uint8ClampedArray(outW * rows * 4);
    for (let yy = 0; yy < rows; yy++) {
      const row = (yy + yFirst) * w * 4;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = horiz.bounds[xx * 2], xmax = horiz.bounds[xx * 2 + 1], k = xx * horiz.ksize;
        let s0 = half, s1 = half, s2 = half;
        for (let x = 0; x < xmax; x++) {
          const i = row + (x + xmin) * 4, c = horiz.kk[k + x];
          s0 += px[i] * c; s1 += px[i + 1] * c; s2 += px[i + 2] * c;
        }
        const o = (yy * outW + xx) * 4;
        tmp[o] = clip8(s0); tmp[o + 1] = clip8(s1); tmp[o + 2] = clip8(s2); tmp[o + 3] = 255;
      }
    }
    src = tmp; srcW = outW; rowOffset = yFirst;
  }
  if (!needV) return src;
  const out = new Uint8ClampedArray(outW * outH * 4);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vert.bounds[yy * 2] - rowOffset, ymax = vert.bounds[yy * 2 + 1], k = yy * vert.ksize;
    for (let xx = 0; xx < outW; xx++) {
      let s0 = half, s1 = half, s2 = half;
      for (let y = 0; y < ymax; y++) {
        const i = ((y + ymin) * srcW + xx) * 4, c = vert.kk[k + y];
        s0 += src[i] * c; s1 += src[i + 1] * c; s2 += src[i + 2] * c;
      }
      const o = (yy * outW + xx) * 4;
      out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2); out[o + 3] = 255;
    }
  }
  return out;
}

// imaging.decode asks libjpeg for a DCT-scaled decode (1/2, 1/4, 1/8: Pillow's draft rule) when a JPEG is at
// least twice the size the model needs. Browsers decode at full size, so the page averages f x f blocks instead
// (Pillow's Image.reduce): close to what the scaled IDCT computes (docs/WEB.md has the measured difference).
export function dctFactor(width, height, minSide) {
  const scale = minSide / Math.min(width, height);
  if (scale >= 1) return 1;
  const ratio = Math.min(Math.floor(width / Math.ceil(width * scale)), Math.floor(height / Math.ceil(height * scale)));
  return [8, 4, 2, 1].find((f) => ratio >= f);
}

function reduceBox(px, w, h, f) {
  const ow = Math.ceil(w / f), oh = Math.ceil(h / f);
  const out = new Uint8ClampedArray(ow * oh * 4);
  for (let oy = 0; oy < oh; oy++) {
    const y1 = Math.min(h, (oy + 1) * f);
    for (let ox = 0; ox < ow; ox++) {
      const x1 = Math.min(w, (ox + 1) * f);
      let r = 0, g = 0, b = 0, n = 0;
      for (let y = oy * f; y < y1; y++) {
        for (let x = ox * f, i = (y * w + x) * 4; x < x1; x++, i += 4) { r += px[i]; g += px[i + 1]; b += px[i + 2]; n++; }
      }
      const o = (oy * ow + ox) * 4;
      out[o] = Math.floor((r + n / 2) / n); out[o + 1] = Math.floor((g + n / 2) / n);
      out[o + 2] = Math.floor((b + n / 2) / n); out[o + 3] = 255;
    }
  }
  return { px: out, w: ow, h: oh };
}

function pixelsOnWhite(bitmap) {
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, bitmap.width, bitmap.height);
  ctx.drawImage(bitmap, 0, 0);
  return ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
}

// The size x size RGBA input pixels. resampler "pillow" (the default): Pillow's filter in JS on the full
// decoded image, transparent pixels composited on white first as decode() does. "canvas": the browser's own
// drawImage ('high' quality smoothing), what a page that does not care would ship; docs/WEB.md compares them.
export function inputPixels(decoded, pre, framing, resampler = "pillow") {
  const size = pre.input_size;
  const { bitmap, cutout } = decoded;
  const canvas = new OffscreenCanvas(size, size);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, size, size);
  if (resampler === "canvas") {
    const { src, dst } = inputBox(bitmap.width, bitmap.height, cutout, pre, framing);
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(bitmap, ...src, ...dst);
    return ctx.getImageData(0, 0, size, size).data;
  }
  let image = { px: pixelsOnWhite(bitmap), w: bitmap.width, h: bitmap.height };
  const f = decoded.jpeg ? dctFactor(image.w, image.h, pre.resize_size) : 1;
  if (f > 1) image = reduceBox(image.px, image.w, image.h, f);
  const { src, dst } = inputBox(image.w, image.h, cutout, pre, framing);
  const box = [src[0], src[1], src[0] + src[2], src[1] + src[3]];
  const part = resamplePillow(image.px, image.w, image.h, box, dst[2], dst[3], pre.interpolation);
  ctx.putImageData(new ImageData(part, dst[2], dst[3]), dst[0], dst[1]);
  return ctx.getImageData(0, 0, size, size).data;
}

// (pixel - mean) / std on the 0-255 scale, CHW float32, as imaging._normalise.
export function normalise(px, pre) {
  const plane = pre.input_size * pre.input_size;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    // float32 arithmetic as numpy does it: (pixel - mean) * (1 / std)
    const mean = Math.fround(pre.mean[c]), inv = Math.fround(1 / Math.fround(pre.std[c]));
    for (let i = 0; i < plane; i++) out[c * plane + i] = Math.fround(px[i * 4 + c] - mean) * inv;
  }
  return out;
}

export async function logits(model, tensor) {
  const { card, session } = model;
  const s = card.preprocess.input_size;
  const feeds = { [card.input_name]: new ort.Tensor("float32", tensor, [1, 3, s, s]) };
  const out = await session.run(feeds, [card.logits_name]);
  return Float32Array.from(out[card.logits_name].data);
}

// models.tasks.softmax, in float64.
export function softmax(values) {
  let max = -Infinity;
  for (const v of values) if (v > max) max = v;
  const out = new Float64Array(values.length);
  let total = 0;
  for (let i = 0; i < values.length; i++) total += out[i] = Math.exp(values[i] - max);
  for (let i = 0; i < out.length; i++) out[i] /= total;
  return out;
}

export function topK(probs, k, labels) {
  const idx = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]).slice(0, k);
  return idx.map((i) => ({ index: i, label: labels[i], score: probs[i] }));
}

// album/rules.py's Categorizer on one softmax row: mass per category (after the temperature), each divided by
// a power of its class count and weighted, normalised; the best must reach min_confidence or the photo is
// "other"; a finer label when one group holds half of the category's mass. Faces, the abstract-art head and
// the personal head do not run here.
export function categorize(probs, rules) {
  const k = rules.categories.length;
  const classCat = rules.class_category;
  let p = probs;
  if (rules.temperature !== 1) {
    p = probs.map((v) => Math.pow(Math.max(0, v), 1 / rules.temperature));
    const total = p.reduce((a, b) => a + b, 0);
    p = p.map((v) => (total > 0 ? v / total : 0));
  }
  const counts = new Float64Array(k), mass = new Float64Array(k);
  for (let i = 0; i < classCat.length; i++) { counts[classCat[i]] += 1; mass[classCat[i]] += p[i]; }
  const scores = new Float64Array(k);
  let total = 0;
  for (let j = 0; j < k; j++) {
    const factor = counts[j] === 0 ? 0
      : rules.weights[j] * Math.pow(Math.max(counts[j], rules.prior_floor), -rules.prior_correction);
    total += scores[j] = mass[j] * factor;
  }
  for (let j = 0; j < k; j++) scores[j] = total > 0 ? scores[j] / total : 0;
  let best = rules.other, bestScore = 0;
  if (k) { best = 0; for (let j = 1; j < k; j++) if (scores[j] > scores[best]) best = j; bestScore = scores[best]; }
  if (bestScore >= rules.min_confidence && best !== rules.other) {
    return { category: rules.categories[best], score: bestScore, fine: fineLabel(best, probs, rules) };
  }
  if (best === rules.other) return { category: rules.categories[best], score: bestScore, fine: null };
  return { category: rules.categories[rules.other], score: 1 - bestScore, fine: null };
}

function fineLabel(cat, probs, rules) {
  let total = 0;
  const groups = new Map();
  for (let i = 0; i < probs.length; i++) {
    if (rules.class_category[i] !== cat) continue;
    total += probs[i];
    const g = rules.class_fine[i];
    if (g >= 0) groups.set(g, (groups.get(g) || 0) + probs[i]);
  }
  if (total <= 0 || groups.size === 0) return null;
  let best = -1, bestMass = -1;
  for (const [g, m] of [...groups].sort((a, b) => a[0] - b[0])) if (m > bestMass) { best = g; bestMass = m; }
  return bestMass >= 0.5 * total ? rules.fine_labels[best] : null;
}

// One photo, start to end: decode, preprocess, run; timings in ms.
export async function classifyBlob(model, blob, framing, resampler = "pillow") {
  const t0 = performance.now();
  const decoded = await decode(blob, framing);
  const tensor = normalise(inputPixels(decoded, model.card.preprocess, framing, resampler), model.card.preprocess);
  decoded.bitmap.close();
  const t1 = performance.now();
  const out = await logits(model, tensor);
  const t2 = performance.now();
  return { logits: out, ms_preprocess: t1 - t0, ms_inference: t2 - t1 };
}
