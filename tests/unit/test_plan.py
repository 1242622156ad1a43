"""Planning without Ray: which spelling names a file, batches, the plan in the catalog,
and how much memory a plan holds per file (a million-file plan must fit one driver)."""

from __future__ import annotations

import os
import random
import time
import tracemalloc
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from batchrun.catalog import Catalog
from batchrun.config import load_job
from batchrun.model import RunRecord, RunState
from batchrun.plan import _normal, cut_batches, expand_sources, source_function
from batchrun.walk import matching_files

PEAK_BYTES_PER_FILE = 650
"""tracemalloc's peak while planning, per file; it was ~1,000 bytes when every file's
os.stat_result (~650 bytes) was kept until the plan was sorted, ~430 now."""


def tiny_tree(root: Path, files: int, folders: int) -> Path:
    for n in range(files):
        folder = root / "in" / f"s{n % folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{n:06d}.csv").write_bytes(b"id\n1\n")
    job = root / "job.toml"
    job.write_text(f'[job]\nname = "plan"\ntable = "t"\n[source]\npaths = ["{root}/in/*/*.csv"]\n'
                   '[schema.columns]\nid = { type = "int64" }\n')
    return job


def test_a_file_reached_by_two_paths_is_named_by_the_first_in_sorted_order(tmp_path: Path) -> None:
    """The walk lists folder "a" before the link "a-b" (name order), but "a-b/f.csv" sorts
    first as a path ("-" < "/"): the plan keeps the sorted order's first spelling."""
    (tmp_path / "in" / "a").mkdir(parents=True)
    (tmp_path / "in" / "a" / "f.csv").write_bytes(b"id\n1\n")
    (tmp_path / "in" / "a-b").symlink_to("a")
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "plan"\ntable = "t"\n[source]\npaths = ["{tmp_path}/in/*/f.csv"]\n'
                   'group_by = "none"\n[schema.columns]\nid = { type = "int64" }\n')
    assert [f.path for f in expand_sources(load_job(job))] == [str(tmp_path / "in" / "a-b" / "f.csv")]
    assert [p for p, _ in matching_files(f"{tmp_path}/in/*/f.csv")] == [
        str(tmp_path / "in" / "a-b" / "f.csv"), str(tmp_path / "in" / "a" / "f.csv")]


def test_batches_are_cut_by_source_then_path_whatever_the_input_order(tmp_path: Path) -> None:
    files = expand_sources(load_job(tiny_tree(tmp_path, 60, 4)))
    shuffled = random.Random(3).sample(files, len(files))
    batches = cut_batches(shuffled, 7, 1 << 30)
    expected = sorted(files, key=lambda f: (f.source, f.path))
    assert [f for b in batches for f in b.files] == expected
    assert [b.batch_id for b in batches] == [b.batch_id for b in cut_batches(files, 7, 1 << 30)]
    assert {b.source for b in batches} == {"s000", "s001", "s002", "s003"}
    assert all(len(b.files) <= 7 and len({f.source for f in b.files}) == 1 for b in batches)


def test_the_plan_transaction_records_every_file_and_batch(tmp_path: Path) -> None:
    job = load_job(tiny_tree(tmp_path, 250, 5))
    batches = cut_batches(expand_sources(job), 20, 1 << 30)
    record = RunRecord(run_id="r1", job="plan", table="t", job_file=str(job.path),
                       staging_dir=str(tmp_path / "staging"), config={}, schema={"id": "int64"},
                       state=RunState.PLANNED, pid=os.getpid(), host="here",
                       created_at=time.time(), started_at=None, finished_at=None, message=None)
    catalog = Catalog(tmp_path / "state")
    catalog.create_run(record, batches)
    counts = catalog.counts("r1")
    assert counts.batches.pending == len(batches) == 15  # 5 sources × ⌈50/20⌉
    assert counts.files.total == 250
    assert sorted(f["path"] for f in catalog.files_of("r1", batches[0].batch_id)) == [
        f.path for f in batches[0].files]


def test_planning_holds_a_few_hundred_bytes_per_file_at_its_peak(tmp_path: Path) -> None:
    files = 5_000
    job = load_job(tiny_tree(tmp_path, files, 50))
    tracemalloc.start()
    try:
        batches = cut_batches(expand_sources(job), 100, 1 << 30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(len(b.files) for b in batches) == files
    assert peak / files < PEAK_BYTES_PER_FILE


def test_files_of_one_folder_share_one_source_string(tmp_path: Path) -> None:
    files = expand_sources(load_job(tiny_tree(tmp_path, 20, 2)))
    assert len({id(f.source) for f in files}) == 2


@given(st.lists(st.sampled_from(["/", ".", "..", "a", "-", "é"]), max_size=12))
def test_a_path_taken_as_normal_is_what_abspath_makes_of_it(parts: list[str]) -> None:
    path = "".join(parts)
    if _normal(path):
        assert os.path.abspath(path) == path


@given(st.lists(st.sampled_from(["/", ".", "a", "b-", "é"]), max_size=12))
def test_parent_dir_sources_are_os_path_basename_of_dirname(parts: list[str]) -> None:
    path = "".join(parts)
    assert source_function("parent_dir", "job")(path) == os.path.basename(os.path.dirname(path))
