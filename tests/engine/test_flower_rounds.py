"""Federated rounds from Flower: ``.npz`` files of parameter arrays in state-dict order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_SHAPE, TINY_VOXEL
from worker.engine.errors import ModelError
from worker.engine.features import ExtractionOptions
from worker.engine.federated import (
    FederatedAttackOptions,
    FederatedDemoOptions,
    prepare_federated_demo,
    resolve_rounds,
    run_federated_assessment,
)
from worker.engine.models import (
    build_architecture,
    detect_format,
    load_model,
    resolve_metadata,
    write_sidecar,
)

TINY = {"arch": "brain_age_3d", "arch_kwargs": {"channels": [2, 2]}, "input_shape": [16, 16, 16], "voxel_size": 4}


def _flower_ndarrays(module: torch.nn.Module) -> list[np.ndarray]:
    """What a Flower client's ``get_parameters`` returns: the state dict's values in order."""
    return [v.cpu().numpy() for v in module.state_dict().values()]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    """A 2-learner, 4-round FedAvg demo federation, its rounds also written as Flower npz and as state dicts."""
    root = tmp_path_factory.mktemp("flower")
    opts = FederatedDemoOptions(scans_per_learner=6, unseen_fraction=0.5, shape=TINY_SHAPE, voxel_size=TINY_VOXEL,
                                channels=(2, 4), seed=5)
    demo = prepare_federated_demo(root / "demo", learners=2, rounds=4, sizes="uniform", ages="iid", options=opts)
    (root / "npz").mkdir()
    (root / "sd").mkdir()
    for r, path in enumerate(demo.model_paths, start=1):
        metadata = resolve_metadata(path)
        net = build_architecture(metadata.arch, **metadata.arch_kwargs)
        net.load_state_dict(torch.jit.load(str(path)).state_dict())
        npz = root / "npz" / f"round_{r:03d}.npz"
        np.savez(npz, *_flower_ndarrays(net))
        write_sidecar(npz, metadata)
        sd = root / "sd" / f"round_{r:03d}.pt"
        torch.save(net.state_dict(), sd)
        write_sidecar(sd, metadata)
    return demo, root


@pytest.mark.slow
def test_flower_rounds_give_the_numbers_of_the_same_rounds_as_state_dicts(federation) -> None:
    demo, root = federation
    npz_rounds = resolve_rounds([root / "npz"])
    sd_rounds = resolve_rounds([root / "sd"])
    assert [p.name for p in npz_rounds] == [f"round_{r:03d}.npz" for r in range(1, 5)]
    assert {detect_format(p) for p in npz_rounds} == {"npz"}
    options = FederatedAttackOptions(rounds=[2, 4], repeats=2, n_boot=50, extraction=ExtractionOptions(layers=()))
    # the first run measures which exact per-sample gradient method is fastest (vmap and the loop
    # agree to float32 rounding, not bit for bit); the two compared runs then use the same one
    run_federated_assessment(sd_rounds, demo.manifest, options)
    from_npz = run_federated_assessment(npz_rounds, demo.manifest, options)
    from_sd = run_federated_assessment(sd_rounds, demo.manifest, options)
    assert from_npz.section == from_sd.section
    final = from_npz.section["final_round"]["attacks"]
    assert final and all("overall" in a for a in final)
    assert from_npz.features.table["prediction"].tolist() == from_sd.features.table["prediction"].tolist()
    model = from_npz.report["provenance"]["model"]
    assert model["format"] == "npz" and [r["format"] for r in model["rounds"]] == ["npz"] * 4
    assert "state-dict order of architecture 'brain_age_3d'" in model["weights_note"]


def test_a_flower_round_runs_in_the_sandboxed_host(federation) -> None:
    from worker.engine.sandbox.client import HostLimits, ModelHost

    _, root = federation
    path = root / "npz" / "round_004.npz"
    in_process = load_model(path)
    scans = torch.randn(2, 1, *TINY_SHAPE)
    with torch.no_grad():
        expected = in_process.module(scans).numpy()
    with ModelHost(HostLimits(call_timeout_s=120, memory_bytes=6 << 30), device="cpu") as host:
        hosted = host.load(path)
        values = hosted.compute(scans, torch.tensor([50.0, 60.0]), True, [hosted.aliases["first_conv"]])
    assert hosted.format == "npz" and "ordered arrays" in hosted.provenance()["weights_note"]
    assert np.allclose(values["prediction"], expected, atol=1e-5)
    assert values[f"grad:{hosted.aliases['first_conv']}"].shape[0] == 2


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_architecture("brain_age_3d", channels=(2, 2))


def test_named_arrays_load_and_prefixes_are_stripped(tmp_path: Path) -> None:
    net = _tiny()
    path = tmp_path / "named.npz"
    np.savez(path, **{f"_module.{k}": v.numpy() for k, v in net.state_dict().items()})
    loaded = load_model(path, TINY)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), net.eval()(x))
    assert "'_module.' prefix (Opacus)" in loaded.weights_note
    assert json.dumps(loaded.provenance())  # the note is plain text


def test_an_array_whose_shape_does_not_fit_is_named(tmp_path: Path) -> None:
    arrays = _flower_ndarrays(_tiny())
    arrays[2] = arrays[2][:1]
    path = tmp_path / "round.npz"
    np.savez(path, *arrays)
    with pytest.raises(ModelError, match=r"array 2 \(arr_2\) has shape \(1, 2, 3, 3, 3\), but parameter "
                       r"'blocks.block2.conv.weight' of architecture 'brain_age_3d' has shape \(2, 2, 3, 3, 3\)"):
        load_model(path, TINY)


def test_a_count_mismatch_is_clear(tmp_path: Path) -> None:
    arrays = _flower_ndarrays(_tiny())
    path = tmp_path / "round.npz"
    np.savez(path, *arrays[:-1])
    with pytest.raises(ModelError, match=f"holds {len(arrays) - 1} parameter arrays but architecture 'brain_age_3d' "
                       f"has {len(arrays)} state-dict entries"):
        load_model(path, TINY)


def test_wrong_names_and_object_arrays_are_refused(tmp_path: Path) -> None:
    arrays = _flower_ndarrays(_tiny())
    path = tmp_path / "names.npz"
    np.savez(path, **{f"layer{i}": a for i, a in enumerate(arrays)})
    with pytest.raises(ModelError, match="names do not fit architecture 'brain_age_3d'"):
        load_model(path, TINY)
    path = tmp_path / "objects.npz"
    np.savez(path, *arrays[:-1], np.array([{"x": 1}], dtype=object))
    with pytest.raises(ModelError, match="arr_7.*without unpickling"):
        load_model(path, TINY)


def test_an_npz_needs_its_architecture(tmp_path: Path) -> None:
    path = tmp_path / "round.npz"
    np.savez(path, *_flower_ndarrays(_tiny()))
    with pytest.raises(ModelError, match="holds weights only"):
        load_model(path, {"input_shape": [16, 16, 16], "voxel_size": 4})


def test_parameters_without_buffers_are_explained(tmp_path: Path) -> None:
    net = build_architecture("monai_resnet", depth=10, block_inplanes=[2, 2, 2, 2])
    path = tmp_path / "round.npz"
    np.savez(path, *[p.detach().numpy() for p in net.parameters()])  # BatchNorm statistics left out
    meta = {"arch": "monai_resnet", "arch_kwargs": {"depth": 10, "block_inplanes": [2, 2, 2, 2]},
            "input_shape": [16, 16, 16], "voxel_size": 4}
    n_params = len(list(net.parameters()))
    with pytest.raises(ModelError, match=f"{n_params} is its number of parameters without its "
                       f"{len(net.state_dict()) - n_params} buffers: send the whole state dict"):
        load_model(path, meta)
