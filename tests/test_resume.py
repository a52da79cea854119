"""Kill and resume through the CLI, for every driver; same seed, same result.json; nothing lost on
disk (a truncated result.json, a full disk).

A search is started in a subprocess that SIGKILLs itself right after its N-th checkpoint reached
the disk (``os.replace`` of ``checkpoint.pt`` wrapped; the kill is a real ``kill -9``), then
``bnas-pyro resume`` continues it; its final ``result.json`` must equal an uninterrupted run's
with the same configuration in every field but wall times and the folder name.
"""

import copy
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from bnas_pyro.app.cli import main
from bnas_pyro.search.checkpoint import CHECKPOINT_NAME, load_checkpoint

# wine: 106 training rows, batch 64 -> 2 minibatches an epoch; one inner step per outer step:
# 8 outer steps per search, checkpoints at steps 3, 6 and 8 of every search
TINY = {
    "seed": 3,
    "data": {"name": "wine"},
    "space": {"name": "mlp_cell", "options": {"hidden": 4}},
    "search": {"epochs": 4, "inner_steps": 1, "batch_size": 64, "lr": 0.03,
               "checkpoint_every": 3},
    "retrain": {"epochs": 2, "batch_size": 64},
    "analysis": {"draws": 8, "chains": 2, "predictive_draws": 4, "top_k": 2, "plots": False, "rank_k": 0},
}
DRIVERS = {
    "single": {},
    "restarts": {"search": {"restarts": 2}},
    "enumerate": {"search": {"mode": "enumerate", "mode_options": {"num_runs": 2}}},
}
#: after which checkpoint the run is killed: the single search in its third step block, the
#: restarts and the enumeration in their second search (the first one finished)
KILL_AFTER = {"single": 2, "restarts": 4, "enumerate": 4}
TIME_KEYS = {"wall_time", "search_wall_time", "timings", "run_dir"}

KILLER = textwrap.dedent("""
    import os, signal, sys
    from bnas_pyro.app.cli import main
    kill_after = int(sys.argv[1])
    real_replace, written = os.replace, []
    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if os.path.basename(str(dst)) == "checkpoint.pt":
            written.append(dst)
            if len(written) == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    sys.exit(main(sys.argv[2:]))
""")


