"""The Hybrid Experts and Critics network, and its storage."""

from __future__ import annotations

import io
import json
import logging
import pickle
from dataclasses import replace

import pytest
import torch

from metaheac.data.errors import InputError
from metaheac.data.schema import DatasetSchema, Field
from metaheac.data.tensors import Batch
from metaheac.methods import load_model
from metaheac.model.config import ModelConfig
from metaheac.model.embedding import FieldEmbeddings
from metaheac.model.heac import HybridExpertsCritics, matmul
from metaheac.model.store import MODEL_FILE, read_model_info, save_model
from metaheac.runtime import storage
from tests.tiny import TINY, tiny_features, tiny_rows


def tiny_batch(n: int = 40) -> Batch:
    features = tiny_features()
    rows = tiny_rows(features, [n // 4] * 4)
    return features.batch(rows.campaign, rows.user)


def model(config: ModelConfig = TINY, seed: int = 0) -> HybridExpertsCritics:
    torch.manual_seed(seed)
    return HybridExpertsCritics(tiny_features().schema, config)


@pytest.mark.parametrize("config", [TINY, ModelConfig(embedding_dim=8, experts=1), ModelConfig(critics=1)])
def test_forward_gives_one_probability_per_row(config: ModelConfig) -> None:
    p = model(config)(tiny_batch())
    assert p.shape == (40,)
    assert bool(((p > 0) & (p < 1)).all())


@pytest.mark.parametrize("experts,critics", [(3, 2), (1, 2), (3, 1)])
def test_gate_weights_sum_to_one(experts: int, critics: int) -> None:
    config = ModelConfig(embedding_dim=8, experts=experts, critics=critics, expert_hidden=(8,), gate_hidden=5)
    expert, critic = model(config).gate_weights(tiny_batch())
    assert expert.shape == (40, experts) and critic.shape == (40, critics)
    torch.testing.assert_close(expert.sum(1), torch.ones(40))
    torch.testing.assert_close(critic.sum(1), torch.ones(40))
    assert bool((expert > 0).all() and (critic > 0).all())


def test_list_pooling_averages_valid_ids_and_embeds_an_empty_list_as_zeros() -> None:
    schema = DatasetSchema([Field("age", 3)], [Field("kw", 6, 4)], [Field("adv", 2)])
    embeddings = FieldEmbeddings(schema, 4)
    table = embeddings.user_lists[0].weight
    batch = Batch(
        user_single=torch.tensor([[1], [2]]),
        user_lists=torch.tensor([[3, 5, 0, 0], [0, 0, 0, 0]]),
        campaign=torch.tensor([[1], [1]]),
    )
    user = embeddings.user(batch)
    assert user.shape == (2, 2, 4)
    torch.testing.assert_close(user[0, 1], (table[3] + table[5]) / 2)
    torch.testing.assert_close(user[1, 1], torch.zeros(4))
    torch.testing.assert_close(user[:, 0], embeddings.user_single[0].weight[[1, 2]])


def test_head_with_a_task_dimension_equals_each_task_alone() -> None:
    """The batched meta-training runs the dense part once over [tasks, rows, ...] with per-task weights."""
    net = model()
    batch = tiny_batch()
    user, campaign = net.embeddings.user(batch), net.embeddings.campaign(batch)
    params = [{k: v + 0.1 * torch.randn_like(v) for k, v in net.dense_parameters().items()} for _ in range(3)]
    stacked = {k: torch.stack([p[k] for p in params]) for k in params[0]}
    users = user.expand(3, *user.shape)
    together = net.head(stacked, net.expert_input(stacked, users), users.mean(-2), campaign.expand(3, *campaign.shape))
    alone = torch.stack([net.head(p, net.expert_input(p, user), user.mean(-2), campaign) for p in params])
    torch.testing.assert_close(together, alone)


@pytest.mark.parametrize("shared", [False, True])  # per-task weights, or one weight expanded over the tasks
def test_matmul_is_the_product_and_differentiates_twice(shared: bool) -> None:
    a = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(*(() if shared else (3,)), 5, 2, dtype=torch.float64, requires_grad=True)

    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return matmul(a, b.expand(3, 5, 2))

    torch.testing.assert_close(product(a, b), a @ b)
    assert torch.autograd.gradcheck(product, (a, b))
    assert torch.autograd.gradgradcheck(product, (a, b))


def test_no_dropout_train_and_eval_modes_agree() -> None:
    net, batch = model(ModelConfig(embedding_dim=8)), tiny_batch()
    torch.testing.assert_close(net.train()(batch), net.eval()(batch))


def test_flops_per_row_at_the_tencent_fields_is_1_1_mflop() -> None:
    schema = DatasetSchema(
        [Field(f"s{i}", 10) for i in range(7)],
        [Field(f"l{i}", 10, 5) for i in range(7)],
        [Field(f"c{i}", 10) for i in range(6)],
    )
    assert HybridExpertsCritics(schema).flops_per_row() == 1_100_032


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="experts and critics"):
        ModelConfig(experts=0)
    with pytest.raises(ValueError, match="expert_hidden"):
        ModelConfig(expert_hidden=())


def test_save_and_load_round_trip(tmp_path) -> None:
    net, batch = model(), tiny_batch()
    extra = {"training": {"steps": 3}, "metrics": {"loss": 0.5}}
    save_model(net, str(tmp_path / "model"), extra=extra)
    loaded, info = load_model(str(tmp_path / "model"))
    assert isinstance(loaded, HybridExpertsCritics) and info["method"] == "MetaHeac" and info["extra"] == extra
    assert loaded.config == net.config and loaded.schema.to_json() == net.schema.to_json()
    torch.testing.assert_close(loaded(batch), net(batch), rtol=0, atol=0)
    assert read_model_info(str(tmp_path / "model")) == info


def test_an_ablation_reloads_as_itself(tmp_path) -> None:
    net = model(replace(TINY, critics=1))
    save_model(net, str(tmp_path), method="MetaHeac w/o HC")
    loaded, _ = load_model(str(tmp_path))
    assert loaded.config.critics == 1
    torch.testing.assert_close(loaded(tiny_batch()), net(tiny_batch()), rtol=0, atol=0)


def test_save_and_load_keep_float64(tmp_path) -> None:
    net = model().double()
    save_model(net, str(tmp_path))
    assert load_model(str(tmp_path))[0].expert_w0.dtype == torch.float64


def test_unserialisable_extra_writes_nothing(tmp_path) -> None:
    with pytest.raises(TypeError):
        save_model(model(), str(tmp_path), extra={"bad": object()})
    assert not any(tmp_path.iterdir())


def test_load_refuses_weights_that_are_not_plain_tensors(tmp_path) -> None:
    save_model(model(), str(tmp_path))
    buffer = io.BytesIO()
    torch.save({"payload": pickle.dumps(object), "cls": object}, buffer)  # an arbitrary pickle
    (tmp_path / MODEL_FILE).write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="model.pt: its sha256 .* is not the .* that config.json records"):
        load_model(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    del config["weights_sha256"]  # a folder saved before checksums: weights_only still refuses the pickle
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="not a readable torch file of tensors.*[Ww]eights only"):
        load_model(str(tmp_path))


