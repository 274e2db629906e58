"""Distillation pass on real digits data from the bundled digits teacher, with a tiny student."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from squeeze import api

from squeeze.train import losses
from squeeze.errors import UserInputError
from squeeze.io.modelio import load_model
from squeeze.passes.distill.pass_ import DistillConfig, TrainingDivergedError, resolve_weights
from squeeze.io.students import build_student
from squeeze.passes.distill.train import distill as train_distill

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "samples" / "teachers" / "resnet_digits.pt"
STUDENT = {"arch": "squeeze.zoo:tiny_cnn", "kwargs": {"width": 8}}


@pytest.fixture(scope="module")
def student_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "student.json"
    path.write_text(json.dumps(STUDENT))
    return path


def run(tmp_path, student_json, **config):
    """A distill run with its own pass cache: tests that patch the training code must never reuse another test's result."""
    return api.distill(TEACHER, str(student_json), data="digits", out=tmp_path / "run", cache_dir=tmp_path / "cache",
                       **{"epochs": 2, "batch_size": 64, **config})


def train(tmp_path, teacher=TEACHER, data="digits", **config):
    """The distillation itself (passes/distill/train.py) without the command around it (the teacher's export and
    latency rounds, the output's, the report: ~7 s of a ~7.5 s run here), for tests of what training does; the
    command's own tests use run()."""
    from squeeze.io.data import load_data

    art = load_model(teacher)  # fresh each time: training freezes the teacher's parameters in place
    torch.manual_seed(0)
    module, kwargs = build_student(STUDENT["arch"], STUDENT["kwargs"], art.input_spec.shape[1], 10)
    cfg = DistillConfig(**{"epochs": 2, "batch_size": 64, **config})
    return train_distill(art, module, load_data(data), cfg, tmp_path / "train", student_arch=STUDENT["arch"], student_kwargs=kwargs)


@pytest.mark.parametrize("term", ["kd", "dist", "fitnet", "rkd", "sp"])
def test_each_loss_alone_is_optimised(tmp_path, student_json, term):
    """Trained on one term only (label-free, so no CE), that term goes down."""
    result = train(tmp_path, loss=term, label_free=True, epochs=3)
    assert result["loss_weights"].keys() == {term}
    first, last = result["history"][0][term], result["history"][-1][term]
    assert last < 0.9 * first, (term, first, last)


