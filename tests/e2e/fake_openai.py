"""A fake OpenAI-compatible chat server on 127.0.0.1 (the wire protocol, nothing else)."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web


class FakeOpenAI:
    def __init__(self, *, answer: str = "Hello from the fake server") -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.fail_next: list[int] = []  # HTTP statuses to answer before succeeding
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _chunk(self, delta: dict[str, str], finish: str | None = None) -> bytes:
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("Authorization")})
        if self.fail_next:
            status = self.fail_next.pop(0)
            return web.json_response(
                {"error": {"message": "nope", "type": "x", "code": None}},
                status=status,
                headers={"retry-after-ms": "10"},
            )
        if body.get("model") != "fake":
            return web.json_response(
                {"error": {"message": "model not found", "type": "invalid_request_error"}},
                status=404,
            )
        content = self.answer
        if body.get("response_format"):
            content = json.dumps({"reply": self.answer, "emotion": "happy"})
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(self._chunk({"role": "assistant", "content": ""}))
            for word in content.split(" "):
                await resp.write(self._chunk({"content": word + " "}))
            await resp.write(self._chunk({}, finish="stop"))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            }
        )
