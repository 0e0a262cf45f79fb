"""The commands on a spec, a model or the service: validate, limits, schema, train-reference,
evaluate, inspect-checkpoint, groups, serve."""

from __future__ import annotations

import json
from pathlib import Path

import click

from autocompress.vocabulary import TRANSFORM_PRESETS
from autocompress.cli.common import JSON, LIMIT, QUIET, SET, cli, load_checked_spec, say


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
@SET
@LIMIT
@JSON
def validate(spec_file: Path, overrides: tuple[str, ...], limit_items: tuple[str, ...], as_json: bool) -> None:
    """Check a constraint spec; print `ok`, or every error (exit 2).

    With --json: {"ok": true, "spec": NAME}, or {"ok": false, "errors": [{"field", "message"}]}
    and exit 2.
    """
    from autocompress.errors import SpecError

    try:
        spec = load_checked_spec(spec_file, overrides, limit_items)
    except SpecError as error:
        if not as_json:
            raise
        click.echo(json.dumps({"ok": False, "spec_file": str(spec_file),
                               "errors": [{"field": path, "message": message} for path, message in error.issues]},
                              indent=2))
        raise click.exceptions.Exit(error.exit_code) from None
    click.echo(json.dumps({"ok": True, "spec_file": str(spec_file), "spec": spec.name}, indent=2) if as_json else "ok")


@cli.command()
@LIMIT
@JSON
def limits(limit_items: tuple[str, ...], as_json: bool) -> None:
    """List the caps on what a spec may ask for, with the values in force."""
    from autocompress.limits import LIMITS, Limits, number

    values = Limits.parse(limit_items)
    if as_json:
        click.echo(json.dumps({name: {"value": values[name], "description": info.description}
                               for name, info in LIMITS.items()}, indent=2))
        return
    for name, info in LIMITS.items():
        click.echo(f"{name:<28} {number(values[name]):>15}  {info.description}")


@cli.command()
@click.option("--indent", default=2, show_default=True, help="JSON indentation.")
def schema(indent: int) -> None:
    """Print the JSON Schema of a constraint spec."""
    from autocompress.spec import spec_json_schema

    click.echo(json.dumps(spec_json_schema(), indent=indent))


