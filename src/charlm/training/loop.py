"""The training loop (d2l §8.5.5 `train_epoch_ch8` / `train_ch8`), made into a tool.

One epoch: for each mini-batch, begin or carry the hidden state, predict, average the
cross-entropy over all ``B x T`` targets, backpropagate, clip the global gradient norm, step.
Sequential partitioning carries the state across batches and detaches it before each one
(truncated BPTT); random sampling starts every batch from a fresh state. Around the loop: validation
in perplexity and bits per token, samples after a prefix, a metrics log, the perplexity curve,
checkpoints, and an exact resume even from the middle of an epoch.
"""

from __future__ import annotations

import logging
import math
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import cadence
from .. import checkpoint as ckpt
from ..config import CADENCES, DEFAULT_PREFIXES, TrainConfig
from ..data.batches import BatchStream
from ..data.dataset import Splits, load_splits
from ..data.vocab import Vocab, preamble_ids
from ..evaluation import MAX_LOSS, EvalResult, cross_entropy, evaluate_ids, perplexity
from ..generation import GenerateConfig, generate
from ..hardware import distributed, machine
from ..hardware.device import autocast, resolve_device
from ..hardware.threads import ThreadGovernor, fixed_threads
from ..models import RNNLM, detach_state, native, state_from_tensors, state_tensors
from .optim import cosine_lr, grad_clipping, make_optimizer, make_schedule
from .plot import plot_perplexity
from .progress import SignalFlag, TokenBar, format_record

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Training stopped by a signal (Ctrl-C, SIGTERM) after saving a checkpoint."""

    def __init__(self, signum: int, run_dir: Path | None) -> None:
        super().__init__(f"training interrupted by signal {signum}; checkpoint saved in {run_dir}; "
                         f"continue it with: charlm resume {shlex.quote(str(run_dir))}"
                         if run_dir else f"training interrupted by signal {signum}")
        self.signum, self.run_dir = signum, run_dir


class TrainingDiverged(Exception):
    """The loss, a gradient or the weights became NaN or infinite; the last good checkpoint is kept."""


ADVICE = "lower --lr or clip gradients (--clip 1)"
# A run whose first epoch outlasts this many seconds validates once when they have passed (if its
# --eval-every has a time trigger), so that a log says within a minute whether the run learns. A
# cadence of steps alone keeps to its steps: every record, and the best weights, then follow the
# step count, not the machine's speed (the English recipe is reproducible so).
FIRST_EVAL_SECONDS = 30.0


@dataclass
class Position:
    """Where an epoch stands: batches done, the carried hidden state, and its running totals."""

    epoch: int = 0
    batch: int = 0
    state: Any = None
    loss_sum: float = 0.0
    num_tokens: int = 0
    seconds: float = 0.0


@dataclass
class TrainResult:
    """What a finished run reports; `history` holds one record per epoch."""

    model: RNNLM
    vocab: Vocab
    perplexity: float  # training perplexity of the last epoch
    tokens_per_sec: float
    device: str
    val: EvalResult | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path | None = None


def default_prefix(config: TrainConfig, data: Splits) -> str:
    """The book's prefix for its corpora; for any other text, its first ten tokens."""
    if config.corpus in DEFAULT_PREFIXES:
        return DEFAULT_PREFIXES[config.corpus]
    tokens = data.vocab.to_tokens(data.train[:10].tolist())
    return (" " if config.token == "word" else "").join(tokens)


def load_data(config: TrainConfig, vocab: Vocab | None = None) -> Splits:
    return load_splits(config.corpus, clean=config.clean, token=config.token, max_tokens=config.max_tokens,
                       eos=config.eos, encoding=config.encoding, errors=config.errors,
                       keep_boilerplate=config.keep_boilerplate, vocab=vocab)


