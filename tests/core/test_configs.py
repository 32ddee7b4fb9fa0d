"""Config values are checked against their field's annotation, named by their key, and never converted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import pytest

from openrft.core.configs import ConfigValueError, build_config, check_values


@dataclass
class Inner:
    alpha: float = 0.5


@dataclass
class Settings:
    n: int = 3
    temperature: float = 0.6
    greedy: bool = False
    name: str | None = None
    mode: Literal["joint", "single"] = "joint"
    rounds: tuple[int, ...] = (4, 8)
    data: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if isinstance(self.inner, dict):
            self.inner = Inner(**self.inner)
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


@pytest.mark.parametrize("values, message", [
    ({"n": "three"}, "stages.eval.n: expected an integer, got 'three'"),
    ({"n": True}, "stages.eval.n: expected an integer, got True"),
    ({"n": 2.5}, "stages.eval.n: expected an integer, got 2.5"),
    ({"temperature": "hot"}, "stages.eval.temperature: expected a number, got 'hot'"),
    ({"greedy": "yes"}, "stages.eval.greedy: expected true or false, got 'yes'"),
    ({"name": 7}, "stages.eval.name: expected a string or null, got 7"),
    ({"mode": "double"}, "stages.eval.mode: expected one of 'joint', 'single', got 'double'"),
    ({"rounds": [4, "8"]}, "stages.eval.rounds: expected a list of integers, got [4, '8']"),
    ({"data": [1]}, "stages.eval.data: expected a list of strings, got [1]"),
    ({"inner": {"alpha": "high"}}, "stages.eval.inner.alpha: expected a number, got 'high'"),
    ({"inner": 3}, "stages.eval.inner: expected a mapping of Inner settings, got 3"),
])
def test_a_value_of_the_wrong_type_is_named_with_its_key_and_type(values, message):
    with pytest.raises(ConfigValueError) as err:
        build_config(Settings, values, "stages.eval")
    assert str(err.value) == message


def test_range_errors_of_the_dataclass_are_prefixed_and_flags_are_named_as_flags():
    with pytest.raises(ConfigValueError, match=r"^stages.eval: n must be >= 1, got -3$"):
        build_config(Settings, {"n": -3}, "stages.eval")
    with pytest.raises(ConfigValueError, match=r"^n must be >= 1, got -3$"):
        build_config(Settings, {"n": -3}, "--")
    with pytest.raises(ConfigValueError, match=r"^--temperature: expected a number"):
        check_values(Settings, {"temperature": "hot"}, "--")
    with pytest.raises(ConfigValueError, match=r"^--alpha: expected a number"):
        check_values(Settings, {"inner": {"alpha": "x"}}, "--")


def test_valid_values_are_kept_as_given():
    config = build_config(Settings, {"n": 2, "temperature": 1, "rounds": [2, 4], "data": "a", "name": None,
                                     "inner": {"alpha": 1}})
    assert asdict(config) == {"n": 2, "temperature": 1, "greedy": False, "name": None, "mode": "joint",
                              "rounds": [2, 4], "data": "a", "inner": {"alpha": 1}}
    assert type(config.temperature) is int  # not converted: stage identities hash what was given


def test_a_long_value_is_shown_shortened():
    with pytest.raises(ConfigValueError) as err:
        check_values(Settings, {"n": "x" * 10_000})
    assert len(str(err.value)) < 150 and "10002 characters" in str(err.value)
