"""The training loop: learning, clipping, state handling, determinism, checkpoints, exact resume."""

import io
import json
import math
import re
import signal
import sys

import pytest
import torch

from charlm import RNNLM, ModelConfig
from charlm.checkpoint import load, load_trainer
from charlm.config import TrainConfig, load_recipe
from charlm.evaluation import EvalResult, cross_entropy, evaluate_ids
from charlm.training.loop import Trainer, TrainingDiverged, TrainingInterrupted
from charlm.training.optim import grad_clipping
from charlm.training.run import resume, train

TEXT = ("the time traveller for so it will be convenient to speak of him was expounding a recondite "
        "matter to us his grey eyes shone and twinkled and his usually pale face was flushed\n") * 12


@pytest.fixture
def small(tmp_path):
    """A tiny configuration on a small text: a few seconds for a handful of epochs."""
    path = tmp_path / "book.txt"
    path.write_text(TEXT)
    return TrainConfig.of(corpus=str(path), max_tokens=-1, num_hiddens=32, batch_size=4, num_steps=8,
                       epochs=4, eval_every=2, sample_every=2, save_every=2, num_preds=10, device="cpu")


@pytest.mark.slow
def test_a_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(10, 64, cell="lstm", impl="builtin", embedding=16))
    X = torch.randint(0, 10, (4, 12))
    Y = torch.roll(X, -1, dims=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        loss = cross_entropy(model(X)[0], Y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05  # from ln(10) = 2.3 at the start


def test_clipping_leaves_a_global_norm_at_most_theta():
    model = RNNLM(ModelConfig(8, 16))
    cross_entropy(model(torch.randint(0, 8, (2, 5)))[0] * 1000, torch.randint(0, 8, (2, 5))).backward()
    before = grad_clipping(model.parameters(), 0.5)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert before > 0.5 and float(after) == pytest.approx(0.5, rel=1e-5)
    assert grad_clipping(model.parameters(), 0.0) == pytest.approx(0.5, rel=1e-5)  # 0 = off


def _record_states(trainer):
    """Wrap the model's forward to keep each incoming state."""
    seen, forward = [], trainer.model.forward

    def spy(inputs, state=None):
        seen.append(state)
        out = forward(inputs, state)
        seen.append(out[1])
        return out
    trainer.model.forward = spy
    return seen


def test_sequential_carries_the_state_detached_and_random_resets_it(small):
    trainer = Trainer(small.replace(epochs=1, eval_every=0, sample_every=0))
    seen = _record_states(trainer)
    trainer.run_epoch()
    ins, outs = seen[0::2], seen[1::2]
    assert torch.count_nonzero(ins[0]) == 0
    for state_in, prev_out in zip(ins[1:], outs):
        assert torch.equal(state_in, prev_out) and state_in.grad_fn is None  # carried, detached
    trainer = Trainer(small.replace(epochs=1, sampling="random", eval_every=0, sample_every=0))
    seen = _record_states(trainer)
    trainer.run_epoch()
    assert all(torch.count_nonzero(s) == 0 for s in seen[0::2])


@pytest.mark.slow
def test_training_lowers_perplexity_and_writes_the_run_folder(small, tmp_path):
    result = train(small.replace(epochs=12, optimizer="adam", lr=0.01), out=tmp_path / "run")
    ppl = [r["train_ppl"] for r in result.history]
    assert ppl[-1] < ppl[0] / 2
    run = tmp_path / "run"
    for name in ("config.json", "vocab.json", "model.safetensors", "best.safetensors", "trainer.pt",
                 "metrics.jsonl", "perplexity.png"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 13))
    assert "val_ppl" in records[1] and "sample" in records[1] and records[1]["sample"].startswith(TEXT[:10])
    assert (run / "perplexity.png").read_bytes()[:4] == b"\x89PNG"
    assert math.isfinite(result.tokens_per_sec) and result.tokens_per_sec > 0


@pytest.mark.slow
def test_same_seed_same_losses_different_seed_different(small):
    a, b = train(small), train(small)
    c = train(small.replace(seed=1))
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert [r["train_loss"] for r in a.history] != [r["train_loss"] for r in c.history]


@pytest.mark.slow
@pytest.mark.parametrize("model, sampling", [("rnn", "sequential"), ("lstm", "random")])
def test_resume_equals_straight_training(small, tmp_path, model, sampling):
    cfg = small.replace(cell=model, sampling=sampling, epochs=6, optimizer="adam", lr=0.01)
    straight = train(cfg, out=tmp_path / "straight")
    train(cfg.replace(epochs=3), out=tmp_path / "halves")
    resumed = resume(tmp_path / "halves", epochs=6)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    logits = [load(d).model(torch.zeros(1, 5, dtype=torch.int64))[0] for d in
              (tmp_path / "straight", tmp_path / "halves")]
    assert torch.equal(*logits)


@pytest.mark.slow
def test_an_interrupted_epoch_resumes_exactly_from_its_middle(small, tmp_path):
    cfg = small.replace(epochs=3, dropout=0.3, num_layers=2)  # dropout: the RNG state must resume too
    straight = train(cfg, out=tmp_path / "straight")
    trainer = Trainer(cfg, tmp_path / "cut")
    from charlm.checkpoint import save_run_files
    save_run_files(tmp_path / "cut", trainer.model, trainer.data.vocab, trainer.config)
    step, calls = trainer.step, []

    def interrupt_mid_epoch_two(X, Y, state):
        calls.append(1)
        if len(calls) == len(trainer.batches) + 3:
            trainer.signals.signum = signal.SIGINT  # as the handler would on Ctrl-C
        return step(X, Y, state)
    trainer.step = interrupt_mid_epoch_two
    with pytest.raises(TrainingInterrupted):
        trainer.fit()
    saved = load_trainer(tmp_path / "cut" / "trainer.pt")
    assert (saved["epoch"], saved["batch"]) == (1, 3)
    resumed = resume(tmp_path / "cut")
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]