@cli.command("train-reference")
@click.argument("name_or_spec", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the reference models and whether they are trained.")
@click.option("--force", is_flag=True, help="Train again even when a cached model exists.")
@JSON
def train_reference_cmd(name_or_spec: str | None, list_only: bool, force: bool, as_json: bool) -> None:
    """Train a reference model (by NAME, or the one a SPEC names as reference:NAME).

    A reference whose weights ship with autocompress is used as shipped; --force trains it
    again from its recipe into the cache (to check the recipe), without replacing them."""
    from autocompress.recipes import REFERENCES
    from autocompress.reference import (available_reference, ensure_reference, reference_metadata, shipped_path,
                                        train_reference)
    from autocompress.spec import load_spec
    from autocompress.vocabulary import REFERENCE_PREFIX

    if list_only or name_or_spec is None:
        listed = []
        for name, recipe in sorted(REFERENCES.items()):
            path = available_reference(name)
            meta = reference_metadata(name)
            kind = "shipped" if path == shipped_path(name) else "trained"
            listed.append({"name": name, "description": recipe.description, "state": kind if meta else "not trained",
                           "test_accuracy": meta["test_accuracy"] if meta else None,
                           "path": str(path) if path else None})
            if as_json:
                continue
            state = f"{kind}, {meta['test_accuracy']:.2f} % test accuracy" if meta else "not trained"
            click.echo(f"{name}: {recipe.description} [{state}] {path or 'not trained'}")
        if as_json:
            click.echo(json.dumps(listed, indent=2))
        return
    name, data_root = name_or_spec, None
    if name not in REFERENCES:
        if not Path(name).exists():
            raise click.BadParameter(f"'{name}' is neither a reference model ({', '.join(REFERENCES)}) nor a spec file")
        spec = load_spec(name)
        checkpoint, data_root = spec.model.checkpoint or "", spec.data.root
        if not checkpoint.startswith(REFERENCE_PREFIX):
            raise click.BadParameter(f"the spec {name} does not name a reference model (model.checkpoint: reference:NAME)")
        name = checkpoint[len(REFERENCE_PREFIX):]
    shown = not (as_json or QUIET["on"])
    if force:
        train_reference(name, progress=shown, say=say, data_root=data_root)
        path = available_reference(name)
    else:
        path = ensure_reference(name, progress=shown, say=say, data_root=data_root)
    meta = reference_metadata(name)
    if as_json:
        click.echo(json.dumps({"name": name, "test_accuracy": meta["test_accuracy"], "path": str(path)}, indent=2))
    elif not force:
        click.echo(f"reference model '{name}': {meta['test_accuracy']:.2f} % test accuracy, checkpoint {path}")


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
@JSON
@click.option("--model", "model_file", type=click.Path(path_type=Path),
              help="Evaluate this exported model (from `autocompress export`) instead of the spec's model.")
@click.option("--split", type=click.Choice(["all", "selection", "holdout"]), default="all", show_default=True,
              help="Which validation images: all of them, the selection split a search decides on, or the "
                   "held-out split it reports (data.validation.holdout).")
@SET
@LIMIT
def evaluate(spec_file: Path, as_json: bool, model_file: Path | None, split: str, overrides: tuple[str, ...],
             limit_items: tuple[str, ...]) -> None:
    """Evaluate the spec's (uncompressed) model, or an exported one: top-1 accuracy
    on the spec's validation set (or one split of it), and footprint.

    A reference model named by the spec (reference:NAME) is trained first if it is
    not cached yet.
    """
    from autocompress.api import evaluate as run_evaluate
    from autocompress.errors import UserInputError

    spec = load_checked_spec(spec_file, overrides, limit_items)
    held = spec.data.validation.holdout
    if split != "all" and not held:
        raise UserInputError(f"--split {split}: {spec_file} holds no validation images out "
                             "(data.validation.holdout is 0), so every image is in one split: use --split all")
    result = run_evaluate(spec, model_file, split=split, progress=not (as_json or QUIET["on"]),  # type: ignore[arg-type]
                          say=say)
    footprint = result.footprint_bytes
    described = {
        "all": "all validation images" + (
            f" (a search decides on the selection split, {1 - held:.0%}, and reports the held-out one, {held:.0%}: "
            "each split's baseline differs from this figure because it is measured on other images; "
            "--split selection|holdout gives them)" if held else ""),
        "selection": f"the selection split ({1 - held:.0%}: what a search of this spec decides on and reports as "
                     "its baseline)",
        "holdout": f"the held-out split ({held:.0%}, seed {spec.data.validation.holdout_seed}: the images a search "
                   "of this spec never chooses on; pareto.json's holdout.baseline_accuracy)",
    }[split]
    if as_json:
        click.echo(json.dumps({
            "spec": spec.name, "model": spec.model.family, "checkpoint": result.checkpoint,
            "exported_model": str(model_file) if model_file else None,
            "device": result.device, "data": result.data, "split": split,
            "evaluation": {"accuracy": result.accuracy, "correct": result.correct, "total": result.total,
                           "seconds": result.seconds, "skipped": result.skipped}, "footprint_bytes": footprint,
        }, indent=2))
        return
    click.echo(f"spec:          {spec.name}")
    click.echo(f"model:         {spec.model.family} ({model_file or spec.model.checkpoint or 'no checkpoint'})")
    click.echo(f"checkpoint:    {result.checkpoint}")
    click.echo(f"data:          {result.data}")
    click.echo(f"split:         {described}")
    click.echo(f"device:        {result.device}")
    click.echo(f"test accuracy: {result.accuracy:.2f} % top-1 ({result.correct}/{result.total} images, {result.seconds:.1f} s)")
    if result.skipped:
        click.echo(f"skipped:       {len(result.skipped)} unreadable images (first: {result.skipped[0]})")
    click.echo(f"footprint:     {footprint} bytes ({footprint / 2**20:.3f} MiB, parameters and buffers at their stored dtype)")


@cli.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True,
              help="Your model's checkpoint (an official Spikformer / Spike-driven Transformer file, or a state dict).")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True,
              help="Your validation data: an ImageNet-layout folder (DIR/<class>/<image>), CIFAR-10's or "
                   "Fashion-MNIST's folder.")
@click.option("--preset", type=click.Choice(TRANSFORM_PRESETS), help="The evaluation preprocessing (default: the "
              "one the checkpoint's family was published with).")
