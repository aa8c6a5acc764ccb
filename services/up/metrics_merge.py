"""One Prometheus exposition for ``classpulse up`` and its ingest processes.

Every process registers the same metric families (``shared.metrics.Metrics``), so the main
process's text and its workers' texts are merged sample by sample: values of the same
sample name and labels are summed (counters, histogram buckets/sums/counts and additive
gauges such as active streams; a gauge only one process sets is unchanged, since the others
report 0 or nothing), ``*_created`` timestamps keep the earliest.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

LabelKey = tuple[str, tuple[tuple[str, str], ...]]


def merge_expositions(texts: Sequence[str]) -> bytes:
    """The texts (Prometheus text format) as one exposition with every sample summed across them."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[LabelKey, float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            slot = values.setdefault(merged.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in slot:
                    slot[key] = sample.value
                elif sample.name.endswith("_created"):
                    slot[key] = min(slot[key], sample.value)
                else:
                    slot[key] += sample.value
    for name, family in families.items():
        family.samples = [Sample(s, dict(labels), v) for (s, labels), v in values[name].items()]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families.values()))
    return generate_latest(registry)


class _Fixed:
    """A collector returning already-built families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)

    def describe(self) -> list[Metric]:
        return []
