"""Question detection (shared/text/questions.py) on the labelled set: precision and recall per split.

    python -m bench.questions [--data tests/data/questions.jsonl] [--errors]

The set (tests/data/questions.jsonl) holds chat lines and transcript sentences, each labelled
question / not, with its source (chat, speech), case (plain, no "?", rhetorical, statement with
"?", tag, mixed, statement) and split: ``dev`` (the rules were written against it), ``holdout``
and ``holdout2`` (written before their first run), ``holdout3`` (written in a later round and
measured once, untuned). Prints one line per split and per case and, with ``--errors``, every
misclassified line. tests/unit/test_text_questions.py asserts precision and recall >= 0.9.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from shared.text import is_question

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "questions.jsonl"


def scores(rows: list[dict[str, object]]) -> tuple[float, float, int, int, int]:
    tp = fp = fn = 0
    for r in rows:
        got, want = is_question(str(r["text"])), bool(r["question"])
        tp += got and want
        fp += got and not want
        fn += want and not got
    return tp / max(1, tp + fp), tp / max(1, tp + fn), tp, fp, fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--errors", action="store_true", help="list the misclassified lines")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    groups: dict[str, list[dict[str, object]]] = defaultdict(list)
    for r in rows:
        groups[f"split={r['split']}"].append(r)
        groups[f"source={r['source']}"].append(r)
        groups[f"case={r['case']}"].append(r)
    print(f"{'set':<24} {'n':>4} {'questions':>9} {'precision':>9} {'recall':>7}")
    for name, part in [("all", rows), *sorted(groups.items())]:
        p, r, *_ = scores(part)
        asked = sum(1 for x in part if x["question"])
        print(f"{name:<24} {len(part):>4} {asked:>9} {p:>9.3f} {r:>7.3f}")
    if args.errors:
        for r in rows:
            if is_question(str(r["text"])) != bool(r["question"]):
                print(f"  wrong ({'question' if r['question'] else 'not a question'}, {r['split']}): {r['text']}")


if __name__ == "__main__":
    main()
