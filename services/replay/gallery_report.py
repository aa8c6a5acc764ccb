"""The gallery parts of a report: each participant's tile box and speaking attribution, the layout block."""

from __future__ import annotations

from collections.abc import Sequence

from services.replay.gallery_layout import GalleryLayout
from services.replay.gallery_source import TileCrop
from services.replay.gallery_speakers import METHOD, AttributionRule, AttributionTotals
from shared.contracts.report import (
    GalleryAttribution,
    GalleryInfo,
    Report,
    ReportParticipant,
    SpeakingAttribution,
)


def gallery_report(
    report: Report,
    *,
    layout: GalleryLayout,
    tiles: Sequence[TileCrop],
    totals: AttributionTotals | None,
    rule: AttributionRule,
) -> Report:
    """``report`` with ``participants[].bbox``/``speaking_attribution`` and ``gallery`` filled in.

    ``totals`` None: the recording has no sound (nothing to attribute).
    """
    boxes = {t.participant: t.bbox for t in tiles}

    def attribution(pid: str) -> SpeakingAttribution | None:
        if totals is None:
            return None
        figures = totals.per_participant[pid]
        return SpeakingAttribution(method=METHOD, seconds_attributed=round(figures.attributed_s, 3),
                                   seconds_unattributed=round(figures.tied_s, 3))

    participants = [
        ReportParticipant(id=p.id, role=p.role, bbox=list(boxes[p.id]), speaking_attribution=attribution(p.id))
        for p in report.participants
    ]
    summary = None
    if totals is not None:
        summary = GalleryAttribution(
            method=METHOD, window_s=rule.window_s, voiced_s=round(totals.voiced_s, 3),
            attributed_s=round(totals.attributed_s, 3), tied_s=round(totals.tied_s, 3),
            no_mouth_s=round(totals.no_mouth_s, 3),
        )
    gallery = GalleryInfo(frame=[layout.width, layout.height], tiles=len(tiles), samples=layout.samples,
                          attribution=summary)
    return report.model_copy(update={"participants": participants, "gallery": gallery})
