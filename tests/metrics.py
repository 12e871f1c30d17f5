"""Reading one sample of the app's Prometheus metrics, for tests that count what the server did."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(client, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels`` on ``GET /metrics``; None when absent."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return None
