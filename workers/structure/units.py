"""What can be removed from a Hugging Face decoder LM (Llama, Qwen, Mistral: gated MLP, grouped-query
attention), block by block: KV groups (a key/value head with all the query heads that read it, so the
grouped shapes stay valid), MLP intermediate channels, the two sublayers and the whole block.

Found from the module names (``<stack>.<i>.self_attn.{q,k,v,o}_proj``, ``<stack>.<i>.mlp.{gate,up,down}_proj``)
and the config's head counts; a model without them gets one line saying which granularity it cannot take.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from prunehive.workers.tasks.hf_load import repeated_blocks
from prunehive.workers.tasks.spec import TaskError

STRUCTURED_KINDS = ("head", "channel", "block", "structured")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def _params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def _bias(linear: nn.Linear) -> int:
    return 0 if linear.bias is None else 1


@dataclass(frozen=True)
class BlockUnits:
    """One decoder block: module names, head layout and the parameters each removable unit holds."""

    index: int
    path: str  # "model.layers.3"
    attention: str | None  # "model.layers.3.self_attn", None where the block has no q/k/v/o projections
    mlp: str | None  # "model.layers.3.mlp", None where the block has no gate/up/down projections
    heads: int
    kv_heads: int
    head_dim: int
    channels: int
    group_params: int  # one KV group: its q/k/v rows (and biases) and its o_proj columns
    channel_params: int  # one MLP channel: gate/up rows (and biases) and its down_proj column
    attention_params: int  # the attention sublayer with its input norm
    mlp_params: int  # the MLP sublayer with its input norm
    block_params: int

    @property
    def group_size(self) -> int:
        """Query heads per KV group."""
        return self.heads // self.kv_heads

    def proj(self, name: str) -> str:
        """Full module name of one projection (``q_proj`` ... ``down_proj``)."""
        parent = self.attention if name in ATTENTION else self.mlp
        return f"{parent}.{name}"

    def linears(self) -> list[str]:
        """The block's prunable projections, attention first."""
        names = [self.proj(n) for n in ATTENTION] if self.attention else []
        return names + ([self.proj(n) for n in MLP] if self.mlp else [])


@dataclass(frozen=True)
class DecoderStructure:
    """Every decoder block's units, in block order."""

    stack: str
    blocks: tuple[BlockUnits, ...]

    def require(self, granularity: str, task: str = "the model") -> None:
        """One line naming why ``task`` cannot be pruned at ``granularity``."""
        if granularity not in STRUCTURED_KINDS:
            raise ValueError(f"granularity {granularity!r} is not structured; choose {', '.join(STRUCTURED_KINDS)}")
        if granularity in ("head", "structured") and not any(b.attention for b in self.blocks):
            raise ValueError(
                f"granularity {granularity}: {task} has no attention heads to remove (decoder blocks with "
                "self_attn.q_proj, k_proj, v_proj and o_proj)"
            )
        if granularity in ("channel", "structured") and not any(b.mlp for b in self.blocks):
            raise ValueError(
                f"granularity {granularity}: {task} has no gated MLP channels to remove (decoder blocks with "
                "mlp.gate_proj, up_proj and down_proj)"
            )
        if granularity in ("block", "structured") and len(self.blocks) < 2:
            count = "a single decoder block" if self.blocks else "no stack of decoder blocks"
            raise ValueError(f"granularity {granularity}: {task} has {count}; block removal needs at least two")

    @property
    def linears(self) -> list[str]:
        return [n for b in self.blocks for n in b.linears()]


def _config_heads(model: nn.Module, hidden: int) -> tuple[int, int, int]:
    config = getattr(model, "config", None)
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    if heads <= 0:
        raise ValueError(f"{type(model).__name__}: its config has no num_attention_heads")
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    if heads % kv:
        raise ValueError(f"{type(model).__name__}: {heads} query heads do not split into {kv} KV groups")
    return heads, kv, head_dim


def _block(model: nn.Module, stack: str, index: int, module: nn.Module) -> BlockUnits:
    path = f"{stack}.{index}"
    children = dict(module.named_modules())
    attn = children.get("self_attn")
    mlp = children.get("mlp")
    has_attn = attn is not None and all(isinstance(children.get(f"self_attn.{n}"), nn.Linear) for n in ATTENTION)
    has_mlp = mlp is not None and all(isinstance(children.get(f"mlp.{n}"), nn.Linear) for n in MLP)
    heads = kv = head_dim = channels = group_params = channel_params = 0
    if has_attn:
        q: nn.Linear = children["self_attn.q_proj"]  # type: ignore[assignment]
        heads, kv, head_dim = _config_heads(model, q.in_features)
        if q.out_features != heads * head_dim:
            raise ValueError(f"{path}.self_attn.q_proj has {q.out_features} outputs, not {heads} heads x {head_dim}")
        group = heads // kv
        hidden = q.in_features
        k: nn.Linear = children["self_attn.k_proj"]  # type: ignore[assignment]
        v: nn.Linear = children["self_attn.v_proj"]  # type: ignore[assignment]
        o: nn.Linear = children["self_attn.o_proj"]  # type: ignore[assignment]
        group_params = group * head_dim * (hidden + _bias(q)) + head_dim * (2 * hidden + _bias(k) + _bias(v))
        group_params += o.out_features * group * head_dim
    if has_mlp:
        gate: nn.Linear = children["mlp.gate_proj"]  # type: ignore[assignment]
        up: nn.Linear = children["mlp.up_proj"]  # type: ignore[assignment]
        down: nn.Linear = children["mlp.down_proj"]  # type: ignore[assignment]
        channels = gate.out_features
        channel_params = gate.in_features + _bias(gate) + up.in_features + _bias(up) + down.out_features
    attention_params = _params(attn) + _params(children.get("input_layernorm")) if has_attn else 0
    mlp_params = _params(mlp) + _params(children.get("post_attention_layernorm")) if has_mlp else 0
    return BlockUnits(
        index=index,
        path=path,
        attention=f"{path}.self_attn" if has_attn else None,
        mlp=f"{path}.mlp" if has_mlp else None,
        heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        channels=channels,
        group_params=group_params,
        channel_params=channel_params,
        attention_params=attention_params,
        mlp_params=mlp_params,
        block_params=_params(module),
    )


def discover(model: nn.Module, granularity: str | None = None, task: str = "the model") -> DecoderStructure:
    """The decoder blocks of ``model`` and their units; with ``granularity``, checked that it applies."""
    try:
        stack = repeated_blocks(model)
    except TaskError:
        stack = ""
    layers = dict(model.named_modules()).get(stack) if stack else None
    blocks = (
        tuple(_block(model, stack, i, m) for i, m in enumerate(layers)) if isinstance(layers, nn.ModuleList) else ()
    )
    structure = DecoderStructure(stack, blocks)
    if granularity is not None:
        structure.require(granularity, task)
    return structure
