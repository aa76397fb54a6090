"""The terminal chat: the embedded default adapter.

Interactive on a terminal (prompt_toolkit: line editing, input history kept in the data
dir), or line by line from a pipe. Tokens are printed as they stream. Ctrl-C stops an
answer being written; Ctrl-D or /quit leaves. The conversation itself lives in the
database, so the next run remembers this one.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from brain.errors import InputError, TomoError
from brain.messages import ChatRef, Document, Inbound, PersonRef, Sticker, Text, Voice
from brain.mind import Brain
from brain.ports import BlobStore, Clock

MAX_LINE_BYTES = 16 * 1024 * 1024
QUIT_WORDS = frozenset({"/quit", "/exit"})
EMPTY_HINT = "Nothing to send: type a message, or /quit to leave."


class ConsoleChat:
    """Talks to the brain as platform `console`, chat `local`, one person."""

    def __init__(
        self,
        brain: Brain,
        *,
        clock: Clock,
        persona_name: str,
        user_id: str,
        user_name: str,
        out: TextIO,
        err: TextIO | None = None,
        blobs: BlobStore | None = None,
        downloads: Path | None = None,
    ) -> None:
        self.brain = brain
        self.clock = clock
        self.persona_name = persona_name
        self.chat = ChatRef(platform="console", chat_id=f"local-{user_id}", kind="dm")
        self.author = PersonRef(platform="console", user_id=user_id, display_name=user_name)
        self.out = out
        self.err = err or out
        self.blobs = blobs
        self.downloads = downloads
        self._sending: asyncio.Future[bool] | None = None
        self._main: asyncio.Task[object] | None = None
        self._interrupted = False
        self._voice_count = 0

    def banner(self) -> str:
        return f"{self.persona_name} is here. Type a message; /quit or Ctrl-D leaves."

    def _say(self, text: str, *, stream: TextIO | None = None) -> None:
        target = stream or self.out
        target.write(text + "\n")
        target.flush()

    async def send(self, text: str) -> bool:
        """Send one line to the brain and print the streamed answer.

        Returns False when the person asked to leave.
        """
        line = text.strip()
        if line.lower() in QUIT_WORDS:
            return False
        if not line:
            self._say(EMPTY_HINT)
            return True
        try:
            inbound = Inbound(
                id=uuid.uuid4().hex,
                chat=self.chat,
                author=self.author,
                segments=(Text(text=text),),
                to_bot=True,
                sent_at=self.clock.now(),
            )
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            self._say(f"! That message was not sent: {reason}.", stream=self.err)
            return True
        started = False

        async def on_token(piece: str) -> None:
            nonlocal started
            if not started:
                self.out.write(f"{self.persona_name}: ")
                started = True
            self.out.write(piece)
            self.out.flush()

        try:
            replies = await self.brain.handle(inbound, on_token=on_token)
        except TomoError as exc:
            if started:
                self.out.write("\n")
            self._say(f"! {exc}", stream=self.err)
            return True
        except asyncio.CancelledError:
            self._say("\n(stopped; your message is saved)")
            raise
        if started:
            self.out.write("\n")
            self.out.flush()
            for reply in replies:  # what came after the streamed answer: notes, voice
                for seg in reply.segments[1:]:
                    if isinstance(seg, Text):
                        self._say(seg.text)
        else:
            for reply in replies:  # commands answer without streaming
                self._say(f"{self.persona_name}: {reply.text}")
        for reply in replies:
            for seg in reply.segments:
                if isinstance(seg, Document):
                    await self._save(seg)
                elif isinstance(seg, Voice):
                    await self._save_voice(seg)
                elif isinstance(seg, Sticker):
                    self._say(f"(sends a {seg.emotion or 'neutral'} sticker)")
        return True

    async def _save_voice(self, voice: Voice) -> None:
        """A voice reply: a copy goes to the downloads folder, to play with any player."""
        if self.blobs is None or self.downloads is None:
            return
        data = await self.blobs.get(voice.blob_key)
        self._voice_count += 1
        target = self.downloads / f"voice-{self._voice_count:03d}.ogg"
        await asyncio.to_thread(_write_file, target, data)
        self._say(f"(voice note, {voice.duration_s:.1f} s: {target})")

    async def _save(self, doc: Document) -> None:
        """A file the brain hands over (an export) is written to the downloads folder."""
        if self.blobs is None or self.downloads is None:
            self._say(f"({doc.filename} cannot be saved from this chat)")
            return
        data = await self.blobs.get(doc.blob_key)
        name = Path(doc.filename).name  # never a path of the sender's choosing
        target = self.downloads / name
        await asyncio.to_thread(_write_file, target, data)
        # Handed over: the copy in the blob store goes, so a later forget leaves none.
        await self.blobs.delete(doc.blob_key)
        self._say(f"(saved {doc.filename}, {len(data)} bytes, to {target})")

    async def _send_interruptibly(self, text: str) -> bool:
        """Run `send` as a task that Ctrl-C (see `_on_sigint`) can stop alone."""
        task = asyncio.ensure_future(self.send(text))
        self._sending = task
        # prompt_toolkit takes SIGINT over while it reads a line and hands it back to
        # the default handler afterwards, so claim it again for every answer.
        loop = asyncio.get_running_loop()
        _add_sigint(loop, self._on_sigint)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled() and not _current_cancelling():
                return True  # only the answer was stopped
            task.cancel()
            raise
        finally:
            self._sending = None

    def _on_sigint(self) -> None:
        """Ctrl-C: stop the answer being written; between answers, leave cleanly."""
        if self._sending is not None and not self._sending.done():
            self._sending.cancel()
        elif self._main is not None:
            self._interrupted = True
            self._main.cancel()

    async def _guarded(self, body: Callable[[], Awaitable[None]]) -> None:
        self._main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        installed = _add_sigint(loop, self._on_sigint)
        try:
            await body()
        except asyncio.CancelledError:
            if not self._interrupted:
                raise
            self._say("\n(interrupted; everything said so far is saved)")
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGINT)
            self._main = None

    async def run_lines(self, lines: AsyncIterator[bytes]) -> None:
        """Chat from a pipe: one message per line, UTF-8 checked strictly."""

        async def body() -> None:
            self._say(self.banner())
            async for raw in lines:
                try:
                    text = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    bad = raw[exc.start : exc.start + 1].hex()
                    self._say(
                        f"! That line is not valid UTF-8 (byte 0x{bad} at position "
                        f"{exc.start}); nothing was sent.",
                        stream=self.err,
                    )
                    continue
                if not await self._send_interruptibly(text):
                    return

        await self._guarded(body)

    async def run_interactive(self, *, history_path: Path) -> None:
        """Chat on a terminal with line editing and persistent input history."""
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory

        session: PromptSession[str] = PromptSession(history=FileHistory(str(history_path)))

        async def body() -> None:
            self._say(self.banner())
            while True:
                try:
                    text = await session.prompt_async("you> ")
                except KeyboardInterrupt:
                    self._say("(Ctrl-D or /quit leaves)")
                    continue
                except EOFError:
                    return
                if not await self._send_interruptibly(text):
                    return

        await self._guarded(body)


def _write_file(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(target)


def _current_cancelling() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def _add_sigint(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> bool:
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals
        return False
    return True


async def stdin_lines() -> AsyncIterator[bytes]:
    """Lines of standard input as bytes, read without blocking the event loop.

    Pipes are read through the event loop (so Ctrl-C can interrupt a read); a regular
    file redirected to stdin, which epoll cannot watch, is read in a thread.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    except (ValueError, OSError):
        while line := await asyncio.to_thread(sys.stdin.buffer.readline):
            yield line
        return
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                yield exc.partial
            return
        except asyncio.LimitOverrunError:
            raise InputError(
                f"A line longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB came in; stopping."
            ) from None
        yield line
