"""One prepared GPU check: the CUDA paths once each, one table.

    python experiments/bench/gpu_check.py [--write]     # on a machine with a GPU: under 8 minutes
    python experiments/bench/gpu_check.py --dry-run     # anywhere: the same code on the CPU, tiny sizes

When GPU time is lent (minutes, rarely), this is the one script to run. Each check runs
on its own: a failure is a row that says so, the others still run, and the exit status
is 1 when any failed. With ``--write`` it writes its table, with the device's name, into
experiments/bench/RESULTS.md ("GPU check"). ``--dry-run`` runs every check on the CPU
with a tiny model and tiny sizes (so the code cannot rot; its figures mean nothing).

The checks:

1. validation throughput of Spikformer-8-512 (T=4, 224x224, random weights: the cost
   depends on the structure) in FP32 and under bf16 and fp16 autocast, with and without
   channels_last, and each one's top-1 agreement with FP32 on photograph-like inputs
   (crops of scikit-learn's two bundled photographs, normalised as ImageNet is);
2. the decoded validation cache's pinned, non-blocking reads (``decoded.batches``)
   against a bare loop over the same images already on the device;
3. a probe's peak GPU memory (build the candidate, recalibrate, the drift with the
   counting) at 32 and 64 calibration images, through the real ``Setup`` and ``Worker``
   on a synthetic ImageNet folder;
4. the energy counter on the device against the CPU (the same counts, or float
   rounding);
5. a search on two Ray actors that share one GPU (``execution.gpus_per_worker: 0.5``),
   two full evaluations, each sharded over both actors;
6. one epoch of fine-tuning a point of that search on a Ray Train worker (TorchTrainer,
   NCCL on a GPU; gloo in the dry run).

Checks 5 and 6 start a local Ray, or join the cluster at ``--ray-address``; ``--no-ray``
leaves them out (the test command runs them on its two-node test cluster instead:
tests/test_cluster.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from _results import publish

FULL = {"dims": 512, "depths": 8, "heads": 8, "size": 224, "T": 4, "batch": 64, "batches": 10,
        "images": 1024, "calibration": (32, 64)}
DRY = {"dims": 32, "depths": 1, "heads": 2, "size": 32, "T": 2, "batch": 4, "batches": 2,
       "images": 48, "calibration": (4, 8)}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_args(sizes: dict) -> dict:
    return {"T": sizes["T"], "in_channels": 3, "num_classes": 1000, "embed_dims": sizes["dims"],
            "num_heads": sizes["heads"], "mlp_ratio": 4.0, "depths": sizes["depths"], "image_size": sizes["size"]}


def spikformer(sizes: dict, active: bool = True):
    """The model with random weights; ``active``: its BatchNorm statistics re-estimated on a
    batch of photograph crops, so that its neurons fire as a trained model's do (with the
    initial statistics they stay silent, and every precision then agrees trivially)."""
    from pydantic import TypeAdapter

    from autocompress.compress.folding import recalibrate_batchnorms
    from autocompress.models import create_model
    from autocompress.spec import ModelSpec

    torch.manual_seed(0)
    model = create_model(TypeAdapter(ModelSpec).validate_python({"family": "spikformer_imagenet",
                                                                  "args": model_args(sizes)}))
    if active:
        recalibrate_batchnorms(model, photograph_batches(sizes, 1, seed=99)[0], batch=sizes["batch"])
    return model.eval()


def photograph_batches(sizes: dict, count: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` batches of normalised crops of scikit-learn's two bundled photographs."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [torch.from_numpy(np.array(p)).permute(2, 0, 1).float() / 255 for p in load_sample_images().images]
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    out = []
    for _ in range(count):
        batch = []
        for _ in range(sizes["batch"]):
            photo = photos[rng.integers(len(photos))]
            side = int(rng.integers(sizes["size"], min(photo.shape[1:]) + 1))
            top = int(rng.integers(0, photo.shape[1] - side + 1))
            left = int(rng.integers(0, photo.shape[2] - side + 1))
            crop = photo[:, top:top + side, left:left + side].unsqueeze(0)
            crop = torch.nn.functional.interpolate(crop, size=(sizes["size"], sizes["size"]), mode="bilinear",
                                                   antialias=True, align_corners=False)[0]
            batch.append((crop - mean) / std)
        out.append(torch.stack(batch))
    return out


# ----------------------------------------------------------------------------- the checks


def check_throughput(device: torch.device, sizes: dict) -> list[dict]:
    from autocompress.evaluation import cudnn_benchmark, precision_context

    model = spikformer(sizes).to(device)
    inputs = [b.to(device) for b in photograph_batches(sizes, sizes["batches"])]
    rows, reference = [], None
    settings = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True), ("fp16", False), ("fp16", True)]
    for autocast, channels_last in settings:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        name = f"validation, {autocast}" + (", channels_last" if channels_last else "")
        try:
            net = model.to(memory_format=fmt)
            with torch.inference_mode(), precision_context(device, autocast), cudnn_benchmark(device.type == "cuda"):
                net(inputs[0].to(memory_format=fmt))  # warm-up: cudnn picks its kernels
                sync(device)
                start = time.perf_counter()
                top1 = [net(batch.to(memory_format=fmt)).float().argmax(-1) for batch in inputs]
                sync(device)
                seconds = time.perf_counter() - start
            top1 = torch.cat(top1).cpu()
            if reference is None:
                reference = top1
            images = sum(len(b) for b in inputs)
            rows.append({"check": name, "result": f"{images / seconds:,.1f} images/s",
                         "detail": f"top-1 agrees with FP32 on {(top1 == reference).float().mean().item():.1%} of "
                                   f"{images} photograph crops", "ok": True})
        except Exception as error:  # noqa: BLE001 (a row that says what failed)
            rows.append(failed(name, error))
    return rows


def make_folder(root: Path, count: int, seed: int = 0) -> None:
    """An ImageNet-layout folder (10 synsets) of ``count`` photograph-like JPEGs, 500x375."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [np.asarray(p) for p in load_sample_images().images]
    wnids = (Path(__file__).resolve().parents[2] / "autocompress" / "data" / "imagenet_wnids.txt").read_text().split()
    for i in range(count):
        photo = photos[i % len(photos)]
        top, left = int(rng.integers(0, photo.shape[0] - 375 + 1)), int(rng.integers(0, photo.shape[1] - 500 + 1))
        target = root / wnids[i % 10]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[top:top + 375, left:left + 500]).save(target / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)


