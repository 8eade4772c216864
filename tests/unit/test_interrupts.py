"""seg_eval.interrupts: a signal during the block acts only after it, through the old handler."""
import os
import signal
import threading
import time

import pytest

from seg_eval.interrupts import interrupts_deferred


def _deliver(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)   # Python runs handlers between bytecodes: give it the chance


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler, whatever an earlier test of this process installed."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_inside_the_block_is_raised_after_it_finished(ctrl_c_raises):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            _deliver(signal.SIGINT)
            done.append("registered")
    assert done == ["registered"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_goes_to_the_handler_that_was_there_before():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with interrupts_deferred():
            _deliver(signal.SIGTERM)
            assert seen == []
        time.sleep(0.05)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_block_without_signals_leaves_the_handlers_as_they_were():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with interrupts_deferred():
        pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_outside_the_main_thread_it_does_nothing():
    errors = []

    def work():
        try:
            with interrupts_deferred():
                pass
        except Exception as e:   # signal.signal would raise ValueError here
            errors.append(e)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors == []
