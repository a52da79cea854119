"""Data-parallel search on torch.distributed: two gloo processes on 127.0.0.1 against one process.

The ranks are started as torchrun starts them (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``), each running ``tests/distributed_worker.py``; every wait has a timeout.  The
single-process references are the same searches (``distributed_worker.build``) run here.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import distributed_worker as worker
from bnas_pyro.inference import MinibatchSampler

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(*args: str, world_size: int = 2, command: list[str] | None = None) -> list[subprocess.Popen]:
    """``world_size`` processes of ``python tests/distributed_worker.py ARGS`` (or of
    ``python COMMAND``), with the variables torchrun sets."""
    port = free_port()
    procs = []
    for rank in range(world_size):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        argv = [sys.executable, *(command if command is not None else [str(WORKER), *args])]
        procs.append(subprocess.Popen(argv, env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    failures = []
    for rank, p in enumerate(procs):
        try:
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"rank {rank} did not finish within {timeout} s")
        if p.returncode != 0:
            failures.append(f"rank {rank} exited {p.returncode}:\n{err[-3000:]}")
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Both ranks' results of the one-step, 20-step, search and restart runs."""
    folder = tmp_path_factory.mktemp("distributed")
    out = folder / "all.pt"
    procs = start_ranks("all", str(out), str(folder))
    finish(procs)
    return [dict(torch.load(f"{out}.{r}", weights_only=False), folder=folder) for r in range(2)]


def test_each_rank_gets_a_disjoint_half_of_the_global_minibatch(two_ranks):
    x, y = worker.cubic_data()
    global_batch, _ = next(MinibatchSampler(x, y, 16, torch.Generator().manual_seed(0)))
    shards = [r["first_shard"] for r in two_ranks]
    assert [s.shape[0] for s in shards] == [8, 8]
    assert torch.equal(torch.cat(shards), global_batch)


def test_one_distributed_step_equals_the_single_process_step(two_ranks):
    reference = worker.one_step()
    for r in two_ranks:
        assert r["one_step"].keys() == reference.keys()
        for name, value in reference.items():
            torch.testing.assert_close(r["one_step"][name], value, rtol=0, atol=1e-6, msg=name)
    # the step moved every parameter (a step that did nothing would match trivially)
    initial = worker.state(worker.build())
    for name in ("guide.loc", "hyper.log_precision", "hyper.structure_logits"):
        assert (reference[name] - initial[name]).abs().max() > 1e-4, name


def test_after_twenty_steps_the_ranks_are_bit_identical(two_ranks):
    a, b = (r["twenty_steps"] for r in two_ranks)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    reference = worker.twenty_steps()
    for name, value in reference.items():
        torch.testing.assert_close(a[name], value, rtol=0, atol=1e-6, msg=name)


def test_structured_guide_runs_data_parallel_as_in_one_process(two_ranks):
    """StructuredGuide's q(s) steps use the all-reduced natural gradient: after 20 steps both
    ranks hold the single-process state, q(s) included."""
    a, b = (r["structured"] for r in two_ranks)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    reference = worker.twenty_steps(structured=True)
    initial = worker.state(worker.build(structured=True))
    logits = "guide.structure.logits"
    assert (reference[logits] - initial[logits]).abs().max() > 1e-3   # q(s) moved
    for name, value in reference.items():
        torch.testing.assert_close(a[name], value, rtol=0, atol=1e-6, msg=name)


def test_the_inner_loop_with_one_all_reduce_per_step_is_the_single_process_loop(two_ranks):
    reference = worker.inner_loop()
    a, b = (r["inner_loop"] for r in two_ranks)
    assert a["L"] == b["L"]
    assert math.isclose(a["L"], reference["L"], rel_tol=1e-9)
    for name, value in reference["state"].items():
        assert torch.equal(a["state"][name], b["state"][name]), name
        torch.testing.assert_close(a["state"][name], value, rtol=0, atol=1e-6, msg=name)


