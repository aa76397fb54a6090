"""A fake Discord on 127.0.0.1: the REST API under /api/v10, the gateway websocket
(tests/fakes/discord_gateway.py), and a CDN for attachments (the wire protocol, nothing
else).

REST answers carry `Content-Type: application/json` exactly (discord.py reads JSON only
then) and rate-limit headers; a 429 carries `retry_after`, `Retry-After` and `Via`
(discord.py takes a 429 without `Via` for a Cloudflare ban). Messages with the same
enforced nonce are posted once, as Discord does.

Tests add guilds, channels and people, dispatch messages, edits and slash-command or
button interactions (built from the commands the bot synced: the fake, like Discord's
client, offers only those), drop the gateway connection, and make the next calls of a
route fail. Every REST call is recorded, and so is every message the bot posted
(content, flags, attachment metadata and file bytes).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.discord_gateway import FakeGateway
from tests.fakes.discord_wire import (
    CALL,
    EPHEMERAL,
    IS_VOICE_MESSAGE,
    JSON,
    Call,
    Posted,
    check_message,
    edit_posted,
    error,
    iso_now,
    limit_headers,
    options_for,
    read_body,
    reply,
    snowflake,
    too_many,
)

TOKEN = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.GfAkE1.fake-Discord-token_for-tests-ONLY"


class FakeDiscord:
    def __init__(self, *, token: str = TOKEN) -> None:
        self.token = token
        self.bot_user: JSON = self.user(snowflake(), "tomo", global_name="Tomo", bot=True)
        self.application: JSON = {
            "id": self.bot_user["id"],
            "name": "Tomo",
            "description": "A companion",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": 1 << 19,  # GATEWAY_MESSAGE_CONTENT_LIMITED
            "owner": self.user(snowflake(), "owner"),
        }
        self.guilds: dict[int, JSON] = {}
        self.dm_channels: dict[int, JSON] = {}  # user id -> DM channel
        self.channels: dict[int, JSON] = {}
        self.calls: list[Call] = []
        self.posted: list[Posted] = []
        self.commands: dict[int | None, list[JSON]] = {}  # guild id (None: global) -> synced
        self.cdn: dict[str, tuple[bytes, str]] = {}
        self.gateway = FakeGateway(
            token=token, ready=self._ready, guilds=lambda: list(self.guilds.values())
        )
        self.callbacks: list[tuple[int, JSON]] = []  # (interaction id, callback body)
        self._interactions: dict[str, JSON] = {}  # token -> the interaction
        self._originals: dict[str, Posted] = {}  # token -> the original response
        self._failures: dict[str, list[tuple[int, float, bool]]] = {}
        self._nonces: dict[tuple[int, str], Posted] = {}
        self.app = web.Application(client_max_size=50 * 1024 * 1024, middlewares=[self._record])
        api = "/api/v10"
        routes = self.app.router
        routes.add_get(f"{api}/users/@me", self._me)
        routes.add_get(f"{api}/oauth2/applications/@me", self._application)
        routes.add_get(f"{api}/gateway", self._gateway_url)
        routes.add_get(f"{api}/gateway/bot", self._gateway_url)
        routes.add_route("*", f"{api}/applications/{{app_id}}/commands", self._commands)
        routes.add_route(
            "*", f"{api}/applications/{{app_id}}/guilds/{{guild_id}}/commands", self._commands
        )
        routes.add_post(f"{api}/channels/{{channel_id}}/messages", self._create_message)
        routes.add_post(f"{api}/channels/{{channel_id}}/typing", self._typing)
        routes.add_post(f"{api}/users/@me/channels", self._open_dm)
        routes.add_post(f"{api}/interactions/{{interaction_id}}/{{token}}/callback", self._callback)
        routes.add_post(f"{api}/webhooks/{{app_id}}/{{token}}", self._followup)
        routes.add_route(
            "*", f"{api}/webhooks/{{app_id}}/{{token}}/messages/{{message_id}}", self._original
        )
        routes.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._download)
        routes.add_get("/gateway", self.gateway.serve)
        routes.add_get("/resume-gateway", self.gateway.serve)
        self.runner: web.AppRunner | None = None
        self.base = ""

    # server -----------------------------------------------------------------------------

    async def start(self) -> str:
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    @property
    def api_base(self) -> str:
        """The value for TOMO_DISCORD__API_BASE (discord.http.Route.BASE)."""
        return f"{self.base}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.base.rsplit(':', 1)[1]}/gateway"

    async def stop(self) -> None:
        await self.gateway.close()
        if self.runner is not None:
            await self.runner.cleanup()

    # what tests arrange ---------------------------------------------------------------

    @staticmethod
    def user(
        user_id: int, username: str, *, global_name: str | None = None, bot: bool = False
    ) -> JSON:
        found: JSON = {
            "id": str(user_id),
            "username": username,
            "discriminator": "0",
            "global_name": global_name,
            "avatar": None,
        }
        if bot:
            found["bot"] = True
        return found

    def member(self, user: JSON, *, nick: str | None = None) -> JSON:
        return {
            "user": user,
            "nick": nick,
            "roles": [],
            "joined_at": iso_now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
        }

    def guild(self, name: str, *, channels: tuple[str, ...] = ("general",)) -> JSON:
        """A guild the bot is in (sent on READY), with text channels."""
        guild_id = snowflake()
        guild: JSON = {
            "id": str(guild_id),
            "name": name,
            "icon": None,
            "owner_id": self.application["owner"]["id"],
            "unavailable": False,
            "member_count": 3,
            "large": False,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [
                {
                    "id": str(guild_id),
                    "name": "@everyone",
                    "permissions": str((1 << 10) | (1 << 11) | (1 << 15) | (1 << 16)),
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "channels": [],
            "threads": [],
            "members": [self.member(self.bot_user)],
            "voice_states": [],
            "presences": [],
            "joined_at": iso_now(),
            "preferred_locale": "en-US",
            "premium_tier": 0,
            "verification_level": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_id": None,
        }
        for position, channel_name in enumerate(channels):
            channel: JSON = {
                "id": str(snowflake()),
                "type": 0,
                "guild_id": str(guild_id),
                "name": channel_name,
                "position": position,
                "permission_overwrites": [],
                "parent_id": None,
                "nsfw": False,
                "topic": None,
                "last_message_id": None,
                "rate_limit_per_user": 0,
            }
            guild["channels"].append(channel)
            self.channels[int(channel["id"])] = channel
        self.guilds[guild_id] = guild
        return guild

    def dm_channel(self, user: JSON) -> JSON:
        user_id = int(user["id"])
        if user_id not in self.dm_channels:
            channel: JSON = {
                "id": str(snowflake()),
                "type": 1,
                "recipients": [user],
                "last_message_id": None,
            }
            self.dm_channels[user_id] = channel
            self.channels[int(channel["id"])] = channel
        return self.dm_channels[user_id]

    def attachment(
        self,
        channel: JSON,
        data: bytes,
        *,
        filename: str,
        content_type: str,
        voice: tuple[float, str] | None = None,
        size: tuple[int, int] | None = None,
    ) -> JSON:
        """An attachment served by the fake CDN; `voice`: (duration_secs, waveform)."""
        attachment_id = snowflake()
        path = f"/attachments/{channel['id']}/{attachment_id}/{filename}"
        self.cdn[path] = (data, content_type)
        found: JSON = {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": f"{self.base}{path}?ex=1&is=2&hm=3",
            "proxy_url": f"{self.base}{path}",
            "content_type": content_type,
        }
        if voice is not None:
            found["duration_secs"], found["waveform"] = voice
            found["flags"] = IS_VOICE_MESSAGE
        if size is not None:
            found["width"], found["height"] = size
        return found

    def message(
        self,
        channel: JSON,
        author: JSON,
        content: str = "",
        *,
        mentions: tuple[JSON, ...] = (),
        reply_to: JSON | None = None,
        attachments: tuple[JSON, ...] = (),
    ) -> JSON:
        """A MESSAGE_CREATE payload from `author` in `channel`."""
        guild_id = channel.get("guild_id")
        msg: JSON = {
            "id": str(snowflake()),
            "channel_id": channel["id"],
            "author": author,
            "content": content,
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [{**u, "member": self.member(u)} if guild_id else u for u in mentions],
            "mention_roles": [],
            "attachments": list(attachments),
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if any(a.get("flags", 0) & IS_VOICE_MESSAGE for a in attachments):
            msg["flags"] = IS_VOICE_MESSAGE
        if guild_id:
            msg["guild_id"] = guild_id
            msg["member"] = {k: v for k, v in self.member(author).items() if k != "user"}
        if reply_to is not None:
            msg["type"] = 19
            msg["message_reference"] = {
                "type": 0,
                "message_id": reply_to["id"],
                "channel_id": reply_to["channel_id"],
                **({"guild_id": guild_id} if guild_id else {}),
            }
            msg["referenced_message"] = reply_to
        return msg

    def mention(self, user: JSON) -> str:
        return f"<@{user['id']}>"

    def fail_next(
        self,
        route: str,
        *,
        times: int = 1,
        status: int = 429,
        retry_after: float = 0.5,
        after_handling: bool = False,
    ) -> None:
        """The next `times` calls of `route` (e.g. "POST /channels/{channel_id}/messages")
        fail: 429 with `retry_after` seconds, or any other status. `after_handling`: the
        call does its work first (a message is posted) and then fails, as when Discord's
        answer is lost on the way."""
        failure = (status, retry_after, after_handling)
        self._failures.setdefault(route, []).extend([failure] * times)

    # the gateway, from the test's side -----------------------------------------------

    async def post(self, message: JSON) -> JSON:
        """The message arrives (MESSAGE_CREATE)."""
        await self.gateway.dispatch("MESSAGE_CREATE", message)
        return message

    async def edit(self, message: JSON, content: str) -> JSON:
        """The author edits `message` (MESSAGE_UPDATE with the whole message)."""
        edited = {**message, "content": content, "edited_timestamp": iso_now()}
        await self.gateway.dispatch("MESSAGE_UPDATE", edited)
        return edited

    # interactions --------------------------------------------------------------------

    def slash(self, user: JSON, channel: JSON, name: str, *args: str, **options: Any) -> JSON:
        """An INTERACTION_CREATE for `/name [sub] option:value...`, checked against the
        commands the bot synced (globally, or to the channel's guild)."""
        guild_id = channel.get("guild_id")
        synced = [*self.commands.get(int(guild_id) if guild_id else None, [])]
        synced += self.commands.get(None, []) if guild_id else []
        command = next((c for c in synced if c["name"] == name), None)
        assert command is not None, (
            f"/{name} was not synced (synced: {[c['name'] for c in synced]})"
        )
        declared = command.get("options", [])
        options_out: list[JSON]
        if args:
            (sub_name,) = args
            sub = next((o for o in declared if o["name"] == sub_name and o["type"] == 1), None)
            assert sub is not None, f"/{name} has no subcommand {sub_name}"
            options_out = [
                {
                    "type": 1,
                    "name": sub_name,
                    "options": options_for(sub.get("options", []), options),
                }
            ]
        else:
            options_out = options_for(declared, options)
        data: JSON = {"id": command["id"], "name": name, "type": 1, "options": options_out}
        if guild_id:
            data["guild_id"] = guild_id
        return self._interaction(2, user, channel, data)

    def press(self, user: JSON, message: Posted, custom_id: str) -> JSON:
        """An INTERACTION_CREATE for pressing the button `custom_id` on `message`."""
        assert custom_id in message.custom_ids, f"no button {custom_id} on {message.custom_ids}"
        channel = self.channels[message.channel_id]
        data = {"custom_id": custom_id, "component_type": 2}
        return self._interaction(3, user, channel, data, message=self._message_json(message))

    def _interaction(
        self, kind: int, user: JSON, channel: JSON, data: JSON, *, message: JSON | None = None
    ) -> JSON:
        token = "itoken-" + secrets.token_urlsafe(24)
        guild_id = channel.get("guild_id")
        found: JSON = {
            "id": str(snowflake()),
            "application_id": self.application["id"],
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "channel_id": channel["id"],
            "channel": channel,
            "app_permissions": str((1 << 53) - 1),
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": guild_id} if guild_id else {"1": user["id"]},
            "context": 0 if guild_id else 1,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild_id:
            found["guild_id"] = guild_id
            found["guild_locale"] = "en-US"
            found["member"] = {**self.member(user), "permissions": str((1 << 53) - 1)}
        else:
            found["user"] = user
        if message is not None:
            found["message"] = message
        self._interactions[token] = found
        return found

    async def interact(self, interaction: JSON) -> JSON:
        await self.gateway.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    def answers(self, interaction: JSON) -> list[Posted]:
        """What the bot answered to `interaction`: its response, then follow-ups."""
        wanted = int(interaction["id"])
        return [p for p in self.posted if p.interaction_id == wanted]

    def callback_types(self, interaction: JSON) -> list[int]:
        wanted = int(interaction["id"])
        return [int(body["type"]) for iid, body in self.callbacks if iid == wanted]

    # what tests look at --------------------------------------------------------------

    def sent(self, channel: JSON | None = None) -> list[Posted]:
        """Messages the bot posted in channels (interaction answers not included)."""
        return [
            p
            for p in self.posted
            if p.interaction_id is None and (channel is None or p.channel_id == int(channel["id"]))
        ]

    def replies_to(self, message: JSON) -> list[Posted]:
        return [p for p in self.sent() if p.reply_to == int(message["id"])]

    def typing(self, channel: JSON) -> int:
        path = f"/api/v10/channels/{channel['id']}/typing"
        return len([c for c in self.calls if c.path == path and c.status == 204])

    def calls_to(self, route: str) -> list[Call]:
        return [c for c in self.calls if c.route == route]

    async def wait_for(
        self, condition: Callable[[], bool], *, within: float = 15.0, what: str = "it"
    ) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                recent = [(c.route, c.status) for c in self.calls[-12:]]
                raise AssertionError(f"timed out waiting for {what}; last calls: {recent}")
            await asyncio.sleep(0.02)

    # REST: the wire -------------------------------------------------------------------

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        info = request.match_info
        template = info.route.resource.canonical if info.route.resource else request.path
        route = f"{request.method} {template.removeprefix('/api/v10')}"
        if request.path in ("/gateway", "/resume-gateway"):  # the websocket
            response: web.StreamResponse = await handler(request)
            return response
        call = Call(
            method=request.method,
            route=route,
            path=request.path,
            params=dict(request.query),
            authorization=request.headers.get("Authorization"),
        )
        try:
            call.payload, call.files = await read_body(request)
        except ConnectionResetError:
            return web.Response(status=499)
        request[CALL] = call
        self.calls.append(call)
        response = await self._answer(request, call, handler)
        call.status = response.status
        return response

    async def _answer(
        self, request: web.Request, call: Call, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        by_token = call.route.startswith(("POST /interactions", "POST /webhooks", "GET /webhooks"))
        by_token = by_token or "/webhooks/" in call.route or call.path.startswith("/attachments/")
        if not by_token and call.authorization != f"Bot {self.token}":
            return error(401, "401: Unauthorized")
        failures = self._failures.get(call.route)
        if failures:
            status, retry_after, after_handling = failures.pop(0)
            if after_handling:
                await handler(request)
            if status == 429:
                return too_many(retry_after)
            return error(status, "Internal Server Error" if status >= 500 else "Error")
        response: web.StreamResponse = await handler(request)
        if isinstance(response, web.Response) and response.status < 300:
            for key, value in limit_headers(remaining=4, reset_after=1.0).items():
                response.headers.setdefault(key, value)
        return response

    async def _me(self, request: web.Request) -> web.Response:
        return reply(self.bot_user)

    async def _application(self, request: web.Request) -> web.Response:
        return reply(self.application)

    async def _gateway_url(self, request: web.Request) -> web.Response:
        return reply(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 14400000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _commands(self, request: web.Request) -> web.Response:
        call = request[CALL]
        guild = request.match_info.get("guild_id")
        key = int(guild) if guild else None
        if request.method == "PUT":
            body: list[JSON] = call.payload["_list"]
            synced = []
            for command in body:
                synced.append(
                    {
                        **command,
                        "id": str(snowflake()),
                        "application_id": self.application["id"],
                        "version": str(snowflake()),
                        "type": command.get("type", 1),
                        **({"guild_id": guild} if guild else {}),
                    }
                )
            self.commands[key] = synced
            return reply(synced)
        return reply(self.commands.get(key, []))

    async def _typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _open_dm(self, request: web.Request) -> web.Response:
        call = request[CALL]
        recipient = str(call.payload.get("recipient_id"))
        for user_id, channel in self.dm_channels.items():
            if str(user_id) == recipient:
                return reply(channel)
        return error(400, "Unknown user", code=10013)

    async def _create_message(self, request: web.Request) -> web.Response:
        call = request[CALL]
        channel_id = int(request.match_info["channel_id"])
        if channel_id not in self.channels:
            return error(404, "Unknown Channel", code=10003)
        problem = check_message(call)
        if problem is not None:
            return error(400, problem, code=50035)
        nonce = call.payload.get("nonce")
        if nonce and call.payload.get("enforce_nonce") and (channel_id, nonce) in self._nonces:
            return reply(self._message_json(self._nonces[(channel_id, nonce)]))
        posted = self._post(call, channel_id=channel_id)
        if nonce:
            self._nonces[(channel_id, nonce)] = posted
        return reply(self._message_json(posted))

    async def _callback(self, request: web.Request) -> web.Response:
        call = request[CALL]
        token = request.match_info["token"]
        interaction = self._interactions.get(token)
        if interaction is None or interaction["id"] != request.match_info["interaction_id"]:
            return error(404, "Unknown interaction", code=10062)
        iid = int(interaction["id"])
        if any(i == iid for i, _ in self.callbacks):
            return error(400, "Interaction has already been acknowledged.", code=40060)
        body = call.payload
        self.callbacks.append((iid, body))
        kind = int(body["type"])
        data: JSON = body.get("data") or {}
        flags = int(data.get("flags") or 0)
        callback: JSON = {"id": str(iid), "type": interaction["type"]}
        resource: JSON | None = None
        if kind == 4:  # CHANNEL_MESSAGE_WITH_SOURCE
            problem = check_message(call, payload=data)
            if problem is not None:
                return error(400, problem, code=50035)
            posted = self._post(call, channel_id=int(interaction["channel_id"]), payload=data)
            posted.interaction_id = iid
            self._originals[token] = posted
            message = self._message_json(posted)
            callback.update(
                response_message_id=message["id"],
                response_message_ephemeral=bool(flags & EPHEMERAL),
            )
            resource = {"type": 4, "message": message}
        elif kind == 5:  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: "thinking..."
            callback.update(
                response_message_loading=True, response_message_ephemeral=bool(flags & EPHEMERAL)
            )
        elif kind == 7:  # UPDATE_MESSAGE (a button's message, edited)
            message_id = int(interaction["message"]["id"])
            target = next(p for p in self.posted if p.id == message_id)
            edit_posted(target, data)
            resource = {"type": 7, "message": self._message_json(target)}
        elif kind != 6:  # 6: DEFERRED_UPDATE_MESSAGE
            return error(400, f"this fake does not take callback type {kind}")
        out: JSON = {"interaction": callback}
        if resource is not None:
            out["resource"] = resource
        if request.query.get("with_response") in ("1", "true", "True"):
            return reply(out)
        return web.Response(status=204)

    async def _followup(self, request: web.Request) -> web.Response:
        call = request[CALL]
        token = request.match_info["token"]
        interaction = self._interactions.get(token)
        if interaction is None or request.match_info["app_id"] != self.application["id"]:
            return error(404, "Unknown Webhook", code=10015)
        if not any(i == int(interaction["id"]) for i, _ in self.callbacks):
            return error(404, "Unknown Webhook (answer the interaction first)", code=10015)
        problem = check_message(call)
        if problem is not None:
            return error(400, problem, code=50035)
        posted = self._post(call, channel_id=int(interaction["channel_id"]))
        posted.interaction_id = int(interaction["id"])
        return reply(self._message_json(posted))

    async def _original(self, request: web.Request) -> web.Response:
        call = request[CALL]
        token = request.match_info["token"]
        interaction = self._interactions.get(token)
        if interaction is None:
            return error(404, "Unknown Webhook", code=10015)
        if request.match_info["message_id"] != "@original":
            return error(404, "this fake edits only @original")
        posted = self._originals.get(token)
        if request.method == "GET":
            return reply(self._message_json(posted)) if posted else error(404, "Unknown Message")
        if request.method != "PATCH":
            return error(405, "Method Not Allowed")
        if posted is None:  # editing a deferred answer: it becomes the original message
            posted = self._post(call, channel_id=int(interaction["channel_id"]))
            posted.interaction_id = int(interaction["id"])
            self._originals[token] = posted
        else:
            edit_posted(posted, call.payload, files=call.files)
        return reply(self._message_json(posted))

    async def _download(self, request: web.Request) -> web.Response:
        found = self.cdn.get(request.path)
        if found is None:
            return web.Response(status=404, text="Not Found")
        data, content_type = found
        return web.Response(body=data, headers={"Content-Type": content_type})

    def _post(self, call: Call, *, channel_id: int, payload: JSON | None = None) -> Posted:
        body = payload if payload is not None else call.payload
        posted = Posted(
            id=snowflake(),
            channel_id=channel_id,
            content=str(body.get("content") or ""),
            flags=int(body.get("flags") or 0),
            payload=body,
            files=[(name, data, ctype) for _, name, data, ctype in call.files],
        )
        self.posted.append(posted)
        return posted

    def _message_json(self, posted: Posted) -> JSON:
        channel = self.channels.get(posted.channel_id, {})
        attachments = []
        for index, (name, data, ctype) in enumerate(posted.files):
            meta: JSON = next((a for a in posted.attachments if str(a.get("id")) == str(index)), {})
            path = f"/attachments/{posted.channel_id}/{posted.id}{index}/{name}"
            self.cdn[path] = (data, ctype)
            attachment: JSON = {
                "id": str(posted.id + index + 1),
                "filename": name,
                "size": len(data),
                "url": f"{self.base}{path}",
                "proxy_url": f"{self.base}{path}",
                "content_type": ctype,
            }
            for key in ("duration_secs", "waveform"):
                if key in meta:
                    attachment[key] = meta[key]
            attachments.append(attachment)
        message: JSON = {
            "id": str(posted.id),
            "channel_id": str(posted.channel_id),
            "author": self.bot_user,
            "content": posted.content,
            "timestamp": iso_now(),
            "edited_timestamp": iso_now() if posted.edits else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": [],
            "components": posted.payload.get("components") or [],
            "pinned": False,
            "type": 19 if posted.reply_to else 0,
            "flags": posted.flags,
        }
        if channel.get("guild_id"):
            message["guild_id"] = channel["guild_id"]
        if posted.reply_to:
            message["message_reference"] = posted.payload["message_reference"]
        return message

    def _ready(self, session_id: str) -> JSON:
        """The READY payload of a new session."""
        return {
            "v": 10,
            "user": {**self.bot_user, "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": gid, "unavailable": True} for gid in map(str, self.guilds)],
            "session_id": session_id,
            "resume_gateway_url": f"{self.gateway_url.rsplit('/', 1)[0]}/resume-gateway",
            "application": {"id": self.application["id"], "flags": self.application["flags"]},
            "private_channels": [],
            "relationships": [],
        }


__all__ = [
    "EPHEMERAL",
    "IS_VOICE_MESSAGE",
    "JSON",
    "TOKEN",
    "Call",
    "FakeDiscord",
    "Posted",
    "snowflake",
]
