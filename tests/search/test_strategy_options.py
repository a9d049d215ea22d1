"""Every strategy declares its options and capabilities, and a spec's ``search.options`` is checked
against them when it is read: a typo is one line and exit code 2, with no job row, no Ray and no
actor, and the service answers it with a 422."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.platform.service.app import ServiceConfig, create_app
from prunehive.platform.service.auth import add_user
from prunehive.platform.settings import default_database_url
from prunehive.platform.spec.job import SpecError, parse_spec
from prunehive.platform.store.jobs import JobStore
from prunehive.search.options import StrategyOptions
from prunehive.search.registry import OPTIONS, STRATEGIES, make_strategy, strategy_class, strategy_options
from prunehive.search.space import Layer, SearchSpace

runner = CliRunner()
DRIVER_SUPPLIED = {"initial", "fidelity", "survivors", "allocation", "storage", "study_name", "metric_names"}


def space() -> SearchSpace:
    layers = [Layer(f"l{i}", "linear", (8, 8), 64, 64) for i in range(4)]
    return SearchSpace(layers, target=0.5)


def kind_for(name: str) -> str:
    return "metric-search" if name == "gp-metric" else "search"


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_strategy_declares_options_and_capabilities(name: str) -> None:
    cls = strategy_class(name)
    assert cls.Options is OPTIONS[name] and issubclass(cls.Options, StrategyOptions)
    assert cls.Options.model_config.get("extra") == "forbid"
    keywords = {p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY}
    # The options are the constructor's keywords less what the driver supplies, with the same defaults.
    assert set(cls.Options.model_fields) == keywords - DRIVER_SUPPLIED
    for field, info in cls.Options.model_fields.items():
        assert info.default == inspect.signature(cls.__init__).parameters[field].default, field
        assert info.description, field
    # The capabilities say which of the driver's keywords the strategy takes.
    assert cls.warm_startable == ("initial" in keywords)
    assert cls.multi_fidelity == ({"fidelity", "survivors"} <= keywords)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_the_defaults_build_the_strategy_and_it_asks(name: str) -> None:
    strategy = make_strategy(name, space(), 4, 0, **strategy_options(name, {}))
    assert len(strategy.ask(2)) >= 1


def test_the_options_a_spec_gives_are_checked_and_kept() -> None:
    spec = parse_spec({"kind": "search", "search": {"strategy": "bayesian", "options": {"n_startup_trials": "4"}}})
    assert spec.search.options == {"n_startup_trials": 4}
    spec = parse_spec({"kind": "metric-search", "search": {"options": {"population": 20, "max_height": 8}}})
    assert spec.search.options == {"population": 20, "max_height": 8}
    assert parse_spec(spec.model_dump(mode="json")).search.options == spec.search.options  # the stored copy


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            {"options": {"populaton": 16}},
            "spec: search.options.populaton: unknown option for strategy 'evolution' (known: population, cxpb,",
        ),
        ({"strategy": "rl", "options": {"hidden": "wide"}}, "spec: search.options.hidden: Input should be a valid"),
        ({"strategy": "bayesian", "options": {"sampler": "cma"}}, "spec: search.options.sampler: Input should be"),
        ({"strategy": "nsga2", "options": {"initial": [[0.5]]}}, "spec: search.options.initial: unknown option"),
    ],
)
def test_a_bad_option_fails_when_the_spec_is_read(search: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"kind": "search", "search": search})
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_benchmark_options_are_checked_per_strategy() -> None:
    bench = {"strategies": ["random", "evolution"], "options": {"random": {"spred": 0.1}}}
    with pytest.raises(SpecError, match=r"benchmark\.options\.random\.spred: unknown option for strategy 'random'"):
        parse_spec({"kind": "benchmark", "benchmark": bench})


def test_run_with_a_typo_exits_2_with_one_line_and_no_job(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"search": {"budget": 2, "options": {"populaton": 4}}}))
    result = runner.invoke(app, ["run", str(spec)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "search.options.populaton: unknown option for strategy 'evolution'" in lines[0]
    assert JobStore(default_database_url()).list_jobs() == []


def test_the_service_answers_a_typo_with_422(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    token = add_user(store, "alice")
    with TestClient(create_app(store, None, ServiceConfig())) as api:
        reply = api.post(
            "/jobs", content="search: {options: {populaton: 4}}\n", headers={"Authorization": f"Bearer {token}"}
        )
    assert reply.status_code == 422
    assert "search.options.populaton: unknown option" in reply.json()["detail"]
    assert store.list_jobs() == []
