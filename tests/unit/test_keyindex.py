"""The unique-key index (no Ray): it proposes every repeated key, whatever the batch order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from batchrun.keyindex import KeyIndex, PartitionedLevels, holding, key_codes


def batches_with_repeats(seed: int) -> tuple[list[np.ndarray], set[int]]:
    """Ten batches of spread and clustered codes, with repeats planted within a batch,
    across batches, and a code three times."""
    rng = np.random.default_rng(seed)
    spread = np.unique(rng.integers(2**40, 2**64 - 1, 20_000, dtype=np.uint64))
    spread = spread[:19_000]
    clustered = np.arange(1_000, 22_000, dtype=np.uint64)
    codes = np.concatenate([spread, clustered])
    rng.shuffle(codes)
    batches = np.array_split(codes, 10)
    repeats = {int(codes[5]), int(codes[30_000]), int(codes[39_999])}
    batches[0] = np.append(batches[0], codes[5])           # within batch 0 (or across)
    batches[3] = np.append(batches[3], codes[30_000])      # across batches
    batches[9] = np.append(batches[9], [codes[39_999]] * 2)  # three times
    return batches, repeats


def candidates_of(batches: list[np.ndarray]) -> set[int]:
    index = KeyIndex()
    for batch in batches:
        index.add_mine(batch.copy())
    return {int(c) for c in index.candidates(rebuilds=False)}


def test_the_index_proposes_exactly_the_repeated_codes_in_any_batch_order() -> None:
    batches, repeats = batches_with_repeats(7)
    assert candidates_of(batches) == repeats
    assert candidates_of(batches[::-1]) == repeats
    shuffled = [batches[i] for i in np.random.default_rng(3).permutation(len(batches))]
    assert candidates_of(shuffled) == repeats


def test_the_levels_hold_what_was_added_and_nothing_else() -> None:
    rng = np.random.default_rng(11)
    levels, added = PartitionedLevels(), set()
    for size in (5, 3_000, 1, 700, 4_096, 9_000, 2, 50):
        batch = np.sort(rng.integers(0, 2**64 - 1, size, dtype=np.uint64, endpoint=True))
        levels.add(batch)
        added |= {int(c) for c in batch}
    probe = np.sort(np.concatenate([np.array(sorted(added), np.uint64)[::3],
                                    rng.integers(0, 2**64 - 1, 5_000, dtype=np.uint64)]))
    assert levels.contains(probe).tolist() == [int(c) in added for c in probe]
    assert len(levels) == len(added)


def test_a_collision_only_makes_an_extra_candidate() -> None:
    """Two different keys sharing a code: both are proposed, the exact SQL decides."""
    index = KeyIndex()
    index.add_mine(np.array([42, 7], np.uint64))  # key "a" hashed to 42
    index.add_mine(np.array([42, 9], np.uint64))  # key "b" hashed to 42 too
    assert index.candidates(rebuilds=False).tolist() == [42]


def test_keys_another_run_serves_are_candidates_unless_an_earlier_run_is_rebuilt_away() -> None:
    index = KeyIndex()
    index.add_other(np.array([1, 2], np.uint64), earlier=True)
    index.add_other(np.array([3], np.uint64), earlier=False)
    index.add_mine(np.array([2, 3, 4], np.uint64))
    assert index.candidates(rebuilds=False).tolist() == [2, 3]
    assert index.candidates(rebuilds=True).tolist() == [3]


def test_integer_keys_are_their_own_codes_and_equal_strings_share_one() -> None:
    ints = pa.chunked_array([[5, None, -1]], pa.int32())
    assert key_codes(ints).tolist() == [5, 2**64 - 1]
    words = key_codes(pa.chunked_array([["x", None, "y", "x"]]))
    assert words.size == 3 and words[0] == words[2] != words[1]


def test_only_the_files_holding_a_candidate_are_read_back() -> None:
    files = {"a": np.array([1, 5, 9], np.uint64), "b": np.array([2, 3], np.uint64),
             "c": np.array([], np.uint64)}
    assert holding(files, np.array([3, 9], np.uint64)) == {"a", "b"}
    assert holding(files, np.array([4], np.uint64)) == set()
