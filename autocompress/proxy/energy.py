"""Spikes, synaptic operations and an energy estimate, counted on a forward pass.

SViT papers (Spikformer, Spike-driven Transformer, Spikingformer) estimate the energy
of an image as ``E = E_MAC * MACs + E_AC * SOPs`` on 45 nm figures (Horowitz, ISSCC
2014: a 32-bit float multiply-accumulate 4.6 pJ, an accumulate 0.9 pJ):

- **SOPs** (synaptic operations): accumulates driven by spikes. A spike (a 1 in a
  binary input; an input of k, as on Spikformer's residual stream of summed spikes, is k
  spikes) of a convolution, linear layer or matrix product adds its weights into every
  output it reaches: its fan-out. Counted exactly here, per operation, on the
  inputs of the forward pass: a linear layer or 1x1 convolution, ``nnz(x) *
  out_features``; a k x k convolution, for every output position, the spikes in its
  window times the output channels of the group (borders and strides exact); a matrix
  product ``a @ b`` with ``a`` spiking, its spikes times the columns of ``b`` (``b``
  spiking: its spikes times the rows of ``a``; both: the smaller). Pruning a layer's consumers shrinks its
  spikes' fan-out, and pruning its channels removes its spikes: both show here.
- **MACs**: the dense multiply-accumulates of operations whose input is not binary (the
  first stem convolution on the image; in Spikformer's attention, the product of the
  integer ``V K^T`` with binary ``Q`` is an accumulate, not a MAC).
- Not counted (as in the papers): BatchNorm (folded), neuron updates, pooling, residual
  additions, the softmax-free scaling.

The papers' own shortcut, ``SOPs(l) = firing rate * T * FLOPs(l)``, gives the same count
for 1x1 layers and differs at the borders of padded convolutions only.

``bit_aware``: a layer quantized to b < 32 bits computes in integers; its accumulate
costs ``0.03 pJ * b / 8`` and its multiply-accumulate ``0.2 pJ * (b / 8)^2 + 0.03 pJ * b / 8``
(Horowitz's 45 nm table: 8-bit integer add 0.03 pJ, 32-bit 0.1 pJ, about linear in the
width; 8-bit multiply 0.2 pJ, 32-bit 3.1 pJ, about quadratic). Unquantized layers and the
matrix products keep the float figures. A model, not a measurement: real accelerators
differ by their memory traffic, which this leaves out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

E_AC_PJ = 0.9  # 45 nm, 32-bit float add (Horowitz 2014)
E_MAC_PJ = 4.6  # 45 nm, 32-bit float multiply (3.7) + add (0.9)
INT8_ADD_PJ = 0.03
INT8_MULT_PJ = 0.2

_CONVS = {"conv1d": 1, "conv2d": 2, "conv3d": 3}
_MATMULS = {"matmul", "__matmul__", "bmm"}


def _events(x: torch.Tensor) -> float | None:
    """The spikes ``x`` carries: its sum when it holds spike counts (non-negative
    integers, as 0/1 spikes, or their sum on a residual stream), else None. Binary
    tensors (the common case) take the cheaper path: within [0, 1], every non-zero value
    is a 1 when as many values equal 1 as are non-zero (two counts, exact)."""
    if not x.is_floating_point() or x.numel() == 0:
        return None
    low, high = torch.aminmax(x)
    if low < 0:
        return None
    if high <= 1:
        nonzero = int(x.count_nonzero())
        return float(nonzero) if nonzero == int((x == 1).count_nonzero()) else None
    if not bool((x == torch.round(x)).all()):
        return None
    return float(x.sum(dtype=torch.float64))


@dataclass
class Activity:
    """Counts of one forward pass, per image."""

    images: int = 0
    synops: float = 0.0
    macs: float = 0.0
    spikes: float = 0.0  # every neuron layer, every time step
    neurons: int = 0  # neurons per time step (each layer's per-image output size)
    time_steps: int = 0
    rates: dict[str, float] = field(default_factory=dict)  # neuron layer -> firing rate
    ops: dict[str, dict] = field(default_factory=dict)  # operation -> {synops, macs, bits}

    @property
    def firing_rate(self) -> float:
        return self.spikes / (self.neurons * self.time_steps) if self.neurons and self.time_steps else 0.0

    def energy_mj(self, ac_pj: float = E_AC_PJ, mac_pj: float = E_MAC_PJ, bit_aware: bool = False) -> float:
        """The energy estimate of one image, in millijoules."""
        total = 0.0
        for op in self.ops.values():
            bits = op.get("bits") or 32
            if bit_aware and bits < 32:
                add = INT8_ADD_PJ * bits / 8
                total += op["synops"] * add + op["macs"] * (INT8_MULT_PJ * (bits / 8) ** 2 + add)
            else:
                total += op["synops"] * ac_pj + op["macs"] * mac_pj
        return total * 1e-9  # pJ -> mJ

    def summary(self, ac_pj: float = E_AC_PJ, mac_pj: float = E_MAC_PJ, bit_aware: bool = False) -> dict:
        """What a run stores of a candidate (per image)."""
        return {"synops": self.synops, "macs": self.macs, "firing_rate": self.firing_rate,
                "energy_mj": self.energy_mj(ac_pj, mac_pj, bit_aware), "rates": dict(self.rates)}

    def to_dict(self) -> dict:
        return asdict(self)


class _Counter(TorchFunctionMode):
    def __init__(self, names: dict[int, tuple[str, int]]):
        super().__init__()
        self.names = names  # id(weight) -> (layer path, bits)
        self.ops: dict[str, dict] = {}
        self.matmuls = 0

    def _add(self, name: str, bits: int, synops: float = 0.0, macs: float = 0.0, dense: float = 0.0,
             rate_weighted: float = 0.0) -> None:
        """``dense``: the operation's multiply-accumulates were its input dense;
        ``rate_weighted``: those times its input's spike rate (the papers' SOP formula)."""
        entry = self.ops.setdefault(name, {"synops": 0.0, "macs": 0.0, "bits": bits, "dense": 0.0, "paper": 0.0})
        entry["synops"] += synops
        entry["macs"] += macs
        entry["dense"] += dense
        entry["paper"] += rate_weighted

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in _CONVS or name == "linear":
            with torch._C.DisableTorchFunction():
                self._layer(name, args, kwargs, out)
        elif name in _MATMULS and len(args) >= 2 and isinstance(args[1], torch.Tensor):
            with torch._C.DisableTorchFunction():
                self._matmul(args[0], args[1])
        return out

    def _layer(self, name: str, args, kwargs, out: torch.Tensor) -> None:
        x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
        path, bits = self.names.get(id(weight), (f"{name}@{tuple(weight.shape)}", 32))
        events = _events(x)
        dense = float(out.numel()) * weight[0].numel()
        if events is None:  # real-valued input: every output a dense multiply-accumulate per input it reads
            self._add(path, bits, macs=dense, dense=dense)
            return
        rate = events / max(1, x.numel())
        if name == "linear":
            self._add(path, bits, synops=events * weight.shape[0], dense=dense, rate_weighted=rate * dense)
            return
        dims = _CONVS[name]
        groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
        stride = kwargs.get("stride", args[3] if len(args) > 3 else 1)
        padding = kwargs.get("padding", args[4] if len(args) > 4 else 0)
        dilation = kwargs.get("dilation", args[5] if len(args) > 5 else 1)
        kernel = tuple(weight.shape[2:])
        if all(k == 1 for k in kernel) and groups == 1 and padding in (0, (0,) * dims, "valid") and \
                stride in (1, (1,) * dims):
            self._add(path, bits, synops=events * weight.shape[0], dense=dense, rate_weighted=rate * dense)
            return
        # spikes in each output position's window, per group, times that group's output channels
        ones = torch.ones(groups, x.shape[1] // groups, *kernel, dtype=x.dtype, device=x.device)
        windows = getattr(F, name)(x, ones, None, stride, padding, dilation, groups)
        self._add(path, bits, synops=float(windows.sum(dtype=torch.float64)) * (weight.shape[0] // groups),
                  dense=dense, rate_weighted=rate * dense)

    def _matmul(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """``a @ b``: the spikes of a spiking operand, each added across the other's row or
        column (the cheaper side when both are); else dense."""
        name = f"matmul{self.matmuls}"
        self.matmuls += 1
        rows = a.shape[-2] if a.ndim > 1 else 1
        cols = b.shape[-1] if b.ndim > 1 else 1
        options = []
        a_events, b_events = _events(a), _events(b)
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]).numel() if a.ndim > 2 or b.ndim > 2 else 1
        dense = float(batch * rows * cols * a.shape[-1])
        if a_events is not None:
            options.append((a_events * cols, a_events / max(1, a.numel())))
        if b_events is not None:
            options.append((b_events * rows, b_events / max(1, b.numel())))
        if options:
            synops, rate = min(options)
            self._add(name, 32, synops=synops, dense=dense, rate_weighted=rate * dense)
        else:
            self._add(name, 32, macs=dense, dense=dense)


class counting:
    """Count the operations and spikes of ``model``'s forward passes inside the block
    (``with counting(model, images=N) as activity: model(x)``); ``activity`` is filled
    per image when the block ends. Layers are named by their module path and carry their
    bit-width from ``model.compression``."""

    def __init__(self, model, images: int):
        self.model, self.images = model, images
        self.activity = Activity(images=images)

    def __enter__(self) -> Activity:
        record = getattr(self.model, "compression", None)
        bits = dict(record.bits) if record is not None else {}
        names = {}
        for path, module in self.model.net.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor):
                names[id(weight)] = (path, bits.get(path, 32))
        self.counter = _Counter(names)
        self.spikes: dict[str, list[float]] = {}
        self.handles = []
        for name, node in self.model.spiking_neurons():
            def hook(_module, _inputs, output, name=name):
                if isinstance(output, torch.Tensor):
                    entry = self.spikes.setdefault(name, [0.0, 0, 0])
                    entry[0] += _events(output.detach()) or 0.0  # spikes (a graded output: its count)
                    entry[1] += output.numel()
                    entry[2] = output.shape[0] if output.ndim > 1 else 1  # [T, N, ...] in multi-step mode

            self.handles.append(node.register_forward_hook(hook))
        self.counter.__enter__()
        return self.activity

    def __exit__(self, *exc) -> bool:
        self.counter.__exit__(*exc)
        for handle in self.handles:
            handle.remove()
        n = max(1, self.images)
        activity = self.activity
        activity.ops = {k: {"synops": v["synops"] / n, "macs": v["macs"] / n, "bits": v["bits"],
                            "dense": v["dense"] / n, "paper": v["paper"] / n}
                        for k, v in self.counter.ops.items()}
        activity.synops = sum(v["synops"] for v in activity.ops.values())
        activity.macs = sum(v["macs"] for v in activity.ops.values())
        steps = max((entry[2] for entry in self.spikes.values()), default=0)
        activity.time_steps = steps
        activity.spikes = sum(entry[0] for entry in self.spikes.values()) / n
        activity.neurons = int(sum(entry[1] for entry in self.spikes.values()) / n / max(1, steps))
        activity.rates = {name: entry[0] / entry[1] if entry[1] else 0.0 for name, entry in self.spikes.items()}
        return False


@torch.inference_mode()
def count_activity(model, images: torch.Tensor) -> Activity:
    """The counts of one forward pass of ``model`` on ``images`` (per image)."""
    model.eval()
    with counting(model, len(images)) as activity:
        model(images)
    return activity
