"""What the commands share: option types, exit codes, error reporting, and the helpers that
turn flags into the engine's inputs (model overrides, extraction, cache, requested options).

Heavy modules (torch, numpy, the engine) are imported inside the helpers, never here: the
command modules import this one to build ``brainmia --help``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import click
import typer

from ..progress import stderr

if TYPE_CHECKING:
    from ..services.options import AssessmentOptionsIn

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2

ModelOpt = Annotated[Optional[Path], typer.Option("--model", help="Model file: TorchScript, torch.export (.pt2), safetensors, state dict or .npz of parameter arrays.")]
ManifestOpt = Annotated[Optional[Path], typer.Option("--manifest", help="Manifest CSV: scan_id, path, age, member [, learner, attributes...] (or --bids).")]
BidsOpt = Annotated[Optional[Path], typer.Option("--bids", help="A BIDS dataset in place of --manifest: subjects and ages from participants.tsv (sessions.tsv ages win), scans by --bids-filter, members from --members.")]
MembersOpt = Annotated[Optional[Path], typer.Option("--members", help="With --bids: text file of member subject IDs (sub-01 or 01) or subject+session IDs (sub-01_ses-1, or two columns).")]
NonMembersOpt = Annotated[Optional[Path], typer.Option("--non-members", help="With --bids: the non-member IDs (default: every other matching scan).")]
BidsFilterOpt = Annotated[Optional[str], typer.Option("--bids-filter", help="With --bids: BIDS entities of the scans, e.g. space=MNI152NLin2009cAsym,desc=preproc (defaults suffix=T1w, datatype=anat, extension .nii/.nii.gz; scope=raw|derivatives|<pipeline>; a|b alternatives; none = absent).")]
ShapeOpt = Annotated[Optional[str], typer.Option("--input-shape", help="Model input grid, e.g. 91x109x91 (overrides the sidecar).")]
VoxelOpt = Annotated[Optional[float], typer.Option("--voxel-size", help="Model voxel size in mm (overrides the sidecar).")]
NormOpt = Annotated[Optional[str], typer.Option("--normalize", help="Intensity normalisation: zscore, none, minmax, robust.")]
ArchOpt = Annotated[Optional[str], typer.Option("--arch", help="Built-in architecture of a weights file: brain_age_3d, brain_age_slice_mean, sfcn, monai_densenet121, monai_resnet.")]
ArchKwOpt = Annotated[Optional[str], typer.Option("--arch-options", help='Architecture options as JSON, e.g. \'{"width": 0.5}\'.')]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1... (default: CUDA when present).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Scans per vectorised pass.")]
LayersOpt = Annotated[Optional[list[str]], typer.Option("--layer", help="Layer whose full per-sample gradient is kept (repeatable; aliases first_conv, last_conv, output or a module path).")]
LoaderWorkersOpt = Annotated[Optional[int], typer.Option("--loader-workers", min=0, help="Processes decoding scans in parallel (0: none; default: $BRAINMIA_LOADER_WORKERS or the cores minus one, at most 16).")]
CacheOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Conformed-volume cache (default: $BRAINMIA_CACHE_DIR or ~/.brainmia/cache/volumes).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not cache conformed volumes.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
GRADIENT_METHODS = ("auto", "vmap", "loop", "hooks")  # backend.fields.GradientMethod, without importing pydantic
GradientMethodOpt = Annotated[Optional[str], typer.Option("--gradient-method", click_type=click.Choice(GRADIENT_METHODS), help="Per-sample gradients by auto (the fastest exact method, timed on the first batches), vmap, loop or hooks (default: $BRAINMIA_GRADIENT_METHOD or auto).")]

#: the flag of each request option (``AssessmentOptionsIn`` field), for error messages
OPTION_FLAGS = {
    "feature_sets": "--feature-set",
    "classifiers": "--classifier",
    "repeats": "--repeats",
    "train_size": "--train-size",
    "seed": "--seed",
    "device": "--device",
    "batch_size": "--batch-size",
    "policy": "--policy",
    "max_rounds": "--max-rounds",
    "trajectory_sets": "--trajectory-set",
    "reference": "--reference",
    "quantile": "--no-quantile",
    "scan_qa": "--scan-qa",
}


def fail(message: object) -> typer.Exit:
    """Print ``message`` as an error on stderr; returns the exit (code 2) to raise."""
    stderr.print("[bold red]error:[/]", str(message), highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_ERROR)


@contextmanager
def errors_exit_2() -> Iterator[None]:
    """Report bad input and I/O errors on stderr and exit with code 2."""
    from worker.engine.errors import BrainMIAError

    try:
        yield
    except BrainMIAError as exc:
        raise fail(exc) from None
    except (OSError, ValueError, RuntimeError) as exc:  # typer.Exit is raised outside this block
        raise fail(f"{type(exc).__name__}: {exc}") from None


@contextmanager
def confined_model_host(device: str) -> Iterator[Any]:
    """A confined model host (the settings' limits): a model file given to the CLI runs only there."""
    from ..services.model_hosts import model_host
    from ..settings import get_settings

    host = model_host(get_settings(), device)
    try:
        yield host
    finally:
        host.close()


def pick_device(device: str | None) -> str:
    """The device to run on: the option, else ``BRAINMIA_DEVICE``, else CUDA when present."""
    from worker.engine.features import pick_device as engine_pick_device

    from ..settings import get_settings

    return engine_pick_device(device or get_settings().device)


@dataclass(frozen=True)
class ScanFlags:
    """``--manifest``, or ``--bids`` with ``--members`` [``--non-members``, ``--bids-filter``]: the scans."""

    manifest: Path | None = None
    bids: Path | None = None
    members: Path | None = None
    non_members: Path | None = None
    bids_filter: str | None = None

    def check(self) -> None:
        """Refuse a contradictory or incomplete choice of scans.

        Raises:
            InputError: neither or both of ``--manifest`` and ``--bids``, ``--bids`` without
                ``--members``, or the BIDS options without ``--bids``.
        """
        from worker.engine.errors import InputError

        if (self.manifest is None) == (self.bids is None):
            raise InputError("give exactly one of --manifest or --bids")
        if self.bids is None:
            given = [flag for flag, value in (("--members", self.members), ("--non-members", self.non_members),
                                              ("--bids-filter", self.bids_filter)) if value is not None]
            if given:
                raise InputError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with --bids")
        elif self.members is None:
            raise InputError("--bids needs --members: the file of member subject (or subject+session) IDs")

    def load(self, derived: Path, *, check_files: bool = True) -> Any:
        """The manifest: ``--manifest`` loaded, or the one derived from ``--bids`` (written to ``derived``).

        Raises:
            InputError: bad options, rows, dataset or lists (each naming the row or subject).
        """
        from worker.engine.manifest import load_manifest

        self.check()
        if self.manifest is not None:
            return load_manifest(self.manifest, check_files=check_files)
        from worker.engine.bids import BidsInput, bids_manifest

        spec = BidsInput(self.bids, self.members, self.non_members, self.bids_filter)  # type: ignore[arg-type]
        manifest = bids_manifest(spec, derived)
        stderr.print(f"BIDS dataset {self.bids}: manifest written to {manifest.path}", highlight=False)
        both = manifest.source.get("subjects_in_both") or []
        if both:
            stderr.print(f"note: {len(both)} subject(s) have member and non-member sessions ({', '.join(both[:5])}"
                         f"{' ...' if len(both) > 5 else ''}): a model that saw one session has seen that brain; "
                         "list whole subjects (sub-01) to keep them on one side", highlight=False)
        left = manifest.source.get("sessions_left_out") or []
        if left:
            stderr.print(f"note: {len(left)} unlisted session(s) of member subjects left out ({', '.join(left[:5])}"
                         f"{' ...' if len(left) > 5 else ''}): the model has seen those brains, so they are not "
                         "non-members; list them with --members, or give --non-members", highlight=False)
        return manifest


@dataclass(frozen=True)
class ModelFlags:
    """``--input-shape``, ``--voxel-size``, ``--normalize``, ``--arch``, ``--arch-options``: what
    overrides a model's sidecar."""

    input_shape: str | None = None
    voxel_size: float | None = None
    normalize: str | None = None
    arch: str | None = None
    arch_options: str | None = None

    def overrides(self) -> dict[str, Any]:
        """The model loader's overrides.

        Raises:
            InputError: a malformed grid or ``--arch-options`` that is not a JSON object.
        """
        from worker.engine.errors import InputError
        from worker.engine.models import parse_shape

        kwargs = None
        if self.arch_options:
            try:
                kwargs = json.loads(self.arch_options)
            except json.JSONDecodeError as exc:
                raise InputError(f"--arch-options is not valid JSON: {exc}") from None
            if not isinstance(kwargs, dict):
                raise InputError("--arch-options must be a JSON object")
        return {
            "input_shape": parse_shape(self.input_shape) if self.input_shape else None,
            "voxel_size": self.voxel_size,
            "normalize": self.normalize,
            "arch": self.arch,
            "arch_kwargs": kwargs,
        }


@dataclass(frozen=True)
class RunFlags:
    """``--device``, ``--batch-size``, ``--layer``, ``--cache-dir``, ``--no-cache``, ``--quiet``,
    ``--loader-workers``, ``--gradient-method``: where and how features are computed."""

    device: str | None = None
    batch_size: int = 8
    layers: list[str] | None = None
    cache_dir: Path | None = None
    no_cache: bool = False
    quiet: bool = False
    loader_workers: int | None = None
    gradient_method: str | None = None

    def extraction(self, device: str, white_box: bool = True) -> Any:
        """The engine's ``ExtractionOptions`` on ``device`` (resolved by :func:`pick_device`)."""
        from worker.engine.features import DEFAULT_LAYERS, ExtractionOptions

        from ..settings import get_settings

        workers = self.loader_workers if self.loader_workers is not None else get_settings().loader_workers
        return ExtractionOptions(
            white_box=white_box,
            layers=tuple(self.layers) if self.layers else DEFAULT_LAYERS,
            batch_size=self.batch_size,
            device=device,
            num_workers=workers,
            gradient_method=self.gradient_method or get_settings().gradient_method,
        )

    def cache(self) -> Any:
        """The conformed-volume cache (``--cache-dir``, else the settings'; none with ``--no-cache``)."""
        from worker.engine.cache import VolumeCache

        from ..settings import get_settings

        if self.no_cache:
            return VolumeCache(None)
        return VolumeCache(self.cache_dir or get_settings().volume_cache_dir)

    def reference_store(self) -> Path | None:
        """Where trained reference models are kept and reused (none with ``--no-cache``)."""
        from ..settings import get_settings

        return None if self.no_cache else get_settings().reference_store_dir


def requested_options(*, policy: Path | None = None, federated: dict[str, Any] | None = None,
                      **given: Any) -> AssessmentOptionsIn:
    """The request options (``AssessmentOptionsIn``) of the flags the user gave.

    Args:
        policy: a policy file, read by the one loader (``policy_from_file``).
        federated: ``max_rounds`` and ``trajectory_sets`` of a federated assessment.
        **given: other ``AssessmentOptionsIn`` fields; None and empty lists are left unset.

    Raises:
        InputError: a bad policy file (naming the file and the field) or a value out of
            range (naming the flag).
    """
    from pydantic import ValidationError

    from worker.engine.errors import InputError

    from ..services.options import AssessmentOptionsIn, policy_from_file

    fields = {key: value for key, value in given.items() if value is not None and value != []}
    if policy is not None:
        fields["policy"] = policy_from_file(policy)
    federated_fields = {key: value for key, value in (federated or {}).items() if value is not None and value != []}
    if federated_fields:
        fields["federated"] = federated_fields
    try:
        return AssessmentOptionsIn(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"]]
        name = loc[1] if loc[0] == "federated" and len(loc) > 1 else loc[0]
        raise InputError(f"{OPTION_FLAGS.get(name, name)}: {first['msg']}") from None


def show_inputs(manifest: Any, model: Any | None) -> None:
    """Say on stderr what is assessed: the manifest's scans and the model's input grid."""
    stderr.print(
        f"manifest {manifest.path}: {len(manifest.records)} scans "
        f"({manifest.n_members} members, {manifest.n_nonmembers} non-members)",
        highlight=False,
    )
    if model is not None:
        meta = model.metadata
        stderr.print(
            f"model {model.path}: {model.format}, input {'x'.join(map(str, meta.input_shape))} at "
            f"{'/'.join(f'{v:g}' for v in meta.voxel_size)} mm, normalize={meta.normalize}",
            highlight=False,
        )


def archive_extractor() -> Any:
    """The service's safe archive extraction, with the settings' limits."""
    from ..archives import ArchiveLimits, extract_archive
    from ..settings import get_settings

    settings = get_settings()
    limits = ArchiveLimits(
        max_total_bytes=settings.max_extracted_bytes,
        max_members=settings.max_archive_members,
        max_ratio=settings.max_compression_ratio,
    )
    return lambda archive, dest: extract_archive(archive, dest, limits)
