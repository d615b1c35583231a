"""The heap trimmer trims at most once per interval, and not at all where there is no malloc_trim."""

from __future__ import annotations

from predictor import heap


def test_trims_at_most_once_per_interval():
    now = [0.0]
    calls = []
    trimmer = heap.HeapTrimmer(every_s=2.0, clock=lambda: now[0], trim=calls.append)
    for t in (0.5, 1.9, 2.1, 2.5, 4.0, 4.2):
        now[0] = t
        trimmer.after_batch()
    assert trimmer.trims == len(calls) == 2  # at 2.1 and at 4.2 (4.0 is 1.9 s after 2.1)


def test_glibc_trim_is_found_here():
    assert heap._malloc_trim() is not None  # Debian's glibc: the trimmer is active in the images too
