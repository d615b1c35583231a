"""``--generate_one_thread_tokens`` (predictor/generate/step_threads.py): a forward pass of few tokens runs on one
CPU thread, a larger one on all. In-process, on a small torch module: the thread count seen inside the forward,
not any timing."""

from __future__ import annotations

import pytest
import torch

from predictor.generate import step_threads
from predictor.generate.settings import GenerateSettings


class Probe(torch.nn.Module):
    """Records the torch thread count each forward ran with."""

    def __init__(self):
        super().__init__()
        self.seen: list[int] = []

    def forward(self, input_ids=None, inputs_embeds=None):
        self.seen.append(torch.get_num_threads())
        return input_ids


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_small_steps_run_on_one_thread_and_large_ones_on_all(threads):
    torch.set_num_threads(2)
    probe = Probe()
    hook = step_threads.install(probe, threads=2, small=16)
    assert hook is not None
    for tokens in (1, 16, 17, 256, 3):  # decode steps, a prefill chunk, decode again
        probe(input_ids=torch.zeros(1, tokens, dtype=torch.long))
    probe(torch.zeros(1, 64, dtype=torch.long))  # positional ids
    probe(inputs_embeds=torch.zeros(1, 8, 4))  # embeddings: [batch, tokens, width]
    print(f"threads seen per forward: {probe.seen}; steps per count {hook.steps}")
    assert probe.seen == [1, 1, 2, 2, 1, 2, 1]
    assert hook.steps == {1: 4, 2: 3}


def test_left_alone_with_one_thread_or_when_off(threads):
    assert step_threads.install(Probe(), threads=1, small=16) is None
    assert step_threads.install(Probe(), threads=4, small=0) is None


def test_a_step_of_unknown_size_keeps_every_thread(threads):
    torch.set_num_threads(2)
    probe = Probe()
    step_threads.install(probe, threads=2, small=16)
    probe(input_ids=torch.zeros(1, 4, dtype=torch.long))
    probe()  # neither ids nor embeddings
    assert probe.seen == [1, 2]


def test_the_setting_defaults_on_and_refuses_negatives():
    assert GenerateSettings().one_thread_tokens == 16
    assert GenerateSettings(one_thread_tokens=0).one_thread_tokens == 0
    with pytest.raises(ValueError, match="generate_one_thread_tokens"):
        GenerateSettings(one_thread_tokens=-1)
