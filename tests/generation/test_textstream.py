"""Detokenising and chat templates without servers: the real SmolLM2 tokenizer and template."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from snapserve.errors import ServingError
from snapserve.textstream import StopStrings, TextStream
from transformer.chat.template import ChatTemplate, messages_of

KOREAN_EMOJI = "안녕하세요! 오늘 날씨가 좋네요 😀👍🏽 🇰🇷 세계"


@pytest.fixture(scope="module")
def tokenizer(gen_dir):
    return Tokenizer.from_file(str(gen_dir / "tokenizer.json"))


def test_token_by_token_never_splits_a_character_and_joins_to_the_whole(tokenizer):
    ids = tokenizer.encode(KOREAN_EMOJI, add_special_tokens=False).ids
    assert len(ids) > len(KOREAN_EMOJI) // 2  # byte-level: many characters span several tokens
    stream = TextStream(tokenizer)
    pieces = [stream.step([i]) for i in ids] + [stream.finish()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == tokenizer.decode(ids) == KOREAN_EMOJI
    assert any(p == "" for p in pieces)  # some steps held bytes back


@pytest.mark.parametrize("stop, expected", [
    ("날씨", "안녕하세요! 오늘 "),        # a stop string spanning several tokens
    ("😀", "안녕하세요! 오늘 날씨가 좋네요 "),  # one character, four bytes, several tokens
    ("nowhere", KOREAN_EMOJI),
])
def test_stop_strings_across_token_boundaries_never_leak(tokenizer, stop, expected):
    ids = tokenizer.encode(KOREAN_EMOJI, add_special_tokens=False).ids
    stream = TextStream(tokenizer, [stop])
    pieces = []
    for i in ids:
        pieces.append(stream.step([i]))
        assert stop not in "".join(pieces)
        if stream.stopped:
            break
    pieces.append(stream.finish())
    assert "".join(pieces) == expected
    assert stream.stopped == (stop in KOREAN_EMOJI)


def test_stop_strings_hold_back_only_a_possible_prefix():
    stop = StopStrings(["</end>"])
    assert stop.feed("hello </") == "hello "
    assert stop.feed("b> more") == "</b> more"
    assert stop.feed(" </en") == " "
    assert stop.feed("d> tail") == ""
    assert stop.stopped and stop.flush() == ""


def test_chat_template_renders_as_transformers_does(gen_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(gen_dir, local_files_only=True)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "안녕 😀 What is 2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}]
    ours = ChatTemplate.load(gen_dir).render(messages)
    assert ours == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours.endswith("<|im_start|>assistant\n")


def test_the_template_runs_sandboxed(tmp_path):
    (tmp_path / "chat_template.jinja").write_text("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ServingError) as info:  # jinja2's SecurityError, answered as a 400
        ChatTemplate.load(tmp_path).render([{"role": "user", "content": "x"}])
    assert info.value.status == 400 and "unsafe" in info.value.reason


@pytest.mark.parametrize("messages", [
    None, [], "hello", [{"role": "user"}], [{"role": "robot", "content": "x"}], [{"role": "user", "content": 3}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], ["just text"],
])
def test_bad_messages_are_refused(messages):
    with pytest.raises(ServingError) as info:
        messages_of(messages)
    assert info.value.status == 400


def test_text_parts_are_joined():
    assert messages_of([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]) \
        == [{"role": "user", "content": "ab"}]
