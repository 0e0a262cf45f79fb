"""The spike and operation counter (synaptic operations, MACs, firing rates) and the
energy estimate: against hand counts, and against what pruning must change."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocompress.compress import compress_model
from autocompress.proxy.energy import counting
from conftest import PLAIN, tiny_trained_model


class _Wrapped(nn.Module):
    """The face ``counting`` needs (an SViT's): ``net``, ``spiking_neurons``, ``compression``."""

    def __init__(self, net):
        super().__init__()
        self.net, self.compression = net, None

    def spiking_neurons(self):
        return []


def test_the_counter_matches_a_hand_count():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    linear = nn.Linear(4, 3, bias=False)
    model = _Wrapped(nn.ModuleDict({"conv": conv, "linear": linear}))
    corner = torch.zeros(1, 1, 3, 3)
    corner[0, 0, 0, 0] = 1  # one spike in a corner: 4 output positions see it, 2 channels each
    centre = torch.zeros(1, 1, 3, 3)
    centre[0, 0, 1, 1] = 1  # in the centre: all 9 positions
    spikes = torch.tensor([[1.0, 0, 1, 0], [0, 0, 1, 0]])  # 3 spikes, 3 outputs each
    with counting(model, images=1) as activity:
        conv(corner)
        conv(centre)
        conv(torch.full((1, 1, 3, 3), 0.5))  # not spikes: dense, 9 positions x 2 channels x 9 taps
        linear(spikes)
        torch.full((2, 3), 0.5) @ torch.full((3, 4), 0.5)  # dense: 2 x 4 outputs x 3
        torch.tensor([[1.0, 0, 1], [0, 0, 0]]) @ torch.randn(3, 5)  # 2 spikes, 5 columns each
    conv_op, linear_op = activity.ops["conv"], activity.ops["linear"]
    assert (conv_op["synops"], conv_op["macs"], conv_op["bits"]) == (8 + 18, 162, 32)
    assert (linear_op["synops"], linear_op["macs"]) == (9, 0)
    # the papers' shortcut, rate x dense MACs: exact for the linear layer, not at a padded conv's borders
    assert linear_op["paper"] == pytest.approx(3 / 8 * 2 * 3 * 4)
    assert conv_op["paper"] == pytest.approx(2 * (1 / 9) * 162)
    assert activity.ops["matmul0"]["macs"] == 24 and activity.ops["matmul1"]["synops"] == 10
    assert activity.synops == 26 + 9 + 10 and activity.macs == 162 + 24
    assert activity.energy_mj() == pytest.approx((45 * 0.9 + 186 * 4.6) * 1e-9)


def test_events_are_counted_only_on_spike_counts():
    """Binary spikes count their ones; counts (a residual stream's sums) their sum; anything
    graded, negative or integer-typed is real-valued (None: dense multiply-accumulates)."""
    from autocompress.proxy.energy import _events

    assert _events(torch.tensor([0.0, 1.0, 1.0, 0.0])) == 2.0
    assert _events(torch.zeros(3)) == 0.0
    assert _events(torch.tensor([0.0, 1.0, 0.5])) is None  # within [0, 1] but not binary
    assert _events(torch.tensor([1.0, 0.999999])) is None
    assert _events(torch.tensor([0.0, 2.0, 3.0])) == 5.0 and _events(torch.tensor([0.0, 2.5])) is None
    assert _events(torch.tensor([-1.0, 1.0])) is None and _events(torch.tensor([0, 1])) is None
    assert _events(torch.empty(0)) is None


def test_pruning_a_layers_consumers_changes_the_synops_as_expected():
    """Pruning half of block 0's MLP hidden channels: fc1 keeps its input spikes and loses half
    its outputs (its SOPs halve exactly); fc2 keeps the spikes of the kept channels only."""
    model = tiny_trained_model("spikformer")
    images = torch.randn(6, 1, 16, 16)
    base = compress_model(model, **PLAIN, calibration=images)  # nothing pruned: the same network
    pruned = compress_model(model, **PLAIN, prune={"blocks.0.mlp.hidden": 0.5}, calibration=images)
    width = model.net.blocks[0].mlp.fc1[0].weight.shape[0]
    kept = sorted(set(range(width)) - set(pruned.pruned_channels["blocks.0.mlp.hidden"]))
    hidden = {}
    handle = base.net.blocks[0].mlp.neuron1.register_forward_hook(lambda m, i, o: hidden.update(v=o.detach()))
    with torch.inference_mode(), counting(base, len(images)) as before:
        base(images)
    handle.remove()
    with torch.inference_mode(), counting(pruned, len(images)) as after:
        pruned(images)
    fc1, fc2 = "blocks.0.mlp.fc1.0", "blocks.0.mlp.fc2.0"
    assert before.ops[fc1]["synops"] > 0 and before.ops[fc1]["macs"] == 0  # summed spikes: accumulates
    assert len(kept) == width // 2
    assert after.ops[fc1]["synops"] == pytest.approx(before.ops[fc1]["synops"] * len(kept) / width)
    kept_spikes = float(hidden["v"][:, :, kept].sum()) / len(images)  # [T, N, C, L]
    assert after.ops[fc2]["synops"] == pytest.approx(kept_spikes * 32)
    assert after.ops[fc2]["synops"] < before.ops[fc2]["synops"]
    assert before.rates["blocks.0.mlp.neuron1"] > 0 and 0 < before.firing_rate < 1
    assert before.macs > 0 and before.macs == after.macs  # the stem's first convolution, untouched


def test_bit_aware_energy_prices_integer_accumulates_by_width():
    model = tiny_trained_model("spikformer")
    images = torch.randn(4, 1, 16, 16)
    quantized = compress_model(model, **PLAIN, bits={"blocks.0.mlp.fc2.0": 4}, calibration=images)
    with torch.inference_mode(), counting(quantized, len(images)) as activity:
        quantized(images)
    op = activity.ops["blocks.0.mlp.fc2.0"]
    assert op["bits"] == 4
    float_energy, aware = activity.energy_mj(), activity.energy_mj(bit_aware=True)
    assert float_energy - aware == pytest.approx(op["synops"] * (0.9 - 0.03 * 4 / 8) * 1e-9)


def test_a_search_with_an_energy_limit_finds_a_feasible_point_and_reports_energy(tmp_path):
    import json

    from autocompress.cli import main
    from conftest import FIXTURES, make_spec_data, write_spec

    data = make_spec_data(**{"space.granularity": "network", "strategy": {"name": "greedy", "seed": 0},
                             "budget.max_full_evaluations": 8, "model.args.depths": 2, "model.args.embed_dims": 32,
                             "model.checkpoint": str(FIXTURES / "tiny" / "spikformer.pt"),
                             "constraints.accuracy.max_drop": 5.0, "constraints.energy": {"min_saving": 0.1},
                             # 40 images cannot show any drop within 5 points at 95 % confidence: decide on the measure
                             "constraints.accuracy.confidence": None})
    run = tmp_path / "run"
    assert main(["search", str(write_spec(tmp_path, data)), "--run-dir", str(run)]) == 0
    document = json.loads((run / "pareto.json").read_text())
    baseline = document["baseline"]["energy_mj"]
    limit = document["constraints"]["max_energy_mj"]
    assert limit == pytest.approx(0.9 * baseline)
    best = next(p for p in document["points"] if p["id"] == document["best"])
    assert best["feasible"] and best["energy_mj"] <= limit and best["energy_saving"] >= 0.1
    for point in document["points"]:  # feasibility needs the energy limit too
        assert not point["feasible"] or point["energy_mj"] <= limit


def test_measured_latency_feeds_a_latency_limit(tmp_path):
    import json

    from autocompress.cli import main
    from autocompress.errors import SpecError
    from autocompress.spec import validate_spec
    from conftest import FIXTURES, make_spec_data, write_spec

    with pytest.raises(SpecError, match="latency.measure: true"):
        validate_spec(make_spec_data(**{"constraints.latency": {"max_ms": 5}}))
    data = make_spec_data(**{"space.granularity": "network", "strategy": {"name": "greedy", "seed": 0},
                             "budget.max_full_evaluations": 4, "model.args.depths": 2, "model.args.embed_dims": 32,
                             "model.checkpoint": str(FIXTURES / "tiny" / "spikformer.pt"),
                             "latency": {"measure": True, "batch_size": 4, "repeats": 3, "warmup": 1},
                             "constraints.latency": {"max_ms": 1e-6}})  # no model runs that fast: nothing feasible
    run = tmp_path / "run"
    assert main(["search", str(write_spec(tmp_path, data)), "--run-dir", str(run)]) == 0
    document = json.loads((run / "pareto.json").read_text())
    assert document["baseline"]["latency_ms"] > 0 and document["baseline"]["latency_batch_ms"] > 0
    assert all(p["latency_ms"] > 0 for p in document["points"])
    assert document["best"] is None and document["constraints"]["max_latency_ms"] == 1e-6
    assert document["near_misses"]  # judged by their shortfall, latency included


@pytest.mark.parametrize("strategy", ["nsga2", "tpe"])
def test_optuna_strategies_take_the_energy_limit_as_a_constraint_and_objective(strategy):
    """A synthetic space whose energy falls with the drift (pruning): NSGA-II gets a third
    objective, both studies a third constraint, and every feasible point meets the limit."""
    from dataclasses import replace

    from autocompress.searching import LocalExecutor, drive
    from autocompress.searching.conformance import CONSTRAINTS, SyntheticEvaluator, make_loop

    class WithEnergy(SyntheticEvaluator):
        def probe(self, candidate):
            memory, drift = super().probe(candidate)
            return memory, drift, {"energy_mj": 1.0 - drift}

    assert make_loop(strategy, max_full=6).strategy.extra == []  # no limit: the studies as before
    limited = replace(CONSTRAINTS, baseline_energy_mj=1.0, max_energy_mj=0.9)
    loop = make_loop(strategy, max_full=12, constraints=limited)
    assert loop.strategy.extra == ["energy_mj"]
    assert len(loop.strategy.study.directions) == (3 if strategy == "nsga2" else 1)
    drive(loop, LocalExecutor(WithEnergy()))
    fulls = [r for r in loop.all_results() if r.evaluated]
    assert fulls and all(r.energy_mj is not None for r in fulls)
    assert all(r.energy_mj <= 0.9 for r in fulls if r.feasible)
    assert any(r.energy_mj > 0.9 and r.accuracy_drop <= 1.5 and not r.feasible for r in fulls) or \
        all(r.energy_mj <= 0.9 for r in fulls)


def test_prioritized_puts_the_energy_saving_dimensions_first_under_an_energy_limit():
    """Largest first: by parameters alone without an energy limit; with one, a small
    dimension whose sensitivity probe saves much energy goes ahead of larger ones."""
    from dataclasses import replace

    from autocompress.searching import Result
    from autocompress.searching.conformance import CONSTRAINTS, make_loop

    orders = []
    for constraints in (CONSTRAINTS, replace(CONSTRAINTS, baseline_energy_mj=1.0, max_energy_mj=0.9)):
        strategy = make_loop("prioritized", max_full=8, constraints=constraints).strategy
        dims = strategy.space.dims
        smallest = min(range(len(dims)), key=lambda d: (dims[d].size, -d))
        for d, levels in strategy.levels.items():
            for i in levels:
                strategy.sensitivity[(d, i)] = Result("x", memory_bytes=1, drift=0.1,
                                                      energy_mj=0.2 if d == smallest else 1.0)
        orders.append((sorted(range(len(dims)), key=strategy._priority), smallest))
    (plain, smallest), (limited, _) = orders
    assert plain[-1] == smallest and limited[0] == smallest
