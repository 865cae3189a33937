"""Checkpoint identity: a checkpoint of another dataset, configuration or number of ranks is refused in
one line that says how to start fresh; checkpoints are written on a clock unless a step count is given."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import torch

from metaheac.data.errors import InputError
from metaheac.training import meta
from metaheac.training.meta import CHECKPOINT_FILE, meta_train
from tests.tiny import tiny_rows
from tests.tiny_meta import COUNTS, config, data, model


def one_line(text: str) -> str:
    return rf"^[^\n]*{text}[^\n]*$"


def test_a_checkpoint_of_another_dataset_is_refused(tmp_path: Path) -> None:
    features, rows = data()
    meta_train(model(), features, rows, config(max_steps=2), str(tmp_path), progress=False)
    other = tiny_rows(features, COUNTS, seed=7)  # same schema and vocabularies, other rows
    fresh = f"to start fresh, delete {tmp_path}/{CHECKPOINT_FILE} or pass another --checkpoint folder"
    with pytest.raises(InputError, match=one_line(f"trained with other dataset; {fresh}")):
        meta_train(model(), features, other, config(max_steps=4), str(tmp_path), resume=True, progress=False)
    resumed = meta_train(model(), features, rows, config(max_steps=4), str(tmp_path), resume=True, progress=False)
    assert resumed.steps == 4  # the same dataset resumes


def test_a_checkpoint_past_this_runs_steps_is_refused(tmp_path: Path) -> None:
    """An 8-step checkpoint is not the resume of a 3-step run: its weights are not 3 steps' weights."""
    features, rows = data()
    meta_train(model(), features, rows, config(max_steps=8), str(tmp_path), progress=False)
    fresh = f"to start fresh, delete {tmp_path}/{CHECKPOINT_FILE} or pass another --checkpoint folder"
    with pytest.raises(InputError, match=one_line(f"it has run 8 steps, past the 3 of this run .*; {fresh}")):
        meta_train(model(), features, rows, config(max_steps=3), str(tmp_path), resume=True, progress=False)
    assert meta_train(model(), features, rows, config(max_steps=8), str(tmp_path), resume=True,
                      progress=False).steps == 8  # the same run, finished: resumed as it is


def test_a_checkpoint_of_another_world_size_names_both_sizes(tmp_path: Path) -> None:
    features, rows = data()
    meta_train(model(), features, rows, config(max_steps=1), str(tmp_path), progress=False)
    path = tmp_path / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    state["world_size"] = 2  # as a 2-rank torchrun run writes it (test_distributed runs one)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    message = "written by 2 process\\(es\\) and this run has 1; run with 2 \\(torchx -j 1x2\\), or to start fresh"
    with pytest.raises(InputError, match=one_line(message)):
        meta_train(model(), features, rows, config(max_steps=2), str(tmp_path), resume=True, progress=False)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not a zip", b"\x80\x04garbage" * 100])
def test_an_unreadable_checkpoint_is_one_line(tmp_path: Path, content: bytes) -> None:
    features, rows = data()
    (tmp_path / CHECKPOINT_FILE).write_bytes(content)
    with pytest.raises(InputError, match=one_line("cannot resume: .*: not a readable torch file of tensors")):
        meta_train(model(), features, rows, config(max_steps=2), str(tmp_path), resume=True, progress=False)


def test_checkpoints_follow_the_clock_unless_a_step_count_is_given(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    features, rows = data()
    saved: list[int] = []
    real_save = meta.MetaTrainer.save

    def counting_save(trainer: meta.MetaTrainer, uri: str) -> None:
        saved.append(trainer.steps)
        real_save(trainer, uri)

    monkeypatch.setattr(meta.MetaTrainer, "save", counting_save)
    for changes, expected in (({"checkpoint_seconds": 3600.0}, [5]), ({"checkpoint_seconds": 1e-9}, [1, 2, 3, 4, 5]),
                              ({"checkpoint_every": 2}, [2, 4, 5])):
        saved.clear()
        meta_train(model(), features, rows, config(max_steps=5, **changes), str(tmp_path / str(changes)),
                   progress=False)
        assert saved == expected, changes


def test_unreadable_or_foreign_models_are_one_line(tmp_path: Path) -> None:
    from metaheac.methods import load_model
    from metaheac.model.baselines import MLP
    from metaheac.model.store import save_model

    features, _ = data()
    net = model()
    save_model(net, str(tmp_path / "m"), method="MetaHeac")
    weights = tmp_path / "m" / "model.pt"
    good = weights.read_bytes()
    config = tmp_path / "m" / "config.json"

    def replace_weights(content: bytes) -> None:  # and the checksum with them: what the checksum cannot catch
        weights.write_bytes(content)
        info = json.loads(config.read_text())
        config.write_text(json.dumps({**info, "weights_sha256": hashlib.sha256(content).hexdigest()}))

    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match=one_line(f"{weights}: its sha256 .* is not the .* that config.json records")):
        load_model(str(tmp_path / "m"))
    for content, message in ((good[: len(good) // 2], "not a readable torch file of tensors"),
                             (b"\x00" * 64, "not a readable torch file of tensors")):
        replace_weights(content)
        with pytest.raises(InputError, match=one_line(f"{weights}: {message}")):
            load_model(str(tmp_path / "m"))
    save_model(MLP(features.schema, net.config), str(tmp_path / "other"), method="MLP one-stage")
    replace_weights((tmp_path / "other" / "model.pt").read_bytes())  # another method's weights
    with pytest.raises(InputError, match=one_line("not those of the MetaHeac network that config.json describes")):
        load_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(InputError, match=one_line("config.json: not JSON")):
        load_model(str(tmp_path / "m"))


def test_a_checkpoint_from_before_a_config_key_resumes_at_what_it_ran(tmp_path: Path) -> None:
    """Checkpoints written before `matmul_precision` existed ran at "highest": they resume at it, not at
    today's default."""
    features, rows = data()
    meta_train(model(), features, rows, config(max_steps=1), str(tmp_path), progress=False)
    path = tmp_path / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    del state["config"]["matmul_precision"]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="trained with other matmul_precision"):
        meta_train(model(), features, rows, config(max_steps=2, matmul_precision="medium"), str(tmp_path),
                   resume=True, progress=False)
    assert meta_train(model(), features, rows, config(max_steps=2, matmul_precision="highest"), str(tmp_path),
                      resume=True, progress=False).steps == 2
