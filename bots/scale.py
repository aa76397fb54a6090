"""What gateway and worker processes say to each other over the bus.

A gateway (`tomo gateway`) runs the platform adapters; each message they read goes to
the stream `inbound` as a `Request`, read by the `workers` group of `tomo worker`
processes. A worker answers with an `Answer` on the reply stream the request names,
`replies:<gateway id>`, read by that gateway. Both are JSON (pydantic); on Redis the
streams are the keys `tomo:inbound` and `tomo:replies:<gateway id>`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from brain.errors import ConfigError
from brain.messages import Inbound, PersonRef, Reply

INBOUND_STREAM = "inbound"
WORKER_GROUP = "workers"
GATEWAY_GROUP = "gateway"


def reply_stream(gateway_id: str) -> str:
    """The stream a gateway reads its answers from."""
    return f"replies:{gateway_id}"


def require_redis(redis_url: SecretStr | None, command: str) -> None:
    """Gateways and workers meet on Redis: say so when TOMO_REDIS_URL is unset."""
    if redis_url is None:
        raise ConfigError(
            f"`tomo {command}` talks to the other tomo processes through Redis: set "
            "TOMO_REDIS_URL (e.g. redis://127.0.0.1:6379/0). Without Redis, `tomo run` is "
            "the embedded default: the platforms and the brain in one process."
        )


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Request(_Wire):
    """A message for the brain: answer it (`handle`) or take its new wording (`edit`)."""

    v: Literal[1] = 1
    id: str  # the request id (one per message read; a redelivery keeps it)
    reply_stream: str  # where the Answer goes
    kind: Literal["handle", "edit"]
    inbound: Inbound


class Answer(_Wire):
    """The brain's replies to one Request, or why there are none."""

    v: Literal[1] = 1
    id: str  # the Request's id
    replies: tuple[Reply, ...] = ()
    asker: PersonRef | None = None  # the author of the message (private replies go to them)
    error: str | None = None  # set: the brain could not answer; said to the person
