"""Slack channel: chat.postMessage to the rep's user id, found by email when the file has none."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final

from slack_sdk import WebClient

from connectors.notify.common import run, transport
from connectors.notify.errors import classify_slack
from sync.notify import Delivery, Notice, slack_message

TOKEN_SETTING = "ACCOUNT_ROUTER_SLACK_TOKEN"
# users.lookupByEmail is Tier 3 (about 50 calls a minute): a rep's id is looked up once an hour,
# not once a lead. A wrong or removed address is asked again after a few minutes.
LOOKUP_TTL_SECONDS = 3600.0
MISS_TTL_SECONDS = 300.0
TIMEOUT_SECONDS = 10


class SlackSender:
    """Sends notices as Slack direct messages from the app's bot user."""

    channel: Final = "slack"

    def __init__(self, token: str, base_url: str = "https://slack.com/api/", *,
                 timeout: int = TIMEOUT_SECONDS, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # retry_handlers=[]: slack-sdk's own connection retry would be a second retry layer
        # under ours (connectors.transport), doubling attempts and hiding them from the table.
        self.client = WebClient(token=token, base_url=base_url, timeout=timeout,
                                retry_handlers=[])
        self.transport = transport("slack", classify_slack, TOKEN_SETTING, sleep=sleep)
        self._clock = clock
        self._ids: dict[str, tuple[str | None, float, str | None]] = {}  # email -> (id, until, why)
        self._lock = threading.Lock()

    def user_id(self, email: str) -> str | Delivery:
        """The Slack user id of `email` (cached), or the failed Delivery of the lookup."""
        key = email.strip().lower()
        now = self._clock()
        with self._lock:
            cached = self._ids.get(key)
        if cached is not None and cached[1] > now:
            found, _, why = cached
            return found if found is not None else Delivery(False, why, False, email)
        answer = run(self.transport, "users.lookupByEmail",
                     lambda: self.client.users_lookupByEmail(email=email))
        if isinstance(answer, Delivery):
            if not answer.retryable:  # users_not_found: not asked again every lead
                with self._lock:
                    self._ids[key] = (None, now + MISS_TTL_SECONDS, answer.error)
            return Delivery(False, answer.error, answer.retryable, email)
        user: Any = answer.get("user") or {}
        user_id = str(user.get("id") or "")
        if not user_id:
            return Delivery(False, "slack: users.lookupByEmail answered no user id", False, email)
        with self._lock:
            self._ids[key] = (user_id, now + LOOKUP_TTL_SECONDS, None)
        return user_id

    def send(self, notice: Notice) -> Delivery:
        if notice.slack:
            target: str | Delivery = notice.slack
        elif notice.email:
            target = self.user_id(notice.email)
        else:
            return Delivery(False, "no slack id or email for this rep", False)
        if isinstance(target, Delivery):
            return target
        text, blocks = slack_message(notice)
        user = target
        answer = run(self.transport, "chat.postMessage",
                     lambda: self.client.chat_postMessage(channel=user, text=text, blocks=blocks,
                                                          unfurl_links=False))
        if isinstance(answer, Delivery):
            return Delivery(False, answer.error, answer.retryable, user)
        return Delivery(True, None, False, user)

    def close(self) -> None:
        return None
