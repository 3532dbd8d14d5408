"""The two implementations behind linkage.kernel give identical results.

``linkage._dicekernel`` (C, built by setup.py) and ``linkage._portable`` (numpy and Python's
hmac, used where the extension is missing or ``JIGSAW_PORTABLE_KERNEL=1``) must agree bit for
bit on every function, on errors as well as results: here on random input, function by
function, and on a small linkage end to end (encoding with hardening, blocking, Dice,
scoring, clustering). The golden vectors and known-answer tests of the kernel-backed modules
run unchanged under the portable path in a child pytest (``slow``; all their tests but a
named few on large inputs, :data:`LARGE_INPUT_TESTS`); the main run covers the compiled one.
Tests comparing the two skip where the extension is not built.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import _portable, kernel, pipeline, similarity, synthetic
from linkage.encode import EncodedBatch, encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Hardening, default_child_schema

try:
    import linkage._dicekernel as _compiled
except ImportError:  # not built: the portable path alone is tested
    _compiled = None

ROOT = Path(__file__).resolve().parents[2]
API = (
    "kernel_name",
    "available_kernels",
    "popcounts",
    "scan",
    "pairs",
    "diffuse",
    "blip_mask",
    "hmac_paths",
    "hmac_words",
    "token_filters",
)
needs_extension = pytest.mark.skipif(_compiled is None, reason="the C extension is not built")
#: The tests of the modules the kernel serves, golden vectors and known-answer tests included.
KERNEL_TESTS = (
    "tests/linkage/test_hmac_kernel.py",
    "tests/linkage/test_similarity.py",
    "tests/linkage/test_harden.py",
    "tests/linkage/test_encode.py",
    "tests/linkage/test_encode_values.py",
    "tests/linkage/test_encode_hardened.py",
    "tests/linkage/test_encode_salted.py",
    "tests/linkage/test_forms.py",
)
#: Left out of the portable rerun: large inputs that test how linkage.similarity splits work
#: between threads, not what a kernel function returns. The splitting is rerun on small
#: inputs (test_chunking_and_task_splitting_do_not_change_results and
#: test_pairs_threads_and_index_dtypes, which lower the split sizes), and the kernels' resumable
#: scan across tiles is compared with the compiled one above.
LARGE_INPUT_TESTS = (
    "tests/linkage/test_similarity.py::test_threads_give_identical_output_at_default_sizes",
)


def both() -> tuple[ModuleType, ModuleType]:
    assert _compiled is not None
    return _compiled, _portable


def outcome(function: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What ``function(*args)`` did: its return value, or its error's type and message."""
    try:
        return "returned", function(*args)
    except (TypeError, ValueError, IndexError) as error:
        return type(error).__name__, str(error)


def run_python(code: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **environment}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def filters(rng: np.random.Generator, rows: int, words: int) -> np.ndarray[Any, Any]:
    """Rows of mixed density (empty, full, sparse, dense), so bounds both skip and keep."""
    density = rng.choice([0.0, 0.05, 0.3, 0.5, 0.9, 1.0], size=(rows, 1))
    bits = rng.random((rows, 64 * words)) < density
    packed = np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)
    return np.ascontiguousarray(packed.reshape(rows, words))


# ------------------------------------------------------------------------------ selection


def test_the_extension_is_in_use_unless_the_portable_path_is_asked_for() -> None:
    """Where setup.py could not build the extension this fails, so a slow machine is seen."""
    if os.environ.get(kernel.ENVIRONMENT_VARIABLE) == "1":
        assert kernel.IMPLEMENTATION == "numpy"
    else:
        assert kernel.IMPLEMENTATION == "c", kernel.FALLBACK_REASON
        assert kernel.FALLBACK_REASON is None


def test_the_environment_variable_forces_the_portable_path() -> None:
    code = "from linkage import kernel; print(kernel.IMPLEMENTATION, kernel.kernel_name())"
    forced = run_python(code, JIGSAW_PORTABLE_KERNEL="1")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.split() == ["numpy", "numpy"]
    if _compiled is not None:
        assert run_python(code, JIGSAW_PORTABLE_KERNEL="0").stdout.split()[0] == "c"
    refused = run_python(code, JIGSAW_PORTABLE_KERNEL="yes")
    assert refused.returncode != 0
    assert "JIGSAW_PORTABLE_KERNEL: expected 0 or 1" in refused.stderr