@pytest.mark.slow
def test_checkpoint_round_trip_gives_identical_logits(small, tmp_path):
    result = train(small.replace(cell="gru", embedding=8), out=tmp_path / "run")
    run = load(tmp_path / "run")
    X = torch.randint(0, len(run.vocab), (2, 7))
    result.model.eval()
    assert torch.equal(run.model(X)[0], result.model(X)[0])
    assert run.vocab == result.vocab and not run.model.training


def test_a_diverging_loss_stops_training_and_keeps_the_last_good_checkpoint(small, tmp_path):
    cfg = small.replace(epochs=3, save_every=1, eval_every=0, sample_every=0)
    trainer = Trainer(cfg, tmp_path / "run")
    step, calls = trainer.step, []

    def poison_in_epoch_two(X, Y, state):  # a weight turned to NaN, as an explosion would leave it
        calls.append(1)
        if len(calls) == len(trainer.batches) + 2:
            with torch.no_grad():
                trainer.model.W_hq[0, 0] = math.nan
        return step(X, Y, state)
    trainer.step = poison_in_epoch_two
    with pytest.raises(TrainingDiverged, match="loss became nan in epoch 2; lower --lr or clip"):
        trainer.fit()
    saved = load_trainer(tmp_path / "run" / "trainer.pt")
    assert saved["epoch"] == 1 and all(torch.isfinite(t).all() for t in saved["model"].values())


def test_out_folder_holding_a_run_is_not_overwritten(small, tmp_path):
    train(small.replace(epochs=1), out=tmp_path / "run")
    with pytest.raises(ValueError, match="already holds a run; continue it with `charlm resume"):
        train(small.replace(epochs=1), out=tmp_path / "run")


def test_resume_refuses_to_change_the_model(small, tmp_path):
    train(small.replace(epochs=1), out=tmp_path / "run")
    with pytest.raises(ValueError, match="--num-hiddens: resuming continues the saved run; only .* change"):
        resume(tmp_path / "run", num_hiddens=64)


