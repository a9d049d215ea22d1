"""The code-lm task: splits from held-out files of the shipped corpus, the Llama's shape, its cached directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunehive.workers.tasks.code_lm import (
    CONTEXT,
    TEST_FILES,
    TRAIN_FILES,
    VALIDATION_FILES,
    CodeLMTask,
    byte_tokenizer,
    read_sources,
)


class TinyCodeLM(CodeLMTask):
    """Two training steps: enough to exercise training and caching without waiting minutes."""

    train_steps = 2


@pytest.fixture(scope="module")
def task() -> CodeLMTask:
    return CodeLMTask()


def test_split_shapes(task: CodeLMTask) -> None:
    for name in ("train", "validation", "test"):
        x, y = task.split(name)
        assert x.shape == y.shape and x.shape[1] == CONTEXT
        assert x.dtype == y.dtype == torch.int64
        assert int(x.min()) >= 0 and int(x.max()) < 256
        assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one byte
    assert len(task.split("train")[0]) > 10_000
    assert task.split("test")[1].numel() == 128 * CONTEXT
    assert task.split("validation")[1].numel() == len(VALIDATION_FILES) * 64 * CONTEXT
    assert task.split("train") is task.split("train")  # built once, then cached


def test_held_out_files_are_not_in_train(task: CodeLMTask) -> None:
    assert not set(VALIDATION_FILES) & set(TRAIN_FILES)
    assert not set(TEST_FILES) & set(TRAIN_FILES)
    assert not set(VALIDATION_FILES) & set(TEST_FILES)
    corpus = b"\0".join(read_sources(TRAIN_FILES))
    for name in ("validation", "test"):
        first_row = bytes(task.split(name)[0][0].to(torch.uint8).tolist())
        assert first_row not in corpus
    assert not torch.equal(task.split("validation")[0][:128], task.split("test")[0])


def test_validation_windows_cover_every_file(task: CodeLMTask) -> None:
    """Windows come from all of each validation file, not only its opening lines."""
    x = task.split("validation")[0]
    for i, src in enumerate(read_sources(VALIDATION_FILES)):
        rows = x[i * 64 : (i + 1) * 64]
        first, last = (bytes(r.to(torch.uint8).tolist()) for r in (rows[0], rows[-1]))
        assert src.find(first) == 0
        assert src.find(last) > len(src) // 2


def test_fingerprint_ignores_held_out_files(task: CodeLMTask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-choosing the held-out files must not force a retrain of the cached dense model."""
    before = CodeLMTask().fingerprint()
    monkeypatch.setattr("prunehive.workers.tasks.code_lm.VALIDATION_FILES", ("csv.py",))
    assert CodeLMTask().fingerprint() == before


def test_prunable_layers(task: CodeLMTask) -> None:
    model = task.architecture()
    parts = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
    parts += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    expected = [f"model.layers.{i}.{part}" for i in range(4) for part in parts]
    assert task.prunable_layers(model) == expected  # embeddings and lm_head stay dense
    assert task.channel_prunable_layers(model) == [
        f"model.layers.{i}.mlp.{p}" for i in range(4) for p in ("gate_proj", "up_proj")
    ]
    blocks = task.layer_blocks(model)
    assert blocks["model.layers.2.mlp.down_proj"] == "model.layers.2"
    assert sorted(set(blocks.values())) == [f"model.layers.{i}" for i in range(4)]


def test_model_output_shape(task: CodeLMTask) -> None:
    model = task.architecture().eval()
    x, _ = task.split("validation")
    with torch.no_grad():
        assert model(x[:3]).logits.shape == (3, CONTEXT, 256)
        assert model(x[:2, :17]).logits.shape == (2, 17, 256)  # shorter contexts work too


def test_byte_tokenizer_ids_are_the_bytes() -> None:
    """The saved tokenizer reproduces the task's own byte windows, so the directory is usable as it is."""
    tokenizer = byte_tokenizer()
    source = read_sources(TEST_FILES)[0]
    text = source[:4000].decode("utf-8", errors="ignore") + " é € 😀"
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == list(text.encode())
    assert tokenizer.decode(list(text.encode())) == text


def test_model_is_cached_as_a_hugging_face_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("PRUNEHIVE_CACHE", str(tmp_path))
    first = TinyCodeLM().model()
    (directory,) = [p for p in (tmp_path / "models").glob("code-lm-*") if p.is_dir()]
    assert (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()
    second = TinyCodeLM()
    second.train = lambda *args, **kwargs: pytest.fail("should load from the cache, not train")  # type: ignore[method-assign]
    loaded = second.model()
    for (name, a), (_, b) in zip(first.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not loaded.training
    # The same directory is a plain Hugging Face model: from_pretrained gives the same predictions.
    plain = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    x = second.split("validation")[0][:2]
    with torch.no_grad():
        assert torch.allclose(plain(x).logits, loaded(x).logits)
    assert AutoTokenizer.from_pretrained(directory, local_files_only=True)("ab")["input_ids"] == [97, 98]


def test_splits_do_not_read_the_running_interpreters_stdlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus ships with the package: another Python's standard library cannot change the data."""
    import sysconfig

    monkeypatch.setattr(sysconfig, "get_paths", lambda *args, **kwargs: {"stdlib": str(tmp_path)})
    fresh = CodeLMTask()
    assert fresh.split("test")[0].shape == (128, CONTEXT)
    assert fresh.fingerprint() == CodeLMTask().fingerprint()
