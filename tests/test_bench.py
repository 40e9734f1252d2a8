"""The benchmark suite and its corpus generator: correctness of what they make and report, never timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from photosift.bench import corpus
from photosift.bench.suite import BenchOptions, run_bench
from photosift.cli import app
from testkit import DATA

SOURCES = sorted(DATA.glob("*.jpg"))


def _subsampling(im: Image.Image) -> tuple[int, int]:
    layers = im.layer  # type: ignore[attr-defined]
    return layers[0][1], layers[0][2]  # luma sampling factors: (2, 2) means 4:2:0


def test_phone_corpus_makes_baseline_420_jpegs_with_orientation(tmp_path: Path) -> None:
    paths = corpus.make_phone_corpus(tmp_path, 4, sources=SOURCES, size=(400, 300))
    assert [p.name for p in paths] == [f"IMG_{i:05d}.jpg" for i in range(4)]
    orientations = []
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "JPEG"
            assert im.size == (400, 300)
            assert im.mode == "RGB"
            assert not im.info.get("progressive")
            assert _subsampling(im) == (2, 2)
            orientations.append(im.getexif().get(0x0112))
    assert orientations == list(corpus.ORIENTATIONS[:4])
    # Deterministic and idempotent: a second call keeps the files.
    before = [p.stat().st_mtime_ns for p in paths]
    corpus.make_phone_corpus(tmp_path, 4, sources=SOURCES, size=(400, 300))
    assert [p.stat().st_mtime_ns for p in paths] == before


def test_phone_photo_has_grain_and_distinct_content() -> None:
    a = corpus.phone_photo(SOURCES[0], 1, (200, 150))
    b = corpus.phone_photo(SOURCES[0], 2, (200, 150))
    assert a.size == (200, 150)
    assert a.tobytes() != b.tobytes()


def test_mixed_corpus_formats(tmp_path: Path) -> None:
    made = corpus.make_mixed_corpus(tmp_path, sources=SOURCES, scale=0.05)
    formats = {}
    for p in made:
        with Image.open(p) as im:
            formats[p.name] = (im.format, im.info.get("progressive"))
    assert formats["progressive_0.jpg"] == ("JPEG", 1)
    assert formats["screenshot_0.png"][0] == "PNG"
    assert formats["web_0.jpg"][0] == "JPEG"


def test_with_comment_keeps_pixels_changes_bytes() -> None:
    data = corpus.small_jpeg_bytes(SOURCES[0], (64, 48))
    other = corpus.with_comment(data, b"7")
    assert other != data
    import io

    assert Image.open(io.BytesIO(other)).tobytes() == Image.open(io.BytesIO(data)).tobytes()


def test_many_tiny_and_small(tmp_path: Path) -> None:
    tiny = corpus.make_many_tiny(tmp_path / "t", 5)
    assert len(list(tiny.rglob("*.jpg"))) == 5
    small = corpus.make_many_small(tmp_path / "s", 3, variants=2)
    files = sorted(small.rglob("*.jpg"))
    assert len(files) == 3
    assert len({f.read_bytes() for f in files}) == 3


@pytest.fixture()
def tiny_corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    corpus.make_phone_corpus(folder, 6, sources=SOURCES, size=(640, 480))
    return folder


def _close(a: float, b: float, rel: float = 0.02) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 0.01


def _check_report(report: dict, files: int) -> None:
    """The report's numbers must be consistent with what was measured (no timing goals: those are the
    benchmark's business, docs/BENCHMARKS.md)."""
    stages = {s["name"]: s for s in report["stages"]}
    assert {"decode_1t", "infer_b1", "infer_b8", "infer_b16", "infer_b32", "pipeline", "naive"} <= set(stages)
    cores = report["machine"]["cores"]
    assert cores >= 1 and report["corpus"]["files"] == files
    for s in stages.values():
        if s["photos"]:
            # every rate is derived from the stage's own photos, wall time and process CPU time
            assert _close(s["photos_per_s"], s["photos"] / s["wall_s"]), s
            assert _close(s["ms_per_photo"], 1000 * s["wall_s"] / s["photos"]), s
            assert _close(s["core_ms_per_photo"], 1000 * s["cpu_s"] / s["photos"]), s
            assert _close(s["cpu_util"], s["cpu_s"] / (s["wall_s"] * cores)), s
            assert 0 <= s["cpu_util"] <= 1.5 and s["peak_rss_mb"] > 10
    for name in ("pipeline", "pipeline_no_people", "decode_1t"):
        assert stages[name]["photos"] == files, name
    assert 0 < stages["naive"]["photos"] <= files  # --quick caps the naive loop
    assert stages["pipeline"]["extra"]["classified"] == files
    lim = report["limit"]
    # the limit is the formula it states, from the stages it names
    decode = stages["decode_1t"]["cpu_s"] * 1000 / stages["decode_1t"]["photos"]
    infer = stages["infer_b16_intra1"]["cpu_s"] * 1000 / stages["infer_b16_intra1"]["photos"]
    assert _close(lim["decode_core_ms"], decode) and _close(lim["infer_core_ms"], infer)
    assert _close(lim["photos_per_s"], 1000 * lim["cores"] / (lim["decode_core_ms"] + lim["infer_core_ms"]))
    assert _close(
        lim["pipeline_fraction"], stages["pipeline_no_people"]["photos_per_s"] / lim["photos_per_s"]
    )
    naive = stages["naive"]["photos_per_s"]
    assert _close(report["speedup_vs_naive"], stages["pipeline_no_people"]["photos_per_s"] / naive)
    assert _close(report["speedup_with_people_vs_naive"], stages["pipeline"]["photos_per_s"] / naive)