def _merge(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def without_times(value):
    """``value`` without wall times, timings and the run directory's name."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in TIME_KEYS}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def _config(tmp: Path, driver: str) -> Path:
    path = tmp / f"{driver}.yaml"
    path.write_text(yaml.safe_dump(_merge(TINY, DRIVERS[driver])))
    return path


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted run of each driver (in this process)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    out = {}
    for driver in DRIVERS:
        cfg = _config(root, driver)
        assert main(["search", "--config", str(cfg), "--out", str(root / driver), "--quiet"]) == 0
        out[driver] = (cfg, root / driver)
    return out


@pytest.mark.parametrize("driver", list(DRIVERS))
def test_kill_and_resume_through_the_cli_equals_an_uninterrupted_run(driver, uninterrupted,
                                                                     tmp_path, capsys,
                                                                     monkeypatch):
    cfg, reference = uninterrupted[driver]
    run_dir = tmp_path / "killed"
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, "-c", KILLER, str(KILL_AFTER[driver]), "search",
                           "--config", str(cfg), "--out", str(run_dir), "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # killed mid-search: the configuration is there, the result is not, the checkpoint loads
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "result.json").exists()
    state = load_checkpoint(run_dir)
    assert state is not None
    if driver == "single":
        assert state["step"] == 6 and "driver" not in state
    else:  # the second search, at its first checkpoint; the first search's result is kept
        assert state["driver"]["current"] == 1 and state["step"] == 3
        assert sorted(state["driver"]["finished"]) == [0]
    # a new run into that folder is refused, naming the way out
    capsys.readouterr()
    assert main(["search", "--config", str(cfg), "--out", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(run_dir) in err and "resume" in err and "--force" in err and err.count("\n") == 1
    # resume: it continues where it stopped (it writes only the checkpoints still to come: steps
    # 8 of the running search, and the drivers' final one), and ends where the fresh run ended
    real_replace, written = os.replace, []

    def counting(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if Path(dst).name == CHECKPOINT_NAME:
            written.append(torch.load(dst, weights_only=False)["step"])

    monkeypatch.setattr(os, "replace", counting)
    assert main(["resume", str(run_dir), "--quiet"]) == 0
    monkeypatch.setattr(os, "replace", real_replace)
    assert written == ([8] if driver == "single" else [6, 8, 8])
    resumed, fresh = _result(run_dir), _result(reference)
    assert without_times(resumed) == without_times(fresh)
    # (the comparison is not vacuous: the histories and the final figures are there)
    steps = 8
    assert len(fresh["history"]) == steps and fresh["analysis"]["metrics"]["elbo"] is not None
    if driver == "restarts":
        assert len(fresh["info"]["restarts"]) == 2
    if driver == "enumerate":
        assert len(fresh["info"]["enumeration"]["elbos"]) == 2
    # the final checkpoint is the kept search's state, and a finished run is not resumed again
    assert load_checkpoint(run_dir)["step"] == steps
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    assert "finished run" in capsys.readouterr().err


@pytest.mark.parametrize("driver", list(DRIVERS))
def test_same_seed_twice_gives_the_same_result_json(driver, uninterrupted, tmp_path):
    cfg, reference = uninterrupted[driver]
    again = tmp_path / "again"
    assert main(["search", "--config", str(cfg), "--out", str(again), "--quiet"]) == 0
    first, second = _result(reference), _result(again)
    assert without_times(first) == without_times(second)
    # wall times are the only difference allowed, and they are there
    assert first["analysis"]["metrics"]["wall_time"] > 0


def test_force_starts_over_and_resume_flags_are_checked(uninterrupted, tmp_path, capsys):
    cfg, reference = uninterrupted["single"]
    out = tmp_path / "over"
    assert main(["search", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert main(["search", "--config", str(cfg), "--out", str(out), "--quiet", "--force"]) == 0
    assert without_times(_result(out)) == without_times(_result(reference))
    capsys.readouterr()
    assert main(["search", "--resume", str(out), "--set", "search.epochs=2"]) == 2
    assert "--set" in capsys.readouterr().err
    assert main(["search", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_report_on_a_truncated_result_json_is_one_line_naming_the_file(uninterrupted, tmp_path,
                                                                       capsys):
    _, reference = uninterrupted["single"]
    text = (reference / "result.json").read_text()
    for cut in (len(text) // 2, 10):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / "result.json").write_text(text[:cut])
        capsys.readouterr()
        assert main(["report", str(d), "--no-plots"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(d / "result.json") in err and "JSON" in err
    # complete JSON, but the analysis block lost its metrics
    data = json.loads(text)
    del data["analysis"]["metrics"]
    d = tmp_path / "nometrics"
    d.mkdir()
    (d / "result.json").write_text(json.dumps(data))
    assert main(["report", str(d), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(d / "result.json") in err and "analysis.metrics" in err


def test_a_full_disk_keeps_the_previous_checkpoint_and_the_search_state(uninterrupted, tmp_path,
                                                                        monkeypatch, capsys):
    """The second checkpoint write hits ENOSPC: one line naming the path, exit status 1, the
    first checkpoint intact and loadable, no temporary file left; the search object still holds
    its state (the API's error carries it)."""
    cfg, _ = uninterrupted["single"]
    out = tmp_path / "full"
    real_save, calls = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            real_save(obj, f, *args, **kwargs)          # half written ...
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    capsys.readouterr()
    assert main(["search", "--config", str(cfg), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out / CHECKPOINT_NAME) in err
    assert "No space left on device" in err and "previous" in err
    state = load_checkpoint(out)
    assert state["step"] == 3                           # the first checkpoint, intact
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.yaml"]
    monkeypatch.setattr(torch, "save", real_save)
    # the disk has room again: the run resumes from the kept checkpoint to the full result
    assert main(["resume", str(out), "--quiet"]) == 0
    assert len(_result(out)["history"]) == 8


def test_a_failed_checkpoint_write_leaves_the_state_in_memory(tmp_path, monkeypatch):
    from bnas_pyro import BilevelSearch, Coefficients, SearchSpace
    from bnas_pyro.guides import MeanFieldGuide
    from bnas_pyro.models import BayesianSupernet, NormalLikelihood
    from bnas_pyro.search.checkpoint import CheckpointWriteError

    torch.manual_seed(0)
    x = torch.randn(30, 2)
    y = x.sum(-1)
    space = SearchSpace({"x": 2, "y": 1}, [("x", "y", ["linear", "zero"])])
    model = BayesianSupernet(space, likelihood=NormalLikelihood())
    search = BilevelSearch(model, MeanFieldGuide(model), Coefficients(), "joint", inner_steps=2,
                           outer_steps=4, checkpoint_dir=tmp_path, checkpoint_every=2,
                           progress=False)
    real_save = torch.save

    def full(obj, f, *a, **k):
        if search.step == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointWriteError) as info:
        search.run(x, y)
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert str(tmp_path / CHECKPOINT_NAME) in str(info.value) and "\n" not in str(info.value)
    assert info.value.state["step"] == 4 and search.step == 4 and len(search.history) == 4
    assert load_checkpoint(tmp_path)["step"] == 2
    monkeypatch.setattr(torch, "save", real_save)
    path = tmp_path / "elsewhere"
    from bnas_pyro.search.checkpoint import save_checkpoint

    save_checkpoint(path, info.value.state)             # the state can go somewhere else
    assert load_checkpoint(path)["step"] == 4
