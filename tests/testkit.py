"""What the test modules share: the committed test photos, and one session on the packaged model.

Imported by name (``from testkit import DATA``): pytest puts tests/ on sys.path (no __init__.py, prepend
import mode), so module-level values such as ``PHOTOS`` can feed ``pytest.mark.parametrize`` where a fixture
cannot. conftest.py builds its fixtures from these.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).parent / "data"
# The committed photos the model is tested on (other files in data/ are fixtures of other kinds).
PHOTOS = sorted(p for p in DATA.iterdir() if p.suffix.lower() in {".jpg", ".png"})


@lru_cache(maxsize=1)
def lite0_engine() -> Any:
    """The packaged FP32 model on the CPU, opened once per test run (models.session.OrtEngine)."""
    from photosift.models.registry import resolve_model
    from photosift.models.session import OrtEngine

    return OrtEngine(resolve_model("efficientnet-lite0"), provider="cpu", intra_op_threads=2)


def lite0_outputs(photos: Iterable[Path | str]) -> dict[str, np.ndarray]:
    """{"logits", "embedding"} of the packaged model for ``photos`` (a name is a file in tests/data)."""
    from photosift.core.imaging import load_tensor

    engine = lite0_engine()
    x = np.stack([load_tensor(DATA / p, engine.card.preprocess) for p in photos])
    out: dict[str, np.ndarray] = engine.run(x)
    return out


def lite0_probs(photos: Iterable[Path | str]) -> np.ndarray:
    """The packaged model's class probabilities (models.tasks.softmax of its logits) for ``photos``."""
    from photosift.models.tasks import softmax

    return softmax(lite0_outputs(photos)["logits"])


class ScanGate:
    """Holds a gallery scan inside its ``at``-th batch of inference, so a test acts while the scan is certainly
    running: ``entered`` is set when that batch reaches the model, which runs it once ``release`` is set (or
    after ``timeout`` seconds, so a failing test cannot hang the suite)."""

    def __init__(self, at: int = 1, timeout: float = 120.0) -> None:
        self.at, self.timeout = at, timeout
        self.entered, self.release = threading.Event(), threading.Event()
        self._calls = 0

    def factory(self, engine: Any, batch_size: int = 2) -> Callable[[Any, Any], Any]:
        """A ``pipeline_factory`` for web.scan.ScanManager / web.app.create_app: the real pipeline on ``engine``
        with its inference passing through this gate."""
        from photosift.run.driver import ClassifyOptions, Pipeline

        gate = self

        class GatedEngine:
            card, model, provider = engine.card, engine.model, engine.provider

            def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
                gate._calls += 1
                if gate._calls == gate.at:
                    gate.entered.set()
                    gate.release.wait(gate.timeout)
                out: dict[str, np.ndarray] = engine.run(batch)
                return out

        def make(settings: Any, catalog: Any) -> Any:
            pipe = Pipeline(engine, catalog, options=ClassifyOptions(batch_size=batch_size, workers=1))
            pipe.stages.engine = GatedEngine()
            return pipe

        return make