def test_a_missing_extension_falls_back_and_the_library_still_works() -> None:
    code = (
        "import sys; sys.modules['linkage._dicekernel'] = None\n"
        "import numpy as np\n"
        "from linkage import kernel, similarity\n"
        "from linkage.encode import token_positions\n"
        "a = np.array([[0b1011]], dtype=np.uint64)\n"
        "print(kernel.IMPLEMENTATION, similarity.dice_one_to_many(a[0], a)[1][0])\n"
        "print(token_positions(bytes(32), ['ab'], 3, 64).tolist())\n"
        "print(kernel.FALLBACK_REASON)\n"
    )
    done = run_python(code, JIGSAW_PORTABLE_KERNEL="")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "numpy 1.0"
    from linkage.encode import token_positions_reference

    assert lines[1] == str(token_positions_reference(bytes(32), ["ab"], 3, 64).tolist())
    assert "linkage._dicekernel cannot be imported" in lines[2]


# ------------------------------------------------------------------------------ one by one


@needs_extension
@settings(deadline=None, max_examples=40)
@given(st.integers(0, 2**32 - 1), st.integers(0, 12), st.integers(1, 20))
def test_popcounts(seed: int, rows: int, words: int) -> None:
    batch = filters(np.random.default_rng(seed), rows, words)
    results = []
    for module in both():
        out = np.full(rows, 7, dtype=np.uint32)
        module.popcounts(batch, out, 0)
        results.append(out)
    first, second = results
    np.testing.assert_array_equal(first, second)


def scan_all(
    module: ModuleType,
    arrays: tuple[Any, ...],
    threshold: float,
    ranges: tuple[int, int, int, int],
    capacity: int,
    use_bound: bool,
) -> list[tuple[Any, ...]]:
    """Every call of a resumable scan until it reports the end: its return and its output."""
    queries, query_counts, candidates, candidate_counts = arrays
    q_start, q_stop, c_start, c_stop = ranges
    outs = [np.zeros(capacity, np.int64), np.zeros(capacity, np.int64), np.zeros(capacity)]
    block, query, calls = c_start, q_start, []
    while True:
        count, block, query = module.scan(
            queries,
            query_counts,
            candidates,
            candidate_counts,
            threshold,
            q_start,
            q_stop,
            c_start,
            c_stop,
            block,
            query,
            *outs,
            use_bound,
            0,
        )
        calls.append((count, block, query, *(o[:count].tolist() for o in outs)))
        if block >= c_stop or q_start == q_stop or len(calls) > 500:
            return calls


@needs_extension
@settings(deadline=None, max_examples=60)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([1, 2, 16, 17]),
    st.integers(0, 9),
    st.integers(0, 40),
    st.integers(1, 30),
    st.booleans(),
    st.booleans(),
    st.data(),
)
def test_scan(
    seed: int,
    words: int,
    n_queries: int,
    n_candidates: int,
    capacity: int,
    use_bound: bool,
    wrong_counts: bool,
    data: st.DataObject,
) -> None:
    rng = np.random.default_rng(seed)
    queries, candidates = filters(rng, n_queries, words), filters(rng, n_candidates, words)
    query_counts = similarity.popcounts(queries)
    candidate_counts = similarity.popcounts(candidates)
    if wrong_counts:  # counts that are not the filters' own: the two must still agree
        candidate_counts = rng.integers(0, 64 * words + 3, n_candidates).astype(np.uint32)
    scores = [similarity.dice_reference(q, c) for q in queries for c in candidates]
    threshold = data.draw(st.sampled_from([0.0, 0.3, 0.8, 1.0, 1.5, *scores]))
    q_start = data.draw(st.integers(0, n_queries))
    q_stop = data.draw(st.integers(q_start, n_queries))
    c_start = data.draw(st.integers(0, n_candidates))
    c_stop = data.draw(st.integers(c_start, n_candidates))
    arrays = (queries, query_counts, candidates, candidate_counts)
    ranges = (q_start, q_stop, c_start, c_stop)
    compiled, portable = (
        scan_all(m, arrays, threshold, ranges, capacity, use_bound) for m in both()
    )
    assert compiled == portable


