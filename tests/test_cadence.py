"""Cadences: when training validates, samples and saves, by epochs, steps or the clock."""

import pytest

from charlm.cadence import Cadence, duration, from_flag, parse
from charlm.config import TrainConfig


@pytest.mark.parametrize("text, cadence", [
    (50, Cadence(epochs=50)),
    (0, Cadence()),
    ("2000steps", Cadence(steps=2000)),
    ("1step", Cadence(steps=1)),
    ("30s", Cadence(seconds=30)),
    ("5m", Cadence(seconds=300)),
    ("5min", Cadence(seconds=300)),
    ("1.5h", Cadence(seconds=5400)),
    ("50,5m", Cadence(epochs=50, seconds=300)),
    ("2, 100steps, 10m", Cadence(epochs=2, steps=100, seconds=600)),
])
def test_a_cadence_is_epochs_steps_or_a_duration_or_several(text, cadence):
    assert parse("save_every", text) == cadence


@pytest.mark.parametrize("value, message", [
    ("5x", "--save-every must be a number of epochs (50), of steps (2000steps), a duration"),
    ("m", "--save-every must be a number of epochs"),
    ("", "--save-every must be a number of epochs"),
    ("-5", "--save-every must be a number of epochs"),
    ("0steps", "--save-every: '0steps' must be more than 0"),
    ("0m", "--save-every: '0m' must be more than 0"),
    ("1.5steps", "--save-every: a count of epochs or steps is a whole number, got '1.5steps'"),
    (-1, "--save-every must be >= 0 (0 = only at the end), got -1"),
    (2.5, "--save-every must be a number of epochs"),
])
def test_a_bad_cadence_is_an_error_naming_its_flag(value, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse("save_every", value)


def test_the_config_checks_each_cadence_under_its_own_flag():
    with pytest.raises(ValueError, match="^--eval-every must be"):
        TrainConfig(eval_every="soon")
    assert TrainConfig(sample_every="3steps").sample_every == "3steps"


def test_a_plain_number_stays_an_int_as_in_runs_saved_before_cadences():
    assert from_flag("50") == 50 and from_flag(" 7 ") == 7
    assert from_flag("5m") == "5m"


def test_epoch_triggers_fire_only_at_an_epochs_end_on_multiples():
    every_two = Cadence(epochs=2)
    assert every_two.due(epoch=4, step=99, seconds=0, since=0)
    assert not every_two.due(epoch=3, step=99, seconds=0, since=0)
    assert not every_two.due(epoch=None, step=99, seconds=0, since=0)  # mid-epoch


def test_step_triggers_fire_on_multiples_so_a_resumed_run_fires_where_the_straight_one_did():
    every_16 = Cadence(steps=16)
    fired = [step for step in range(1, 50) if every_16.due(epoch=None, step=step, seconds=0, since=0)]
    assert fired == [16, 32, 48]


def test_time_triggers_count_from_the_events_last_occurrence():
    five_minutes = Cadence(seconds=300)
    assert not five_minutes.due(epoch=None, step=1, seconds=599, since=300)
    assert five_minutes.due(epoch=None, step=1, seconds=600, since=300)


def test_zero_is_never_and_only_step_or_time_triggers_reach_inside_an_epoch():
    assert parse("eval_every", 0).never and not Cadence(epochs=1).never
    assert not Cadence(epochs=1).mid_epoch
    assert Cadence(steps=5).mid_epoch and Cadence(seconds=1).mid_epoch


@pytest.mark.parametrize("seconds, text", [(300, "5m"), (90, "1.5m"), (45, "45s"), (5400, "1.5h"),
                                           (3600, "1h"), (1, "1s")])
def test_a_duration_prints_in_its_shortest_exact_unit(seconds, text):
    assert duration(seconds) == text
    assert parse("x", text).seconds == seconds
