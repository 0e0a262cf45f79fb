"""Strategy conformance: the package's suite (autocompress.search.conformance) on every
registered strategy, and on a plug-in strategy registered here the way a third party would."""

from __future__ import annotations

from typing import Literal

import pytest

from autocompress.search import Strategy, StrategyOptions, register_strategy, strategy_names
from autocompress.search.conformance import CHECKS, run


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", strategy_names())
def test_every_registered_strategy_passes_the_conformance_suite(name, check):
    check(name)


@pytest.mark.parametrize("name", ["greedy", "beam"])
def test_walks_screen_neighbours_with_the_proxy(name):
    """With the proxy, neighbours are ranked by drift and only the chosen moves are
    evaluated in full; without it every neighbour is. (Whether the result is as small
    is a property of the proxy on a real model: experiments/bench/gate.py.)"""
    on, on_eval = run(name, max_full=500)
    off, off_eval = run(name, max_full=500, proxy=False)
    assert on.stats.stopped_by == off.stats.stopped_by == "strategy finished"
    assert any(r.feasible for r in on.all_results()) and any(r.feasible for r in off.all_results())
    assert on_eval.probe_calls > 0 and len(on_eval.full_calls) * 3 <= len(off_eval.full_calls)


class _CornerOptions(StrategyOptions):
    name: Literal["test_corners"]


class _Corners(Strategy):
    """A plug-in: asks each dimension's most aggressive choice alone, then stops."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending = [tuple(len(d.choices) - 1 if i == j else 0 for j, d in enumerate(self.space.dims))
                        for i in range(len(self.space.dims))]
        self.pending.append(tuple(1 for _ in self.space.dims))  # one notch everywhere

    @property
    def done(self) -> bool:
        return not self.pending

    def ask(self, n):
        out, self.pending = self.pending[:n], self.pending[n:]
        return [self.request(config) for config in out]

    def tell(self, request, result):
        pass


def test_a_plugin_strategy_registers_with_its_options_and_runs_the_suite():
    if "test_corners" not in strategy_names():
        register_strategy("test_corners", _CornerOptions)(_Corners)
    assert "test_corners" in strategy_names()
    for check in CHECKS:
        check("test_corners")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("test_corners", _CornerOptions)(_Corners)
    with pytest.raises(ValueError, match="must declare name"):
        register_strategy("other_name", _CornerOptions)