@needs_extension
@pytest.mark.parametrize("words", [1, 2, 16])
def test_scan_with_popcounts_that_are_not_the_filters_own(words: int) -> None:
    """The bound and the rejection use the counts given: the two must skip the same pairs."""
    for seed in range(12):
        rng = np.random.default_rng(seed)
        queries, candidates = filters(rng, 5, words), filters(rng, 30, words)
        query_counts = rng.integers(0, 64 * words + 3, 5).astype(np.uint32)
        candidate_counts = rng.integers(0, 64 * words + 3, 30).astype(np.uint32)
        arrays = (queries, query_counts, candidates, candidate_counts)
        for threshold in (0.0, 0.3, 0.6, 0.9, 1.0):
            for use_bound in (True, False):
                compiled, portable = (
                    scan_all(m, arrays, threshold, (0, 5, 0, 30), 200, use_bound) for m in both()
                )
                assert compiled == portable


@needs_extension
def test_scan_stops_and_resumes_at_the_same_places_across_tiles() -> None:
    """More candidates than one tile holds, and little room: every stopping point is hit."""
    rng = np.random.default_rng(5)
    queries, candidates = filters(rng, 6, 16), filters(rng, 5000, 16)
    arrays = (queries, similarity.popcounts(queries), candidates, similarity.popcounts(candidates))
    for capacity in (1, 2047, 2048, 2049, 5000, 20000):
        for threshold in (0.0, 0.5):
            compiled, portable = (
                scan_all(m, arrays, threshold, (0, 6, 0, 5000), capacity, True) for m in both()
            )
            assert compiled == portable


@needs_extension
@settings(deadline=None, max_examples=40)
@given(st.integers(0, 2**32 - 1), st.integers(1, 17), st.integers(0, 30), st.data())
def test_pairs(seed: int, words: int, n_pairs: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    left, right = filters(rng, 5, words), filters(rng, 4, words)
    left_idx = rng.integers(-1 if data.draw(st.booleans()) else 0, 6, n_pairs)
    right_idx = rng.integers(0, 5 if data.draw(st.booleans()) else 4, n_pairs)
    start = data.draw(st.integers(0, n_pairs))
    stop = data.draw(st.integers(start, n_pairs))
    results = []
    args = (left, similarity.popcounts(left), right, similarity.popcounts(right))
    for module in both():
        out = np.full(stop - start, -1.0)
        done = outcome(module.pairs, *args, left_idx, right_idx, start, stop, out, 0)
        results.append((done, out.tolist()))
    assert results[0] == results[1]


@needs_extension
@settings(deadline=None, max_examples=30)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 3), st.integers(1, 5))
def test_diffuse(seed: int, in_words: int, out_words: int, t: int) -> None:
    rng = np.random.default_rng(seed)
    batch = filters(rng, 7, in_words)
    table = rng.integers(0, 64 * in_words, (64 * out_words, t)).astype(np.int64)
    results = []
    for module in both():
        out = np.full((7, out_words), 3, dtype=np.uint64)
        module.diffuse(batch, table, out)
        results.append(out)
    first, second = results
    np.testing.assert_array_equal(first, second)


@needs_extension
@settings(deadline=None, max_examples=30)
@given(
    st.lists(st.integers(0, 2**64 - 1), max_size=6),
    st.sampled_from([0, 1, 700, 32768, 65535, 65536, 2**64 - 1]),
    st.integers(1, 5),
)
def test_blip_mask(seeds: list[int], threshold: int, words: int) -> None:
    results = []
    for module in both():
        out = np.full((len(seeds), words), 3, dtype=np.uint64)
        module.blip_mask(np.array(seeds, dtype=np.uint64), threshold, out)
        results.append(out)
    first, second = results
    np.testing.assert_array_equal(first, second)


@needs_extension
@settings(deadline=None, max_examples=40)
@given(
    st.binary(max_size=140),
    st.lists(st.binary(max_size=130), max_size=6),
    st.integers(1, 3),
    st.booleans(),
)
def test_hmac_words(key: bytes, messages: list[bytes], blocks: int, counter: bool) -> None:
    blocks = blocks if counter else 1
    offsets = np.cumsum([0, *map(len, messages)]).astype(np.int64)
    results = []
    for module in both():
        out = np.zeros((len(messages), 8 * blocks), dtype=np.uint32)
        module.hmac_words(key, b"".join(messages), offsets, blocks, counter, out)
        results.append(out)
    first, second = results
    np.testing.assert_array_equal(first, second)