@pytest.mark.slow
def test_run_bench_with_scale_suite(tiny_corpus: Path, tmp_path: Path) -> None:
    opts = BenchOptions(
        images=tiny_corpus,
        workroot=tmp_path / "work",
        infer_photos=4,
        naive_limit=2,
        torch=False,
        cli=False,
        scale=True,
        memory_count=5,
        rescan_count=30,
        rescan_big=40,
        correction_counts=(60,),
        correction_repeats=2,
    )
    report = run_bench(opts)
    _check_report(report, 6)
    assert report["rescan"]["files"] == 30
    assert report["rescan"]["unchanged"] == 30
    assert report["rescan"]["classified"] == 0
    assert report["rescan"]["peak_rss_mb"] > 10
    assert report["rescan_big"]["unchanged"] == 40
    assert report["overview"]["photos"] == 30
    assert report["overview"]["overview_queries_ms"] > 0
    assert set(report["overview"]["pages_ms"]) == {"page /", "page /category/animals?page=1"}
    assert report["memory"]["photos"] == 5
    assert report["memory"]["peak_rss_mb"] > 10
    assert report["cold_start"]["best_s"] > 0
    (corrections,) = report["corrections"]  # corrections and re-derivation on a written catalog of 60 photos
    assert corrections["photos"] == 60 and corrections["correct_s"] > 0 and corrections["undo_s"] > 0
    assert corrections["cli_correct_s"] > 0 and corrections["recategorize_all_s"] > 0
    # Written as classify decides, so re-deriving every category changes none of them.
    assert corrections["recategorize_changed"] == 0
    find = report["find"]  # search, similar and duplicates on a written catalog of rescan_count photos
    assert find["catalog"]["photos"] == 30 and find["similar"]["queries"] > 0
    assert set(find["search"]["warm"]) >= {"dog", "june 2024"} and find["duplicates"]["ms"] > 0


