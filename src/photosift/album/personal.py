"""A personal head: a small classifier learned from the user's corrections, applied after the base model and rules.

The rules (categories.py) know only what ImageNet knows; a user who files cartoon fish under animals, or wants a
"receipts" album, teaches photosift with ``photosift correct``. From those corrections we fit a *residual*
softmax regression over the 1280-d embeddings the catalog already stores (so retraining never re-runs the model):

    logits = prior_weight * log(rules_posterior + 0.001) + W @ normalise(embedding - mean) + b
    probs  = softmax(logits)

The rules' posterior (:meth:`photosift.album.rules.Categorizer.posterior`) is a fixed offset, so with no evidence
the head agrees with the rules, and the learned part only has to explain where the user disagrees with them.
We measured the alternatives on album-dev and on 183 other photos (docs/CATEGORIES.md): a plain classifier on
five corrections per category is *worse* than the rules (it forgets what ImageNet knows), and one trained on the
rules' own labels just copies them; the residual form is the one that gains (+4 points accuracy on the photos
that were not corrected). ``normalise`` is L2 normalisation after centring on the library's mean embedding.

Training is numpy only (Nesterov gradient descent on a convex loss, well under a second). The head is saved as
a small ONNX graph (Sub, LpNormalization, Gemm, Log, Add, Softmax; inputs ``embedding`` and ``rules``) so applying
it needs only onnxruntime, like the base model; *building* that graph needs the ``onnx`` package, imported lazily
by :meth:`PersonalHead.save`. :func:`load_head` reads everything back through onnxruntime alone.

How the sources combine (the catalog enforces the first rule; :func:`combine` implements the rest):

1. an explicit user correction always wins and is never overridden by anything trained from it;
2. the personal head's category wins when its confidence is at least ``min_confidence`` (0.3; the head already
   starts from the rules, so it disagrees with them only where corrections pulled it) — this is also the only
   way a photo gets a user category ("receipts", "our cat"), which the rules cannot predict;
3. otherwise the rules' category stands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photosift.album.rules import CategoryResult
from photosift.core.errors import ModelError, PhotosiftError
from photosift.models.tasks import softmax

HEAD_FILE = "personal-head.onnx"
_META_KEY = "photosift.personal_head"
_EPS = 1e-3  # floor under the rules' posterior: log(0) would make a category unreachable
# A user category has no rules score at all; this stand-in makes it reachable from a few corrections
# while still needing evidence (log 0.05 is 3 nats below an even split between two categories).
_USER_PRIOR = 0.05


@dataclass(eq=False)
class PersonalHead:
    """The residual head; see the module docstring for the formula. ``categories`` are the rules' categories in
    order (the columns of the posterior it expects) followed by categories only corrections used."""

    categories: tuple[str, ...]
    rule_categories: int  # how many leading categories come from the rules' posterior
    mean: np.ndarray  # (D,) library mean embedding
    weight: np.ndarray  # (K, D)
    bias: np.ndarray  # (K,)
    prior_weight: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def offset(self, rules_posterior: np.ndarray) -> np.ndarray:
        """(N, K) fixed part of the logits from the rules' posterior (N, rule_categories)."""
        post = np.asarray(rules_posterior, dtype=np.float64)
        if post.ndim == 1:
            post = post[None]
        if post.shape[1] != self.rule_categories:
            raise ModelError(
                f"personal head expects {self.rule_categories} rules categories, got {post.shape[1]} "
                "(the rules changed: retrain it)"
            )
        extra = np.full((post.shape[0], len(self.categories) - self.rule_categories), _USER_PRIOR)
        return self.prior_weight * np.log(np.hstack([post, extra]) + _EPS)

    def features(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.shape[1] != self.dim:
            raise ModelError(
                f"personal head expects {self.dim}-d embeddings, got {x.shape[1]}-d (another model?)"
            )
        return _normalise(x - self.mean)

    def predict_proba(self, embeddings: np.ndarray, rules_posterior: np.ndarray) -> np.ndarray:
        return softmax(self.offset(rules_posterior) + self.features(embeddings) @ self.weight.T + self.bias)

    def predict(self, embeddings: np.ndarray, rules_posterior: np.ndarray) -> list[tuple[str, float]]:
        """(category, confidence) per photo."""
        p = self.predict_proba(embeddings, rules_posterior)
        best = p.argmax(axis=1)
        return [(self.categories[int(j)], float(p[n, j])) for n, j in enumerate(best)]

    def save(self, path: Path) -> Path:
        """Write the head as ONNX to ``path`` (a directory gets ``personal-head.onnx``); returns the file path."""
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        path = Path(path)
        target = path / HEAD_FILE if path.is_dir() or not path.suffix else path
        target.parent.mkdir(parents=True, exist_ok=True)
        k, d = self.weight.shape
        r = self.rule_categories
        consts = {
            "mean": self.mean.astype(np.float32),
            "W": self.weight.astype(np.float32),
            "b": self.bias.astype(np.float32),
            "eps": np.array(_EPS, np.float32),
            "alpha": np.array(self.prior_weight, np.float32),
            "user_prior": np.full((1, k - r), _USER_PRIOR, np.float32),
            "axes1": np.array([1], np.int64),
            "zeros_user": np.zeros((1, k - r), np.float32),
        }
        nodes = [
            helper.make_node("Sub", ["embedding", "mean"], ["centred"]),
            helper.make_node("LpNormalization", ["centred"], ["unit"], axis=1, p=2),
            helper.make_node("Gemm", ["unit", "W", "b"], ["learned"], transB=1),
        ]
        if k > r:  # user categories: append the constant stand-in prior to every row of the batch
            nodes += [
                helper.make_node("ReduceSum", ["rules", "axes1"], ["row_sum"], keepdims=1),  # (N, 1)
                helper.make_node("Mul", ["row_sum", "zeros_user"], ["zeros"]),  # (N, k - r) zeros
                helper.make_node("Add", ["zeros", "user_prior"], ["user_cols"]),
                helper.make_node("Concat", ["rules", "user_cols"], ["prior"], axis=1),
            ]
            prior = "prior"
        else:
            prior = "rules"
        nodes += [
            helper.make_node("Add", [prior, "eps"], ["prior_eps"]),
            helper.make_node("Log", ["prior_eps"], ["log_prior"]),
            helper.make_node("Mul", ["log_prior", "alpha"], ["offset"]),
            helper.make_node("Add", ["offset", "learned"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ]
        used = {i for n in nodes for i in n.input}
        graph = helper.make_graph(
            nodes,
            "photosift_personal_head",
            [
                helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", d]),
                helper.make_tensor_value_info("rules", TensorProto.FLOAT, ["batch", r]),
            ],
            [
                helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", k]),
                helper.make_tensor_value_info("learned", TensorProto.FLOAT, ["batch", k]),
            ],
            [numpy_helper.from_array(v, name) for name, v in consts.items() if name in used],
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="photosift"
        )
        model.ir_version = 8  # readable by every onnxruntime photosift supports
        meta = {
            "categories": list(self.categories),
            "rule_categories": r,
            "prior_weight": self.prior_weight,
            **self.info,
        }
        helper.set_model_props(model, {_META_KEY: json.dumps(meta)})
        onnx.checker.check_model(model)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(model.SerializeToString())
        tmp.replace(target)  # never leave a half-written head behind
        return target


def load_head(path: Path) -> PersonalHead | None:
    """The head saved at ``path`` (a file, or a directory holding ``personal-head.onnx``); None if there is none.

    Uses only onnxruntime. The mean and weights are read back by running the graph: the ``learned`` output on
    ``mean + e_i`` directions would need the mean first, so the mean is stored in the metadata as well.
    """
    from photosift.models.session import open_session

    path = Path(path)
    target = path / HEAD_FILE if path.is_dir() else path
    if not target.is_file():
        return None
    try:
        sess = open_session(target)
        meta = json.loads(sess.get_modelmeta().custom_metadata_map[_META_KEY])
        categories = tuple(str(c) for c in meta.pop("categories"))
        rule_categories = int(meta.pop("rule_categories"))
        prior_weight = float(meta.pop("prior_weight"))
        mean = np.asarray(meta.pop("mean"), dtype=np.float64)
        d = int(sess.get_inputs()[0].shape[1])
        # learned(x) = W @ unit(x - mean) + b. Probe with x = mean + e_i (unit vector e_i) and x = mean - e_i:
        # their average is b, their half-difference is W[:, i].
        eye = np.eye(d, dtype=np.float64)
        rules = np.full((d, rule_categories), 1.0 / max(1, rule_categories), np.float32)
        plus = sess.run(["learned"], {"embedding": (mean + eye).astype(np.float32), "rules": rules})[0]
        minus = sess.run(["learned"], {"embedding": (mean - eye).astype(np.float32), "rules": rules})[0]
    except Exception as exc:
        raise ModelError(
            f"{target}: not a photosift personal head ({str(exc).strip()[:200]}); delete it to retrain"
        ) from None
    weight = ((plus.astype(np.float64) - minus) / 2).T
    bias = ((plus.astype(np.float64) + minus) / 2).mean(axis=0)
    return PersonalHead(categories, rule_categories, mean, weight, bias, prior_weight, meta)


def train_head(
    embeddings: np.ndarray,
    labels: Sequence[str],
    rules_posterior: np.ndarray,
    rule_categories: Sequence[str],
    *,
    library_mean: np.ndarray | None = None,
    prior_weight: float = 0.5,
    l2: float = 0.01,
    max_iter: int = 300,
) -> PersonalHead:
    """Fit the residual head on corrected photos.

    ``embeddings`` (N, D), ``labels`` (the corrected category of each), ``rules_posterior`` (N, R) for the same
    photos, whose columns are ``rule_categories``. ``library_mean``: the mean embedding of the whole library
    (default: of these photos). Labels outside ``rule_categories`` become user categories of the head.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(labels) or len(labels) == 0:
        raise PhotosiftError(f"{x.shape[0]} embeddings but {len(labels)} labels")
    rules = tuple(rule_categories)
    user = tuple(sorted({lab for lab in labels if lab not in rules}))
    categories = rules + user
    mean = np.asarray(library_mean if library_mean is not None else x.mean(axis=0), dtype=np.float64)
    head = PersonalHead(
        categories,
        len(rules),
        mean,
        np.zeros((len(categories), x.shape[1])),
        np.zeros(len(categories)),
        prior_weight,
    )
    z = head.features(x)
    offset = head.offset(rules_posterior)
    y = np.zeros((len(labels), len(categories)))
    y[np.arange(len(labels)), [categories.index(lab) for lab in labels]] = 1.0
    # Only categories the user corrected towards get a learned part: a category nobody corrected would
    # otherwise learn "never me" from every example and disappear although the rules still predict it.
    seen = y.sum(axis=0) > 0
    head.weight, head.bias = _fit(z, y, offset, seen, l2, max_iter)
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    head.info = {"trained_at": time.time(), "examples": counts, "l2": l2, "mean": mean.tolist()}
    return head


def _fit(
    z: np.ndarray, y: np.ndarray, offset: np.ndarray, seen: np.ndarray, l2: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """L2-regularised softmax regression with a fixed logit offset, by Nesterov-accelerated gradient descent.

    Rows of categories not ``seen`` stay zero. Weights and biases are both regularised: with the rules as the
    offset, "no change" is the natural default. The loss is convex and the features unit-length, so a fixed
    step from the Lipschitz bound converges without line searches; the iteration count bounds the time.
    """
    n, d = z.shape
    k = y.shape[1]
    weight, bias = np.zeros((k, d)), np.zeros(k)
    lip = 0.5 * float(np.linalg.norm(z, 2) ** 2) / n + 0.5 + l2
    step = 1.0 / lip
    prev_w, prev_b = weight, bias
    for it in range(1, max_iter + 1):
        mom = (it - 1) / (it + 2)
        yw = weight + mom * (weight - prev_w)
        yb = bias + mom * (bias - prev_b)
        g = (softmax(offset + z @ yw.T + yb) - y) / n
        g[:, ~seen] = 0.0
        prev_w, prev_b = weight, bias
        weight = yw - step * (g.T @ z + l2 * yw)
        bias = yb - step * (g.sum(axis=0) + l2 * yb)
    return weight, bias


def combine(
    rules: CategoryResult,
    head: tuple[str, float] | None,
    correction: str | None = None,
    min_confidence: float = 0.3,
) -> CategoryResult:
    """The category to show: correction > personal head (when confident) > rules. See the module docstring."""
    if correction is not None:
        return CategoryResult(correction, 1.0)
    if head is not None and head[1] >= min_confidence:
        if head[0] == rules.category:
            return CategoryResult(rules.category, max(rules.score, head[1]), rules.fine)
        return CategoryResult(head[0], head[1])
    return rules


def cross_validate(
    embeddings: np.ndarray,
    labels: Sequence[str],
    probs: np.ndarray,
    people: Sequence[Any | None] | None = None,
    *,
    per_category: int = 5,
    seeds: int = 10,
    protocol: str = "random",
    min_confidence: float = 0.3,
    **train_kw: Any,
) -> dict[str, Any]:
    """Correct ``per_category`` photos of each category, train, and score the photos *not* corrected.

    ``protocol``: "random" picks the corrected photos at random; "errors" picks photos the rules got wrong first
    (what a user actually corrects), then random ones. A category with too few photos gives all but one.
    Returns mean accuracies over ``seeds`` draws: ``base`` (rules alone), ``combined`` (rules + head via
    :func:`combine`), ``gain``, and the per-draw values.
    """
    from photosift.album.rules import Categorizer

    cat = Categorizer()
    results = cat.categorize(probs, people)
    base = [r.category for r in results]
    posterior = cat.posterior(probs, people, results)
    emb = np.asarray(embeddings, dtype=np.float64)
    lib_mean = emb.mean(axis=0)
    truth = np.array(labels)
    rng = np.random.default_rng(0)
    runs: dict[str, list[float]] = {"base": [], "combined": []}
    for _ in range(seeds):
        chosen: list[int] = []
        for c in sorted(set(labels)):
            rows = np.nonzero(truth == c)[0]
            take = min(per_category, max(1, len(rows) - 1))
            if protocol == "errors":
                wrong = [int(i) for i in rng.permutation(rows) if base[i] != c]
                right = [int(i) for i in rng.permutation(rows) if base[i] == c]
                chosen += (wrong + right)[:take]
            else:
                chosen += [int(i) for i in rng.choice(rows, size=take, replace=False)]
        picked = set(chosen)
        rest = np.array([i for i in range(len(labels)) if i not in picked])
        head = train_head(
            emb[chosen], [labels[i] for i in chosen], posterior[chosen], cat.rules.categories,
            library_mean=lib_mean, **train_kw,
        )  # fmt: skip
        pred = head.predict(emb[rest], posterior[rest])
        comb = [
            combine(results[i], h, None, min_confidence).category for h, i in zip(pred, rest, strict=True)
        ]
        runs["base"].append(float(np.mean([base[i] == labels[i] for i in rest])))
        runs["combined"].append(float(np.mean([c == labels[i] for c, i in zip(comb, rest, strict=True)])))
    out: dict[str, Any] = {k: round(float(np.mean(v)), 4) for k, v in runs.items()}
    out["gain"] = round(out["combined"] - out["base"], 4)
    out.update(per_category=per_category, seeds=seeds, protocol=protocol)
    out["runs"] = {k: [round(x, 4) for x in v] for k, v in runs.items()}
    return out


def base_head(model_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of the base model's classifier, such that ``logits = embedding @ W.T + b``.

    Lets the catalog rebuild the *full* softmax from a stored float16 embedding (same categories as at classify
    time on every photo we tried; top-k alone is not enough, see docs/CATEGORIES.md). Needs ``onnx``.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    init = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gemm" and node.input[0] == "embedding" and node.input[1] in init:
            weight = numpy_helper.to_array(init[node.input[1]]).astype(np.float32)
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            weight = weight if trans_b else weight.T
            bias = (
                numpy_helper.to_array(init[node.input[2]]).astype(np.float32)
                if len(node.input) > 2 and node.input[2] in init
                else np.zeros(weight.shape[0], np.float32)
            )
            return weight, bias
    raise ModelError(
        f"{model_path}: no Gemm from 'embedding' to logits; cannot rebuild logits from embeddings"
    )


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = x / np.maximum(norm, 1e-12)
    return out
