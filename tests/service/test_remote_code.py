"""Loading a user's model directory never runs code from it, even where transformers would ask on stdin
whether to (its default when a config names its own Python classes), and the answer would be yes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from prunehive.workers.tasks.hf_load import fresh_model, load_causal_lm, load_tokenizer


def custom_code_dir(path: Path, marker: Path) -> Path:
    """A model directory whose config and tokenizer name classes in its own ``evil.py``; importing that
    module writes ``marker``."""
    path.mkdir()
    auto = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"}
    config = {"architectures": ["EvilForCausalLM"], "model_type": "evil", "auto_map": auto}
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evil.Tok", None]}}))
    (path / "model.safetensors").write_bytes(b"")
    (path / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizer\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
        "class EvilForCausalLM(PreTrainedModel):\n    config_class = EvilConfig\n"
        "class Tok(PreTrainedTokenizer):\n    pass\n"
    )
    return path


def test_custom_code_in_a_model_directory_is_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    directory = custom_code_dir(tmp_path / "model", marker)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n" * 10))  # were transformers to ask, the answer is yes
    for load in (load_causal_lm, lambda d: fresh_model(d, "causal-lm"), load_tokenizer):
        with pytest.raises(ValueError, match="trust_remote_code"):
            load(directory)
    assert not marker.exists()