class Trainer:
    """Holds the pieces of one run; `fit` is the loop, the rest are its steps."""

    def __init__(self, config: TrainConfig, run_dir: Path | None = None, vocab: Vocab | None = None,
                 data: Splits | None = None) -> None:
        """`vocab`: the vocabulary to read the text with (a fine-tuned run's), instead of the text's own;
        `data`: the text already read with `config`'s text settings, instead of reading it again."""
        self.config, self.run_dir = config, run_dir
        self.dist, self.device = distributed.setup(resolve_device(config.device))
        distributed.check_batch_size(config.batch_size, self.dist)
        self.precision = machine.choose_precision(config.precision, machine.probe(), self.device.type)
        self.governor: ThreadGovernor | None = None  # fits the CPU threads to the load (fit())
        fixed_threads()  # a bad CHARLM_THREADS is an error now, before any data is read
        self.data = data if data is not None else load_data(config, vocab)
        # Resolved once and saved, so `charlm generate` starts alike and the run records its model whole.
        self.config = config = config.replace(
            vocab_size=len(self.data.vocab), encoding=self.data.encoding,
            prefix=default_prefix(config, self.data) if config.prefix is None else config.prefix)
        torch.manual_seed(config.seed)  # parameter initialisation and dropout draw from this seed
        self.model = RNNLM(config.model).to(self.device)
        if config.preamble:
            self.model.preamble = torch.tensor(preamble_ids(config.preamble, config.token, self.data.vocab))
        # The network the steps call: the model itself, or DDP around it (gradients averaged).
        self.net = self.model if self.dist.world_size == 1 else \
            torch.nn.parallel.DistributedDataParallel(self.model)
        self.optimizer = make_optimizer(config, self.model.parameters())
        self.schedule = make_schedule(config, self.optimizer)
        self.batches = BatchStream(self.data.train, config.batch_size, config.num_steps,
                                   sampling=config.sampling, seed=config.seed,
                                   random_offset=config.random_offset)
        self.position, self.history, self.best_val = Position(), [], math.inf
        self.steps_done, self.stale_evals = 0, 0  # optimizer steps; validations without a better loss
        self.cadences = {name: cadence.parse(name, getattr(config, name)) for name in CADENCES}
        if self.device.type == "cpu":
            # The C++ kernels (the scratch cells' recurrences, the samples' greedy decoding) build on
            # first use, once per machine, up to minutes on a busy CPU: built now, before the clock
            # starts and before the signal handler defers a SIGTERM that should end the build.
            native.available()
        # Wall-clock seconds of earlier sessions of this run (resume), and where this one started:
        # --max-minutes and the cosine schedule count the whole run.
        self.seconds_before, self.started = 0.0, time.perf_counter()
        # The run's time as rank 0 measures it, shared with every rank at each step (tick): the
        # budget, the clock's cadences and the cosine read it, so every rank decides alike.
        self.now = 0.0
        self.marks = dict.fromkeys(CADENCES, 0.0)  # the run's time when each event last happened
        self.bar: TokenBar | None = None  # the bar over tokens, while loop() runs
        self.stop_reason: str | None = None  # set when --patience or --max-minutes ends the run
        self.epoch_losses: list[torch.Tensor] = []  # --no-detach: the epoch's graph, kept whole
        self.signals = SignalFlag()
        if run_dir is not None and self.dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)

    # -- one batch and one epoch ---------------------------------------------------------------
    def step(self, X: torch.Tensor, Y: torch.Tensor, state: Any) -> tuple[float, Any]:
        """One batch: forward, then an update (with --no-detach the update waits for the epoch's
        end). Returns the batch's mean loss and the state to carry."""
        loss, state = self.forward_loss(X, Y, state)
        if self.config.detach:
            self.update(loss)
        else:
            self.epoch_losses.append(loss)
        return loss.item(), state

    def forward_loss(self, X: torch.Tensor, Y: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        X, Y = self.dist.shard(X).to(self.device), self.dist.shard(Y).to(self.device)
        if state is None or self.config.sampling == "random" or self.config.reset_state:
            state = self.model.begin_state(X.shape[0], self.device)
        elif self.config.detach:
            state = detach_state(state)  # truncated BPTT: gradients stop at the batch boundary
        with autocast(self.device, self.precision.value):
            logits, state = self.net(X, state)
        loss = cross_entropy(logits, Y)
        if not loss.item() < MAX_LOSS:  # NaN compares false too
            raise TrainingDiverged(f"the loss became {loss.item():.6g} in epoch {self.position.epoch + 1}; "
                                   f"{ADVICE}")
        return loss, state

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = grad_clipping(self.model.parameters(), self.config.clip)
        if not math.isfinite(norm):  # stop before the step, so the weights stay the last good ones
            raise TrainingDiverged(f"the gradient norm became {norm} in epoch {self.position.epoch + 1}; "
                                   f"{ADVICE}")
        if self.config.lr_schedule == "cosine":
            for group in self.optimizer.param_groups:
                group["lr"] = cosine_lr(self.config, self.steps_done, self.progress())
        self.optimizer.step()
        self.steps_done += 1

    def elapsed(self) -> float:
        """Wall-clock seconds of the whole run so far, earlier sessions included."""
        return self.seconds_before + time.perf_counter() - self.started

    def progress(self) -> float:
        """The fraction of the run done: of its steps, or of its time budget if that runs out first."""
        total_steps = self.config.epochs * max(1, len(self.batches))
        if not self.config.detach:
            total_steps = self.config.epochs  # one update per epoch
        done = self.steps_done / total_steps
        if self.config.max_minutes:
            done = max(done, self.now / (60 * self.config.max_minutes))
        return done

    def tick(self) -> bool:
        """Share rank 0's clock with every rank (`self.now`), and whether any rank has caught a
        signal: one collective per step. Every decision that follows (the budget, a cadence, the
        learning rate) reads these shared numbers, so no rank takes a branch the others do not."""
        self.now, signalled = distributed.share_clock(self.elapsed(), self.signals.signum is not None,
                                                      self.dist, self.device)
        return signalled

    def interrupt(self) -> TrainingInterrupted:
        return TrainingInterrupted(self.signals.signum or signal.SIGINT, self.run_dir)

    def out_of_time(self) -> bool:
        """Whether the budget is spent, by the shared clock: the same answer on every rank."""
        if self.config.max_minutes and self.now >= 60 * self.config.max_minutes:
            self.stop_reason = f"the time budget of {self.config.max_minutes:g} minutes is spent"
        return self.stop_reason is not None

    def end_no_detach_epoch(self) -> None:
        """--no-detach: the graph spans the whole epoch, so the gradient of its mean loss flows
        through every batch back to the epoch's start (full BPTT); the weights cannot change
        under that graph, so there is one update per epoch, and memory grows with the epoch."""
        if self.epoch_losses:
            self.update(torch.stack(self.epoch_losses).mean())
        self.epoch_losses = []

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch from `self.position` (batch 0, or where an interrupted epoch stopped);
        validate, sample and save within it whenever a step or time cadence makes them due."""
        pos = self.position
        self.batches.set_epoch(pos.epoch)
        num_batches = len(self.batches)
        self.model.train()
        start = time.perf_counter() - pos.seconds
        for k, (X, Y) in enumerate(self.batches):
            if k < pos.batch:
                continue  # resumed mid-epoch: these batches were trained before the interruption
            loss, pos.state = self.step(X, Y, pos.state)
            pos.batch, pos.loss_sum, pos.num_tokens = k + 1, pos.loss_sum + loss * Y.numel(), \
                pos.num_tokens + Y.numel()
            pos.seconds = time.perf_counter() - start
            if self.governor is not None:
                self.governor.tick()
            if self.tick():
                if not self.config.detach:  # no update yet this epoch: restart it on resume
                    self.position, self.epoch_losses = Position(epoch=pos.epoch), []
                raise self.interrupt()
            self.advance_bar(X.numel())
            if self.out_of_time():
                break  # the budget ends the run here, mid-epoch: the rest of the epoch is skipped
            # --no-detach holds the epoch's graph, which no checkpoint can keep: it reports at the end
            if self.config.detach and pos.batch < num_batches:
                self.report_mid_epoch(num_batches)
        if not self.config.detach:
            self.end_no_detach_epoch()
        record = {"epoch": pos.epoch + 1, **self.totals()}
        self.position = Position(epoch=pos.epoch + 1)
        return record

    def totals(self) -> dict[str, Any]:
        """The epoch's training loss so far, over every rank, with its speed, learning rate and time."""
        pos = self.position
        loss_sum, num_tokens = distributed.sum_across([pos.loss_sum, pos.num_tokens], self.dist,
                                                      self.device)
        return {"train_loss": loss_sum / num_tokens, "train_ppl": perplexity(loss_sum / num_tokens),
                "tokens_per_sec": num_tokens / max(pos.seconds, 1e-9),
                "lr": self.optimizer.param_groups[0]["lr"], "elapsed": self.now}

    def report_mid_epoch(self, num_batches: int) -> None:
        """A record in the middle of an epoch, when a step or time cadence makes an event due."""
        due = self.due(epoch=None)
        if any(due.values()):
            pos = self.position
            record = {"epoch": pos.epoch + 1, "batch": pos.batch, "batches": num_batches,
                      "step": self.steps_done, **self.totals()}
            self.report(record, due, last=False)
            self.model.train()  # validation and sampling left it in eval mode

    def due(self, epoch: int | None) -> dict[str, bool]:
        """Which events are due now, by the shared clock and step count (the same on every rank);
        `epoch`: the epochs completed at an epoch's end, None mid-epoch."""
        due = {name: c.due(epoch=epoch, step=self.steps_done, seconds=self.now, since=self.marks[name])
               for name, c in self.cadences.items()}
        first = (epoch is None and self.cadences["eval_every"].seconds and self.now >= FIRST_EVAL_SECONDS
                 and not any("val_loss" in r for r in self.history))
        due["eval_every"] = due["eval_every"] or first
        return due

    # -- around the epochs ---------------------------------------------------------------------
    def validation_ids(self) -> torch.Tensor:
        """The validation text, or its first --val-tokens tokens: a fixed slice, so every validation
        of a run reads the same text, in seconds however large the held-out part is."""
        limit = self.config.val_tokens
        return self.data.val if limit == -1 else self.data.val[:limit]

    def validate(self) -> EvalResult | None:
        """The validation loss, computed by rank 0 and sent to every rank: each takes the same
        decisions from it (best weights, --patience), however its own arithmetic would round."""
        def score() -> EvalResult | None:
            ids = self.validation_ids()
            if len(ids) < 2:
                return None
            return evaluate_ids(self.model, ids, rows=min(self.config.val_rows, len(ids) - 1),
                                device=self.device)

        return distributed.from_main(score, self.dist)

    def sample(self) -> str | None:
        try:
            return generate(self.model, self.data.vocab, self.config.prefix,
                            GenerateConfig(num_preds=self.config.num_preds, greedy=True),
                            token=self.config.token)[0]
        except ValueError as err:
            log.warning("no sample: %s", err)
            return None

    def trainer_state(self) -> dict[str, Any]:
        """The resume state; under torchrun every rank must call it (it gathers across ranks)."""
        pos = self.position
        state = None if pos.state is None else state_tensors(pos.state)
        if state is not None:  # the whole batch's rows, so any number of ranks can resume it
            state = [distributed.gather_rows(s, self.dist) for s in state]
        loss_sum, num_tokens = distributed.sum_across([pos.loss_sum, pos.num_tokens], self.dist,
                                                      self.device)
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict() if self.schedule else None,
                "epoch": pos.epoch, "batch": pos.batch, "loss_sum": loss_sum,
                "num_tokens": int(num_tokens), "seconds": pos.seconds,
                "hidden": None if state is None else [s.cpu() for s in state],
                "rng": torch.get_rng_state(), "history": self.history, "best_val": self.best_val,
                "steps_done": self.steps_done, "stale_evals": self.stale_evals, "run_seconds": self.now,
                "marks": self.marks}

    def restore(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.schedule and saved["schedule"]:
            self.schedule.load_state_dict(saved["schedule"])
        hidden = saved["hidden"]
        if hidden is not None:
            hidden = state_from_tensors([distributed.own_rows(h, self.dist).to(self.device) for h in hidden])
        # Totals were summed over ranks; each rank takes an equal share so the sum comes out right.
        world = self.dist.world_size
        self.position = Position(saved["epoch"], saved["batch"], hidden, saved["loss_sum"] / world,
                                 saved["num_tokens"] / world, saved["seconds"])
        torch.set_rng_state(saved["rng"])
        self.history, self.best_val = list(saved["history"]), float(saved["best_val"])
        # Runs saved before these existed: no steps counted, no stale evaluations, no time spent.
        self.steps_done, self.stale_evals = int(saved.get("steps_done", 0)), int(saved.get("stale_evals", 0))
        self.seconds_before, self.started = float(saved.get("run_seconds", 0.0)), time.perf_counter()
        self.now = self.seconds_before
        self.marks.update({k: float(v) for k, v in saved.get("marks", {}).items() if k in self.marks})

    def save(self, *, best: bool = False) -> None:
        """A checkpoint, never of broken weights: those would overwrite the last good one."""
        if self.run_dir is None:
            return
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise TrainingDiverged(f"the weights became NaN or infinite in epoch {self.position.epoch}; "
                                   f"{ADVICE}")
        state = self.trainer_state()  # on every rank: it gathers across them
        if not self.dist.is_main:
            return
        ckpt.save_trainer(self.run_dir / "trainer.pt", state)
        ckpt.save_weights(self.run_dir / "model.safetensors", self.model)
        if best:
            ckpt.save_weights(self.run_dir / "best.safetensors", self.model)
        try:
            plot_perplexity(self.history, self.run_dir / "perplexity.png", data=self.config.corpus,
                            token=self.config.token)
        except OSError as err:
            raise ckpt.write_failure(self.run_dir / "perplexity.png", err) from err

    def log_record(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.run_dir is not None and self.dist.is_main:
            ckpt.append_line(self.run_dir / "metrics.jsonl", record)

    def end_of_epoch(self, record: dict[str, Any], last: bool) -> None:
        """After an epoch: the schedule's step, then the events due (see :meth:`report`)."""
        if self.schedule is not None and not isinstance(self.schedule,
                                                        torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.schedule.step()
        self.report(record, self.due(epoch=record["epoch"]), last=last)

    def report(self, record: dict[str, Any], due: dict[str, bool], last: bool) -> None:
        """Validation, sample, log and checkpoint, each when `due` (or at the run's `last` record);
        every rank calls this at the same step with the same `due`."""
        best = False
        if last or due["eval_every"]:
            self.marks["eval_every"] = self.now
            best = self.validate_into(record)
        last = last or self.stop_reason is not None
        sample = self.cadences["sample_every"]
        if due["sample_every"] or (last and not sample.never):
            self.marks["sample_every"] = self.now
            if self.dist.is_main:
                record["sample"] = self.sample()
        if self.stop_reason:
            record["stopped"] = self.stop_reason
        self.log_record(record)
        noteworthy = record["epoch"] == 1 and "batch" not in record or \
            any(k in record for k in ("val_ppl", "sample", "stopped"))
        if self.dist.is_main:
            log.log(logging.INFO if noteworthy else logging.DEBUG, "%s", format_record(record))
            if self.bar is not None:
                self.bar.show(record)
        if last or best or due["save_every"]:
            self.marks["save_every"] = self.now
            self.save(best=best)

    def validate_into(self, record: dict[str, Any]) -> bool:
        """Validate, add the scores to `record`, keep count for --patience and the plateau schedule;
        True if this is the best validation loss so far."""
        val = self.validate()
        if val is None:
            return False
        cfg = self.config
        record.update(val_loss=val.loss, val_ppl=val.perplexity, val_bpt=val.bits_per_token)
        if len(self.validation_ids()) < len(self.data.val):
            record["val_tokens"] = len(self.validation_ids())
        best = val.loss < self.best_val
        self.best_val = min(self.best_val, val.loss)
        self.stale_evals = 0 if best else self.stale_evals + 1
        if cfg.patience and self.stale_evals >= cfg.patience:
            self.stop_reason = (f"no better validation loss in {cfg.patience} evaluations "
                                f"(the best is kept in best.safetensors)")
        if isinstance(self.schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.schedule.step(val.loss)
        return best

    def fit(self) -> TrainResult:
        """Train until `config.epochs` epochs are done in total; a signal saves and stops. A file
        that cannot be written stops training too: going on without checkpoints would risk more
        work than it saves."""
        if self.dist.is_main:
            log.info("precision %s: %s", self.precision.value, self.precision.reason)
        try:
            if self.device.type == "cpu":
                with ThreadGovernor(machine.probe()) as self.governor:
                    self.loop()
            else:
                self.loop()
        except ckpt.RunWriteError as err:
            raise ckpt.RunWriteError(f"{err}; training stopped after epoch {self.position.epoch}, with "
                                     f"the last checkpoint in {self.run_dir} intact: continue it with "
                                     f"`charlm resume {self.run_dir}` once the folder can be written"
                                     ) from err
        return self.result()

    def loop(self) -> None:
        """The epochs, each followed by its end-of-epoch work; a signal saves a checkpoint and stops."""
        cfg = self.config
        self.tick()  # rank 0's clock from the first step on: the cosine's first learning rate reads it
        self.note_validation_slice()
        # On a terminal, a bar over the run's tokens (rate, time left); in a log, a line per validation.
        self.bar = TokenBar(self.tokens_planned(), show=self.dist.is_main)
        with self.signals, self.bar:
            try:
                while self.position.epoch < cfg.epochs and self.stop_reason is None:
                    record = self.run_epoch()
                    last = record["epoch"] == cfg.epochs or self.stop_reason is not None  # budget spent
                    self.end_of_epoch(record, last=last)
                    if self.tick():
                        raise self.interrupt()
            except TrainingInterrupted:
                self.save()
                raise
            finally:
                self.bar = None

    def tokens_planned(self) -> int:
        """The tokens the remaining epochs hold (each epoch's count varies by its random offset by at
        most one batch), counted from the start of the current one."""
        per_epoch = len(self.batches) * self.config.batch_size * self.config.num_steps
        return max(0, self.config.epochs - self.position.epoch) * per_epoch

    def advance_bar(self, tokens: int) -> None:
        if self.bar is not None:
            left = 60 * self.config.max_minutes - self.now if self.config.max_minutes else None
            self.bar.advance(tokens, self.tokens_planned(), left)

    def note_validation_slice(self) -> None:
        if self.dist.is_main and len(self.validation_ids()) < len(self.data.val):
            log.info("validation reads the first %s of the %s held-out tokens (--val-tokens -1 for all)",
                     f"{len(self.validation_ids()):,}", f"{len(self.data.val):,}")

    def result(self) -> TrainResult:
        last = self.history[-1] if self.history else {}
        val = EvalResult(last["val_loss"], 0) if "val_loss" in last else None
        return TrainResult(self.model, self.data.vocab, last.get("train_ppl", math.nan),
                           last.get("tokens_per_sec", math.nan), str(self.device), val,
                           self.history, self.run_dir)
