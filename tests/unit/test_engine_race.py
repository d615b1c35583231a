"""--engine auto's race: the engines take turns at each shape, the fastest timing counts, and the pick
weighs each shape's ratio, not its milliseconds (a noisy large batch once made torch win on a box
where ONNX Runtime was 3x faster at one sentence)."""

from __future__ import annotations

import numpy as np

from predictor.encoder.onnx import pick, race


class Clocked:
    """A fake engine on a fake clock: each execute advances the clock by the next of its durations."""

    def __init__(self, name: str, clock: list[float], calls: list[tuple[str, int]], durations: list[float]):
        self.name, self.clock, self.calls, self.durations = name, clock, calls, list(durations)

    def prepare(self, sequences):
        return len(sequences)

    def execute(self, batch):
        self.calls.append((self.name, batch))
        self.clock[0] += self.durations.pop(0) if self.durations else 1.0


def test_the_engines_take_turns_at_each_shape_and_the_fastest_timing_counts():
    clock, calls = [0.0], []
    # two warm-up calls each, then 3 repeats x 2 shapes; onnx's second timing at batch 1 is a burst of load
    a = Clocked("torch", clock, calls, [9, 9] + [0.02, 0.30] * 3)
    b = Clocked("onnx", clock, calls, [9, 9, 0.007, 0.25, 0.5, 0.25, 0.008, 0.24])
    times = race({"torch": a, "onnx": b}, shapes=((1, 16), (32, 32)), repeats=3, clock=lambda: clock[0])
    assert calls[4:8] == [("torch", 1), ("onnx", 1), ("torch", 32), ("onnx", 32)]  # turns, shape by shape
    assert np.allclose(times["torch"], [0.02, 0.30]) and np.allclose(times["onnx"], [0.007, 0.24])


def test_a_slow_large_batch_does_not_outvote_a_3x_faster_single_sentence():
    # the flipped start of 2026-12-02: summed, torch won (344.8 ms against 351.3 ms)
    times = {"torch": [0.0284, 0.3164], "onnx": [0.0088, 0.3425]}
    assert pick(times) == "onnx"


def test_torch_keeps_a_tie_and_wins_when_faster_everywhere():
    assert pick({"torch": [0.01, 0.2], "onnx": [0.01, 0.2]}) == "torch"
    assert pick({"torch": [0.01, 0.2], "onnx": [0.011, 0.5]}) == "torch"
    assert pick({"torch": [0.02, 0.4], "onnx": [0.01, 0.2]}) == "onnx"