@click.option("--ema", is_flag=True, help="Use the checkpoint's EMA weights (state_dict_ema).")
@click.option("--out", "out_file", type=click.Path(path_type=Path), default=Path("autocompress.yaml"),
              show_default=True, help="The spec file to write.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@JSON
def init(checkpoint: Path, data_dir: Path, preset: str | None, ema: bool, out_file: Path, force: bool,
         as_json: bool) -> None:
    """Write a complete, commented spec for your checkpoint and data, validated.

    The model section is read from the checkpoint (as inspect-checkpoint does), the data
    section from the folder; constraints, strategy, budget, calibration batch and held-out
    split are chosen for the data's size. Search with `autocompress search OUT`.
    """
    from autocompress.scaffold import write_spec

    path = write_spec(checkpoint, data_dir, out_file, preset=preset, ema=ema, force=force)
    if as_json:
        click.echo(json.dumps({"spec_file": str(path)}, indent=2))
        return
    click.echo(f"wrote {path} (validated); next: `autocompress evaluate {out_file}` for the baseline, "
               f"`autocompress search {out_file}` to search")


@cli.command("inspect-checkpoint")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--ema", is_flag=True, help="Describe the EMA weights (state_dict_ema) instead of the model weights.")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def inspect_checkpoint(checkpoint: Path, ema: bool, as_json: bool) -> None:
    """Say which family, variant and spec `model` section fit a checkpoint file.

    The file is read with weights only; an official Spikformer or Spike-driven
    Transformer layout is converted and loaded into the family's network to check that
    it fits. Model arguments that the weights do not determine (time steps, heads,
    image size) come from the training arguments saved beside them, or are the
    published defaults, and are marked so.
    """
    import yaml

    from autocompress.models import inspect_checkpoint

    found = inspect_checkpoint(checkpoint, ema=ema)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(f"checkpoint:  {found['path']}")
    click.echo(f"file:        {found['file']}")
    click.echo(f"layout:      {found['layout_description']}")
    click.echo(f"model:       {found['variant']}, {found['parameters']:,} parameters and buffers")
    if found["model"] is None:
        determined = ", ".join(f"{key} {value}" for key, value in found["determined"].items())
        click.echo(f"the tensors determine: {determined}")
        click.echo(f"not determined (write them in the spec's model section): {', '.join(found['undetermined'])}")
        for note in found["notes"]:
            click.echo(f"note:        {note}")
        click.echo(f"no spec section is proposed: give model.family (one of {', '.join(found['candidate_families'])}) "
                   "and the arguments the model was built with")
        return
    if found["conversion"]:
        click.echo(f"conversion:  {found['conversion']}")
    if found["from_training_args"]:
        click.echo(f"from the saved training arguments: {', '.join(found['from_training_args'])}")
    if found["assumed"]:
        click.echo(f"not recorded in the file (published defaults, check them): {', '.join(found['assumed'])}")
    for note in found["notes"]:
        click.echo(f"note:        {note}")
    click.echo("spec sections that fit it:")
    sections = {"model": found["model"], "data": {"transform": {"preset": found["transform_preset"]}}}
    click.echo(yaml.safe_dump(sections, sort_keys=False, default_flow_style=None, width=100).rstrip())


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
@SET
@LIMIT
def groups(spec_file: Path, as_json: bool, overrides: tuple[str, ...], limit_items: tuple[str, ...]) -> None:
    """List the model's prunable channel groups and quantizable layers.

    For custom models the groups come from tracing and each one is verified
    (pruning it must equal zeroing it); the ones left out are listed with the reason.
    """
    from autocompress.compress import quantizable_layers
    from autocompress.engine import Session, channel_groups

    session = Session.open(load_checked_spec(spec_file, overrides, limit_items), say=say)
    report = channel_groups(session)
    layers = quantizable_layers(session.model.net)
    if as_json:
        click.echo(json.dumps({
            "groups": [{"name": g.name, "kind": g.kind, "channels": g.channels, "heads": g.heads, "params": g.params}
                       for g in report.groups],
            "left_out": [{"name": name, "reason": reason} for name, reason in report.rejected],
            "layers": layers,
        }, indent=2))
        return
    click.echo(f"{len(report.groups)} channel groups (pruning units):")
    for g in report.groups:
        heads = f", {g.heads} heads" if g.heads > 1 else ""
        click.echo(f"  {g.name:<40} {g.kind:<15} {g.channels:>6} channels{heads}, {g.params:,} parameters")
    if report.rejected:
        click.echo(f"{len(report.rejected)} groups left out (not prunable as traced, or failed verification):")
        for name, reason in report.rejected:
            click.echo(f"  {name}: {reason}")
    click.echo(f"{len(layers)} quantizable layers, {sum(layers.values()):,} weights")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Where each submitted search gets its run directory.")
@click.option("--data-roots", "data_roots", multiple=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Folders that submitted specs may read (checkpoints, data, space files); repeat for several. "
                   "Relative paths in specs are read from the first.")
@click.option("--ray-dashboard", "ray_dashboard", metavar="URL",
              help="Run searches as Ray Jobs on the cluster whose dashboard (job server) is at URL, e.g. "
                   "http://head:8265, instead of local processes. (--ray-address, on search, resume and "
                   "finetune, is a cluster's GCS address: another thing.)")
@click.option("--max-concurrent", default=1, show_default=True, type=click.IntRange(min=1),
              help="Searches running at once; the rest wait in the queue.")
@click.option("--max-workers", type=click.IntRange(min=0), help="Most execution.workers a spec may ask for "
              "(default: this machine's CPU count; the same as --limit execution.workers=N).")
@click.option("--token", envvar="AUTOCOMPRESS_TOKEN", help="Bearer token clients must send (or set "
              "AUTOCOMPRESS_TOKEN). Required off loopback, at least 32 random characters; on loopback one is "
              "generated when not given.")
@click.option("--max-body-bytes", default=256 * 1024, show_default=True, type=click.IntRange(min=1024, max=16 << 20),
              help="Largest request body accepted (a spec); larger ones get 413.")
@click.option("--allow-factory", "allow_factories", multiple=True, metavar="MODULE:FUNCTION",
              help="A custom-model factory that specs may name (it is code, run by the jobs); repeat for several.")
@LIMIT
def serve(host: str, port: int, runs_dir: Path, data_roots: tuple[Path, ...], ray_dashboard: str | None,
          max_concurrent: int, max_workers: int | None, token: str | None, max_body_bytes: int,
          allow_factories: tuple[str, ...], limit_items: tuple[str, ...]) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json): submit specs, follow searches, fetch results."""
    import os
    import re
    import secrets

    import uvicorn

    from autocompress.errors import UserInputError
    from autocompress.limits import Limits
    from autocompress.service import ServiceConfig, create_app
    from autocompress.service import check_token, write_token_file

    check_token(token, host)
    for factory in allow_factories:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", factory):
            raise UserInputError(f"--allow-factory {factory!r}: name one factory as module:function "
                                 "(e.g. mymodels.qkformer:build)")
    limits = Limits.parse(limit_items)
    if max_workers is not None:
        limits.values["execution.workers"] = max_workers
    elif "execution.workers" not in limits.overrides():  # by default no more workers than this machine has CPUs
        limits.values["execution.workers"] = min(limits["execution.workers"], os.cpu_count() or 1)
    runs_dir = runs_dir.resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    if not token:
        token = secrets.token_urlsafe(24)
        token_file = runs_dir / "service-token"
        write_token_file(token_file, token)
        say(f"no --token given: generated one, written to {token_file} (mode 600; send it as "
            "'Authorization: Bearer ...')")
    config = ServiceConfig(runs_dir=runs_dir, token=token, data_roots=[p.resolve() for p in data_roots],
                           ray_address=ray_dashboard, max_concurrent=max_concurrent, max_body_bytes=max_body_bytes,
                           allow_factories=list(allow_factories), limits=limits)
    app = create_app(config)
    app.state.jobs.claim()  # one service per runs folder: refuse now, before listening
    say(f"serving on http://{host}:{port} (runs in {runs_dir}; data roots: "
        f"{', '.join(map(str, config.data_roots)) or 'none'}; jobs: {'Ray Jobs at ' + ray_dashboard if ray_dashboard else 'local'}"
        f", at most {max_concurrent} at once)")
    uvicorn.run(app, host=host, port=port, log_level="info")
