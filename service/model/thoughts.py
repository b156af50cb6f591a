"""What the thought worker is asked for and what it gives back (the profiles build the requests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Sampling:
    n: int
    temperature: float
    top_p: float
    max_tokens: int


@dataclass(frozen=True)
class ThoughtRequest:
    """One request to the thought worker: `n` samples of `prompt` (chat message or raw completion)."""

    api: Literal["chat", "completion"]
    prompt: str
    sampling: Sampling


@dataclass(frozen=True)
class Generation:
    thoughts: list[str]
    completion_tokens: int
