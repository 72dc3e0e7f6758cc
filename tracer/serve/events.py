"""Kubernetes Events for `droptrace serve --events`: `kubectl describe pod` shows that the node
drops the pod's packets, why, and what to change.

One Event per pod and cause (the drop's category): reason PacketsDropped, type Warning, the
explanation and the fix of the latest drop in its message, and a count. A new Event is
created at most once a minute for each pod and cause; further drops patch its count (with its
last time and message), at most every PATCH_EVERY_S. A new one follows only when the old one
is gone (the API server expires Events, an hour by default) or could not be created.

Posting never holds up the stream: the agent hands each drop to a bounded queue (a full queue
counts the drop out of the Events, never waits), and one background thread aggregates and
talks to the API server. Each failure is one line, said once until posting works again.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tracer.model import AttributedDrop, Category, proto_name

REASON = "PacketsDropped"
NEW_EVENT_EVERY_S = 60.0  # per pod and cause
PATCH_EVERY_S = 10.0  # per Event: its count is current to within this, not every drop a call
FLUSH_EVERY_S = 1.0
POSTS_PER_FLUSH = 20  # requests to the API server in one flush: at most 20 a second
QUEUE_SIZE = 1024
MAX_TALLIES = 4096  # pods x causes followed at once; beyond, drops are left out (said once)
FORGET_AFTER_S = 3600.0  # a pair quiet this long is forgotten (the API server's default TTL)
CLOSE_DEADLINE_S = 1.0  # the last counts at exit: never holds a SIGTERM up longer
MESSAGE_MAX = 1024  # events.k8s.io's limit on a note; core v1 has none, a reader wants one


class EventGone(Exception):
    """The Event to patch is not there any more (expired or deleted)."""


class PostFailed(Exception):
    """The API server refused or did not answer; str() says why, in a few words."""


class EventApi(Protocol):
    """What the poster asks of the API server (KubeEvents, or a test's fake)."""

    def pod_uid(self, namespace: str, name: str) -> str | None: ...
    def create(self, key: PairKey, tally: Tally, count: int) -> str: ...
    def patch(self, key: PairKey, name: str, tally: Tally, count: int) -> None: ...


@dataclass(frozen=True, slots=True)
class PairKey:
    namespace: str
    pod: str
    cause: str  # the drop's category


@dataclass(frozen=True, slots=True)
class Sighting:
    """One explained drop, as seen by one of the pods it involved."""

    key: PairKey
    count: int  # this drop and the identical ones the per-flow limit held back before it
    at: datetime
    message: str


@dataclass(slots=True)
class Tally:
    """One pod and cause: what the API server has, and what it does not have yet."""

    first: datetime
    last: datetime
    message: str
    pending: int = 0  # drops not posted yet
    posted: int = 0  # the Event's count as the API server has it
    event: str | None = None  # the Event's name once created
    uid: str = ""  # the pod's, for involvedObject (kubectl describe matches on it)
    created_at: float = -math.inf  # monotonic time of the last create attempt
    patched_at: float = -math.inf
    seen_at: float = 0.0


def sightings(item: AttributedDrop, node: str) -> list[Sighting]:
    """A drop as each pod at its ends sees it: none for expected noise, nor for drops with no
    known cause (`other`: an Event would only say that a packet died)."""
    diag, facts, drop = item.diagnosis, item.facts, item.drop
    if diag.benign or diag.category is Category.OTHER:
        return []
    pods = dict.fromkeys(p for p in (facts.src_pod, facts.dst_pod) if p)
    if not pods:
        return []
    src = f"{drop.src}:{drop.sport}" if drop.sport is not None else str(drop.src)
    dst = f"{drop.dst}:{drop.dport}" if drop.dport is not None else str(drop.dst)
    flow = f"{src} -> {dst} {proto_name(drop.l4proto) or ''}".rstrip()
    text = f"{diag.category} on node {node} ({flow}): {diag.explanation}"
    if diag.fix:
        text += f"; fix: {diag.fix}"
    if len(text) > MESSAGE_MAX:
        text = text[: MESSAGE_MAX - 3] + "..."
    out = []
    for ref in pods:
        namespace, _, name = ref.partition("/")
        key = PairKey(namespace, name, str(diag.category))
        out.append(Sighting(key, 1 + drop.suppressed, facts.time, text))
    return out


class Tallies:
    """Counts per pod and cause, and when each may be posted: no threads, no I/O of its own
    (the API is given), so the rate limits are tested with a clock."""

    def __init__(
        self, api: EventApi, note: Callable[[str], None], clock: Callable[[], float]
    ) -> None:
        self._api = api
        self._note = note
        self._clock = clock
        self.by_key: dict[PairKey, Tally] = {}
        self.left_out = 0  # drops not counted: too many pods and causes at once
        self._said: set[str] = set()  # notes given, each once
        self._failing: str | None = None

    def add(self, s: Sighting) -> None:
        t = self.by_key.get(s.key)
        if t is None:
            if len(self.by_key) >= MAX_TALLIES:
                self.left_out += s.count
                self.say_once(f"following {MAX_TALLIES} pods and causes: others get no Event")
                return
            t = self.by_key[s.key] = Tally(first=s.at, last=s.at, message=s.message)
        if t.pending == 0:
            t.first = s.at
        t.pending += s.count
        t.last = max(t.last, s.at)
        t.message = s.message
        t.seen_at = self._clock()

    def flush(self, final: bool = False, deadline: float = math.inf) -> None:
        """Post what is due; `final`: every count now (creates still at most once a minute).
        The first failure ends the flush: the API server is not answering well, so the next
        pairs would wait on it too."""
        now = self._clock()
        posts = 0
        # The longest-waiting first, so a busy pod cannot starve the others.
        waiting = sorted(
            (k for k, t in self.by_key.items() if t.pending),
            key=lambda k: min(self.by_key[k].created_at, self.by_key[k].patched_at),
        )
        for key in waiting:
            if (posts >= POSTS_PER_FLUSH and not final) or self._clock() > deadline:
                break
            try:
                posts += self._post(key, self.by_key[key], now, final)
            except PostFailed as err:
                self.failed(str(err))
                break
        for key in [k for k, t in self.by_key.items() if now - t.seen_at > FORGET_AFTER_S]:
            if not self.by_key[key].pending:
                del self.by_key[key]

    def _post(self, key: PairKey, t: Tally, now: float, final: bool) -> int:
        """One pair's create or patch, if due; the number of requests it made."""
        if t.event is not None and (final or now - t.patched_at >= PATCH_EVERY_S):
            t.patched_at = now
            try:
                self._api.patch(key, t.event, t, t.posted + t.pending)
            except EventGone:
                t.event, t.posted = None, 0  # a new Event, when the minute allows
            else:
                t.posted += t.pending
                t.pending = 0
                self._worked()
                return 1
        if t.event is not None or now - t.created_at < NEW_EVENT_EVERY_S:
            return 0
        t.created_at = now
        uid = self._api.pod_uid(key.namespace, key.pod)
        if uid is None:
            self.say_once(f"no Events for pod {key.namespace}/{key.pod}: the API has no such pod")
            t.pending = 0
            return 1
        t.uid = uid
        t.event = self._api.create(key, t, t.pending)
        t.posted, t.pending, t.patched_at = t.pending, 0, now
        self._worked()
        return 2

    def say_once(self, line: str) -> None:
        if line not in self._said:
            self._said.add(line)
            self._note(line)

    def failed(self, why: str) -> None:
        if why != self._failing:
            self._failing = why
            self._note(f"Kubernetes Event not posted: {why}; retrying, its drops still counted")

    def _worked(self) -> None:
        if self._failing is not None:
            self._failing = None
            self._note("Kubernetes Events posted again")


class EventPoster:
    """The agent's side: offer() from the stream never blocks; one thread posts."""

    def __init__(
        self,
        api: EventApi,
        node: str,
        note: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node = node
        self._clock = clock
        self.tallies = Tallies(api, note, clock)
        self._queue: queue.Queue[AttributedDrop | None] = queue.Queue(QUEUE_SIZE)
        self.overflow = 0  # drops a full queue left out (written by the stream's thread only)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="k8s-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, item: AttributedDrop) -> None:
        """Queue a drop that may become part of an Event (sightings() decides the rest)."""
        diag = item.diagnosis
        if diag.benign or diag.category is Category.OTHER:
            return
        if not (item.facts.src_pod or item.facts.dst_pod):
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.overflow += 1 + item.drop.suppressed

    def close(self) -> None:
        """Post the last counts (for at most CLOSE_DEADLINE_S) and stop the thread."""
        if not self._thread.is_alive():
            return
        self._stopped.set()
        # Wakes the thread at once; a full queue means it is busy, and sees the flag soon.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(CLOSE_DEADLINE_S + FLUSH_EVERY_S)

    def _fold(self, item: AttributedDrop | None) -> None:
        for s in sightings(item, self._node) if item is not None else ():
            self.tallies.add(s)

    def _run(self) -> None:
        next_flush = self._clock() + FLUSH_EVERY_S
        while not self._stopped.is_set():
            with contextlib.suppress(queue.Empty):
                self._fold(self._queue.get(timeout=max(0.0, next_flush - self._clock())))
            if self._clock() >= next_flush:
                self._flush(self.tallies.flush)
                next_flush = self._clock() + FLUSH_EVERY_S
        while True:  # what the stream had handed over before the stop
            try:
                self._fold(self._queue.get_nowait())
            except queue.Empty:
                break
        deadline = self._clock() + CLOSE_DEADLINE_S
        self._flush(lambda: self.tallies.flush(final=True, deadline=deadline))

    def _flush(self, flush: Callable[[], None]) -> None:
        """An unexpected error is one line; the poster, like the agent, goes on."""
        if self.overflow:
            self.tallies.say_once("Event queue full: some drops are left out of Event counts")
        try:
            flush()
        except Exception as err:
            self.tallies.failed(f"{type(err).__name__}: {err}")