def check_data_path(device: torch.device, sizes: dict, folder: Path) -> list[dict]:
    from autocompress.data.decoded import batches, normalize, open_or_build
    from autocompress.data.transforms import PRESETS

    name = "decoded cache: pinned, non-blocking reads"
    try:
        transform = PRESETS["spikformer_imagenet"]
        classes = sorted(p.name for p in (folder / "val").iterdir())
        samples = [(str(path), classes.index(path.parent.name)) for path in sorted((folder / "val").glob("*/*.JPEG"))]
        decoded = open_or_build(samples, sizes["size"], transform, folder / "cache", say=lambda _m: None)
        if decoded is None:
            raise RuntimeError("no room for the decoded cache")
        order = np.arange(len(samples))
        batch = 128
        for _ in batches(decoded, order[:batch], batch, device):  # warm-up: page cache, pinned allocator
            pass
        sync(device)
        start = time.perf_counter()
        total = torch.zeros((), device=device)
        for images, _labels, _skipped, _readable in batches(decoded, order, batch, device):
            total += images.float().mean()
        sync(device)
        cached = time.perf_counter() - start
        resident = [decoded.rows(order[i:i + batch])[0].to(device) for i in range(0, len(order), batch)]
        sync(device)
        start = time.perf_counter()
        bare = torch.zeros((), device=device)
        for block in resident:
            bare += normalize(block, decoded.transform).float().mean()
        sync(device)
        loop = time.perf_counter() - start
        same = torch.allclose(total, bare)
        return [{"check": name, "result": f"{len(order) / cached:,.0f} images/s",
                 "detail": f"a bare loop over the same images already on the device: {len(order) / loop:,.0f} "
                           f"images/s ({loop / cached:.2f}x of it); the same batches: {'yes' if same else 'NO'}",
                 "ok": bool(same)}]
    except Exception as error:  # noqa: BLE001
        return [failed(name, error)]


