"""Build src/photosift/data/label_hierarchy.json: WordNet 3.0 synonyms and hypernym chains of the ImageNet-1k classes.

    apt-get install wordnet-base                                  # dev-time only: WordNet 3.0 under /usr/share/wordnet
    python tools/build_label_hierarchy.py [--wordnet DIR] [--out FILE]

Inputs: the WordNet database (data.noun and noun.exc, format in wndb(5)) and src/photosift/data/imagenet_wnids.txt
(line i = wnid of model class i; where it came from is in its header and docs/data/README.md). Nothing else: no
network, no third-party package (the normalisation is shared with photosift.find.hierarchy, which is stdlib only).

Output (sorted keys, one item a line, so a rebuild from the same inputs is byte-identical and diffs read well):
  classes[i]  = {"wnid", "synonyms": the synset's lemmas, "paths": [[parent, grandparent, ..., entity], ...]}
                one path per way up to `entity` (WordNet has multiple inheritance: a breed is a dog, a dog is
                both a canine and a domestic animal, so a class can have several paths)
  synsets     = {wnid: {"lemmas", "gloss", "hypernyms"}} for every ancestor that a path names
  plurals     = noun.exc's irregular plurals whose base form is a lemma above ("geese" -> "goose")
Hypernyms are both `@` (hypernym) and `@i` (instance hypernym) pointers; lemmas have `_` turned into spaces.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from photosift.find.hierarchy import DETACH, normalize  # noqa: E402

DATA = ROOT / "src" / "photosift" / "data"
WNIDS = DATA / "imagenet_wnids.txt"
OUT = DATA / "label_hierarchy.json"
LABELS = ROOT / "src" / "photosift" / "models" / "imagenet_labels.json"
HYPERNYM_SYMBOLS = {"@", "@i"}
GLOSS_MAX = 80  # characters of an ancestor's gloss kept: the definition, not the example sentences


def read_nouns(path: Path) -> dict[str, tuple[list[str], list[str], str]]:
    """wnid -> (lemmas, hypernym wnids, gloss) for every synset of data.noun (wndb(5) "Data File Format")."""
    synsets = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # licence header lines: two spaces and a line number
                continue
            fields, _, gloss = line.partition(" | ")
            tok = fields.split()
            offset, w_cnt = tok[0], int(tok[3], 16)
            lemmas = [w.replace("_", " ") for w in tok[4 : 4 + 2 * w_cnt : 2]]
            p = 4 + 2 * w_cnt
            p_cnt = int(tok[p])
            ptrs = [tok[p + 1 + 4 * k : p + 5 + 4 * k] for k in range(p_cnt)]
            hypernyms = [
                f"n{target}" for sym, target, pos, _ in ptrs if sym in HYPERNYM_SYMBOLS and pos == "n"
            ]
            synsets[f"n{offset}"] = (lemmas, hypernyms, gloss.strip())
    return synsets


def short_gloss(gloss: str) -> str:
    definition = gloss.split("; ")[0].split('"')[0].strip(" ;")
    return definition if len(definition) <= GLOSS_MAX else definition[: GLOSS_MAX - 3].rstrip() + "..."


def paths_up(wnid: str, nouns: dict[str, tuple[list[str], list[str], str]]) -> list[list[str]]:
    """Every hypernym path from wnid's parent up to the root, in a stable order."""
    parents = nouns[wnid][1]
    if not parents:
        return [[]]
    return [[p, *rest] for p in parents for rest in paths_up(p, nouns)]


def read_wnids(path: Path) -> list[str]:
    lines = [s.strip() for s in path.read_text().splitlines()]
    return [s for s in lines if s and not s.startswith("#")]


def norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", re.sub(r"\(.*?\)", "", name)).strip().lower()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--wordnet", type=Path, default=Path("/usr/share/wordnet"), help="WordNet 3.0 dict directory"
    )
    ap.add_argument("--wnids", type=Path, default=WNIDS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "-v", "--verbose", action="store_true", help="list the class names that differ from WordNet's"
    )
    args = ap.parse_args()

    nouns = read_nouns(args.wordnet / "data.noun")
    wnids = read_wnids(args.wnids)
    if len(wnids) != 1000 or wnids != sorted(set(wnids)):
        sys.exit(f"{args.wnids}: expected 1000 sorted unique wnids, got {len(wnids)}")
    missing = [w for w in wnids if w not in nouns]
    if missing:
        sys.exit(f"not WordNet 3.0 noun synsets: {missing[:10]}")

    classes, ancestors = [], set()
    for wnid in wnids:
        paths = paths_up(wnid, nouns)
        if not all(p and p[-1] == "n00001740" for p in paths):
            sys.exit(f"{wnid}: a hypernym path does not end at entity.n.01")
        ancestors.update(a for p in paths for a in p)
        classes.append({"wnid": wnid, "synonyms": nouns[wnid][0], "paths": paths})
    synsets = {
        a: {"lemmas": nouns[a][0], "gloss": short_gloss(nouns[a][2]), "hypernyms": nouns[a][1]}
        for a in sorted(ancestors)
    }

    # Irregular plurals (noun.exc: "inflected base ..."), kept where a base is a lemma we ship and morphy's regular
    # detachment rules do not already reach one ("syringes" is listed as a plural of "syrinx": we keep "syringe").
    vocab = {normalize(s) for c in classes for s in c["synonyms"]}
    vocab |= {normalize(s) for v in synsets.values() for s in v["lemmas"]}
    plurals = {}
    for line in (args.wordnet / "noun.exc").read_text().splitlines():
        inflected, *bases = (normalize(w) for w in line.split())
        regular = {inflected[: -len(suf)] + rep for suf, rep in DETACH if inflected.endswith(suf)}
        known = [b for b in bases if b in vocab and b != inflected]
        if known and inflected not in vocab and not regular & vocab:
            plurals[inflected] = known[0]

    out = {
        "source": {
            "wordnet": "WordNet 3.0 (Princeton), data.noun and noun.exc; licence in WORDNET-LICENSE",
            "wnids": "imagenet_wnids.txt",
        },
        "classes": classes,
        "synsets": synsets,
        "plurals": plurals,
    }
    text = json.dumps(out, sort_keys=True, ensure_ascii=False, indent=0) + "\n"  # a line per item: diffable
    args.out.write_text(text, encoding="utf-8")
    n_paths = sum(len(c["paths"]) for c in classes)
    multi = sum(len(c["paths"]) > 1 for c in classes)
    print(
        f"{args.out}: {len(text.encode()) / 1e3:.0f} kB, {len(classes)} classes, {len(synsets)} ancestors, "
        f"{n_paths} paths ({multi} classes with more than one), {len(plurals)} irregular plurals"
    )

    # Cross-check: the project's display name is usually one of its synset's lemmas; it was cleaned up for the rest.
    if LABELS.exists():
        labels = json.loads(LABELS.read_text())
        differ = [
            (i, n, c)
            for i, (n, c) in enumerate(zip(labels, classes, strict=True))
            if norm(n) not in {norm(s) for s in c["synonyms"]}
        ]
        print(
            f"{len(differ)} of the project's class names are not among their synset's lemmas"
            + ":" * args.verbose
        )
        for i, name, c in differ if args.verbose else ():
            print(f"  {i} {name!r}: {c['wnid']} {c['synonyms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