def test_two_process_search_ends_as_the_one_process_search(two_ranks):
    reference = worker.search_outcome()
    assert reference["structure"] == {"x->y": "poly(degree=3)"}   # the cubic's degree
    for r in two_ranks:
        assert r["search"]["structure"] == reference["structure"]
        assert math.isclose(r["search"]["elbo"], reference["elbo"], rel_tol=1e-4)
    a, b = (r["search"]["state"] for r in two_ranks)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_distributed_restarts_give_the_local_report(two_ranks):
    local = worker.restarts()
    main, other = two_ranks
    assert other["restarts"] is None          # the report is rank 0's
    gathered = main["restarts"]
    assert gathered["best_index"] == local.best_index
    assert len(gathered["records"]) == 3
    for got, want in zip(gathered["records"], (r.to_dict() for r in local.records)):
        got, want = dict(got), dict(want)
        got.pop("wall_time"), want.pop("wall_time")
        assert got.keys() == want.keys()
        for key in want:
            if isinstance(want[key], float):
                assert math.isclose(got[key], want[key], rel_tol=1e-9, abs_tol=1e-12), key
            else:
                assert got[key] == want[key], key
    best = worker.state_of(local)
    for name, value in best.items():
        torch.testing.assert_close(gathered["best_state"][name], value, rtol=0, atol=1e-12)


def test_a_distributed_run_resumes_from_rank_0s_checkpoint(two_ranks):
    folder = two_ranks[0]["folder"]
    assert (folder / "rank0" / "checkpoint.pt").exists()
    assert not (folder / "rank1" / "checkpoint.pt").exists()       # rank 0 alone writes
    reference = worker.search_outcome()                            # uninterrupted, one process
    for r in range(2):
        resumed = two_ranks[r]["resumed"]
        assert resumed["steps_run"] == list(range(10, 20))   # it went on from step 10
        assert resumed["structure"] == reference["structure"]
        assert math.isclose(resumed["elbo"], reference["elbo"], rel_tol=1e-4)
        for name, value in reference["state"].items():
            torch.testing.assert_close(resumed["state"][name], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("victim", [1, 0])
def test_killing_one_rank_ends_the_other_with_an_error_naming_it(victim):
    procs = start_ranks("long", os.devnull)
    try:
        for rank, p in enumerate(procs):   # both ranks are searching
            line = _readline(p, timeout=60)
            assert line.strip() == f"READY {rank}", line
        procs[victim].send_signal(signal.SIGKILL)
        start = time.monotonic()
        survivor = procs[1 - victim]
        _, err = survivor.communicate(timeout=60)
        elapsed = time.monotonic() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert survivor.returncode != 0
    assert elapsed < 60
    assert "RankLostError" in err, err[-2000:]
    assert f"lost rank {victim} of 2" in err, err[-2000:]


def _readline(p: subprocess.Popen, timeout: float) -> str:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        p.kill()
        raise AssertionError(f"no output within {timeout} s: {p.stderr.read()[-2000:]}")
    return p.stdout.readline()


def test_a_strategy_or_guide_that_cannot_run_data_parallel_is_refused_by_name():
    from bnas_pyro.distributed import DataParallel

    two = DataParallel(rank=0, world_size=2)   # no collective is needed to refuse
    with pytest.raises(ValueError, match="hypergradient 'hoag'.*does not run data-parallel"):
        worker.build(parallel=two, hypergradient_override="hoag")
    with pytest.raises(ValueError, match="batch_size=1 cannot be split over 2 processes"):
        worker.build(parallel=two, batch_size=1)


def test_torchrun_style_cli_search_reports_what_one_process_reports(tmp_path):
    from bnas_pyro.app.cli import main

    args = ["search", "-q", "--set", "dtype=float64", "--set", "data.name=wine",
            "--set", "space.options={hidden: 4}", "--set", "search.epochs=2",
            "--set", "search.batch_size=32", "--set", "retrain.epochs=1",
            "--set", "analysis.draws=4", "--set", "analysis.predictive_draws=2",
            "--set", "analysis.plots=false", "--set", "analysis.rank_k=0"]
    procs = start_ranks(command=["-m", "bnas_pyro", *args, "--out", str(tmp_path / "two")])
    finish(procs)
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    import json

    one, two = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("one", "two"))
    assert two["structure"] == one["structure"]
    assert math.isclose(two["probability"], one["probability"], rel_tol=1e-6)
    assert math.isclose(two["final_L"], one["final_L"], rel_tol=1e-6)
    assert (tmp_path / "two" / "checkpoint.pt").exists()
