"""The gallery and the benchmarks: serve, bench."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from photosift.cli.app import app
from photosift.cli.common import (
    DbOpt,
    Engine,
    EngineOpt,
    JsonOpt,
    RayAddressOpt,
    console,
    engine_settings,
    errors_to_exit,
    fail,
    settings,
)


@app.command()
def serve(
    db: DbOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="Loopback address to bind: 127.0.0.1, ::1 or localhost.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8765,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Browse, search and correct the catalog, and run scans, in a local web gallery."""
    try:
        from photosift.web.guard import is_loopback_host
        from photosift.web.server import listen, run_server
    except ImportError as exc:
        fail(f"the web gallery needs the web extra: pip install 'photosift[web]' ({exc})")
    if not is_loopback_host(host):
        # The gallery has no accounts: whoever reaches the port sees every photo and can start scans. A LAN
        # mode would need logins and TLS; an SSH tunnel gives both (docs/WEB.md, "Why loopback only").
        fail(
            f"refusing --host {host}: the gallery serves loopback only (127.0.0.1, ::1, localhost); from another "
            f"machine use an SSH tunnel: ssh -L {port}:127.0.0.1:{port} THIS-MACHINE",
            code=2,
        )
    config = settings(db, **engine_settings(engine, ray_address))
    with errors_to_exit():
        sock = listen(host, port)
        shown = f"[{host}]" if ":" in host else host
        console(stderr=True).print(
            f"photosift gallery on http://{shown}:{port}/ (Ctrl-C to stop)", markup=False
        )
        run_server(config, host=host, port=port, sock=sock)


@app.command()
def bench(
    images: Annotated[
        Path | None, typer.Option("--images", help="Corpus folder (default: 72 generated phone JPEGs).")
    ] = None,
    model: Annotated[str, typer.Option("--model", help="Model name or .onnx file.")] = "efficientnet-lite0",
    as_json: JsonOpt = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a bar chart (PNG).")] = None,
    make_corpus: Annotated[
        Path | None, typer.Option("--make-corpus", help="Only generate a corpus in this folder.")
    ] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="Phone photos to generate.")] = 72,
    mixed: Annotated[bool, typer.Option("--mixed", help="With --make-corpus: the mixed-format set.")] = False,
    scale: Annotated[
        bool,
        typer.Option(
            "--scale",
            help="Also: RSS over 10k photos, 100k and 1M-file rescans, overview at 100k, cold start.",
        ),
    ] = False,
    workroot: Annotated[Path, typer.Option("--workroot", help="Where corpora are generated.")] = Path(
        ".bench"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Tiny iteration counts (smoke test).")] = False,
    settle: Annotated[
        float, typer.Option("--settle", min=0, help="Per stage, wait up to S seconds for a quiet machine.")
    ] = 0.0,
    engine: Annotated[
        Engine,
        typer.Option("--engine", help="ray: also the local and ray engines, interleaved, and the driver."),
    ] = Engine.local,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="With --engine ray: runs per engine.")] = 3,
) -> None:
    """Measure decode, inference, the pipeline and the naive loop on one corpus; report the limit."""
    from photosift.bench import report as bench_report
    from photosift.bench import suite as b
    from photosift.bench.corpus import make_mixed_corpus, make_phone_corpus

    if make_corpus is not None:
        made = make_mixed_corpus(make_corpus) if mixed else make_phone_corpus(make_corpus, count)
        print(json.dumps({"folder": str(make_corpus), "files": len(made)}) if as_json else make_corpus)
        return
    opts = b.BenchOptions(
        images=images,
        model=model,
        workroot=workroot,
        corpus_count=count,
        scale=scale,
        settle_s=settle,
        engine=engine.value,
        engine_rounds=rounds,
    )
    if quick:
        opts.infer_photos, opts.naive_limit, opts.torch, opts.cli = 8, 2, False, False
        opts.memory_count, opts.rescan_count, opts.rescan_big = 20, 200, 0
    err = console(stderr=True)
    with errors_to_exit():
        report = b.run_bench(opts, log=(lambda s: None) if as_json else (lambda s: err.print(f"· {s}")))
    if plot is not None:
        bench_report.plot(report, plot)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        console().print(bench_report.render(report))
