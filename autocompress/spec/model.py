"""The spec's ``model`` section: one pydantic class per built-in family, the custom
factory, and the ``ModelSpec`` union."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import (
    BaseModel,
    Field,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    create_model,
    model_validator,
)

from autocompress.spec.fields import Strict, resolve_path
from autocompress.vocabulary import CUSTOM_FAMILY, REFERENCE_PREFIX, canonical_family


class _ModelBase(Strict):
    checkpoint: str | None = Field(
        default=None,
        description=(
            "Checkpoint of the trained model, loaded with weights only: a state dict, or a training "
            "script's checkpoint (timm's model_best.pth.tar / checkpoint-N.pth.tar); the official "
            "Spikformer and Spike-driven Transformer layouts are converted (`autocompress "
            "inspect-checkpoint FILE` says which family and args fit a file). Or 'reference:NAME' for a "
            "reference model autocompress trains itself on embedded data (see `autocompress "
            "train-reference --list`)."
        ),
    )
    ema: bool = Field(
        default=False,
        description="use the checkpoint's EMA weights (timm's state_dict_ema) instead of its model weights",
    )

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.startswith(REFERENCE_PREFIX):
            return value
        path = resolve_path(Path(value), info, must_exist=True, kind="checkpoint file")
        if path.is_dir():
            raise ValueError(f"checkpoint '{value}' is a folder; give the path of a .pt state-dict file")
        return str(path)


def _check_embedding(embed_dims: int, num_heads: int) -> None:
    """Both SpikingJelly SViT families split embed_dims over heads and over the stem's /8 stage."""
    if embed_dims % num_heads:
        raise ValueError(f"embed_dims {embed_dims} must be divisible by num_heads {num_heads}")
    if embed_dims % 8:
        raise ValueError(f"embed_dims {embed_dims} must be divisible by 8 (the stem uses embed_dims/8 channels)")


class SpikformerArgs(Strict):
    """Arguments of SpikingJelly 2.0's ``Spikformer`` (defaults: Spikformer-8-512, ImageNet)."""

    T: PositiveInt = Field(4, description="time steps")
    in_channels: PositiveInt = Field(3, description="input image channels (3: RGB, 1: grayscale)")
    image_size: PositiveInt = Field(224, description="input resolution in pixels (square images); when not given, data.image_size")
    patch_size: Literal[4, 16] = Field(16, description="the stem's patch size: 16 (ImageNet) or 4 (CIFAR)")
    num_classes: PositiveInt = Field(1000, description="outputs of the classification head")
    embed_dims: PositiveInt = Field(512, description="embedding width: the channels of every block (a multiple of 8 and of num_heads)")
    num_heads: PositiveInt = Field(8, description="attention heads")
    mlp_ratio: PositiveFloat = Field(4.0, description="the MLP's hidden width over embed_dims")
    depths: PositiveInt = Field(8, description="number of transformer blocks")

    @model_validator(mode="after")
    def _shapes_fit(self) -> SpikformerArgs:
        _check_embedding(self.embed_dims, self.num_heads)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        return self


class OfficialSpikformerArgs(Strict):
    T: PositiveInt = Field(4, description="time steps (the official code uses 4)")
    in_channels: PositiveInt = Field(3, description="input image channels (3: RGB, 1: grayscale)")
    mlp_ratio: PositiveFloat = Field(4.0, description="the MLP's hidden width over embed_dims")
    _patch = 16

    @model_validator(mode="after")
    def _shapes_fit(self) -> OfficialSpikformerArgs:
        _check_embedding(self.embed_dims, self.num_heads)
        if self.image_size % self._patch:
            raise ValueError(f"image_size {self.image_size} must be divisible by {self._patch} (the stem pools "
                             f"{self._patch.bit_length() - 1} times by 2)")
        return self


class SpikformerImageNetArgs(OfficialSpikformerArgs):
    """Arguments of the official Spikformer ImageNet model (ZK-Zhou/spikformer imagenet/model.py;
    defaults: Spikformer-8-512 with 8 heads, 224x224, as the official code fixes them). The stem
    pools four times (16x16 patches)."""

    image_size: PositiveInt = Field(224, description="input resolution in pixels (square images); when not given, data.image_size")
    num_classes: PositiveInt = Field(1000, description="outputs of the classification head")
    embed_dims: PositiveInt = Field(512, description="embedding width: the channels of every block (a multiple of 8 and of num_heads)")
    num_heads: PositiveInt = Field(8, description="attention heads")
    depths: PositiveInt = Field(8, description="number of transformer blocks")