@pytest.mark.parametrize("field, value, match", [
    ("lr", 0, "--lr must be > 0"),
    ("batch_size", 0, "--batch-size must be an integer >= 1"),
    ("clip", -1, "--clip must be >= 0"),
    ("sampling", "shuffled", "--sampling must be one of random, sequential"),
    ("optimizer", "lbfgs", "--optimizer must be one of sgd, adam, adamw"),
])
def test_bad_settings_are_errors_naming_the_flag(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.of(**{field: value})


def test_max_tokens_is_checked_where_the_text_is_cut(small):
    with pytest.raises(ValueError, match="--max-tokens must be a positive count or -1"):
        train(small.replace(max_tokens=0))


def test_a_corpus_shorter_than_one_batch_is_a_clear_error(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("a short text")
    with pytest.raises(ValueError, match="too short for one batch of batch_size=32 x num_steps=35"):
        train(TrainConfig.of(corpus=str(path), epochs=1))


def test_step_schedule_multiplies_the_learning_rate_every_lr_step_epochs(small):
    result = train(small.replace(epochs=5, lr_schedule="step", lr_step=2, lr_gamma=0.5, eval_every=0,
                                 sample_every=0))
    assert [r["lr"] for r in result.history] == [1.0, 1.0, 0.5, 0.5, 0.25]


@pytest.mark.slow
def test_plateau_schedule_lowers_the_rate_when_validation_stops_improving(small, monkeypatch):
    scores = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8])  # improves once, then only worsens
    monkeypatch.setattr(Trainer, "validate", lambda self: EvalResult(next(scores), 100))
    result = train(small.replace(epochs=6, lr_schedule="plateau", lr_step=1, lr_gamma=0.1,
                                 eval_every=1, sample_every=0))
    # patience 1: the second evaluation without improvement (epoch 4) cuts the rate for epoch 5 on
    assert [r["lr"] for r in result.history] == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.1])


def test_no_detach_backpropagates_through_the_whole_epoch(small):
    # Without detaching, the state entering batch 2 still carries batch 1's graph.
    trainer = Trainer(small.replace(epochs=1, detach=False, eval_every=0, sample_every=0))
    seen = _record_states(trainer)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.run_epoch()
    assert seen[2].grad_fn is not None
    # One update at the end of the epoch, from the gradient of the whole epoch's mean loss.
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    history = train(small.replace(epochs=3, detach=False, optimizer="adam", lr=0.01)).history
    assert history[-1]["train_loss"] < history[0]["train_loss"]


# -- the cosine schedule, early stopping and the time budget (issue 7) ------------------------

def test_cosine_lr_warms_up_then_falls_to_min_lr():
    """lr 1, min_lr 0.1, 10 warm-up steps: step 4 is half-way up; after the warm-up the half
    cosine gives (0.1 + 0.9 * (1 + cos(pi p)) / 2): 1 at p = 0, 0.55 at p = 0.5, 0.1 at p = 1."""
    from charlm.training.optim import cosine_lr

    cfg = TrainConfig.of(lr=1.0, min_lr=0.1, warmup_steps=10, lr_schedule="cosine")
    assert cosine_lr(cfg, 4, 0.0) == pytest.approx(0.5)
    assert cosine_lr(cfg, 20, 0.0) == pytest.approx(1.0)
    assert cosine_lr(cfg, 20, 0.5) == pytest.approx(0.55)
    assert cosine_lr(cfg, 20, 1.0) == pytest.approx(0.1)
    assert cosine_lr(cfg, 20, 7.0) == pytest.approx(0.1)  # past the end: stays at min_lr


def test_a_cosine_run_ends_at_min_lr_and_an_interrupted_one_resumes_on_the_same_schedule(small, tmp_path):
    cfg = small.replace(optimizer="adamw", lr=0.01, min_lr=0.001, warmup_steps=3, lr_schedule="cosine",
                        epochs=4)
    straight = train(cfg)
    lrs = [r["lr"] for r in straight.history]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.001, rel=0.05)
    trainer = Trainer(cfg, tmp_path / "cut")
    from charlm.checkpoint import save_run_files
    save_run_files(tmp_path / "cut", trainer.model, trainer.data.vocab, trainer.config)
    step, calls = trainer.step, []

    def interrupt_in_epoch_three(X, Y, state):
        calls.append(1)
        if len(calls) == 2 * len(trainer.batches) + 2:
            trainer.signals.signum = signal.SIGINT
        return step(X, Y, state)
    trainer.step = interrupt_in_epoch_three
    with pytest.raises(TrainingInterrupted):
        trainer.fit()
    resumed = resume(tmp_path / "cut")
    assert [r["lr"] for r in resumed.history] == pytest.approx(lrs)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]


