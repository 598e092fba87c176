"""The thread that owns an `Engine` and runs its continuous-batching loop.

One engine must be driven by one thread, and PyTorch work must not run on an asyncio event loop
(it would stall every other connection of a server). So a `LocalGenerator` hands its requests to
a `ModelWorker`: callers `submit` generation requests from any thread; the worker thread admits
them into free KV-cache rows, calls `Engine.step()` (one token for every active row), and hands
text and completions back — to an event loop with `loop.call_soon_threadsafe` (`StreamingJob`,
for the server), or to a waiting thread through a queue (`BatchJob`, for batch generation).

Capacity for streaming jobs is the engine's rows plus a bounded waiting queue; beyond it
`submit` raises `Overloaded` (HTTP 529) at once rather than letting latency grow without bound.
Batch jobs wait in the queue however long it is: their caller holds them all anyway. A caller
whose client went away calls `Job.cancel()`; the engine drops the row before its next decode
step, so a cancelled sequence gets at most the one token of a step already under way.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from charter.infer.engine import Completion, Engine, GenerationRequest
from charter.infer.generator import Overloaded


@dataclass
class WorkerStats:
    active: int  # sequences holding a KV-cache row
    waiting: int  # admitted to the queue, not yet to a row
    completed: int
    cancelled: int
    # The most tokens any cancelled sequence generated after its cancellation (≤ 1: one step).
    max_tokens_after_cancel: int


class Job:
    """One submitted request. The worker thread calls `_deliver` with each text piece, then the
    `Completion` or the exception that ended it."""

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.completion: Completion | None = None
        self.tokens_at_cancel: int | None = None

    def _deliver(self, item: str | Completion | BaseException) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        if not self.request.cancelled:
            self.tokens_at_cancel = len(self.request.generated)
            self.request.cancelled = True


class StreamingJob(Job):
    """A job seen from an event loop: an async stream of text, then `completion` is set."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(request)
        self._loop = loop
        self._events: asyncio.Queue[str | Completion | BaseException] = asyncio.Queue()
        request.on_text = self._deliver

    def _deliver(self, item: str | Completion | BaseException) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancel()

    async def text(self) -> AsyncIterator[str]:
        """Released text pieces until the generation ends; then `completion` is set."""
        while True:
            item = await self._events.get()
            if isinstance(item, Completion):
                self.completion = item
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class BatchJob(Job):
    """A job whose caller waits for many at once: when it ends, it puts itself on `finished`."""

    def __init__(self, request: GenerationRequest, finished: queue.SimpleQueue) -> None:
        super().__init__(request)
        self._finished = finished
        self.error: BaseException | None = None

    def _deliver(self, item: str | Completion | BaseException) -> None:
        if isinstance(item, Completion):
            self.completion = item
        elif isinstance(item, BaseException):
            self.error = item
        else:
            return
        self._finished.put(self)


class ModelWorker:
    def __init__(self, engine: Engine, max_waiting: int = 64) -> None:
        self.engine = engine
        self.max_waiting = max_waiting
        self._waiting: deque[Job] = deque()
        self._running: dict[int, Job] = {}  # id(request) → job, for jobs holding a row
        self._lock = threading.Condition()
        self._stopping = False
        self._completed = self._cancelled = self._max_tokens_after_cancel = 0
        self._thread = threading.Thread(target=self._loop, name="charter-model-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def capacity(self) -> int:
        return self.engine.max_batch_size + self.max_waiting

    def submit(self, job: Job) -> Job:
        """Queue `job`. A `StreamingJob` beyond capacity raises `Overloaded`."""
        with self._lock:
            busy = len(self._waiting) + len(self._running)
            if isinstance(job, StreamingJob) and busy >= self.capacity:
                raise Overloaded(
                    f"all {self.engine.max_batch_size} sequence slots are busy and the "
                    f"waiting queue ({self.max_waiting}) is full"
                )
            self._waiting.append(job)
            self._lock.notify()
        return job

    def stats(self) -> WorkerStats:
        with self._lock:
            return WorkerStats(
                active=len(self._running),
                waiting=len(self._waiting),
                completed=self._completed,
                cancelled=self._cancelled,
                max_tokens_after_cancel=self._max_tokens_after_cancel,
            )

    # ---- the worker thread ----

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not (self._waiting or self._running or self._stopping):
                    self._lock.wait()
                if self._stopping:
                    return
                admitted = self._take_admissible()
            try:
                for job in admitted:
                    self._prefill(job)
                finished = self.engine.step()
            except Exception as error:  # a bug or OOM: fail these requests, keep serving
                self._fail_all(error)
                continue
            self._settle(finished)

    def _take_admissible(self) -> list[Job]:
        """Waiting jobs that fit in free rows, skipping those cancelled while they waited."""
        admitted = []
        while self._waiting and self.engine.free_rows > len(admitted):
            job = self._waiting.popleft()
            if job.request.cancelled:
                self._cancelled += 1
                continue
            self._running[id(job.request)] = job
            admitted.append(job)
        return admitted

    def _prefill(self, job: Job) -> None:
        try:
            self.engine.add(job.request)
        except ValueError as error:  # e.g. a prompt longer than the context: this request only
            with self._lock:
                del self._running[id(job.request)]
            job._deliver(error)

    def _settle(self, finished: list[GenerationRequest]) -> None:
        """Deliver completions, and forget jobs whose cancelled rows the engine dropped."""
        holding_rows = {id(request) for request in self.engine.active_requests}
        with self._lock:
            for request in finished:
                job = self._running.pop(id(request))
                self._completed += 1
                job._deliver(request.completion)
            for key, job in list(self._running.items()):
                if job.request.cancelled and key not in holding_rows:
                    del self._running[key]
                    self._cancelled += 1
                    after = len(job.request.generated) - (job.tokens_at_cancel or 0)
                    self._max_tokens_after_cancel = max(self._max_tokens_after_cancel, after)

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            for job in self._running.values():
                job._deliver(RuntimeError(f"generation failed: {error}"))
            self._running.clear()
            self.engine.drop_all()