def probe_spec(folder: Path, sizes: dict, calibration: int, device: torch.device, **sections):
    from autocompress.spec import validate_spec

    from _results import DIGITS_SPEC

    weights = folder / "weights.pt"
    if not weights.exists():
        torch.save(spikformer(sizes).net.state_dict(), weights)  # the probe recalibrates on its own batch
    data = {"name": "gpu-check", "model": {"family": "spikformer_imagenet", "args": model_args(sizes),
                                           "checkpoint": str(weights)},
            "data": {"dataset": "imagefolder", "root": str(folder / "val"), "image_size": sizes["size"],
                     "transform": {"preset": "spikformer_imagenet"}, "calibration": {"size": calibration, "seed": 0},
                     "batch_size": 128, "workers": 0},
            "constraints": {"accuracy": {"max_drop": 1.5}, "memory": {"min_saving": 0.85}},
            "space": {"search": "joint", "granularity": "block", "prune_rates": [0.0, 0.25, 0.5],
                      "bits": [4, 8, 32]},
            "execution": {"device": device.type}, "output": {"report": False}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return validate_spec(data, base_dir=DIGITS_SPEC.parent)


def check_probe_memory(device: torch.device, sizes: dict, folder: Path) -> list[dict]:
    import random

    from autocompress.engine.pipeline import Setup
    from autocompress.engine.worker import Worker

    rows = []
    for calibration in sizes["calibration"]:
        name = f"a probe's peak memory, {calibration} calibration images"
        try:
            setup = Setup.open(probe_spec(folder, sizes, calibration, device), device=device.type, say=lambda _m: None)
            worker = Worker(setup.session, setup.groups)
            rng = random.Random(0)
            candidate = setup.space.candidate(tuple(rng.randrange(len(d.choices)) for d in setup.space.dims))
            worker.reference  # noqa: B018 (the reference side first: kept across probes, not a probe's cost)
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            _bytes, drift, activity = worker.probe(candidate)
            sync(device)
            seconds = time.perf_counter() - start
            peak = (f"{(torch.cuda.max_memory_allocated(device) - before) / 2**20:,.0f} MiB above the "
                    f"{before / 2**20:,.0f} MiB held" if device.type == "cuda" else "(CPU: not measured)")
            rows.append({"check": name, "result": peak,
                         "detail": f"{seconds:.2f} s; drift {drift:.4f}, {activity['synops']:,.0f} synaptic "
                                   "operations per image", "ok": drift is not None})
            del worker, setup
            if device.type == "cuda":
                torch.cuda.empty_cache()
        except Exception as error:  # noqa: BLE001
            rows.append(failed(name, error))
    return rows


def check_energy(device: torch.device, sizes: dict) -> list[dict]:
    from autocompress.proxy.energy import count_activity

    name = "energy counter on the device against the CPU"
    try:
        model = spikformer(sizes)
        images = photograph_batches(sizes, 1, seed=1)[0]
        on_cpu = count_activity(model, images)
        on_device = count_activity(model.to(device), images.to(device))
        differences = {key: abs(getattr(on_device, key) - getattr(on_cpu, key)) / max(1.0, abs(getattr(on_cpu, key)))
                       for key in ("synops", "macs", "spikes")}
        worst = max(differences.values())
        return [{"check": name, "result": f"largest relative difference {worst:.2e}",
                 "detail": f"synops {on_device.synops:,.0f} ({device.type}) against {on_cpu.synops:,.0f} (cpu); "
                           f"firing rate {on_device.firing_rate:.4f} against {on_cpu.firing_rate:.4f}",
                 "ok": worst < 1e-3 and on_cpu.synops > 0}]  # a silent model would agree trivially
    except Exception as error:  # noqa: BLE001
        return [failed(name, error)]


def check_ray(device: torch.device, sizes: dict, folder: Path, address: str | None) -> list[dict]:
    """A search on 2 actors with half a GPU each, then one Ray Train epoch on one of its points,
    on one Ray: joined (``address``) or started here once for both (a local Ray's start and
    shutdown take seconds; each call below finds it running and leaves it so)."""
    from autocompress.engine.executors import connect_ray

    try:
        ray, started = connect_ray(address, local_logs=False, workers=2)
    except Exception as error:  # noqa: BLE001
        return [failed("Ray", error)]
    try:
        return _ray_rows(device, sizes, folder, address)
    finally:
        if started:
            ray.shutdown()


def _ray_rows(device: torch.device, sizes: dict, folder: Path, address: str | None) -> list[dict]:
    from autocompress.engine import RunOptions, start_search
    from autocompress.engine.finetune import finetune
    from autocompress.engine.store import RunStore

    rows = []
    name = "2 Ray actors sharing one GPU (0.5 each), a search"
    run = folder / "ray-run"
    try:
        spec = probe_spec(folder, sizes, sizes["calibration"][0], device, **{
            "execution": {"device": device.type, "workers": 2, "gpus_per_worker": 0.5},
            "budget": {"max_full_evaluations": 2}, "space": {"granularity": "network", "prune_rates": [0.0, 0.25],
                                                             "bits": [8, 32]},
            "data": {"batch_size": sizes["batch"]}, "evaluation": {"shard_images": 2 * sizes["batch"]}})
        start = time.perf_counter()
        document = start_search(spec, run_dir=run, options=RunOptions(workers=2, ray_address=address),
                                say=lambda _m: None)
        seconds = time.perf_counter() - start
        with RunStore.open_reader(run) as store:
            used = {w for r in store.records(("full",)) for w in r.worker.split(",")}
            nodes = {w["node"] for w in store.workers()}
        statistics = document["statistics"]
        rows.append({"check": name, "result": f"{statistics['full_evaluations']} full evaluations in {seconds:.0f} s",
                     "detail": f"shards on {', '.join(sorted(used))}; {len(nodes)} node(s); executor "
                               f"{statistics['executor']}, {statistics['workers']} workers"
                               + (f"; {torch.cuda.device_count()} GPU(s) on this machine" if device.type == "cuda"
                                  else " (CPU actors: the GPU share is not used)"),
                     "ok": statistics["executor"] == "ray" and used == {"worker-0", "worker-1"}
                           and statistics["full_evaluations"] == 2})
    except Exception as error:  # noqa: BLE001
        rows.append(failed(name, error))
        return rows + [{"check": "one Ray Train epoch", "result": "not run", "detail": "the search above failed",
                        "ok": False}]
    name = "one Ray Train epoch, " + ("NCCL" if device.type == "cuda" else "gloo (CPU)")
    try:
        point = document["points"][0]["id"]
        start = time.perf_counter()
        entries = finetune(run, [point], workers=1, address=address, say=lambda _m: None, overrides=[
            "finetune.epochs=1", f"finetune.batch_size={sizes['batch']}",
            f"finetune.data.root={folder / 'val'}", f"finetune.data.images_per_epoch={2 * sizes['batch']}"])
        seconds = time.perf_counter() - start
        entry = entries[0]
        rows.append({"check": name, "result": f"{seconds:.0f} s ({entry['state']})",
                     "detail": f"point {point}: {entry.get('accuracy_before', float('nan')):.2f} % before, "
                               f"{entry.get('accuracy', float('nan')):.2f} % after one epoch of "
                               f"{2 * sizes['batch']} images on {entry.get('workers')} Ray Train worker",
                     "ok": entry["state"] == "done" and entry.get("workers") == 1})
    except Exception as error:  # noqa: BLE001
        rows.append(failed(name, error))
    return rows


def failed(name: str, error: Exception) -> dict:
    traceback.print_exc()
    return {"check": name, "result": "FAILED", "detail": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}",
            "ok": False}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same checks on the CPU with tiny sizes")
    parser.add_argument("--write", action="store_true", help="write the table into experiments/bench/RESULTS.md")
    parser.add_argument("--ray-address", help="run the Ray checks on this cluster (default: a local Ray)")
    parser.add_argument("--no-ray", action="store_true", help="leave the Ray checks (5 and 6) out")
    parser.add_argument("--only-ray", action="store_true", help="only the Ray checks")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (--dry-run runs the same code on the CPU)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes = DRY if args.dry_run else FULL
    start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="autocompress-gpu-check-") as folder:
        folder = Path(folder)
        make_folder(folder / "val", sizes["images"])
        checks = [] if args.only_ray else [
            lambda: check_throughput(device, sizes), lambda: check_data_path(device, sizes, folder),
            lambda: check_probe_memory(device, sizes, folder), lambda: check_energy(device, sizes)]
        if not args.no_ray:
            checks.append(lambda: check_ray(device, sizes, folder, args.ray_address))
        for check in checks:
            rows += check()
            print(f"{time.perf_counter() - start:.0f} s: {rows[-1]['check']}: {rows[-1]['result']}", file=sys.stderr)
    what = ("dry run on the CPU (tiny sizes: the figures mean nothing)" if args.dry_run else
            f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, torch {torch.__version__}")
    lines = [f"Device: {what}. Spikformer-{sizes['depths']}-{sizes['dims']}, T={sizes['T']}, {sizes['size']}x"
             f"{sizes['size']}, random weights, batches of {sizes['batch']}.", "",
             "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {r['check']} | {'' if r['ok'] else '**'}{r['result']}{'' if r['ok'] else '**'} | {r['detail']} |"
              for r in rows]
    lines += ["", f"({time.perf_counter() - start:.0f} s in all)"]
    publish("gpu_check", "GPU check", "python experiments/bench/gpu_check.py --write", "\n".join(lines),
            write=args.write and not args.dry_run and not args.no_ray and not args.only_ray)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
