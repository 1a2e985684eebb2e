"""Settings as fields: every field of every config is one flag with the field's help, and every bad
value is an error that names that flag, by the one mapping in charlm.fields."""

import dataclasses

import pytest

from charlm import GenerateConfig, ModelConfig, TrainConfig
from charlm.cli import build_parser, main
from charlm.compression import CompressSettings
from charlm.fields import cli_fields, field_name, flag, flat_names, from_flat, nested, to_flat

COMMANDS = {"train": TrainConfig, "generate": GenerateConfig, "compress": CompressSettings}


def _subparser(command):
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0]))]
    return sub.choices[command]


def _options(command):
    return {option: action for action in _subparser(command)._actions for option in action.option_strings}


FLAG_FIELDS = [(command, f) for command, cls in COMMANDS.items() for f, _, _ in cli_fields(cls)]


@pytest.mark.parametrize("command,field", FLAG_FIELDS, ids=[f"{c}:{f.name}" for c, f in FLAG_FIELDS])
def test_every_field_is_a_flag_whose_help_is_the_fields_own(command, field):
    action = _options(command)[flag(field.name)]
    assert action.dest == field.name
    assert action.help.startswith(field.metadata["help"]) and field.metadata["help"]
    assert "(default: " in action.help


def test_the_flag_mapping_is_kebab_case_and_its_inverse_gives_the_field_back():
    for cls in (*COMMANDS.values(), ModelConfig):
        for f in dataclasses.fields(cls):
            assert flag(f.name) == "--" + f.name.replace("_", "-")
            assert field_name(flag(f.name)) == f.name


@pytest.mark.parametrize("cls", list(COMMANDS.values()))
def test_no_two_fields_of_a_command_share_a_flag(cls):
    names = [f.name for f, _, _ in cli_fields(cls)]
    assert len(names) == len(set(names))


def test_the_model_is_described_once_and_train_and_compress_share_its_flags():
    assert nested(TrainConfig) == nested(CompressSettings) == {"model": ModelConfig}
    train_model_flags = {f.name for f, _, _ in cli_fields(TrainConfig)} & {f.name for f in
                                                                            dataclasses.fields(ModelConfig)}
    # every model field is a training flag, except the two the command line cannot sensibly set
    assert train_model_flags == {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size",
                                                                                      "bidirectional"}
    compress = {f.name: default for f, _, default in cli_fields(CompressSettings)}
    assert compress["num_hiddens"] == 96 and compress["cell"] == "lstm"  # the online network's own defaults


def _all_fields():
    for cls in (ModelConfig, TrainConfig, GenerateConfig, CompressSettings):
        for f in dataclasses.fields(cls):
            if f.name not in nested(cls):
                yield cls, f.name


@pytest.mark.parametrize("cls,name", list(_all_fields()), ids=[f"{c.__name__}.{n}" for c, n in _all_fields()])
def test_a_value_of_the_wrong_type_in_any_field_is_an_error_naming_its_flag(cls, name):
    with pytest.raises(ValueError) as err:
        from_flat(cls, {name: object()})
    assert str(err.value).startswith(f"{flag(name)} must be ")


def test_flat_settings_reach_the_nested_model_and_come_back():
    config = TrainConfig.of(cell="gru", num_hiddens=64, epochs=3)
    assert (config.model.cell, config.model.num_hiddens, config.epochs) == ("gru", 64, 3)
    assert from_flat(TrainConfig, to_flat(config)) == config
    assert config.replace(cell="lstm").model.num_hiddens == 64  # the rest of the model stays
    assert set(to_flat(config)) == flat_names(TrainConfig)


def test_an_unknown_setting_is_refused_with_the_closest_name():
    with pytest.raises(ValueError, match=r"unknown settings \['num_hidden'\] \(did you mean num_hiddens\?\)"):
        TrainConfig.of(num_hidden=3)


def test_old_spellings_of_settings_still_load():
    assert TrainConfig.of(model="lstm").model.cell == "lstm"  # the cell was once called "model"
    assert TrainConfig.from_dict({"bf16": True}).precision == "bf16"


@pytest.mark.parametrize("argv,message", [
    (["compress", "in.txt", "out.chlm", "--mix-lr", "-1"], "--mix-lr must be in [0, 1), got -1.0"),
    (["compress", "in.txt", "out.chlm", "--num-hiddens", "0"],
     "--num-hiddens must be an integer >= 1, got 0"),
    (["train", "--num-hiddens", "0"], "--num-hiddens must be an integer >= 1, got 0"),
    (["train", "--lr-gamma", "2"], "--lr-gamma must be in (0, 1], got 2.0"),
    (["generate", "nowhere", "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
])
def test_the_command_line_names_the_flag_as_typed(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("some text")
    assert main(argv) == 2
    assert capsys.readouterr().err == f"charlm: error: {message}\n"


def test_the_old_flag_names_still_work_with_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "transformer"]) == 2
    err = capsys.readouterr().err
    assert "--model is now --cell" in err and "--cell must be one of rnn, gru, lstm" in err