@pytest.mark.slow
def test_patience_stops_when_validation_stops_improving_and_keeps_the_best(small, tmp_path, monkeypatch):
    losses = iter([3.0, 2.0, 2.5, 2.4, 2.6, 1.0])  # best at the 2nd evaluation, then 3 worse ones
    monkeypatch.setattr(Trainer, "validate", lambda self: EvalResult(next(losses), 100))
    cfg = small.replace(epochs=6, eval_every=1, save_every=0, sample_every=0, patience=3)
    result = train(cfg, out=tmp_path / "run")
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]
    assert "no better validation loss in 3 evaluations" in result.history[-1]["stopped"]
    assert load_trainer(tmp_path / "run" / "trainer.pt")["epoch"] == 5  # the stop is saved
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_the_time_budget_ends_training_cleanly_with_an_evaluated_checkpoint(small, tmp_path):
    cfg = small.replace(epochs=1000, eval_every=0, save_every=0, max_minutes=0.02)  # 1.2 seconds
    result = train(cfg, out=tmp_path / "run")
    last = result.history[-1]
    assert last["epoch"] < 1000 and "time budget of 0.02 minutes is spent" in last["stopped"]
    assert "val_loss" in last and math.isfinite(last["val_loss"])  # evaluated at the stop
    saved = load_trainer(tmp_path / "run" / "trainer.pt")
    assert saved["epoch"] == last["epoch"] and saved["run_seconds"] >= 1.2
    assert load(tmp_path / "run").model is not None


@pytest.mark.parametrize("field, value, match", [
    ("min_lr", 2.0, "--min-lr must be in"), ("max_minutes", -1.0, "--max-minutes must be >= 0"),
    ("patience", -1, "--patience must be"), ("warmup_steps", -2, "--warmup-steps must be"),
    ("lr_schedule", "linear", "--lr-schedule must be one of none, step, plateau, cosine")])
