"""RunMetrics from a real catalog (no Ray), checked against figures worked out by hand from
the recorded history (see tests/unit/history.py), and its exact `report --json`."""

from __future__ import annotations

from pathlib import Path

from batchrun.metrics import Percentiles, RunMetrics, SourceMetrics, run_metrics
from batchrun.model import RunState
from tests.unit.history import MB, NODE_A, NODE_B, RUN_ID, T0, write_history

EXPECTED = {
    "run_id": RUN_ID, "job": "orders_job", "state": "failed", "wall_s": 10.5,
    "active_s": 4.0,  # batches in flight from 0 to 4
    "bytes": 6 * MB,  # b1 (4 MB) and b2 (2 MB) committed
    "rows_staged": 12, "rows_rejected": 1, "mb_per_s": 1.5, "rows_per_s": 3.0,
    "steady_mb_per_s": 1.0,  # b2's 2 MB over the 2 s from the first commit to the last
    "batches": {"total": 4, "committed": 2, "failed": 1, "pending": 0, "running": 0,
                "skipped": 1},
    "attempts": 4, "retries": 1, "failed_batches": 1, "skipped_batches": 1,
    "error_rate": 0.5,
    "latency_p50_s": 2.5, "latency_p95_s": 2.95, "latency_p99_s": 2.99,  # 2 s and 3 s
    "processing_p50_s": 1.25, "processing_p95_s": 1.475, "processing_p99_s": 1.495,
    "max_in_flight": 3, "max_bytes_in_flight": 7 * MB, "max_concurrency_per_source": 2,
    "sources": [
        {"source": "a", "attempts": 3, "committed": 2, "retries": 1, "failed": 0,
         "bytes": 6 * MB, "rows": 12, "first_dispatch": T0, "max_concurrency": 2},
        {"source": "b", "attempts": 1, "committed": 0, "retries": 0, "failed": 1,
         "bytes": 0, "rows": 0, "first_dispatch": T0 + 1, "max_concurrency": 1},
    ],
    "concurrency": [[0.0, 1], [0.0, 2], [1.0, 1], [1.0, 2], [1.0, 3], [2.0, 2], [3.0, 1],
                    [4.0, 0]],
    "nodes": [  # each node's committed input bytes over the time its workers were busy
        {"node": "10.0.0.1 (aaaaaaaa)", "node_id": NODE_A, "node_ip": "10.0.0.1", "batches": 1,
         "rows": 12, "bytes": 4 * MB, "busy_s": 1.0, "mb_per_s": 4.0},
        {"node": "10.0.0.2 (bbbbbbbb)", "node_id": NODE_B, "node_ip": "10.0.0.2", "batches": 1,
         "rows": 0, "bytes": 2 * MB, "busy_s": 1.5, "mb_per_s": 1.33},
    ],
}


def test_metrics_match_the_figures_worked_out_by_hand_from_the_history(tmp_path: Path) -> None:
    metrics = run_metrics(write_history(tmp_path), RUN_ID)
    assert isinstance(metrics, RunMetrics) and metrics.state is RunState.FAILED
    assert metrics.latency == Percentiles(2.5, 2.95, 2.99)
    assert metrics.sources[1] == SourceMetrics("b", 1, 0, 0, 1, 0, 0, T0 + 1, 1)
    assert (metrics.failed_batches, metrics.skipped_batches) == (1, 1)


def test_report_json_is_exactly_the_documented_contract_in_key_order(tmp_path: Path) -> None:
    found = run_metrics(write_history(tmp_path), RUN_ID).as_json()
    assert found == EXPECTED
    assert list(found) == list(EXPECTED)
    assert [list(s) for s in found["sources"]] == [list(s) for s in EXPECTED["sources"]]


def test_a_run_with_no_attempts_has_zero_throughput_and_unknown_percentiles(
        tmp_path: Path) -> None:
    from batchrun.catalog import Catalog
    from tests.unit.history import BATCHES, run_record

    catalog = Catalog(tmp_path)
    catalog.create_run(run_record(), BATCHES)
    found = run_metrics(catalog, RUN_ID).as_json()
    assert (found["mb_per_s"], found["rows_per_s"], found["error_rate"]) == (0.0, 0.0, 0.0)
    assert found["latency_p50_s"] is None and found["steady_mb_per_s"] is None
    assert found["sources"] == [] and found["concurrency"] == []
