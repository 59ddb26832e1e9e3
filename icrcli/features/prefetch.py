"""Work one item ahead: while the caller uses item j, a background thread takes item j+1 from the iterator
and prepares it (decoding images, reading an HDF5 block, claiming a chunk). numpy, h5py and image decoders
release the GIL, so the preparation overlaps the caller's compute instead of adding to it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def prefetch(items: Iterable[T], prepare: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """Yield (item, prepare(item)) in order, with the next item drawn and prepared in a background thread.

    At most two prepared results exist at once: the one the caller holds and the next one, so a `prepare`
    may reuse two buffers in turn. Both next(items) and prepare run in the background thread, one at a time.
    If the caller stops early, the pending preparation finishes before this returns, and `items` is closed
    when it is a generator (so its own clean-up, e.g. releasing claims, runs)."""
    it = iter(items)

    def step():
        try:
            item = next(it)
        except StopIteration:
            return _END
        return item, prepare(item)

    with ThreadPoolExecutor(1, thread_name_prefix="icr-prefetch") as pool:
        nxt = pool.submit(step)
        try:
            while True:
                got = nxt.result()
                if got is _END:
                    return
                nxt = pool.submit(step)
                yield got
        finally:
            nxt.cancel()
            try:
                nxt.result()     # let a running preparation end before its resources go
            except BaseException:  # noqa: BLE001, S110 - its error is moot once the caller has stopped
                pass
            close = getattr(it, "close", None)
            if close is not None:
                close()
