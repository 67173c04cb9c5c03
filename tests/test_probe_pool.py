"""The grid's fits run in this process and in jobs - 1 workers; every task once, errors raised here."""

import os

import numpy as np
import pytest

from pipeline.probes.pool import run_here_and_in_pool


def _where(i):
    return i, os.getpid()


def _square(x):
    return x * x


def _fail(i):
    raise ValueError(f"task {i} failed")


def test_every_task_runs_once_here_or_in_a_worker():
    n = 40
    here = [(_where, (i,)) for i in range(n)]
    done = dict(run_here_and_in_pool(here, here, jobs=2))
    assert sorted(done) == list(range(n))
    assert all(done[i][0] == i for i in range(n))
    pids = {pid for _, pid in done.values()}
    assert os.getpid() in pids  # this process fitted some
    assert len(pids) == 2  # and one worker the others


def test_here_and_there_may_differ_in_form_not_in_result():
    """The worker gets a cheaper form of the same task (the grid ships a LayerSource, not the codes)."""
    values = np.arange(30.0)
    here = [(_square, (values[i],)) for i in range(30)]
    there = [(_square, (float(i),)) for i in range(30)]
    assert dict(run_here_and_in_pool(here, there, jobs=3)) == {i: float(i * i) for i in range(30)}


@pytest.mark.parametrize("where", ["here", "there"])
def test_an_error_in_a_task_is_raised(where):
    good = [(_square, (1.0,))] * 12
    bad = list(good)
    bad[0 if where == "there" else -1] = (_fail, (7,))  # workers start at the front, this process at the back
    with pytest.raises(ValueError, match="task 7 failed"):
        list(run_here_and_in_pool(bad if where == "here" else good, bad if where == "there" else good, jobs=2))
