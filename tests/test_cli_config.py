"""`--config FILE`: a YAML file of settings for dataset/train/eval/run, flags override it, and every run
writes the settings it used to OUT/config.yaml."""
import json

import pytest
import yaml
from fake_llm import FakeLLM

from flows.cli import main

DOC = "The Quillmoor ferry leaves Pier Nine at 7:40. Its captain is Orla Venn. The fare is four crowns.\n"


@pytest.fixture
def setup(tmp_path):
    doc = tmp_path / "ferry.md"
    doc.write_text(DOC)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "documents": [str(doc)], "context": "Rules of the Quillmoor ferry", "out": str(tmp_path / "out"),
        "cache-dir": str(tmp_path / "cache"),
        "generation": {"temperatures": 2, "augment": ["span"], "request_timeout": 30},
        "training": {"learning_rate": 0.002},  # for `train` and `run`; `dataset` ignores the section
    }))
    return config, tmp_path


def test_dry_run_honours_the_file_and_a_flag_overrides_it(prefect_server, setup, capsys):
    config, tmp_path = setup
    with FakeLLM() as llm:
        endpoint = ["--base-url", llm.base_url, "--model", "fake-model", "--dry-run"]
        assert main(["dataset", "--config", str(config), *endpoint]) == 0
        from_file = json.loads(capsys.readouterr().out)
        assert main(["dataset", "--config", str(config), *endpoint, "--temperatures", "1"]) == 0
        overridden = json.loads(capsys.readouterr().out)
        assert llm.requests == 0
    assert from_file["requests"] == 2 * overridden["requests"] > 0  # one chunk, 2 temperatures vs 1
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_a_run_writes_its_effective_config(prefect_server, setup, capsys):
    config, tmp_path = setup
    assert main(["dataset", "--config", str(config), "--temperatures", "0"]) == 0
    written = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert written["generation"]["temperatures"] == 0 and written["generation"]["augment"] == ["span"]
    assert written["generation"]["request_timeout"] == 30  # field names, not flag names (--timeout)
    assert written["out"] == str(tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["pairs_by_origin"]) == {"augment:span"} and report["llm_calls"] == 0  # the file's choice


@pytest.mark.parametrize("bad, message", [
    ({"generation": {"temprature": 2}}, "generation.temprature: unknown setting for `memorize dataset`"),
    ({"generation": {"temperatures": "many"}}, "generation.temperatures: 'many' is not a valid int"),
    ({"colour": "blue"}, "colour: unknown setting"),
    ({"dry_run": "yes"}, "expected true or false"),
    ({"generation": {"dry_run": True}}, "generation.dry_run: unknown setting"),  # a top-level option, not a setting
])
def test_bad_settings_name_the_file_and_the_key(setup, capsys, bad, message):
    config, tmp_path = setup
    config.write_text(yaml.safe_dump({"documents": ["x.md"], "context": "c", "out": "o", **bad}))
    assert main(["dataset", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and message in err


def test_every_setting_is_a_flag_with_its_fields_default_and_reaches_its_field():
    from flows.cli import build_parser
    from flows.cli_options import SECTIONS, settings_from

    run = ["run", "doc.md", "--context", "c", "--out", "o"]
    args = build_parser().parse_args(run)
    for section, (model, _) in SECTIONS.items():
        assert settings_from(args, section) == model()  # one declaration: the CLI's defaults are the fields'
    args = build_parser().parse_args([*run, "--timeout", "7", "--augment", "none", "--no-select-epoch",
                                      "--eval-batch-size", "3", "--batch-size", "2", "--target-modules", "q_proj"])
    generation, training, evaluation = (settings_from(args, s) for s in SECTIONS)
    assert generation.request_timeout == 7 and generation.augment == []
    assert training.select_epoch is False and training.batch_size == 2 and training.target_modules == ["q_proj"]
    assert evaluation.batch_size == 3


def test_a_setting_out_of_range_names_its_flag_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["dataset", "doc.md", "--context", "c", "--out", str(out), "--temperatures", "-1"]) == 2
    assert "--temperatures: Input should be greater than or equal to 0" in capsys.readouterr().err
    assert not out.exists()  # no config.yaml holding the refused value
    with pytest.raises(SystemExit):  # a generation flag is no training flag: argparse refuses it
        main(["train", "data", "--out", "o", "--augment", "span"])


@pytest.mark.parametrize("flags, temperatures, learning_rate", [
    ([], 1, 1e-3),  # the embedded generator; LoRA
    (["--base-url", "http://localhost:8000/v1", "--model", "m", "--full"], 3, 1e-4),  # an endpoint; every weight
    (["--temperatures", "5", "--learning-rate", "2e-3"], 5, 2e-3),  # given: kept as given
])
def test_config_yaml_records_the_values_decided_at_run_time(flags, temperatures, learning_rate):
    from flows.cli import build_parser
    from flows.cli_options import effective_config

    parser = build_parser()
    args = parser.parse_args(["run", "doc.md", "--context", "c", "--out", "o", *flags])
    config = effective_config(parser, args)
    assert config["generation"]["temperatures"] == temperatures
    assert config["training"]["learning_rate"] == learning_rate
    assert config["training"]["bf16"] is None  # decided by the machine that trains, which may be another
