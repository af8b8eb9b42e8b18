"""The documentation stays true to the code: docs/configuration.md is generated from the settings, and every
top-level parameter of the flows has a description in the Prefect form."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_md_is_up_to_date():
    spec = importlib.util.spec_from_file_location("config_docs", ROOT / "scripts" / "config_docs.py")
    config_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config_docs)
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == config_docs.render(), "docs/configuration.md is out of date: run python scripts/config_docs.py"
    from memorize.settings import EvalSettings, GenerationSettings, TrainSettings

    for model, section in ((GenerationSettings, "generation"), (TrainSettings, "training"),
                           (EvalSettings, "evaluation")):
        assert all(f"`{section}.{name}`" in current for name in model.model_fields)


@pytest.mark.parametrize("flow", ["flows.pipeline:memorize_pipeline", "flows.build_dataset:build_dataset",
                                  "flows.finetune:finetune", "flows.evaluate_flow:evaluate_flow"])
def test_every_flow_parameter_has_a_description_in_the_prefect_form(flow):
    import importlib

    from prefect.utilities.callables import parameter_schema

    module, name = flow.split(":")
    fn = getattr(importlib.import_module(module), name).fn
    properties = parameter_schema(fn).model_dump()["properties"]
    assert properties and not [p for p, schema in properties.items() if not schema.get("description")]