class SpikformerCIFARArgs(OfficialSpikformerArgs):
    """Arguments of the official Spikformer CIFAR model (ZK-Zhou/spikformer cifar10/model.py, also
    CIFAR-100; defaults: Spikformer-4-384, 32x32). The stem pools twice (4x4 patches)."""

    image_size: PositiveInt = Field(32, description="input resolution in pixels (square images); when not given, data.image_size")
    num_classes: PositiveInt = Field(10, description="outputs of the classification head")
    embed_dims: PositiveInt = Field(384, description="embedding width: the channels of every block (a multiple of 8 and of num_heads)")
    num_heads: PositiveInt = Field(12, description="attention heads")
    depths: PositiveInt = Field(4, description="number of transformer blocks")
    _patch = 4


class SpikeDrivenTransformerArgs(Strict):
    """Arguments of the Spike-driven Transformer v1 (defaults: SDT-8-384, ImageNet; CIFAR models
    use pooling_stat '0011' at 32x32)."""

    T: PositiveInt = Field(4, description="time steps")
    in_channels: PositiveInt = Field(3, description="input image channels (3: RGB, 1: grayscale)")
    image_size: PositiveInt = Field(224, description="input resolution in pixels (square images); when not given, data.image_size")
    num_classes: PositiveInt = Field(1000, description="outputs of the classification head")
    embed_dims: PositiveInt = Field(384, description="embedding width: the channels of every block (a multiple of 8 and of num_heads)")
    num_heads: PositiveInt = Field(8, description="attention heads")
    mlp_ratio: PositiveFloat = Field(4.0, description="the MLP's hidden width over embed_dims")
    depths: PositiveInt = Field(8, description="number of transformer blocks")
    pooling_stat: Annotated[str, Field(pattern=r"^[01]{4}$")] = Field(
        "1111", description="which of the four stem stages downsample by 2 ('1') or not ('0')"
    )

    @model_validator(mode="after")
    def _shapes_fit(self) -> SpikeDrivenTransformerArgs:
        _check_embedding(self.embed_dims, self.num_heads)
        return self




class SpikingJellySpikformerModel(_ModelBase):
    """SpikingJelly 2.0's own Spikformer (stem conv -> BN -> max-pool -> LIF). It is not the network
    of the official Spikformer checkpoints: use spikformer_imagenet / spikformer_cifar for those.
    'spikformer', its earlier name, is still accepted."""

    family: Literal["spikingjelly_spikformer", "spikformer"] = Field(description="the model family (the network to build); each family has its own args")
    args: SpikformerArgs = Field(default_factory=SpikformerArgs, description="the network's sizes")


class SpikformerImageNetModel(_ModelBase):
    """The official Spikformer ImageNet network; loads the authors' checkpoints."""

    family: Literal["spikformer_imagenet"] = Field(description="the model family (the network to build); each family has its own args")
    args: SpikformerImageNetArgs = Field(default_factory=SpikformerImageNetArgs, description="the network's sizes")


class SpikformerCIFARModel(_ModelBase):
    """The official Spikformer CIFAR-10/100 network; loads the authors' checkpoints."""

    family: Literal["spikformer_cifar"] = Field(description="the model family (the network to build); each family has its own args")
    args: SpikformerCIFARArgs = Field(default_factory=SpikformerCIFARArgs, description="the network's sizes")


class SpikeDrivenTransformerModel(_ModelBase):
    """Spike-driven Transformer v1 as the official code computes it; loads the authors' checkpoints."""

    family: Literal["spike_driven_transformer"] = Field(description="the model family (the network to build); each family has its own args")
    args: SpikeDrivenTransformerArgs = Field(default_factory=SpikeDrivenTransformerArgs, description="the network's sizes")


class CustomModel(_ModelBase):
    """A user model: ``factory`` is ``package.module:function`` returning an ``nn.Module``
    whose spiking neurons are SpikingJelly neurons."""

    family: Literal["custom"] = Field(description="the model family (the network to build); each family has its own args")
    factory: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] = Field(
        description=(
            "import path of the model factory, 'package.module:function'; modules beside "
            "the spec file and in the working directory are importable"
        )
    )
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the factory")
    time_steps: PositiveInt | None = Field(
        default=None,
        description=(
            "when set, images [N,C,H,W] are repeated to [T,N,C,H,W] before the model is "
            "called; leave unset when the model repeats them itself"
        ),
    )
    _spec_dir: Path | None = PrivateAttr(default=None)  # the factory may live beside the spec

    @model_validator(mode="after")
    def _remember_spec_dir(self, info: ValidationInfo) -> CustomModel:
        base_dir = (info.context or {}).get("base_dir")
        self._spec_dir = Path(base_dir) if base_dir else None
        return self


