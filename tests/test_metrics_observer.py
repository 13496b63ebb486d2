"""The lean histogram observe puts every value in the bucket prometheus_client's own observe would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from gateway.metrics import REQUEST_BUCKETS, _Observer


def test_same_buckets_and_sum_as_prometheus_client() -> None:
    values = [0.0, 1e-9, *REQUEST_BUCKETS, *(b * 1.0001 for b in REQUEST_BUCKETS), 1e6, -1.0]
    ours = Histogram("ours", "x", ["l"], buckets=REQUEST_BUCKETS, registry=CollectorRegistry())
    theirs = Histogram("theirs", "x", ["l"], buckets=REQUEST_BUCKETS, registry=CollectorRegistry())
    lean = _Observer(ours.labels("a"))
    for v in values:
        lean.observe(v)
        theirs.labels("a").observe(v)

    def samples(h: Histogram) -> list[tuple[str, str, float]]:
        return [(s.name.split("_", 1)[1], s.labels.get("le", ""), s.value) for m in h.collect() for s in m.samples]

    assert samples(ours) == samples(theirs)