def test_named_feature_pairs(tmp_path, student_json, cli):
    result = cli("distill", TEACHER, "--student", student_json, "--data", "digits", "--loss", "kd+fitnet", "--epochs", "1",
                 "--feature-pairs", "1=stages.2", "--out", tmp_path / "run", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["config"]["feature_pairs"] == [["1", "stages.2"]]
    bad = cli("distill", TEACHER, "--student", student_json, "--data", "digits", "--loss", "kd+fitnet", "--epochs", "1",
              "--feature-pairs", "1=no.such.layer", "--out", tmp_path / "bad")
    assert bad.code == 2 and "no layer named 'no.such.layer'" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_all_terms_together(tmp_path, student_json):
    result = train(tmp_path, loss="kd+dist+fitnet+rkd+sp", epochs=3)
    assert set(result["loss_weights"]) == {"kd", "dist", "fitnet", "rkd", "sp", "ce"}
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    assert result["eval"]["agreement"] > 0.5  # far above chance (0.1) after 3 short epochs


def test_kd_student_is_reloadable_and_reports_honestly(tmp_path, student_json):
    result = run(tmp_path, student_json, loss="kd", epochs=4)
    ev = result["eval"]
    assert ev["samples"] == 359 and ev["teacher_accuracy"] == pytest.approx(0.9861, abs=1e-3)
    assert ev["student_accuracy"] >= 0.75 and result["loss_weights"] == {"kd": 0.9, "ce": pytest.approx(0.1)}
    assert "calibration" in result["selected_on"]
    reloaded = load_model(tmp_path / "run" / "student.pt")
    assert reloaded.metadata["eval_accuracy"] == ev["student_accuracy"] and reloaded.input_spec.shape == (1, 1, 8, 8)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["eval"] == ev and saved["student"]["params"] == result["student"]["params"] < result["teacher"]["params"] / 100


def test_ce_alone_is_the_supervised_baseline(tmp_path, student_json):
    result = train(tmp_path, loss="ce", epochs=2)
    assert result["loss_weights"] == {"ce": 1.0} and result["eval"]["student_accuracy"] > 0.3
    with pytest.raises(UserInputError, match="needs labels"):
        resolve_weights(DistillConfig(loss="ce", label_free=True), has_labels=True)


def test_training_seed_does_not_move_the_eval_split(tmp_path, student_json):
    """A different --seed changes initialisation and shuffling, never the split: the teacher's eval images stay held out."""
    result = run(tmp_path, student_json, loss="kd", epochs=1, seed=3)
    assert result["data"]["split"]["seed"] == 0 and result["config"]["seed"] == 3
    assert result["eval"]["teacher_accuracy"] == pytest.approx(0.9861, abs=1e-3)  # the recorded held-out figure


def test_label_free_never_uses_labels(tmp_path, student_json):
    result = train(tmp_path, loss="kd", label_free=True, epochs=3)
    assert result["loss_weights"] == {"kd": 1.0} and "agreement" in result["selected_on"]
    assert result["eval"]["student_accuracy"] is not None  # still reported, since the data has labels
    with pytest.raises(UserInputError, match="label-free"):
        resolve_weights(DistillConfig(loss="kd+ce", label_free=True), has_labels=True)


def test_divergence_rolls_back_once_then_recovers(tmp_path, student_json, monkeypatch):
    real, calls = losses.kd_loss, {"n": 0}

    def nan_once(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] == 30 else out  # mid-epoch 2 of digits at batch 64 (22 steps/epoch)

    monkeypatch.setattr(losses, "kd_loss", nan_once)
    result = train(tmp_path, loss="kd", epochs=2)
    assert result["rollbacks"] == 1 and len(result["history"]) == 2
    assert all(np.isfinite(h["loss"]) for h in result["history"])


def test_persistent_divergence_fails_clearly(tmp_path, student_json, monkeypatch):
    monkeypatch.setattr(losses, "kd_loss", lambda s, t, temperature=4.0: (s.sum() * float("inf")))
    with pytest.raises(TrainingDivergedError, match="diverged.*rollback"):
        train(tmp_path, loss="kd", epochs=2)


@pytest.mark.slow  # 34 s; CI keeps tests/run/test_compress_resume.py's kill -9 test, which kills the same pipeline mid-distillation
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, student_json):
    """Kill a real `squeeze distill` process after its first epoch; the re-run resumes and ends where a clean run ends."""
    args = [sys.executable, "-m", "squeeze", "distill", str(TEACHER), "--student", str(student_json), "--data", "digits",
            "--epochs", "4", "--batch-size", "64", "--json"]
    killed_dir, killed_cache = tmp_path / "killed", tmp_path / "cache-killed"
    proc = subprocess.Popen([*args, "--out", str(killed_dir), "--cache-dir", str(killed_cache)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    states: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        states = list(killed_cache.glob("distill-*/distill/resume-state.pt"))
        if states and torch.load(states[0], weights_only=True)["epoch"] >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    epoch_at_kill = torch.load(states[0], weights_only=True)["epoch"]
    assert 1 <= epoch_at_kill < 4 and not killed_dir.exists()  # nothing half-written at --out
    resumed = subprocess.run([*args, "--out", str(killed_dir), "--cache-dir", str(killed_cache)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    clean = subprocess.run([*args, "--out", str(tmp_path / "clean"), "--cache-dir", str(tmp_path / "cache-clean")], capture_output=True,
                           text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    a, b = json.loads(resumed.stdout), json.loads(clean.stdout)
    assert a["eval"] == b["eval"] and a["best_epoch"] == b["best_epoch"]
    wa = torch.load(killed_dir / "student.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "clean" / "student.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ddp_two_processes_match_single_process(tmp_path, student_json):
    """--nproc 2: DistributedDataParallel over two gloo CPU processes, same global batch."""
    single = api.distill(TEACHER, str(student_json), data="digits", out=tmp_path / "one", epochs=3, batch_size=64)
    double = api.distill(TEACHER, str(student_json), data="digits", out=tmp_path / "two", epochs=3, batch_size=64, nproc=2)
    assert double["nproc"] == 2 and single["nproc"] == 1
    assert double["eval"]["samples"] == single["eval"]["samples"] == 359
    assert abs(double["eval"]["student_accuracy"] - single["eval"]["student_accuracy"]) <= 0.06  # 359 images: 6 pt = 22 of them
    assert double["eval"]["student_accuracy"] >= 0.8 and (tmp_path / "two" / "student.pt").exists()
    assert len(double["history"]) == 3


def test_nproc_must_divide_batch():
    with pytest.raises(UserInputError, match="--nproc"):
        DistillConfig(nproc=3, batch_size=64)


def test_rerun_with_other_config_is_a_new_run_not_a_resume(tmp_path, student_json):
    """The pass cache is keyed by the config: a re-run with another loss trains afresh, never on the old run's state."""
    first = run(tmp_path, student_json, loss="kd", epochs=1)
    second = run(tmp_path, student_json, loss="dist", epochs=1)
    assert first["config"]["loss"] == "kd" and second["config"]["loss"] == "dist"
    assert second["loss_weights"] != first["loss_weights"]


def test_student_output_must_match_teacher(tmp_path):
    spec = tmp_path / "five.json"
    spec.write_text(json.dumps({"arch": "squeeze.zoo:tiny_cnn", "kwargs": {"num_classes": 5}}))
    with pytest.raises(UserInputError, match="does not match the teacher"):
        api.distill(TEACHER, str(spec), data="digits", out=tmp_path / "run", epochs=1)
    assert not (tmp_path / "run").exists()


def test_labels_out_of_range(tmp_path, student_json):
    data = tmp_path / "bad_labels.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((40, 1, 8, 8), dtype=np.float32), y=np.full(40, 12))
    with pytest.raises(UserInputError, match=r"40 labels are >= 10, the model.s number of classes"):
        api.distill(TEACHER, str(student_json), data=str(data), out=tmp_path / "run", epochs=1)


def test_empty_dataset(tmp_path, student_json):
    data = tmp_path / "empty.npz"
    np.savez(data, x=np.zeros((0, 1, 8, 8), dtype=np.float32))
    with pytest.raises(UserInputError, match="empty"):
        api.distill(TEACHER, str(student_json), data=str(data), out=tmp_path / "run", epochs=1)


@pytest.mark.parametrize("loss, message", [("kd+magic", "unknown loss 'magic'"), ("kd=abc", "must be a number")])
def test_bad_loss_specs(loss, message):
    with pytest.raises(UserInputError, match=message):
        DistillConfig(loss=loss)


def test_cli_unknown_loss_exit_2(cli, student_json, tmp_path):
    result = cli("distill", TEACHER, "--student", student_json, "--data", "digits", "--loss", "kd+nope", "--out", tmp_path / "run")
    assert result.code == 2 and result.stderr.strip().startswith("error: unknown loss 'nope'")
    assert not (tmp_path / "run").exists()


def test_foreign_arch_in_student_json_needs_explicit_flag(tmp_path):
    spec = tmp_path / "evil.json"
    spec.write_text(json.dumps({"arch": "os:system", "kwargs": {"command": "true"}}))
    with pytest.raises(UserInputError, match="confirm you trust"):
        api.distill(TEACHER, str(spec), data="digits", out=tmp_path / "run", epochs=1)


def test_build_student_fills_channels_and_classes():
    module, kwargs = build_student("squeeze.zoo:tiny_cnn", {}, in_channels=3, num_classes=7)
    assert kwargs == {"in_channels": 3, "num_classes": 7} and module(torch.zeros(1, 3, 16, 16)).shape == (1, 7)


def test_the_pass_trains_a_copy_and_leaves_its_input_as_the_pass_before_made_it(tmp_path):
    """compress measures the searched (untrained) student as its own stage after the pipeline ran: distill must
    not train that very module in place."""
    from squeeze.io.artifacts import ModelArtifact
    from squeeze.io.data import load_data
    from squeeze.passes.base import Context
    from squeeze.passes.distill.pass_ import DistillPass
    from squeeze.targets import get_target

    teacher = load_model(TEACHER)
    torch.manual_seed(0)
    module, *_ = build_student(STUDENT["arch"], STUDENT["kwargs"], 1, 10)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    student = ModelArtifact(module, teacher.input_spec, "student.json", "student-spec", "", {"arch": STUDENT["arch"]})
    ctx = Context(run_dir=tmp_path, target=get_target("cpu"), data=load_data("digits"), teacher=teacher)
    out = DistillPass().run(ctx, student, DistillConfig(epochs=1, batch_size=64))
    assert out.module is not module and all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in out.module.state_dict().items())


def test_the_planned_work_the_live_view_prices_is_what_training_runs(tmp_path, student_json):
    """The run's ETA counts each pass's training images up front: for distillation that must be the schedule it then runs
    (min_steps turning 1 epoch on digits' small train split into several)."""
    from squeeze.io.data import load_data

    cfg = DistillConfig(epochs=1, batch_size=64, min_steps=40)
    images, epochs = cfg.planned_work(len(load_data("digits").train))
    result = train(tmp_path, epochs=1, min_steps=40)
    resolved = result["resolved"]
    assert epochs == resolved["epochs"] > 1 and images == resolved["steps"] * 64


def test_feature_hints_and_relations_from_a_pt2_teacher_match_its_checkpoint_form(tmp_path, tiny):
    """A .pt2 teacher is unflattened back to its module hierarchy for hooks (issue 17): the same weights as a .pt2 and as
    a checkpoint give the same FitNet and SP losses, epoch by epoch, and the same student."""
    runs = {form: train(tmp_path / form, teacher=path, data="mnist", epochs=1, batch_size=128, loss="kd+fitnet+sp")
            for form, path in (("checkpoint", tiny.checkpoint), ("pt2", tiny.pt2))}
    ours, theirs = runs["pt2"]["history"][0], runs["checkpoint"]["history"][0]
    for term in ("kd", "fitnet", "sp"):
        assert ours[term] == pytest.approx(theirs[term], rel=1e-4, abs=1e-6), term
    assert runs["pt2"]["eval"]["student_accuracy"] == pytest.approx(runs["checkpoint"]["eval"]["student_accuracy"], abs=0.002)
