"""LoRA-family weight adapters: parse a LoRA state dict against a key map, compute weight deltas.

Every adapter computes in float32 the change it makes to one weight (or a row slice of it):
- LoRA / LoCon: dW = (alpha / rank) * up @ down (conv: down k x k, up 1 x 1; with a Tucker
  `lora_mid` core: up . mid . down); rank = down's first dimension; no alpha -> scale 1.
  With `dora_scale` (DoRA) the merged weight's column norms are replaced by the stored ones.
- LoHa: dW = (alpha / rank) * (w1_a @ w1_b) * (w2_a @ w2_b) (Hadamard product; Tucker cores
  `hada_t1/t2` for convolutions); rank = w1_b's first dimension.
- LoKr: dW = scale * kron(w1, w2), each factor stored whole or as a low-rank pair (w2 also with
  a Tucker core); scale = alpha / rank when a factor is low-rank (rank = its inner dimension),
  else 1 (as LyCORIS trains it).
- diff / diff_b: a full-size weight (bias) difference; set_weight: replaces the weight.
- fooocus_q/min/max (and fooocus_bias_*): a Fooocus inpaint patch's uint8-quantised difference.
The patcher applies them as W <- W + strength * dW (DoRA and "set" combine differently).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from models.lora_keys import LoraKeyMap, LoraTarget

# suffix -> (adapter kind, tensor role); longest suffixes are tried first
_SUFFIXES = {
    ".lora_up.weight": ("lora", "up"), ".lora_down.weight": ("lora", "down"), ".lora_mid.weight": ("lora", "mid"),
    ".lora_B.weight": ("lora", "up"), ".lora_A.weight": ("lora", "down"),
    ".lora_B.default.weight": ("lora", "up"), ".lora_A.default.weight": ("lora", "down"),
    ".lora.up.weight": ("lora", "up"), ".lora.down.weight": ("lora", "down"),
    ".lora_linear_layer.up.weight": ("lora", "up"), ".lora_linear_layer.down.weight": ("lora", "down"),
    "_lora.up.weight": ("lora", "up"), "_lora.down.weight": ("lora", "down"),
    ".alpha": ("common", "alpha"), ".dora_scale": ("common", "dora_scale"),
    # PEFT's DoRA magnitudes: one per output row, the same as LyCORIS' output-axis dora_scale
    ".lora_magnitude_vector.weight": ("common", "dora_scale"), ".lora_magnitude_vector": ("common", "dora_scale"),
    ".hada_w1_a": ("loha", "w1_a"), ".hada_w1_b": ("loha", "w1_b"), ".hada_w2_a": ("loha", "w2_a"),
    ".hada_w2_b": ("loha", "w2_b"), ".hada_t1": ("loha", "t1"), ".hada_t2": ("loha", "t2"),
    ".lokr_w1": ("lokr", "w1"), ".lokr_w2": ("lokr", "w2"), ".lokr_w1_a": ("lokr", "w1_a"),
    ".lokr_w1_b": ("lokr", "w1_b"), ".lokr_w2_a": ("lokr", "w2_a"), ".lokr_w2_b": ("lokr", "w2_b"),
    ".lokr_t2": ("lokr", "t2"),
    ".diff": ("diff", "weight"), ".diff_b": ("diff", "bias"), ".set_weight": ("set", "weight"),
    # Fooocus inpaint patches (uint8 q, min, max per weight or bias), named so by models/inpaint/engine.py
    ".fooocus_q": ("fooocus", "q"), ".fooocus_min": ("fooocus", "min"), ".fooocus_max": ("fooocus", "max"),
    ".fooocus_bias_q": ("fooocus_b", "q"), ".fooocus_bias_min": ("fooocus_b", "min"),
    ".fooocus_bias_max": ("fooocus_b", "max"),
}
_SUFFIX_ORDER = sorted(_SUFFIXES, key=len, reverse=True)


def split_lora_key(key: str) -> tuple[str, str, str] | None:
    """(module prefix, adapter kind, role) of a LoRA tensor name, None if no known suffix."""
    for suffix in _SUFFIX_ORDER:
        if key.endswith(suffix):
            kind, role = _SUFFIXES[suffix]
            return key[: -len(suffix)], kind, role
    return None


# ---------------------------------------------------------------------------------------------
# Adapters


def _f32(tensor: torch.Tensor, device) -> torch.Tensor:
    return tensor.to(device=device, dtype=torch.float32)


def _alpha_scale(alpha: torch.Tensor | None, rank: int) -> float:
    return 1.0 if alpha is None else float(alpha) / rank


@dataclass
class LoraAdapter:
    """Low-rank pair (LoRA, LoCon, PEFT, diffusers), optional Tucker core and DoRA scale."""

    up: torch.Tensor
    down: torch.Tensor
    mid: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    dora_scale: torch.Tensor | None = None

    def delta_numel(self) -> int:
        spatial = self.mid.shape[2:] if self.mid is not None else self.down.shape[2:]
        return self.up.shape[0] * self.down.shape[1] * _prod(spatial)

    def delta(self, shape: torch.Size, device) -> torch.Tensor:
        up, down = _f32(self.up, device), _f32(self.down, device)
        if self.mid is not None:
            # 1x1 down -> k x k core -> 1x1 up, merged into one k x k kernel
            mid = _f32(self.mid, device)
            kernel = torch.einsum("oa,abhw,bi->oihw", up.flatten(1), mid, down.flatten(1))
        else:
            kernel = up.flatten(1) @ down.flatten(1)
        return kernel.reshape(shape) * _alpha_scale(self.alpha, self.down.shape[0])


@dataclass
class LohaAdapter:
    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    dora_scale: torch.Tensor | None = None

    def delta_numel(self) -> int:
        if self.t1 is not None:
            return self.w1_a.shape[1] * self.w1_b.shape[1] * _prod(self.t1.shape[2:])
        return self.w1_a.shape[0] * self.w1_b.shape[1]

    def delta(self, shape: torch.Size, device) -> torch.Tensor:
        def factor(a, b, core):
            a, b = _f32(a, device), _f32(b, device)
            if core is None:
                return a @ b
            # Tucker: core [r, r, k, k], a [r, out] (columns = out), b [r, in]
            return torch.einsum("ijkl,jr,ip->prkl", _f32(core, device), b, a)

        w1 = factor(self.w1_a, self.w1_b, self.t1)
        w2 = factor(self.w2_a, self.w2_b, self.t2)
        return (w1 * w2).reshape(shape) * _alpha_scale(self.alpha, self.w1_b.shape[0])


@dataclass
class LokrAdapter:
    w1: torch.Tensor | None = None
    w1_a: torch.Tensor | None = None
    w1_b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2_a: torch.Tensor | None = None
    w2_b: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    dora_scale: torch.Tensor | None = None

    def _factor_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        w1 = tuple(self.w1.shape) if self.w1 is not None else (self.w1_a.shape[0], self.w1_b.shape[1])
        if self.w2 is not None:
            w2 = tuple(self.w2.shape)
        elif self.t2 is not None:
            w2 = (self.w2_a.shape[1], self.w2_b.shape[1], *self.t2.shape[2:])
        else:
            w2 = (self.w2_a.shape[0], *self.w2_b.shape[1:])
        return w1, w2

    def delta_numel(self) -> int:
        w1, w2 = self._factor_shapes()
        return _prod(w1) * _prod(w2)

    def delta(self, shape: torch.Size, device) -> torch.Tensor:
        w1 = _f32(self.w1, device) if self.w1 is not None else _f32(self.w1_a, device) @ _f32(self.w1_b, device)
        if self.w2 is not None:
            w2 = _f32(self.w2, device)
        elif self.t2 is not None:
            w2 = torch.einsum("ijkl,jr,ip->prkl", _f32(self.t2, device), _f32(self.w2_b, device),
                              _f32(self.w2_a, device))
        else:
            w2 = _f32(self.w2_a, device) @ _f32(self.w2_b, device).flatten(1)
            w2 = w2.reshape(self.w2_a.shape[0], *self.w2_b.shape[1:])
        if w2.dim() == 4:  # convolution: kron over (out, in), kernel from w2
            w1 = w1[:, :, None, None]
        scale = 1.0
        low_rank = self.w2_b if self.w2_b is not None else self.w1_b
        if low_rank is not None and self.alpha is not None:
            scale = float(self.alpha) / low_rank.shape[0]
        return torch.kron(w1.contiguous(), w2.contiguous()).reshape(shape) * scale


@dataclass
class DiffAdapter:
    """A full difference; `bias=True` patches the target's `.bias` instead of its weight."""

    diff: torch.Tensor
    bias: bool = False

    def delta_numel(self) -> int:
        return self.diff.numel()

    def delta(self, shape: torch.Size, device) -> torch.Tensor:
        return _f32(self.diff, device).reshape(shape)


