"""Client of the thought worker: any OpenAI-compatible server (vLLM in production).

All n samples of a query are asked for in ONE request (`n`), so vLLM shares the prompt's prefill across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import httpx

from service.clients.breakers import Breakers, CircuitOpen
from service.clients.http import openai_compatible_client
from service.model.thoughts import Generation, ThoughtRequest


class ThinkerError(Exception):
    """The worker could not produce thoughts; `kind` labels the metric (timeout, connect, http_503, ...)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class ThinkerClient:
    def __init__(
        self,
        base_url: str,
        *,
        model: str | None,
        api_key: str | None,
        timeout_s: float,
        max_connections: int,
        breakers: Breakers | None = None,
    ) -> None:
        self._http = openai_compatible_client(
            base_url, api_key=api_key, timeout_s=timeout_s, max_connections=max_connections
        )
        self._breakers = breakers
        self._model = model
        self._model_lock = asyncio.Lock()

    @property
    def known_model(self) -> str | None:
        return self._model

    async def model(self) -> str:
        """The configured model, else the worker's only model (asked once)."""
        if self._model is None:
            async with self._model_lock:
                if self._model is None:
                    data = await self._call("GET", "models")
                    models = [m["id"] for m in data.get("data", [])]
                    if not models:
                        raise ThinkerError("protocol", "the worker lists no model")
                    self._model = models[0]
        return self._model

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

    async def stream(
        self, request: ThoughtRequest, on_thought: Callable[[int, str], None]
    ) -> Generation:
        """The same generation streamed (`stream: true`, choices interleaved by index): `on_thought(index, text)`
        is called as each choice finishes, so its text can be used before the slowest choice ends."""
        body = {**await self._body(request), "stream": True, "stream_options": {"include_usage": True}}
        chat = request.api == "chat"
        parts: dict[int, list[str]] = {}
        texts: dict[int, str] = {}
        tokens = 0
        try:
            async with self._breaker():
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
        except CircuitOpen as exc:
            raise ThinkerError("circuit_open", str(exc)) from exc
        for i, pieces in parts.items():  # a stream cut short of finish reasons: what arrived is the thought
            if i not in texts:
                texts[i] = "".join(pieces).strip() if chat else "".join(pieces)
                on_thought(i, texts[i])
        if not texts:
            raise ThinkerError("protocol", "the worker returned no choices")
        return Generation(thoughts=[texts[i] for i in sorted(texts)], completion_tokens=tokens)

    async def _events(self, path: str, body: dict[str, object]) -> AsyncIterator[dict]:
        """The JSON objects of a server-sent event stream, until `[DONE]`."""
        try:
            async with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode(errors="replace")[:300]
                    raise ThinkerError(f"http_{response.status_code}", detail)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        yield json.loads(data)
                    except ValueError as exc:
                        raise ThinkerError("protocol", "the worker streamed invalid JSON") from exc
        except httpx.TimeoutException as exc:
            raise ThinkerError("timeout", repr(exc)) from exc
        except httpx.TransportError as exc:
            raise ThinkerError("connect", repr(exc)) from exc

    async def ping(self) -> None:
        await self._call("GET", "models")

    async def _call(self, method: str, path: str, **kwargs: object) -> dict:
        try:
            async with self._breaker():
                return await self._request(method, path, **kwargs)
        except CircuitOpen as exc:
            raise ThinkerError("circuit_open", str(exc)) from exc

    def _breaker(self) -> contextlib.AbstractAsyncContextManager[None]:
        if self._breakers is None:
            return contextlib.nullcontext()
        # A 4xx is our request's fault (e.g. a prompt over the context), not a sign the worker is down.
        return self._breakers.guard(
            "thinker", failures=(ThinkerError,), ignore=lambda e: getattr(e, "kind", "").startswith("http_4")
        )

    async def _request(self, method: str, path: str, **kwargs: object) -> dict:
        try:
            response = await self._http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.TimeoutException as exc:
            raise ThinkerError("timeout", repr(exc)) from exc
        except httpx.TransportError as exc:
            raise ThinkerError("connect", repr(exc)) from exc
        if response.status_code >= 400:
            raise ThinkerError(f"http_{response.status_code}", response.text[:300])
        try:
            return response.json()
        except ValueError as exc:
            raise ThinkerError("protocol", "the worker answered with invalid JSON") from exc

    async def aclose(self) -> None:
        await self._http.aclose()
