"""The allowed values of the stages' settings, in one place.

Each config dataclass states the rule of a field in the field's metadata (``field(default=3,
metadata=at_least(1))``) and calls :func:`validate` from ``__post_init__``, so a bad value is
refused with the same kind of message wherever a config is made: ``--tries 0: must be >= 1``.
The jobs parse their flags with :class:`FlagParser`, which shows each rule in ``--help`` and
turns a refused value into one line on stderr and exit code 2, argparse's usage error, before
anything starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

RULE = "rule"
FLAG = "flag"  # False: the field is no job flag, so a message names the field itself


@dataclass(frozen=True)
class Number:
    """A number from ``low`` up to ``high`` (if given), each end included unless open; None
    too when ``optional`` (the stage then picks the value)."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            return False
        if value < self.low or (self.low_open and value == self.low):
            return False
        return self.high is None or value < self.high or (value == self.high
                                                          and not self.high_open)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        return (f"in {'(' if self.low_open else '['}{_number(self.low)}, "
                f"{_number(self.high)}{')' if self.high_open else ']'}")

    @property
    def hint(self) -> str:
        return f"allowed: {self}"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Location:
    """A local path or URI (``s3://bucket/prefix``), not blank; ``many``: a tuple of them
    (may be empty); None too when ``optional``. ``what`` says what is expected."""

    many: bool = False
    optional: bool = False
    what: str = "a local path or s3:// URI"

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.many:
            return isinstance(value, tuple) and all(self._one(v) for v in value)
        return self._one(value)

    @staticmethod
    def _one(value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def __str__(self) -> str:
        return f"{self.what}, not empty"

    @property
    def hint(self) -> str:
        return "not empty"


Rule = Number | Location


def _rule(rule: Rule, flag: bool) -> dict:
    return {RULE: rule, FLAG: flag}


def at_least(low: float, optional: bool = False, flag: bool = True) -> dict:
    return _rule(Number(low=low, optional=optional), flag)


def above(low: float, optional: bool = False, flag: bool = True) -> dict:
    return _rule(Number(low=low, low_open=True, optional=optional), flag)


def between(low: float, high: float, low_open: bool = False, high_open: bool = False,
            flag: bool = True) -> dict:
    return _rule(Number(low, high, low_open, high_open), flag)


def location(many: bool = False, optional: bool = False,
             what: str = Location.what) -> dict:
    return _rule(Location(many, optional, what), True)


SEED = between(0, 2**32 - 1)  # what NumPy, scikit-learn and torch all take


def _flag_name(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-") if field.metadata.get(FLAG) else field.name


def validate(config: Any) -> None:
    """Raise ValueError naming the first field of ``config`` (a dataclass) whose value its
    rule refuses, the value and what is allowed, or that holds something else than the
    nested config (e.g. :class:`~deepfake_lib.execution.resources.Resources`) it defaults
    to."""
    for field in dataclasses.fields(config):
        rule, value = field.metadata.get(RULE), getattr(config, field.name)
        kind = type(field.default)
        if dataclasses.is_dataclass(field.default) and not isinstance(value, kind):
            raise ValueError(f"{field.name} {value!r}: must be a {kind.__name__}")
        if rule is None or rule.allows(value):
            continue
        if isinstance(rule, Location) and rule.many and isinstance(value, tuple):
            value = next(v for v in value if not rule.allows((v,)))
        raise ValueError(f"{_flag_name(field)} {value!r}: must be {rule}")


def rules(*configs: type) -> dict[str, Rule]:
    """``{field name: rule}`` of the config classes."""
    return {f.name: f.metadata[RULE] for c in configs for f in dataclasses.fields(c)
            if RULE in f.metadata}


class FlagParser(argparse.ArgumentParser):
    """An argument parser for flags that fill ``configs`` (dataclasses checked by
    :func:`validate`): each flag whose destination is a checked field (or a key of
    ``more_rules``, for flags that fill nested fields) shows its rule in ``--help``, and
    :meth:`checked` turns a refused value into a usage error."""

    def __init__(self, configs: tuple[type, ...], more_rules: dict[str, Rule] | None = None,
                 **kwargs: Any):
        # before argparse adds --help through add_argument
        self.rules = {**rules(*configs), **(more_rules or {})}
        super().__init__(**kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        rule = self.rules.get(action.dest)
        if rule is not None:
            text = action.help or ""
            # on the same line when it fits an 80-column terminal (help starts at column 24)
            fits = len(text.rsplit("\n", 1)[-1]) + len(rule.hint) + 3 <= 56
            sep = " " if fits else "\n"
            action.help = f"{text}{sep}({rule.hint})".lstrip()
        return action

    @contextlib.contextmanager
    def checked(self) -> Iterator[None]:
        """Around making the configs from parsed flags: a ValueError exits with code 2 and
        one line on stderr."""
        try:
            yield
        except ValueError as exc:
            self.exit(2, f"{self.prog}: error: {exc}\n")
