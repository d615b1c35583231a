"""Sentences the load tests and the benchmark send: short English, long, Korean, emoji.

Plain data and pure functions, imported by both locust (gevent) and the benchmark (asyncio);
it must import nothing heavy.
"""

from __future__ import annotations

import random

SHORT = (
    "A man is playing a guitar.",
    "Someone is strumming a guitar on stage.",
    "The stock market fell sharply today.",
    "A woman is slicing tomatoes in the kitchen.",
    "Two dogs are running through a snowy field.",
    "The new phone has a faster processor and a better camera.",
    "Heavy rain is expected in the north this weekend.",
    "She forgot her umbrella at the train station.",
    "The committee approved the budget after a long debate.",
    "Children are building a sandcastle on the beach.",
    "How do I reset my password?",
    "The restaurant closes at ten on weekdays.",
    "A cat is sleeping on the warm windowsill.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Please send the invoice by Friday.",
    "The train to Berlin is delayed by twenty minutes.",
)

KOREAN = (
    "한 남자가 기타를 연주하고 있다.",
    "오늘 주식 시장이 급락했다.",
    "서울에는 이번 주말에 비가 올 예정입니다.",
    "고양이가 따뜻한 창턱에서 자고 있다.",
)

EMOJI = (
    "Great game tonight 🎉⚽🔥",
    "I love this song 🎶❤️😍",
    "Coffee first ☕ then code 💻🚀",
    "Rainy day 🌧️☔ stay inside 🏠📚",
)

# Longer than the model's 256-token window: the server truncates, the vector keeps its shape.
LONG = (
    " ".join(SHORT) * 3,
    ("Distributed systems fail in partial and surprising ways; a request can time out after the work "
     "was done, a retry can run the same work twice, and a slow node can look dead. ") * 8,
    " ".join(KOREAN) * 6,
)


def single(rng: random.Random) -> str:
    return rng.choice(SHORT)


def batch(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(SHORT) for _ in range(n)]


def mixed(rng: random.Random, n: int) -> list[str]:
    """``n`` texts of mixed length and script; about one in eight is long."""
    pools = (SHORT, SHORT, SHORT, KOREAN, EMOJI, SHORT, KOREAN, LONG)
    return [rng.choice(rng.choice(pools)) for _ in range(n)]
