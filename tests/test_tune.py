import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import tiny
from optuna.trial import TrialState

from vtbench.cli import main
from vtbench.engine import results
from vtbench.engine.config import load_run_config
from vtbench.engine.runner import Pruned, execute
from vtbench.errors import ConfigError
from vtbench.report import write_report
from vtbench.studies import tune
from vtbench.studies.folder import prepare_study
from vtbench.studies.status import study_status
from vtbench.studies.table import runs_table, study_table

BASE = ("base: {model: vit_tiny, frames: 4, size: 16, batch_size: 4, eval_clips: 16, eval_batch_size: 16,\n"
        "       eval_every: 0.25, model_args: {dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}}\n")
KEEP = "methods: [{token_dropout: {keep: {float: [0.2, 1.0]}, mode: {choice: [random, tube]}}}]\n"


def _write(tmp_path, body, name="tune.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def _config(tmp_path, extra="", budget="12steps", trials=3, name="tune.yaml") -> Path:
    return _write(tmp_path, f"study: keep\n{BASE}budget: {budget}\n{KEEP}trials: {trials}\n{extra}", name)


def _study(folder: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal")))
    return optuna.load_study(study_name="keep", storage=storage)


def _ended(study) -> list:
    return [t for t in study.get_trials() if tune._counted(t) and t.state.is_finished()]


# ---- the search space and bad input --------------------------------------------------------------------


def test_search_space_forms_and_fixed_values(tmp_path):
    path = _write(tmp_path, "study: s\n" + BASE + "budget: 10steps\nmethods:\n"
                  "  - {multigrid: {lr_scaling: sqrt}}\n"
                  "  - {token_dropout: {keep: {float: [0.1, 0.9], log: true}, mode: {choice: [random, tube]}}}\n"
                  "objective: [top1, used_flops]\n")
    loaded = tune.load_tune(path)
    assert [p.name for p in loaded.space.params] == ["token_dropout.keep", "token_dropout.mode"]
    assert loaded.directions == ["maximize", "minimize"] and loaded.base.budget == "10steps"
    specs = loaded.space.fill({"token_dropout.keep": 0.3, "token_dropout.mode": "tube"})
    assert [str(s) for s in specs] == ["multigrid:lr_scaling=sqrt", "token_dropout:keep=0.3,mode=tube"]
    trial = optuna.create_study().ask()
    drawn = loaded.space.suggest(trial)
    assert 0.1 <= drawn[1].params["keep"] <= 0.9 and drawn[1].params["mode"] in ("random", "tube")
    assert trial.distributions["token_dropout.keep"].log


def test_grid_sampler_takes_stepped_ranges(tmp_path):
    path = _write(tmp_path, "study: s\n" + BASE + "methods: [{token_dropout: {keep: {float: [0.25, 0.75], "
                  "step: 0.25}}}]\nsampler: grid\n")
    assert tune.load_tune(path).space.grid() == {"token_dropout.keep": [0.25, 0.5, 0.75]}
    uneven = _write(tmp_path, "study: s\n" + BASE + "methods: [{token_dropout: {keep: {float: [0.1, 1.0], "
                    "step: 0.35}}}]\nsampler: grid\n", "uneven.yaml")
    assert tune.load_tune(uneven).space.grid() == {"token_dropout.keep": [0.1, 0.45, 0.8]}  # never past hi


@pytest.mark.parametrize("methods, extra, message", [
    ("[{turbo: {keep: {float: [0.1, 1.0]}}}]", "", "unknown method 'turbo'; known:"),
    ("[{token_dropout: {ratio: {float: [0.1, 1.0]}}}]", "", "method 'token_dropout' has no parameter ratio"),
    ("[{token_dropout: {keep: {float: [0.5, 0.5]}}}]", "", r"range \[0.5, 0.5\] is empty or inverted"),
    ("[{token_dropout: {keep: {float: [0.9, 0.1]}}}]", "", r"range \[0.9, 0.1\] is empty or inverted"),
    ("[{token_dropout: {keep: {float: [0.0, 1.0], log: true}}}]", "", "a log range needs lo > 0"),
    ("[{token_dropout: {keep: {float: [0.1, 1.5]}}}]", "", r"keep.*searched parameter token_dropout.keep = 1.5"),
    ("[{token_dropout: {keep: {uniform: [0.1, 1.0]}}}]", "", "a searched value is one of"),
    ("[{token_dropout: {keep: {choice: []}}}]", "", "choice needs a non-empty list"),
    ("[token_dropout]", "", "nothing to search"),
    ("[{token_dropout: {keep: {float: [0.1, 1.0]}}}]", "objective: accuracy\n",
     "objective 'accuracy' is not a run column; allowed: top1"),
    ("[{token_dropout: {keep: {float: [0.1, 1.0]}}}]", "objective: [top1, train_s]\npruner: median\n",
     "pruner 'median' needs a single objective"),
    ("[{token_dropout: {keep: {float: [0.1, 1.0]}}}]", "sampler: grid\n", "grid sampler needs `step`"),
    ("[{token_dropout: {keep: {float: [0.1, 1.0]}}}]", "sampler: bayes\n", "sampler must be tpe, random, grid"),
    ("[{token_dropout: {keep: {float: [0.1, 1.0]}}}]", "trails: 3\n", "unknown key 'trails'"),
    ("[{token_dropout: {keep: {float: [0.1, 1.0]}}}]", "objective: top5\npruner: median\n",
     "pruner 'median' compares top-1 at the evaluation points; objective top5 has no intermediate values"),
    ("[{pss: {quantum: {int: [1, 4], step: 0.5}}}]", "", "step must be a positive int"),
])
def test_bad_input_is_one_clear_error(methods, extra, message, tmp_path):
    path = _write(tmp_path, f"study: s\n{BASE}methods: {methods}\n{extra}")
    with pytest.raises(ConfigError, match=message):
        tune.load_tune(path)


def test_bad_input_fails_before_any_trial_from_the_cli(tmp_path, capsys):
    bad = _write(tmp_path, f"study: s\n{BASE}methods: [{{token_dropout: {{keep: {{float: [1, 0]}}}}}}]\n")
    assert main(["tune", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "is empty or inverted" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unreachable_storage_names_the_host_before_any_trial(tmp_path, capsys):
    url = "postgresql://someone:secret@127.0.0.1:9/nothing"  # port 9 (discard) is closed
    assert main(["tune", str(_config(tmp_path)), "--out", str(tmp_path / "out"), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "storage postgresql://someone:***@127.0.0.1:9/nothing cannot be reached" in err
    assert "127.0.0.1" in err and "refused" in err.lower() and "secret" not in err
    assert not (tmp_path / "out").exists()  # the storage is checked before anything is written


def test_sqlite_is_refused_for_several_workers(tmp_path):
    loaded = tune.load_tune(_config(tmp_path))
    with pytest.raises(ConfigError, match="SQLite takes one writer at a time.*for 2 workers"):
        tune.open_storage(loaded, tmp_path, f"sqlite:///{tmp_path}/s.db", workers=2)
    tune.open_storage(loaded, tmp_path, f"sqlite:///{tmp_path}/s.db", workers=1)  # one worker is fine


SEED_OF_A_NEW_STUDY = """
import sys
from pathlib import Path

from vtbench.studies import tune

seeds, make = [], tune.make_sampler
tune.make_sampler = lambda loaded, seed: seeds.append(seed) or make(loaded, seed)
tune.open_study(tune.load_tune(Path(sys.argv[1])), Path(sys.argv[2]))
print(seeds[0])
"""


def test_a_new_study_draws_with_the_same_seed_in_every_process(tmp_path):
    """Python salts hash() of a string per process (PYTHONHASHSEED): the seed must not come from it."""
    path = _config(tmp_path, "sampler: random\n")
    seeds = []
    for salt in ("1", "2", "12345"):
        folder = tmp_path / f"study-{salt}"
        folder.mkdir()
        done = subprocess.run([sys.executable, "-c", SEED_OF_A_NEW_STUDY, str(path), str(folder)], check=True,
                              capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": salt})
        seeds.append(int(done.stdout.split()[-1]))
    assert len(set(seeds)) == 1 and 0 <= seeds[0] < 2**32, seeds
    assert tune.sampler_seed(0, 1, 0, "host") != tune.sampler_seed(0, 0, 0, "host")  # another worker, other draws


# ---- trials are runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_trials(tmp_path_factory):
    """A finished study of three trials (the journal and the runs' folders), read by the tests below."""
    tmp_path = tmp_path_factory.mktemp("three_trials")
    loaded = tune.load_tune(_config(tmp_path, trials=3))
    folder = prepare_study(tmp_path / "out", loaded)
    assert tune.work(loaded, folder, progress_bar=False) == 3
    return folder


def test_a_study_runs_its_trials_records_both_ways_and_writes_best_yaml(three_trials):
    folder = three_trials
    study = _study(folder)
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        run = folder / t.user_attrs["run_id"]
        assert t.number in results.read_json(run / "trials.json")["trials"]
        summary = results.read_json(run / results.SUMMARY)
        assert summary["top1"] == t.value
        config = yaml.safe_load((run / results.CONFIG).read_text())
        assert config["methods"] == [{"token_dropout": {"keep": t.params["token_dropout.keep"],
                                                        "mode": t.params["token_dropout.mode"]}}]
        # intermediate top-1 at each evaluation point, progress in per mille as the step
        evals = pd.read_parquet(run / results.EVALS).query("setting == 'default'")
        assert t.intermediate_values == {round(1000 * p): v for p, v in zip(evals["point"], evals["top1"],
                                                                            strict=True)}
        assert sorted(t.intermediate_values) == [250, 500, 750, 1000]
    best = load_run_config(folder / "best.yaml")  # a run YAML `vtbench run --config` accepts
    assert best.run_id() == study.best_trial.user_attrs["run_id"]
    status = study_status(folder)  # `vtbench status`: each trial with its state and top-1
    assert [(e["trial"], e["state"], e["top1"]) for e in status["entries"]] == [(t.number, "completed", t.value)
                                                                                  for t in trials]
    assert status["counts"] == {"completed": 3} and status["device_s_left"] == 0
    table = runs_table(folder)
    assert sorted(table["trial"]) == [0, 1, 2]
    assert {"trial_state", "trial_top1", "trial_param token_dropout.keep"} <= set(table.columns)
    assert "trial_param token_dropout.keep" in study_table(folder).columns


@pytest.mark.skipif(importlib.util.find_spec("optuna_dashboard") is None,
                    reason="optuna-dashboard is not installed (the optional `dashboard` extra)")
def test_optuna_dashboard_serves_the_study_with_each_trials_run(three_trials):
    folder = three_trials
    trials = _study(folder).get_trials()
    dashboard = _dashboard(folder / "optuna.journal")  # optuna-dashboard, opening the journal as it is
    (summary,) = dashboard("/api/studies")["study_summaries"]
    assert summary["study_name"] == "keep" and summary["directions"] == ["maximize"]
    served = dashboard(f"/api/studies/{summary['study_id']}")["trials"]
    assert [(t["number"], t["values"]) for t in served] == [(t.number, [t.value]) for t in trials]
    for shown, t in zip(served, trials, strict=True):  # beside each trial: its run's folder, budget and methods
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert attrs["run_dir"] == str((folder / t.user_attrs["run_id"]).resolve()) and attrs["budget"] == "12steps"
        assert attrs["methods"].startswith("token_dropout:keep=")


def _dashboard(storage: Path):
    """GET from optuna-dashboard's own application on `storage` (what `optuna-dashboard PATH` serves)."""
    from wsgiref.util import setup_testing_defaults

    import optuna_dashboard

    app = optuna_dashboard.wsgi(str(storage))

    def get(path: str):
        environ = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        status = []
        body = b"".join(app(environ, lambda code, headers, *exc: status.append(code)))
        assert status == ["200 OK"], (path, status, body[:300])
        return json.loads(body)

    return get


def test_running_again_continues_without_duplicates(tmp_path):
    loaded = tune.load_tune(_config(tmp_path, trials=2))
    folder = prepare_study(tmp_path / "out", loaded)
    tune.work(loaded, folder, progress_bar=False)
    first = {t.number: t.params for t in _study(folder).get_trials()}
    assert tune.work(loaded, folder, progress_bar=False) == 0  # finished: nothing reruns
    loaded.trials = 4
    assert tune.work(loaded, folder, progress_bar=False) == 2
    trials = _study(folder).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert {t.number: t.params for t in trials[:2]} == first
    new = [t.params["token_dropout.keep"] for t in trials[2:]]
    assert not set(new) & {p["token_dropout.keep"] for p in first.values()}  # fresh draws, not replays


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return max(trial.intermediate_values) >= 500


def test_a_pruned_trial_stops_its_run_at_equal_compute(tmp_path, monkeypatch):
    monkeypatch.setattr(tune, "make_pruner", lambda t: AlwaysPrune())
    loaded = tune.load_tune(_config(tmp_path, "pruner: median\n", trials=2))
    folder = prepare_study(tmp_path / "out", loaded)
    tune.work(loaded, folder, progress_bar=False)
    trials = _study(folder).get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    for t in trials:
        assert sorted(t.intermediate_values) == [250, 500]
        summary = results.read_json(folder / t.user_attrs["run_id"] / results.SUMMARY)
        assert summary["status"] == "pruned" and summary["top1"] is None
        assert summary["steps"] == 6 and "progress 0.5" in summary["error"]  # half of 12 steps
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "trials.parquet")[["trial", "state"]],
                                  pd.DataFrame({"trial": [0, 1], "state": ["pruned", "pruned"]}))


def test_a_pruned_run_is_final_and_a_resumed_run_replays_its_evaluations(tmp_path):
    config = tiny(budget="12steps", eval_every=0.25)
    seen = []

    def prune_at_half(point, top1):
        seen.append(point)
        if point >= 0.5:
            raise Pruned("enough")

    run = execute(config, tmp_path, progress_bar=False, on_eval=prune_at_half)
    assert seen == [0.25, 0.5] and results.read_json(run / results.SUMMARY)["status"] == "pruned"
    seen.clear()
    execute(config, tmp_path, progress_bar=False, on_eval=prune_at_half)  # ended: nothing runs, nothing replays
    assert seen == []
    other = tiny(budget="12steps", eval_every=0.25, seed=1)
    with pytest.raises(RuntimeError):
        execute(other, tmp_path, progress_bar=False, on_eval=lambda p, t: (_ for _ in ()).throw(RuntimeError()))
    execute(other, tmp_path, progress_bar=False, on_eval=lambda p, t: seen.append(p))  # resumes after 0.25
    assert seen == [0.25, 0.5, 0.75, 1.0]


def test_multi_objective_study_reports_its_pareto_front(tmp_path):
    path = _config(tmp_path, "objective: [top1, used_flops]\nsampler: random\n", trials=4)
    loaded = tune.load_tune(path)
    folder = prepare_study(tmp_path / "out", loaded)
    tune.work(loaded, folder, progress_bar=False)
    study = _study(folder)
    assert len(study.get_trials()) == 4
    for t in study.get_trials():
        summary = results.read_json(folder / t.user_attrs["run_id"] / results.SUMMARY)
        assert t.values == [summary["top1"], summary["total_flops"]]
    info = results.read_json(folder / "tuning.json")
    assert sorted(info["best"]) == sorted(t.number for t in study.best_trials)
    report = write_report(folder, tmp_path / "report")
    text = report.read_text()
    assert "## Tuning" in text and "Pareto front: trials" in text
    for name in ("tuning_history", "tuning_params", "tuning_pareto"):
        assert (tmp_path / "report" / "figures" / f"{name}.png").exists()


def test_surplus_trials_are_closed_without_running(tmp_path):
    loaded = tune.load_tune(_config(tmp_path, trials=2))
    folder = prepare_study(tmp_path / "out", loaded)
    study = tune.open_study(loaded, folder)
    running = [study.ask() for _ in range(2)]  # two workers hold the study's two trials
    late = study.ask()
    assert not tune.is_surplus(study, running[1].number, 2) and tune.is_surplus(study, late.number, 2)
    study.tell(running[0], state=TrialState.FAIL)  # a dead worker's trial no longer counts
    assert not tune.is_surplus(study, late.number, 2)


def test_a_surplus_trial_never_runs_and_is_left_out(tmp_path):
    loaded = tune.load_tune(_config(tmp_path, trials=1))
    folder = prepare_study(tmp_path / "out", loaded)
    study = tune.open_study(loaded, folder)
    other = study.ask()  # another, live worker holds the study's only trial
    other.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "trial": other.number})
    study.optimize(lambda t: tune.objective(loaded, folder, t, False), n_trials=1, catch=(tune.Surplus,))
    late = study.get_trials()[-1]
    assert late.state == TrialState.FAIL and late.user_attrs["surplus"] and not late.params
    assert not [p for p in folder.iterdir() if p.is_dir()]  # no run folder
    assert tune.counts(study.get_trials()) == {"done": 0, "running": 1, "waiting": 0}
    assert [r["trial"] for r in tune.trial_rows(study, loaded)] == [other.number]


def test_pruners_wait_for_prune_after(tmp_path):
    loaded = tune.load_tune(_config(tmp_path, "pruner: median\nprune_after: 0.5\n"))
    study = optuna.create_study(direction="maximize", pruner=tune.make_pruner(loaded))
    for _ in range(3):
        t = study.ask()
        for step in (250, 500, 750, 1000):
            t.report(50.0, step)
        study.tell(t, 50.0)
    weak = study.ask()
    weak.report(10.0, 250)
    assert not weak.should_prune()  # before half the budget: no verdict however bad
    weak.report(10.0, 500)
    assert weak.should_prune()


def test_a_changed_objective_is_refused_on_the_same_study(tmp_path):
    loaded = tune.load_tune(_config(tmp_path))
    folder = prepare_study(tmp_path / "out", loaded)
    tune.open_study(loaded, folder)
    changed = tune.load_tune(_config(tmp_path, "objective: train_s\n", name="other.yaml"))
    with pytest.raises(ConfigError, match="optimises top1, not train_s"):
        tune.open_study(changed, folder)


def test_slurm_needs_a_database_storage(tmp_path, capsys):
    assert main(["tune", str(_config(tmp_path)), "--executor", "slurm", "--out", str(tmp_path / "out")]) == 2
    assert "--executor slurm needs --storage postgresql://" in capsys.readouterr().err


# ---- many workers ---------------------------------------------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vtbench.cli", *args]


@pytest.mark.slow
def test_two_local_workers_on_a_journal_finish_exactly_the_trials(tmp_path):
    path = _config(tmp_path, trials=5)
    out = tmp_path / "out"
    result = subprocess.run(_cli("tune", str(path), "--workers", "2", "--out", str(out), "--no-progress"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    study = _study(out / "keep")
    ended = _ended(study)
    assert len(ended) == 5 and all(t.state == TrialState.COMPLETE for t in ended)
    assert len({t.user_attrs["worker"]["pid"] for t in study.get_trials()}) == 2  # both took part
    assert len(pd.read_parquet(out / "keep" / "trials.parquet")) == 5
    assert "5 complete" in result.stderr


def _wait_for_running_trial(study_loader, folder: Path, timeout: float = 120) -> optuna.trial.FrozenTrial:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = study_loader()
        except (KeyError, FileNotFoundError):  # not created yet
            time.sleep(0.5)
            continue
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            run_id = t.user_attrs.get("run_id")
            if run_id and (folder / run_id / results.EVALS).exists():  # evaluated and checkpointed once
                return t
        time.sleep(0.2)
    raise AssertionError("no trial got going")


def _kill_mid_trial_then_finish(tmp_path, path: Path, storage: list[str], study_loader) -> optuna.Study:
    out = tmp_path / "out"
    victim = subprocess.Popen(_cli("tune", str(path), "--out", str(out), "--no-progress", *storage),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        killed = _wait_for_running_trial(study_loader, out / "keep")
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    assert main(["tune", str(path), "--out", str(out), "--no-progress", *storage]) == 0  # again, in this process
    study = study_loader()
    trials = study.get_trials()
    dead = trials[killed.number]
    assert dead.state == TrialState.FAIL and not tune._counted(dead)
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["run_id"] == killed.user_attrs["run_id"]
    summary = results.read_json(out / "keep" / killed.user_attrs["run_id"] / results.SUMMARY)
    assert summary["resumed_at"] and summary["resumed_at"][0] > 0  # the retry resumed the run's checkpoint
    ended = _ended(study)
    assert len(ended) == 2 and all(t.state == TrialState.COMPLETE for t in ended)  # nothing lost or doubled
    row = runs_table(out / "keep").set_index("run_id").loc[killed.user_attrs["run_id"]]
    assert row["trial"] == retry.number and row["trial_state"] == "complete"
    return study


@pytest.mark.slow
def test_a_killed_worker_on_a_journal_is_retried_from_its_checkpoint(tmp_path):
    path = _config(tmp_path, budget="400steps", trials=2)
    _kill_mid_trial_then_finish(tmp_path, path, [], lambda: _study(tmp_path / "out" / "keep"))


@pytest.mark.slow
def test_an_interrupted_trial_resumes_with_the_same_parameters(tmp_path):
    # long enough that the trial is still training when the interrupt arrives (400 steps once ended first)
    path = _config(tmp_path, budget="800steps", trials=1)
    out = tmp_path / "out"
    worker = subprocess.Popen(_cli("tune", str(path), "--out", str(out), "--no-progress"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    interrupted = _wait_for_running_trial(lambda: _study(out / "keep"), out / "keep")
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=60) == 130 and "run the same command again" in worker.stderr.read()
    study = _study(out / "keep")
    waiting = study.get_trials()[-1]
    assert waiting.state == TrialState.WAITING and waiting.user_attrs["resumes"] == interrupted.number
    status = study_status(out / "keep")  # the interrupted trial, and its parameters waiting to run again
    assert [(e["trial"], e["state"]) for e in status["entries"]] == [(interrupted.number, "failed"),
                                                                     (waiting.number, "pending")]
    assert status["entries"][0]["error"] == "interrupted; its parameters run again"
    assert 0 < status["entries"][0]["progress"] < 1  # where its run stands: it resumes there
    assert main(["tune", str(path), "--out", str(out), "--no-progress"]) == 0  # again, in this process
    trials = _study(out / "keep").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["status"] == "interrupted" and trials[1].params == interrupted.params
    summary = results.read_json(out / "keep" / interrupted.user_attrs["run_id"] / results.SUMMARY)
    assert summary["status"] == "completed" and summary["resumed_at"][0] > 0


# ---- real PostgreSQL ------------------------------------------------------------------------------------


def _pg_study(url: str):
    return lambda: optuna.load_study(study_name="keep", storage=url)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_on_postgres_finish_exactly_the_trials(tmp_path, postgres_url):
    path = _config(tmp_path, trials=4)
    out = tmp_path / "out"
    result = subprocess.run(_cli("tune", str(path), "--workers", "2", "--out", str(out), "--no-progress",
                                 "--storage", postgres_url), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    study = _pg_study(postgres_url)()
    ended = _ended(study)
    assert len(ended) == 4 and all(t.state == TrialState.COMPLETE for t in ended)
    assert not (out / "keep" / "optuna.journal").exists()
    assert len({t.user_attrs["run_id"] for t in ended}) == 4


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_heartbeat_fails_a_killed_workers_trial_and_retries_it(tmp_path, postgres_url):
    path = _config(tmp_path, "heartbeat: 1\n", budget="400steps", trials=2)
    study = _kill_mid_trial_then_finish(tmp_path, path, ["--storage", postgres_url], _pg_study(postgres_url))
    dead = next(t for t in study.get_trials() if t.state == TrialState.FAIL)
    assert "status" not in dead.user_attrs  # failed by Optuna's heartbeat, not by a run outcome


@pytest.mark.postgres
@pytest.mark.slurm
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a job of two tasks needs two CPUs")
def test_the_slurm_executor_runs_trials_of_two_processes_as_jobs_of_two_tasks(tmp_path, postgres_url, slurm_env,
                                                                               monkeypatch, capsys):
    path = _config(tmp_path, "nproc_per_run: 2\nslurm: {cpus_per_task: 1, time_min: 10}\n", trials=2)
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])  # the launcher runs in this process
    assert main(["tune", str(path), "--executor", "slurm", "--out", str(tmp_path / "out"), "--no-progress",
                 "--storage", postgres_url]) == 0
    assert "submitted 1 workers" in capsys.readouterr().err
    ended = _ended(_pg_study(postgres_url)())
    assert len(ended) == 2 and all(t.state == TrialState.COMPLETE for t in ended)
    for trial in ended:  # rank 0 reported each evaluation; both tasks trained the run
        assert sorted(trial.intermediate_values) == [250, 500, 750, 1000]
        summary = results.read_json(tmp_path / "out" / "keep" / trial.user_attrs["run_id"] / "summary.json")
        assert summary["world_size"] == 2
    assert (tmp_path / "out" / "keep" / "best.yaml").exists()


@pytest.mark.slow
def test_a_trial_of_two_processes_reports_from_rank_0s_process(tmp_path):
    path = _config(tmp_path, trials=1)
    assert main(["tune", str(path), "--out", str(tmp_path / "out"), "--no-progress", "--nproc", "2"]) == 0
    (trial,) = _study(tmp_path / "out" / "keep").get_trials()
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [250, 500, 750, 1000]  # told by a launched process, not this one
    summary = results.read_json(tmp_path / "out" / "keep" / trial.user_attrs["run_id"] / "summary.json")
    assert summary["world_size"] == 2 and trial.value == summary["top1"]


def test_status_counts_a_shared_run_once_and_a_waiting_retry_where_its_run_stands(tmp_path):
    """A retried trial and its retry share one run: its device time counts once, and the retry waiting to run
    resumes where that run stands."""
    from optuna.distributions import FloatDistribution
    from optuna.storages.journal import JournalFileBackend

    folder = tmp_path / "keep"
    folder.mkdir()
    results.write_json(folder / "study.json", {"study": "keep", "kind": "tune"})
    results.write_json(folder / "plan.json", {"kind": "tune", "trials": 2, "budget": "100s"})
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
    study = optuna.create_study(study_name="keep", storage=storage)
    keep = {"keep": FloatDistribution(0.1, 1.0)}
    study.add_trial(optuna.trial.create_trial(params={"keep": 0.5}, distributions=keep, value=40.0,
                                              user_attrs={"run_id": "done"}))
    study.add_trial(optuna.trial.create_trial(params={"keep": 0.3}, distributions=keep, state=TrialState.FAIL,
                                              user_attrs={"run_id": "cut", "status": "worker died"}))
    study.enqueue_trial({"keep": 0.3}, user_attrs={"resumes": 1})
    (folder / "done").mkdir()
    results.write_json(folder / "done" / "summary.json", {"status": "completed", "top1": 40.0, "train_s": 100.0})
    (folder / "cut").mkdir()
    results.write_json(folder / "cut" / "progress.json", {"progress": 0.25, "step": 5, "used_s": 25.0})
    status = study_status(folder)
    assert [(e["trial"], e["state"]) for e in status["entries"]] == [(0, "completed"), (1, "failed"), (2, "pending")]
    assert status["entries"][1]["error"] == "its worker died; its parameters run again"
    assert status["entries"][2]["progress"] == 0.25  # the retry resumes the run of trial 1
    assert status["device_s_used"] == 125.0 and status["device_s_left"] == 75.0


def test_a_bare_postgresql_url_names_the_driver_the_postgres_extra_installs():
    from vtbench.studies.tune import _with_driver

    assert _with_driver("postgresql://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    assert _with_driver("postgres://h/db") == "postgresql+psycopg://h/db"
    assert _with_driver("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"  # a driver named stays
    assert _with_driver("sqlite:///x.db") == "sqlite:///x.db"
