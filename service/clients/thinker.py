"""Client of the thought worker: any OpenAI-compatible server (vLLM in production).

All n samples of a query are asked for in ONE request (`n`), so vLLM shares the prompt's prefill across them.
"""

from __future__ import annotations

from collections.abc import Callable

from service.clients.http import Failure, OpenAICompatibleClient
from service.model.thoughts import Generation, ThoughtRequest
from service.observability import tracing


class ThinkerError(Exception):
    """The worker could not produce thoughts; `kind` labels the metric (timeout, connect, http_503, ...)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class ThinkerClient(OpenAICompatibleClient):
    breaker = "thinker"
    label = "the worker"
    # No retry: a search whose worker fails degrades to direct retrieval at once; a retry would only make it wait.
    connect_attempts = 1

    def _error(self, failure: Failure) -> ThinkerError:
        return ThinkerError(f"http_{failure.status}" if failure.kind == "http" else failure.kind, failure.detail)

    async def _body(self, request: ThoughtRequest) -> dict[str, object]:
        s = request.sampling
        body: dict[str, object] = {
            "model": await self.model(),
            "n": s.n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if request.api == "chat":
            body["messages"] = [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = request.prompt
        return body

    async def generate(self, request: ThoughtRequest) -> Generation:
        with self._span(request, stream=False) as span:
            generation = await self._generate(request)
            self._generated(span, generation)
            return generation

    async def stream(self, request: ThoughtRequest, on_thought: Callable[[int, str], None]) -> Generation:
        """The same generation streamed (`stream: true`, choices interleaved by index): `on_thought(index, text)`
        is called as each choice finishes, so its text can be used before the slowest choice ends."""
        with self._span(request, stream=True) as span:
            generation = await self._stream(request, on_thought)
            self._generated(span, generation)
            return generation

    def _span(self, request: ThoughtRequest, *, stream: bool):
        """The worker call's trace span (OpenTelemetry's gen_ai attribute names); a no-op while traces are off."""
        s = request.sampling
        return tracing.span(
            "think.generate",
            {
                "gen_ai.operation.name": "chat" if request.api == "chat" else "text_completion",
                "gen_ai.request.model": self.known_model,
                "gen_ai.request.choice.count": s.n,
                "gen_ai.request.max_tokens": s.max_tokens,
                "gen_ai.request.temperature": s.temperature,
                "gen_ai.request.top_p": s.top_p,
                "thinksearch.think.stream": stream,
            },
        )

    def _generated(self, span, generation: Generation) -> None:
        span.set_attribute("gen_ai.request.model", self.known_model or "")  # resolved by now
        span.set_attribute("gen_ai.usage.output_tokens", generation.completion_tokens)
        span.set_attribute("thinksearch.think.thoughts", len(generation.thoughts))

    async def _generate(self, request: ThoughtRequest) -> Generation:
        body = await self._body(request)
        if request.api == "chat":
            data = await self._call("POST", "chat/completions", json=body)
            texts = [((c.get("message") or {}).get("content") or "").strip() for c in data.get("choices", [])]
        else:
            # A raw completion returns only the continuation; the profile rebuilds the prompt around it.
            data = await self._call("POST", "completions", json=body)
            texts = [c.get("text") or "" for c in data.get("choices", [])]
        if not texts:
            raise ThinkerError("protocol", "the worker returned no choices")
        tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
        return Generation(thoughts=texts, completion_tokens=tokens)

    async def _stream(self, request: ThoughtRequest, on_thought: Callable[[int, str], None]) -> Generation:
        body = {**await self._body(request), "stream": True, "stream_options": {"include_usage": True}}
        chat = request.api == "chat"
        parts: dict[int, list[str]] = {}
        texts: dict[int, str] = {}
        tokens = 0
        async with self._guarded():
            async for chunk in self._events("chat/completions" if chat else "completions", body):
                usage = chunk.get("usage")
                if usage:
                    tokens = int(usage.get("completion_tokens") or 0)
                for c in chunk.get("choices") or []:
                    i = int(c.get("index", 0))
                    piece = ((c.get("delta") or {}).get("content") if chat else c.get("text")) or ""
                    parts.setdefault(i, []).append(piece)
                    if c.get("finish_reason") is not None and i not in texts:
                        text = "".join(parts[i])
                        texts[i] = text.strip() if chat else text  # as `generate` returns it
                        on_thought(i, texts[i])
        for i, pieces in parts.items():  # a stream cut short of finish reasons: what arrived is the thought
            if i not in texts:
                texts[i] = "".join(pieces).strip() if chat else "".join(pieces)
                on_thought(i, texts[i])
        if not texts:
            raise ThinkerError("protocol", "the worker returned no choices")
        return Generation(thoughts=[texts[i] for i in sorted(texts)], completion_tokens=tokens)
