"""Gallery replay accuracy and speed on a generated gallery recording (``--layout gallery``).

    python -m bench.replay_gallery [--seconds 16] [--cols 2] [--tiles 4] [--json OUT]

Generates the gallery (shared.testkit.gallery: real photos in a grid, faces turning away, an
empty tile for a stretch, espeak-ng speech on the mixed track with the speaker's mouth moving),
replays it in-process with the defaults and prints, per participant, the agreement of present /
attentive / speaking with the script (seconds within 1 s of a change excluded), the tile boxes
against the truth, the speaker-attribution share (seconds with one speaker given to exactly that
participant) and coverage (attributed / voiced seconds), and the wall time and real-time factor.
``--seconds`` longer than 16 repeats the default script's pattern (tiles keep their roles).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def _tiles(seconds: float, n: int) -> list[Any]:
    from shared.testkit.gallery import GalleryTile, default_gallery, tile_script

    base = default_gallery()
    period = 16.0
    reps = max(1, round(seconds / period))
    tiles = []
    for k in range(n):
        src = base[k % len(base)]
        visuals = [(seg.start + r * period, seg.end + r * period, seg.visual)
                   for r in range(reps) for seg in src.script.segments]
        # tiles past the fourth speak in turns of their own (shifted), so one voice at a time stays true
        speech = [(sp.start + r * period, sp.end + r * period) for r in range(reps) for sp in src.script.speech
                  ] if k < len(base) else []
        tiles.append(GalleryTile(tile_script(reps * period, visuals, speech, seed=src.script.seed + k),
                                 src.photo, mirror=src.mirror if k < len(base) else not src.mirror))
    return tiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=16.0)
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--cols", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from services.replay.files import replay_gallery
    from shared.testkit.gallery import attribution_share, write_gallery
    from shared.testkit.script import agreement

    with tempfile.TemporaryDirectory(prefix="classpulse-gallery-bench-") as tmp:
        clip = Path(tmp) / "gallery.mp4"
        started = time.perf_counter()
        width, height = (960, 540) if args.tiles <= 4 else (1280, 720)
        truth = write_gallery(clip, _tiles(args.seconds, args.tiles), cols=args.cols, width=width, height=height)
        made = time.perf_counter() - started
        started = time.perf_counter()
        outcome = replay_gallery(clip, out_dir=Path(tmp) / "report", quiet_native=True)
        wall = time.perf_counter() - started
    report = outcome.report
    rows: dict[str, Any] = {}
    print(f"gallery {args.tiles} tiles ({args.cols} per row), {truth.duration_s:.0f} s, {width}x{height}; "
          f"generated in {made:.1f} s")
    print(f"{'participant':<12}{'present':>9}{'attentive':>11}{'speaking':>10}  bbox (truth)")
    for p in report.participants:
        scores = agreement(truth.rows[p.id], report.timeline, participant=p.id)
        rows[p.id] = {**scores, "bbox": p.bbox, "bbox_truth": list(truth.bboxes[p.id])}
        print(f"{p.id:<12}{scores['present']:>9.3f}{scores['attentive']:>11.3f}{scores['speaking']:>10.3f}  "
              f"{p.bbox} ({list(truth.bboxes[p.id])})")
    share = attribution_share(truth, report.timeline)
    g = report.gallery
    a = g.attribution if g is not None else None
    coverage = a.attributed_s / a.voiced_s if a is not None and a.voiced_s else 1.0
    print(f"speaker attribution: {share:.3f} of single-speaker seconds to the right participant; "
          f"{coverage:.3f} of voiced seconds attributed"
          + (f" ({a.attributed_s:.1f}/{a.voiced_s:.1f} s; tied {a.tied_s:.1f} s, no mouth {a.no_mouth_s:.1f} s)"
             if a is not None else ""))
    s = outcome.stats
    print(f"replay: {wall:.1f} s wall incl. layout scan and model loading; pipeline {s.wall_s:.1f} s "
          f"= {s.media_s / wall:.1f}x real time overall")
    if args.json is not None:
        args.json.write_text(json.dumps({"participants": rows, "attribution_share": share,
                                         "attribution_coverage": coverage, "wall_s": wall,
                                         "media_s": s.media_s}, indent=2) + "\n")


if __name__ == "__main__":
    main()
