"""Recognised text → AI-speaker command, from the grammar (standard, dialect, near misses, out of grammar)."""

import pytest

from serving.commands import command_parser
from serving.ratelimit import RateLimiter


@pytest.fixture(scope="module")
def parser():
    return command_parser("ko_commands")


@pytest.mark.parametrize(("text", "expected"), [
    ("거실 불 꺼줘", {"intent": "power", "device": "light", "room": "living_room", "action": "off"}),
    ("거실불꺼줘", {"intent": "power", "device": "light", "room": "living_room", "action": "off"}),  # spacing
    ("칠 번 채널 돌려줘", {"intent": "channel", "device": "tv", "action": "set", "value": 7}),
    ("거실 불 꺼도", {"intent": "power", "device": "light", "room": "living_room", "action": "off"}),  # Gyeongsang
    ("안방 에어컨 온도 좀 올려주", {"intent": "temperature", "device": "aircon", "action": "up"}),  # a dropped jamo
])
def test_parses_grammar_sentences_and_near_misses(parser, text, expected):
    parsed = parser.parse(text)
    assert parsed is not None
    assert {k: v for k, v in parsed.to_dict().items() if k in expected} == expected
    assert 0.8 <= parsed.score <= 1.0


@pytest.mark.parametrize("text", ["", "   ", "오늘 점심 뭐 먹지", "ㅋㅋㅋ"])
def test_out_of_grammar_is_no_command(parser, text):
    assert parser.parse(text) is None


def test_rate_limiter_refills():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.acquire("d") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] += 0.5
    assert limiter.acquire("d") == 0.0
    assert limiter.acquire("other") == 0.0
    with pytest.raises(ValueError, match="rate must be"):
        RateLimiter(rate=0, burst=1)