@needs_extension
@settings(deadline=None, max_examples=40)
@given(
    st.lists(st.binary(max_size=8), min_size=1, max_size=3),
    st.lists(st.lists(st.binary(min_size=1, max_size=70), max_size=4), min_size=1, max_size=4),
    st.integers(1, 20),
    st.sampled_from([1, 64, 100, 1000]),
    st.data(),
)
def test_token_filters(
    prefixes: list[bytes],
    value_tokens: list[list[bytes]],
    hashes: int,
    bits: int,
    data: st.DataObject,
) -> None:
    combos = data.draw(
        st.lists(st.tuples(st.integers(0, len(value_tokens) - 1), st.integers(0, 2)), max_size=6)
    )
    tokens = [t for ts in value_tokens for t in ts]
    args = (
        bytes(range(9, 41)),
        b"".join(prefixes),
        np.cumsum([0, *map(len, prefixes)]).astype(np.int64),
        b"".join(tokens),
        np.cumsum([0, *map(len, tokens)]).astype(np.int64),
        np.cumsum([0, *map(len, value_tokens)]).astype(np.int64),
        np.array([v for v, _ in combos], dtype=np.int64),
        np.array([p for _, p in combos], dtype=np.int64),  # a prefix past the last is refused
        hashes,
        bits,
    )
    results = []
    for module in both():
        out = np.full((len(combos), (bits + 63) // 64), 5, dtype=np.uint64)
        results.append((outcome(module.token_filters, *args, out), out.tolist()))
    assert results[0] == results[1]


def bad_calls() -> Iterator[tuple[str, Callable[[ModuleType], Any]]]:
    """Malformed calls of every function, each named for the test id."""
    f = np.zeros((3, 2), dtype=np.uint64)
    c32, c64 = np.zeros(3, dtype=np.uint32), np.zeros(3, dtype=np.int64)
    scan_out = (np.zeros(4, np.int64), np.zeros(4, np.int64), np.zeros(4))
    readonly = np.zeros(3, dtype=np.uint32)
    readonly.flags.writeable = False
    offsets = np.array([0, 2], dtype=np.int64)
    table = np.zeros((128, 2), dtype=np.int64)
    yield "popcounts-kernel", lambda m: m.popcounts(f, c32, 5)
    yield "popcounts-dtype", lambda m: m.popcounts(f.view(np.int64), c32, 0)
    yield "popcounts-strided", lambda m: m.popcounts(np.zeros((3, 4), np.uint64)[:, ::2], c32, 0)
    yield "popcounts-readonly", lambda m: m.popcounts(f, readonly, 0)
    yield "popcounts-length", lambda m: m.popcounts(f, np.zeros(2, np.uint32), 0)
    yield "popcounts-object", lambda m: m.popcounts(object(), c32, 0)
    yield "popcounts-1d", lambda m: m.popcounts(np.zeros(3, np.uint64), c32, 0)
    yield "popcounts-no-words", lambda m: m.popcounts(np.zeros((3, 0), np.uint64), c32, 0)
    yield "popcounts-big-endian", lambda m: m.popcounts(np.zeros((3, 2), ">u8"), c32, 0)
    yield (
        "scan-nan",
        lambda m: m.scan(f, c32, f, c32, float("nan"), 0, 3, 0, 3, 0, 0, *scan_out, 1, 0),
    )
    yield "scan-range", lambda m: m.scan(f, c32, f, c32, 0.5, 0, 4, 0, 3, 0, 0, *scan_out, 1, 0)
    yield "scan-resume", lambda m: m.scan(f, c32, f, c32, 0.5, 0, 3, 1, 3, 0, 0, *scan_out, 1, 0)
    yield (
        "scan-room",
        lambda m: m.scan(f, c32, f, c32, 0.5, 0, 3, 0, 3, 0, 0, *(o[:0] for o in scan_out), 1, 0),
    )
    yield (
        "scan-words",
        lambda m: m.scan(
            f, c32, np.zeros((3, 3), np.uint64), c32, 0.5, 0, 3, 0, 3, 0, 0, *scan_out, 1, 0
        ),
    )
    yield "pairs-lengths", lambda m: m.pairs(f, c32, f, c32, c64, c64[:2], 0, 2, np.zeros(2), 0)
    yield "pairs-out", lambda m: m.pairs(f, c32, f, c32, c64, c64, 0, 2, np.zeros(3), 0)
    yield (
        "pairs-index",
        lambda m: m.pairs(f, c32, f, c32, np.array([0, 3, 0]), c64, 0, 3, np.zeros(3), 0),
    )
    yield "diffuse-out", lambda m: m.diffuse(f, table, np.zeros((3, 1), np.uint64))
    yield "diffuse-table", lambda m: m.diffuse(f, table + 200, np.zeros((3, 2), np.uint64))
    yield "blip-rows", lambda m: m.blip_mask(np.zeros(2, np.uint64), 5, np.zeros((3, 1), np.uint64))
    yield (
        "hmac-path",
        lambda m: m.hmac_words(b"k", b"ab", offsets, 1, True, np.zeros((1, 8), np.uint32), 9),
    )
    yield (
        "hmac-blocks",
        lambda m: m.hmac_words(b"k", b"ab", offsets, 2, False, np.zeros((1, 16), np.uint32)),
    )
    yield (
        "hmac-offsets",
        lambda m: m.hmac_words(b"k", b"a", offsets, 1, True, np.zeros((1, 8), np.uint32)),
    )
    yield (
        "hmac-text",
        lambda m: m.hmac_words("k", b"ab", offsets, 1, True, np.zeros((1, 8), np.uint32)),
    )


@needs_extension
@pytest.mark.parametrize(("name", "call"), list(bad_calls()), ids=[n for n, _ in bad_calls()])
def test_bad_arguments_raise_the_same_errors(name: str, call: Callable[[ModuleType], Any]) -> None:
    compiled, portable = (outcome(call, m) for m in both())
    assert compiled[0] != "returned", name
    if compiled[0] == "TypeError" and "bytes-like" in compiled[1]:
        assert portable[0] == "TypeError"  # Python's own argument-parsing wording
    else:
        assert compiled == portable


# ------------------------------------------------------------------------------ end to end


def small_linkage() -> dict[str, Any]:
    """Encode four agencies with the shipped schema (salted, diffused), cluster them, and
    harden one batch with every transform: everything a kernel call decides."""
    schema = default_child_schema()
    keys = KeySet(LinkageSecret.for_tests())
    data = synthetic.generate_population(150, seed=11)
    batches = [encode_records(schema, keys, a.columns) for a in data.agencies.values()]
    result = pipeline.cluster_datasets(schema, batches)
    hardened_schema = schema.with_hardening(
        Hardening(balance=True, blip_epsilon=6.0, diffusion_t=2), Hardening(blip_epsilon=4.0)
    )
    first = next(iter(data.agencies.values())).columns
    hardened = encode_records(hardened_schema, keys, first)
    records = np.concatenate([b.record_filters for b in batches])
    found = similarity.dice_many_to_many(records, records, threshold=0.6, threads=2)
    return {
        "kernel": kernel.kernel_name(),
        "batches": [batch_bytes(b) for b in [*batches, hardened]],
        "labels": result.labels.tolist(),
        "scored": (
            result.scored.left.tolist(),
            result.scored.right.tolist(),
            result.scored.probability.tolist(),
        ),
        "dice": [part.tolist() for part in found],
    }


def batch_bytes(batch: EncodedBatch) -> tuple[bytes, ...]:
    arrays = (*batch.field_filters, batch.record_filters, batch.block_keys, batch.salt_tags)
    return tuple(np.ascontiguousarray(a).tobytes() for a in arrays)


@needs_extension
def test_a_small_linkage_is_identical_under_both(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = []
    for module in both():
        with monkeypatch.context() as patch:  # linkage.kernel switched for this run only
            for name in API:
                patch.setattr(kernel, name, getattr(module, name))
            runs.append(small_linkage())
    compiled, portable = runs
    assert compiled.pop("kernel") != portable.pop("kernel") == "numpy"
    labels = compiled["labels"]
    assert len(labels) > len(set(labels)) > 0  # records were linked into shared clusters
    assert compiled == portable


@pytest.mark.slow
def test_golden_vectors_and_known_answers_pass_on_the_portable_path() -> None:
    """The kernel-backed modules' own tests, unchanged, with JIGSAW_PORTABLE_KERNEL=1: in this
    worker's process slot (``-n 0``: no pytest-xdist workers of its own), without
    :data:`LARGE_INPUT_TESTS`."""
    deselected = [f"--deselect={test}" for test in LARGE_INPUT_TESTS]
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-n", "0"]
    command += [*deselected, *KERNEL_TESTS]
    env = {**os.environ, kernel.ENVIRONMENT_VARIABLE: "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=800)
    tail = done.stdout[-3000:]
    assert done.returncode == 0, tail + done.stderr[-2000:]
    assert " passed" in tail and " failed" not in tail, tail
    assert "a promise of the compiled kernel" in tail  # its one C-only test skipped: numpy ran
    assert f"{len(LARGE_INPUT_TESTS)} deselected" in tail, tail
