"""FedAvg: exact weighted averaging, one learner = local training, round models on disk."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from worker.engine.errors import InputError
from worker.engine.federated import average_states, list_rounds, save_rounds, train_fedavg
from worker.engine.models import BrainAge3D, ModelMetadata, load_model
from worker.engine.training import TrainingOptions, train_brain_age


CHANNELS = (2, 4)


def _factory() -> BrainAge3D:
    return BrainAge3D(channels=CHANNELS, mean_age=0.0, age_scale=1.0)


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 12, 12, 12, generator=g), torch.randn(n, generator=g)


def test_average_states_is_the_weighted_mean():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 8.0]), "n": torch.tensor(7)}
    avg = average_states([a, b], [3, 1])
    assert torch.allclose(avg["w"], torch.tensor([1.75, 3.5])) and avg["n"].item() == 3
    with pytest.raises(InputError):
        average_states([a, {"v": torch.zeros(2)}], [1, 1])


def test_community_is_the_weighted_average_of_the_learners():
    (xa, ya), (xb, yb) = _data(4, 0), _data(2, 1)
    seen = []
    states = train_fedavg(_factory, {"a": xa, "b": xb}, {"a": ya, "b": yb}, rounds=2, local_epochs=1,
                          options=TrainingOptions(batch_size=2, lr=1e-2, seed=0), on_round=seen.append)
    assert len(states) == 2 and [i.round for i in seen] == [1, 2]
    for info, state in zip(seen, states):
        la, lb = info.local_states["a"], info.local_states["b"]
        assert info.n_scans == {"a": 4, "b": 2}
        assert any(not torch.equal(la[k], lb[k]) for k in la)  # the learners did diverge
        for key in state:
            assert torch.allclose(state[key], (4 * la[key] + 2 * lb[key]) / 6, atol=1e-6)


def test_one_learner_federation_is_local_training():
    x, y = _data(4, 2)
    opts = TrainingOptions(batch_size=2, lr=1e-2, seed=7)
    states = train_fedavg(_factory, {"only": x}, {"only": y}, rounds=2, local_epochs=2, options=opts)
    torch.manual_seed(7)
    model = _factory()
    train_brain_age(model, x, y, replace(opts, epochs=2))
    for key, value in model.state_dict().items():
        assert torch.equal(states[0][key], value)
    train_brain_age(model, x, y, replace(opts, epochs=2, seed=7 + 1000))  # round 2's documented seed
    for key, value in model.state_dict().items():
        assert torch.equal(states[1][key], value)


@pytest.mark.parametrize("fmt", ["torchscript", "safetensors"])
def test_save_rounds_in_order(tmp_path: Path, fmt: str):
    torch.manual_seed(0)
    states = [_factory().state_dict() for _ in range(3)]
    meta = ModelMetadata(input_shape=(12, 12, 12), voxel_size=8.0, arch="brain_age_3d",
                         arch_kwargs={"channels": list(CHANNELS)})
    paths = save_rounds(states, tmp_path, meta, fmt=fmt)
    assert [p.name.split(".")[0] for p in paths] == ["round_001", "round_002", "round_003"]
    assert list_rounds(tmp_path) == paths
    loaded = load_model(paths[1])
    assert loaded.format == fmt
    for key, value in states[1].items():
        assert torch.equal(dict(loaded.module.named_parameters())[key], value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no round models"):
        list_rounds(tmp_path / "empty")
