"""Hold Ctrl-C and SIGTERM back for a moment.

An interrupt that lands after a child process is forked but before the parent has noted
it anywhere leaves that child running after the parent has cleaned up everything it
knew of. Starting and registering a child inside `interrupts_deferred()` closes that gap:
the signal is acted on, by whatever handler was there before, right after the block.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupts_deferred():
    if threading.current_thread() is not threading.main_thread():
        yield   # signals are handled in the main thread only: nothing can land here
        return
    caught: list[int] = []
    # A handler installed outside Python (getsignal gives None) could not be put back: leave it.
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in DEFERRED if signal.getsignal(sig) is not None}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])