def test_a_flipped_byte_is_refused_and_a_folder_without_checksum_warns(tmp_path, caplog) -> None:
    net = model()
    save_model(net, str(tmp_path))
    weights = bytearray((tmp_path / MODEL_FILE).read_bytes())
    original = bytes(weights)
    weights[-300:-100] = bytes(b ^ 0xFF for b in weights[-300:-100])  # inside the last tensor's data
    (tmp_path / MODEL_FILE).write_bytes(bytes(weights))
    with pytest.raises(InputError, match="its sha256"):
        load_model(str(tmp_path))
    (tmp_path / MODEL_FILE).write_bytes(original)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["weights_sha256"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        loaded, _ = load_model(str(tmp_path))
    assert "records no weights_sha256" in caplog.text
    torch.testing.assert_close(loaded(tiny_batch()), net(tiny_batch()), rtol=0, atol=0)


def test_model_and_config_are_one_published_folder(tmp_path) -> None:
    """A save over an old model swaps the whole folder: the other method's config never meets new weights."""
    save_model(model(), str(tmp_path / "m"), method="MetaHeac")
    (tmp_path / "m" / "stray.txt").write_text("the old folder's")
    save_model(model(replace(TINY, critics=1)), str(tmp_path / "m"), method="MetaHeac w/o HC")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["_SUCCESS", "config.json", "model.pt"]
    assert load_model(str(tmp_path / "m"))[1]["method"] == "MetaHeac w/o HC"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging left


def test_model_round_trip_through_gcs(gcs_bucket: str) -> None:
    net, batch = model(), tiny_batch()
    uri = f"gs://{gcs_bucket}/models/general"
    save_model(net, uri, extra={"note": "gcs"})
    torch.testing.assert_close(load_model(uri)[0](batch), net(batch), rtol=0, atol=0)
    assert json.loads(storage.read_text(f"{storage.published(uri)}/config.json"))["extra"] == {"note": "gcs"}