@dataclass
class QuantizedDiffAdapter(DiffAdapter):
    """A Fooocus inpaint-patch difference stored as uint8: dW = q / 255 * (max - min) + min."""

    w_min: torch.Tensor | float = 0.0
    w_max: torch.Tensor | float = 1.0

    def delta(self, shape: torch.Size, device) -> torch.Tensor:
        low = torch.as_tensor(self.w_min).to(device=device, dtype=torch.float32)
        high = torch.as_tensor(self.w_max).to(device=device, dtype=torch.float32)
        return (_f32(self.diff, device) / 255.0 * (high - low) + low).reshape(shape)


@dataclass
class SetAdapter:
    """Replaces the weight (strength is ignored, as ComfyUI's "set" patches)."""

    value: torch.Tensor

    def delta_numel(self) -> int:
        return self.value.numel()


def _prod(values) -> int:
    out = 1
    for value in values:
        out *= int(value)
    return out


# ---------------------------------------------------------------------------------------------
# Parsing a LoRA file against a key map


@dataclass
class ParsedLora:
    """A LoRA file matched to a model.

    patches: (part, state-dict key) -> [(adapter, rows)], rows = LoraTarget.rows (this weight's
    slice of a fused update) or None;
    unmatched: LoRA tensor names that name no weight of the model, have an unknown suffix
    (GLoRA, OFT, ... are not implemented) or lack their partner (an `up` without its `down`);
    mismatched: LoRA tensor names that name a weight but whose sizes do not fit it (e.g. an SD1.5
    LoRA on an SDXL refiner); they patch nothing.
    """

    patches: dict[tuple[str, str], list[tuple[object, tuple[int, int, int] | None]]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> list[str]:
        """Names that patch nothing: the count Fooocus compares with its skip threshold."""
        return self.unmatched + self.mismatched


def parse_lora(lora: Mapping[str, torch.Tensor], key_map: LoraKeyMap) -> ParsedLora:
    """Group a LoRA state dict by module, build each module's adapters and attach them to the
    weights the key map names. Nothing is computed yet (tensors are kept as they are)."""
    groups: dict[str, dict[tuple[str, str], tuple[str, torch.Tensor]]] = {}
    parsed = ParsedLora()
    for name, tensor in lora.items():
        split = split_lora_key(name)
        if split is None or split[0] not in key_map:
            parsed.unmatched.append(name)
            continue
        prefix, kind, role = split
        groups.setdefault(prefix, {})[(kind, role)] = (name, tensor)
    for prefix, tensors in groups.items():
        used: set[str] = set()
        for adapter, names in _adapters_of(tensors):
            used.update(names)
            targets = key_map[prefix]
            if not all(_fits(adapter, target) for target in targets):
                parsed.mismatched.extend(names)
                continue
            for target in targets:
                key = target.key
                if isinstance(adapter, DiffAdapter) and adapter.bias:
                    key = key[: -len(".weight")] + ".bias"
                parsed.patches.setdefault((target.part, key), []).append((adapter, target.rows))
        parsed.unmatched.extend(name for name, _ in tensors.values() if name not in used)
    parsed.unmatched.sort()
    parsed.mismatched.sort()
    return parsed


def _fits(adapter, target: LoraTarget) -> bool:
    if isinstance(adapter, DiffAdapter) and adapter.bias:
        return target.has_bias and adapter.delta_numel() == target.lora_shape[0]
    return adapter.delta_numel() == _prod(target.lora_shape)


def _adapters_of(tensors: dict[tuple[str, str], tuple[str, torch.Tensor]]):
    """(adapter, names of the tensors it uses) for each complete adapter in one module's group."""
    def get(kind, role):
        entry = tensors.get((kind, role))
        return None if entry is None else entry[1]

    def names(*keys):
        return [tensors[key][0] for key in keys if key in tensors]

    common = [("common", "alpha"), ("common", "dora_scale")]
    alpha, dora = get("common", "alpha"), get("common", "dora_scale")
    if get("lora", "up") is not None and get("lora", "down") is not None:
        yield (LoraAdapter(get("lora", "up"), get("lora", "down"), get("lora", "mid"), alpha, dora),
               names(("lora", "up"), ("lora", "down"), ("lora", "mid"), *common))
    loha = [get("loha", role) for role in ("w1_a", "w1_b", "w2_a", "w2_b")]
    if all(t is not None for t in loha):
        yield (LohaAdapter(*loha, get("loha", "t1"), get("loha", "t2"), alpha, dora),
               names(*[("loha", r) for r in ("w1_a", "w1_b", "w2_a", "w2_b", "t1", "t2")], *common))
    has_w1 = get("lokr", "w1") is not None or (get("lokr", "w1_a") is not None and get("lokr", "w1_b") is not None)
    has_w2 = get("lokr", "w2") is not None or (get("lokr", "w2_a") is not None and get("lokr", "w2_b") is not None)
    if has_w1 and has_w2:
        roles = ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b", "t2")
        yield (LokrAdapter(*[get("lokr", r) for r in roles], alpha=alpha, dora_scale=dora),
               names(*[("lokr", r) for r in roles], *common))
    if get("diff", "weight") is not None:
        yield DiffAdapter(get("diff", "weight")), names(("diff", "weight"))
    if get("diff", "bias") is not None:
        yield DiffAdapter(get("diff", "bias"), bias=True), names(("diff", "bias"))
    if get("set", "weight") is not None:
        yield SetAdapter(get("set", "weight")), names(("set", "weight"))
    for kind in ("fooocus", "fooocus_b"):
        if all(get(kind, role) is not None for role in ("q", "min", "max")):
            yield (QuantizedDiffAdapter(get(kind, "q"), kind == "fooocus_b", get(kind, "min"), get(kind, "max")),
                   names(*[(kind, role) for role in ("q", "min", "max")]))
