"""Where a scoring run's coroutines run: one event loop for the whole run.

A pipeline runs its batches in ordinary (blocking) code; only the user's
``async`` functions need a loop. :class:`LoopBridge` hands them to one:

* ``run()`` in a plain script or inside a running loop (a Jupyter cell): a
  private loop in a helper thread, started at the first coroutine and kept
  for the whole run, so objects an async function caches between records
  (a client, a model) stay bound to one loop. ``asyncio.run()`` per batch
  would fail inside Jupyter's loop and give every batch a new loop.
* ``await arun()``: the caller's own loop. The blocking work runs in a worker
  thread and each coroutine is sent back to the caller's loop, which stays
  free for the rest of the notebook meanwhile.

>>> import asyncio
>>> async def double(x):
...     await asyncio.sleep(0)
...     return 2 * x
>>> with LoopBridge() as bridge:
...     bridge.call(double(21))
42
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["BridgeCancelled", "LoopBridge"]

T = TypeVar("T")


class BridgeCancelled(Exception):
    """The bridge was cancelled (``arun()`` was): the coroutine in flight was abandoned."""


class LoopBridge:
    """Runs coroutines for blocking code: on ``loop`` if given, else on a private loop.

    ``call(coro)`` blocks the calling thread until ``coro`` finishes and returns its
    result (or raises its exception). It must not be called from ``loop``'s own thread
    (that would wait for itself): the pipeline calls it from the thread that runs the
    batches, which is never the caller's loop thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._own = loop is None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._inflight: set[concurrent.futures.Future[Any]] = set()
        self._cancelled = False

    def __enter__(self) -> LoopBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(
                    target=serve, name="safepoint-scoring-loop", daemon=True
                )
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion on the bridge's loop and return its result."""
        loop = self._get_loop()
        with self._lock:
            if self._cancelled:
                coro.close()
                raise BridgeCancelled("cancelled")
            future = asyncio.run_coroutine_threadsafe(coro, loop)
            self._inflight.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._cancelled:
                raise BridgeCancelled("cancelled") from None
            raise
        except BaseException:
            # interrupted while waiting (Ctrl-C): do not leave the coroutine running
            if not future.done():
                future.cancel()
                try:
                    future.result(timeout=5)
                except (concurrent.futures.CancelledError, Exception):
                    pass
            raise
        finally:
            with self._lock:
                self._inflight.discard(future)

    def cancel(self) -> None:
        """Cancel the coroutines in flight; later calls raise :class:`BridgeCancelled`."""
        with self._lock:
            self._cancelled = True
            pending = list(self._inflight)
        for future in pending:
            future.cancel()

    def close(self) -> None:
        """Stop the private loop (a caller's loop is left alone)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if not self._own or loop is None or thread is None:
                return
            self._loop = self._thread = None

        async def _shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(_shutdown(), loop).result(timeout=10)
        except Exception:
            pass  # best effort: the loop is stopped below either way
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
