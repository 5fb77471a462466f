"""Work ahead in a background thread, so that decoding images or video frames overlaps the model."""
import queue
import threading
from typing import Any, Callable, Iterable, Iterator, Tuple, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_background(items: Iterable[T], ahead: int = 8) -> Iterator[T]:
    """Iterate `items` in a background thread, up to `ahead` items in advance.

    Args:
        items: any iterable; it is consumed in the background thread.
        ahead: how many items may wait, decoded, for the consumer.

    Yields:
        The items, in order. An exception raised while iterating is raised here, in its place. Leaving the loop
        early stops the background thread.
    """
    buffer: "queue.Queue[Tuple[bool, Any]]" = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put((True, item))
            buffer.put((False, None))
        except Exception as error:  # handed over to the consumer
            buffer.put((False, error))

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            ok, item = buffer.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                worker.join(0.05)


def prefetch(function: Callable[[T], R], items: Iterable[T], ahead: int = 4) -> Iterator[Tuple[T, Any]]:
    """Yield (item, function(item)) in order, computing up to `ahead` results in a background thread (see
    `in_background`). An exception of `function` is yielded in place of its item's result, not raised: the
    caller decides per item (an unreadable photo is reported and skipped)."""
    def guarded(item: T) -> Any:
        try:
            return function(item)
        except Exception as error:
            return error

    return in_background(((item, guarded(item)) for item in items), ahead)