# --------------------------------------------------------------------------- the family registry

# What the spec checks of a sized family's args: the SViT sizes, against the data and the caps.
SIZED_ARGS = ("T", "in_channels", "image_size", "num_classes", "embed_dims", "num_heads", "mlp_ratio", "depths")


@dataclass(frozen=True)
class FamilyInfo:
    """A model family as the spec knows it (torch-free): the pydantic class of its ``model``
    section, its default search space (``autocompress/search_spaces/<space>.yaml``, or a
    file), and whether its args are the SViT sizes (:data:`SIZED_ARGS`) that the spec checks
    against the data and the caps. Its builder, checkpoint converter and channel-group rules
    are registered with it by :func:`autocompress.models.register_family`."""

    name: str
    section: type[_ModelBase]
    space: str | None
    sized: bool = True


_FAMILIES: dict[str, FamilyInfo] = {}
_LISTENERS: list[Callable[[], None]] = []  # rebuild what is made from the union (the Spec model)


def declare_family(name: str, args: type[BaseModel] | None = None, *, section: type[_ModelBase] | None = None,
                   space: str | None, sized: bool = True, doc: str | None = None) -> FamilyInfo:
    """Make ``model.family: name`` a valid spec: its section is ``section``, or one made of
    ``args`` (``model: {family: name, args: {...}, checkpoint, ema}``). ``space`` names the
    default search space (None: the spec must give space.file). Specs validated after this
    accept the family; the JSON Schema lists it."""
    if name in _FAMILIES:
        raise ValueError(f"model family {name!r} is already declared")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"model family {name!r}: lower-case letters, digits and '_'")
    if section is None:
        if args is None:
            raise ValueError(f"model family {name!r}: give its args model (or its whole section)")
        missing = [f for f in SIZED_ARGS if sized and f not in args.model_fields]
        if missing:
            raise ValueError(f"model family {name!r}: a sized family's args need {', '.join(missing)}")
        section = create_model(f"{''.join(w.title() for w in name.split('_'))}Model", __base__=_ModelBase,
                               __doc__=doc or f"The {name} family.", family=(Literal[name], ...),
                               args=(args, Field(default_factory=args)))
    info = FamilyInfo(name, section, space, sized)
    _FAMILIES[name] = info
    for rebuild in _LISTENERS:
        rebuild()
    return info


def family_info(name: str) -> FamilyInfo:
    """The declared family ``name`` (an old alias names its family)."""
    return _FAMILIES[canonical_family(name)]


def family_names() -> list[str]:
    return list(_FAMILIES)


def model_section_union() -> Any:
    """The spec's ``model`` section: one of the declared families' sections, by ``family``."""
    sections = tuple(dict.fromkeys(info.section for info in _FAMILIES.values()))
    return Annotated[Union[sections], Field(discriminator="family")]  # type: ignore[valid-type]


def on_families_changed(rebuild: Callable[[], None]) -> None:
    _LISTENERS.append(rebuild)


declare_family("spikformer_imagenet", section=SpikformerImageNetModel, space="spikformer")
declare_family("spikformer_cifar", section=SpikformerCIFARModel, space="spikformer")
declare_family("spike_driven_transformer", section=SpikeDrivenTransformerModel, space="spike_driven_transformer")
# the same module paths as the official Spikformers, so their space; 'spikformer' is its earlier name
declare_family("spikingjelly_spikformer", section=SpikingJellySpikformerModel, space="spikformer")
declare_family(CUSTOM_FAMILY, section=CustomModel, space="custom", sized=False)



def _load_plugins() -> None:
    """Families other packages register (``autocompress.models.register_family``) from a
    module they declare under the entry-point group ``autocompress.families``: loaded with
    the spec, so that ``model.family`` accepts them. A broken plug-in is logged, not fatal."""
    import logging
    from importlib.metadata import entry_points

    for entry in entry_points(group="autocompress.families"):
        try:
            entry.load()
        except Exception as error:
            logging.getLogger("autocompress").warning("model family plug-in %s (%s) did not load: %s",
                                                      entry.name, entry.value, error)


_load_plugins()
ModelSpec = model_section_union()  # the families declared so far (specs validate against the registry's union)
