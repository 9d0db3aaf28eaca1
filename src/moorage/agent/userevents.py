"""User events on this node (Consul's `event fire`): run the configured handler of each event
aimed at the node, from now on (not the backlog).

    GET /v1/event/list?node=<name>&index=N (blocking; the server applies the events' node,
    service and tag filters) ─▶ each new event (by LTime) ─▶ its handler (`--event-handler
    NAME=CMD`), the event JSON on stdin, MOORAGE_EVENT_* in the environment, 60 s at most
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from typing import Any

from .client import ServerClient, ServerError

log = logging.getLogger(__name__)

WATCH_WAIT = 30.0
EVENT_HANDLER_TIMEOUT = 60.0


class UserEventHandlers:
    def __init__(self, client: ServerClient, node: str, handlers: dict[str, str]) -> None:
        self.client = client
        self.node = node
        self.handlers = handlers

    async def run(self) -> None:
        """Run the configured handler of each user event fired from now on (not the backlog)."""
        index, seen, backoff = 0, -1, 0.2
        while True:
            try:
                events, new_index = await self.client.user_events(self.node, index, WATCH_WAIT)
            except ServerError as exc:
                log.warning("watching user events failed: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            if seen < 0:  # the first answer: what happened before this agent started
                seen = max((int(e.get("LTime", 0)) for e in events), default=0)
            for event in sorted(events, key=lambda e: int(e.get("LTime", 0))):
                if int(event.get("LTime", 0)) > seen:
                    seen = int(event["LTime"])
                    await self._handle_event(event)
            index = new_index if new_index >= index else 0

    async def _handle_event(self, event: dict[str, Any]) -> None:
        name = str(event.get("Name", ""))
        command = self.handlers.get(name)
        if command is None:  # the server sends only the events whose filters select this node
            return
        payload = base64.b64decode(event.get("Payload") or "")
        env = {
            **os.environ,
            "MOORAGE_EVENT_ID": str(event.get("ID", "")),
            "MOORAGE_EVENT_NAME": name,
            "MOORAGE_EVENT_PAYLOAD": payload.decode(errors="replace"),
            "MOORAGE_NODE": self.node,
        }
        try:
            process = await asyncio.create_subprocess_shell(
                command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
            output, _ = await asyncio.wait_for(
                process.communicate(json.dumps([event]).encode()), EVENT_HANDLER_TIMEOUT
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            log.warning("event %s: handler timed out after %ss", name, EVENT_HANDLER_TIMEOUT)
            return
        except OSError as exc:
            log.warning("event %s: handler could not start: %s", name, exc)
            return
        text = output.decode(errors="replace").strip()[-2000:]
        log.info(
            "event %s (%s): handler exited %s %s", name, event.get("ID"), process.returncode, text
        )