def test_bad_schedule_and_budget_settings_name_the_flag(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.of(**{field: value})


# -- cadences: a text whose epoch outlasts the budget still reports and saves --------------------------

def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_step_cadence_validates_and_saves_in_the_middle_of_an_epoch(small, tmp_path):
    run = tmp_path / "run"
    train(small.replace(epochs=1, eval_every="20steps", save_every="20steps", sample_every=0), out=run)
    records = _records(run)
    mid = [r for r in records if "batch" in r]
    assert [r["step"] for r in mid] == list(range(20, mid[0]["batches"], 20))
    assert all("val_loss" in r and r["batch"] == r["step"] for r in mid)
    assert "batch" not in records[-1] and records[-1]["epoch"] == 1  # the epoch's own record last


@pytest.mark.slow
def test_a_crash_mid_epoch_loses_at_most_one_save_interval_and_resume_is_exact(small, tmp_path, monkeypatch):
    cfg = small.replace(epochs=2, save_every="16steps", eval_every=0, sample_every=0, optimizer="adam",
                        lr=0.01, dropout_output=0.1)
    straight = train(cfg, out=tmp_path / "straight")
    real_step = Trainer.step

    def power_cut_at_step_40(self, X, Y, state):
        if self.steps_done == 40:
            raise RuntimeError("power cut")  # no handler saves: as kill -9 leaves the folder
        return real_step(self, X, Y, state)
    monkeypatch.setattr(Trainer, "step", power_cut_at_step_40)
    with pytest.raises(RuntimeError, match="power cut"):
        train(cfg, out=tmp_path / "cut")
    monkeypatch.setattr(Trainer, "step", real_step)
    saved = load_trainer(tmp_path / "cut" / "trainer.pt")
    assert (saved["epoch"], saved["batch"], saved["steps_done"]) == (0, 32, 32)  # 8 steps lost, of 16
    resumed = resume(tmp_path / "cut")
    epochs = [[r["train_loss"] for r in run.history if "batch" not in r] for run in (straight, resumed)]
    assert epochs[0] == epochs[1]
    for name, value in load(tmp_path / "straight").model.state_dict().items():
        assert torch.equal(value, load(tmp_path / "cut").model.state_dict()[name]), name


@pytest.mark.slow
def test_the_clock_validates_and_saves_and_the_first_validation_comes_after_half_a_minute(small, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setattr(Trainer, "elapsed", lambda self: 10.0 * self.steps_done)  # 10 s a step
    run = tmp_path / "run"
    train(small.replace(epochs=1, eval_every="5m", save_every="2m", sample_every=0), out=run)
    mid = [r for r in _records(run) if "batch" in r]
    batches = mid[0]["batches"]
    # Validation after the first 30 s (step 3), then 5 minutes after it (step 33); a save at least
    # every 2 minutes (12 steps) after the last one, which a best validation also makes.
    assert [r["step"] for r in mid] == [s for s in (3, 15, 27, 33, 45, 57) if s < batches]
    assert [r["step"] for r in mid if "val_loss" in r] == [3, 33]
    assert all(r["elapsed"] == 10.0 * r["step"] for r in mid)


def test_a_budget_spent_mid_epoch_ends_the_run_there_with_a_validation(small, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "elapsed", lambda self: 10.0 * self.steps_done)
    result = train(small.replace(epochs=5, max_minutes=0.5, eval_every=0, sample_every=0), out=tmp_path / "r")
    assert load_trainer(tmp_path / "r" / "trainer.pt")["steps_done"] == 3  # 30 s: three steps
    assert "time budget of 0.5 minutes is spent" in result.history[-1]["stopped"]
    assert "val_loss" in result.history[-1]


@pytest.mark.slow
def test_validation_reads_a_fixed_slice_of_the_held_out_text_and_says_so(small, tmp_path, caplog):
    caplog.set_level("INFO", logger="charlm")
    result = train(small.replace(epochs=1, val_tokens=50, sample_every=0), out=tmp_path / "run")
    last = result.history[-1]
    assert last["val_tokens"] == 50
    trainer = Trainer(small)
    expected = evaluate_ids(load(tmp_path / "run", which="last").model, trainer.data.val[:50])
    assert last["val_loss"] == pytest.approx(expected.loss, rel=1e-6)
    assert f"validation reads the first 50 of the {len(trainer.data.val)} held-out tokens" in caplog.text
    assert "bits/token on the first 50 tokens)" in caplog.text
    whole = train(small.replace(epochs=1, val_tokens=-1, sample_every=0)).history[-1]
    assert "val_tokens" not in whole


def test_on_a_terminal_a_bar_shows_tokens_rate_and_time_left(small, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    train(small.replace(epochs=3, eval_every=0, sample_every=0))
    shown = screen.getvalue()
    assert re.search(r"\d+(\.\d+)?k?/\d+(\.\d+)?k? \[\d\d:\d\d<\d\d:\d\d, *\d+(\.\d+)?k?tok/s", shown), shown


CLOCK_FIELDS = ("max_minutes", "lr_schedule", "save_every")  # and validation, sampling: in steps


@pytest.mark.parametrize("seconds_a_step", [0.01, 40.0])
def test_the_english_recipe_trains_the_same_weights_however_fast_the_clock_runs(small, tmp_path, monkeypatch,
                                                                                  seconds_a_step):
    """The shipped English model must be reproducible from its recipe on a given machine: its
    cosine and its validations count steps, so a run on a busy machine (or resumed many times)
    takes the same steps as one on an idle machine. Only checkpoints follow the clock, and a
    checkpoint does not change the weights. The recipe's clock settings, on a tiny model."""
    recipe = load_recipe("english")["settings"]
    assert recipe["eval_every"].endswith("steps") and recipe["sample_every"].endswith("steps")
    assert not recipe["max_minutes"] and recipe["save_every"].endswith("m")  # the clock saves, only
    cfg = small.replace(**{k: recipe[k] for k in CLOCK_FIELDS}, optimizer="adamw", lr=0.01, min_lr=0.001,
                        warmup_steps=3, epochs=2, eval_every="16steps", sample_every="16steps")
    reference = train(cfg, out=tmp_path / "idle")  # the real clock: a fraction of a second a step
    monkeypatch.setattr(Trainer, "elapsed", lambda self: seconds_a_step * self.steps_done)
    clocked = train(cfg, out=tmp_path / "clocked")
    def learned(run):  # what training did: each validation and each epoch's end (saves add records)
        return [(r.get("step"), r.get("lr"), r.get("val_loss"), r["train_loss"]) for r in run.history
                if "val_loss" in r or "batch" not in r]
    assert learned(clocked) == learned(reference)
    for which in ("best", "last"):
        a, b = (load(tmp_path / run, which=which).model.state_dict() for run in ("idle", "clocked"))
        assert all(torch.equal(a[k], b[k]) for k in a), which


def test_a_cosine_fitted_to_a_time_budget_follows_the_clock(small, tmp_path, monkeypatch):
    """The contrast that the test above guards against: --max-minutes makes the schedule the clock's."""
    cfg = small.replace(optimizer="adamw", lr=0.01, min_lr=0.001, lr_schedule="cosine", epochs=2,
                        max_minutes=60, eval_every=0, sample_every=0, save_every=0)
    runs = []
    for seconds_a_step in (0.01, 40.0):
        monkeypatch.setattr(Trainer, "elapsed", lambda self, s=seconds_a_step: s * self.steps_done)
        runs.append([r["lr"] for r in train(cfg).history])
    assert runs[0] != runs[1]
