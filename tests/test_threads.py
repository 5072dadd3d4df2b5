"""Gaussian-mixture fits run single-threaded and restore the caller's thread pools."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from ebmfit._threads import single_threaded
from ebmfit.base import LogitGMMBase


def _threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info()]


def test_single_threaded_limits_every_pool_and_restores_them_even_on_error():
    seen = []

    @single_threaded
    def work(fail: bool) -> int:
        seen.append(_threads())
        if fail:
            raise RuntimeError("boom")
        return 7

    with threadpool_limits(limits=2):
        before = _threads()
        assert work(False) == 7
        assert _threads() == before
        with pytest.raises(RuntimeError, match="boom"):
            work(True)
        assert _threads() == before
    assert seen and all(all(n == 1 for n in s) for s in seen)


def test_gmm_fit_is_the_same_whatever_the_callers_thread_limits():
    rng = np.random.default_rng(0)
    U = 1 / (1 + np.exp(-rng.normal(size=(300, 3)) @ rng.normal(size=(3, 3))))
    U_tr, U_val = U[:240], U[240:]
    a = LogitGMMBase.fit(U_tr, U_val, random_state=0)
    with threadpool_limits(limits=1):
        b = LogitGMMBase.fit(U_tr, U_val, random_state=0)
    assert a.selected == b.selected
    assert LogitGMMBase.fit.__doc__ and "validation" in LogitGMMBase.fit.__doc__