@pytest.mark.slow
def test_bench_cli_json_and_plot(tiny_corpus: Path, tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    result = CliRunner().invoke(
        app, ["bench", "--images", str(tiny_corpus), "--json", "--quick", "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    _check_report(report, 6)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_bench_cli_make_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOTOSIFT_BENCH_SOURCES", str(DATA))
    out = tmp_path / "c"
    result = CliRunner().invoke(app, ["bench", "--make-corpus", str(out), "--count", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"] == 1
    with Image.open(out / "IMG_00000.jpg") as im:
        assert im.size == corpus.PHONE_SIZE


# -- GPU paths, exercised on the CPU (no GPU on the development machines) ------------------------------------
def test_io_binding_matches_plain_run_on_cpu() -> None:
    import numpy as np

    from photosift.models.registry import resolve_model
    from photosift.models.session import OrtEngine

    engine = OrtEngine(resolve_model("efficientnet-lite0"), provider="cpu", intra_op_threads=1)
    assert engine.io_device is None  # CPU path unchanged: plain session.run
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    plain = engine.run(x)
    bound = engine.run_bound(x, "cpu")
    assert plain.keys() == bound.keys() == {"logits", "embedding"}
    for role in plain:
        assert np.array_equal(plain[role], bound[role]), role


def test_gpu_decode_falls_back_with_a_reason(tmp_path: Path) -> None:
    from photosift.core.catalog import Catalog
    from photosift.models.registry import resolve_model
    from photosift.models.session import OrtEngine
    from photosift.run.driver import ClassifyOptions, Pipeline

    engine = OrtEngine(resolve_model("efficientnet-lite0"), provider="cpu", intra_op_threads=1)
    with Catalog(tmp_path / "c.db") as cat:
        pipe = Pipeline(engine, cat, options=ClassifyOptions(gpu_decode=True, batch_size=2))
        if pipe.stages.gpu_decoder is None:
            assert "decoding on the CPU" in pipe.gpu_decode_note
        summary = pipe.run([str(DATA / "chelsea.jpg"), str(DATA / "camera.png")])
    assert summary.classified == 2


def test_gpu_decoder_tensor_math_matches_cpu_path() -> None:
    """The GPU half (orientation, antialiased resize, crop, normalise) run with torch on the CPU."""
    import io

    import numpy as np

    torch = pytest.importorskip("torch")
    from photosift.core import imaging

    def pil_decode(raw: object, device: str = "cpu") -> object:
        im = Image.open(io.BytesIO(raw.numpy().tobytes())).convert("RGB")  # type: ignore[attr-defined]
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)

    dec = imaging.GpuJpegDecoder(device="cpu", decode_jpeg=pil_decode)
    pre = imaging.Preprocess(224, 256, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))
    frame = corpus.phone_photo(SOURCES[0], 3, (400, 300))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        frame.save(buf, "JPEG", quality=95, exif=exif.tobytes())
        data = buf.getvalue()
        gpu = dec.load_tensor(data, "x.jpg", pre)
        cpu = imaging.load_tensor("x.jpg", pre, data)
        assert gpu.shape == cpu.shape == (3, 224, 224)
        # Another decoder and resampler: close (~1/255 of the range), never bit-identical; a wrong
        # orientation would be off by far more.
        assert float(np.abs(gpu - cpu).mean()) < 0.02, orientation
    # Not a JPEG: straight to the CPU decoder.
    png = (DATA / "camera.png").read_bytes()
    assert np.array_equal(dec.load_tensor(png, "c.png", pre), imaging.load_tensor("c.png", pre, png))


# -- hot-path changes keep exact outputs -------------------------------------------------------------------------
@pytest.mark.parametrize("subsampling", [0, 1, 2])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_fast_scaled_jpeg_is_pixel_identical_to_pillow_draft(
    subsampling: int, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from photosift.core import imaging

    if imaging._simplejpeg is None:
        pytest.skip("simplejpeg not installed: Pillow's draft path is the only one")
    for orientation, size, progressive in [
        (1, (1000, 750), False),
        (6, (2100, 1500), True),
        (8, (523, 600), False),
    ]:
        frame = corpus.phone_photo(SOURCES[0], orientation, size)
        if mode == "L":
            frame = frame.convert("L")
        exif = Image.Exif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        frame.save(
            buf, "JPEG", quality=90, subsampling=subsampling, exif=exif.tobytes(), progressive=progressive
        )
        data = buf.getvalue()
        for min_side in (100, 256, 600):
            fast = imaging.decode(data, "x.jpg", min_side=min_side)
            with monkeypatch.context() as m:
                m.setattr(imaging, "_simplejpeg", None)
                slow = imaging.decode(data, "x.jpg", min_side=min_side)
            assert (fast.size, fast.mode) == (slow.size, slow.mode)
            assert fast.tobytes() == slow.tobytes()
    # Truncated data still gets Pillow's verdict.
    with pytest.raises(imaging.UnreadableImage):
        imaging.decode(data[: len(data) // 2], "t.jpg", min_side=64)
