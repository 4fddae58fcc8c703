"""Patching LoRA stacks into a model's weights in place, with exact restore and a one-set cache.

A LoraPatcher owns the patch state of some networks ("parts": the UNet, the CLIP text
encoders): which LoRA set is on their weights, and the untouched originals of every weight it
changed. Exactly one patcher must exist per network (the model manager's loaded-model handle
owns it): two patchers over the same module would each take the other's patched weights for
originals.

Patch on apply: each touched weight is recomputed in float32 from its ORIGINAL value plus every
LoRA of the set (W + strength * dW, in list order), rounded once to the weight's dtype and written
in place, so tensors keep their identity and device. A different set first restores the originals
(stacks never accumulate); the same set again is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import torch
from torch import nn

from models.checkpoint import read_state_dict
from models.lora_adapters import ParsedLora, SetAdapter, parse_lora
from models.lora_keys import LoraKeyMap

LoraSource = Union[str, os.PathLike, Mapping[str, torch.Tensor]]
# (LoRA file path or state dict, strength for the UNet, strength for the text encoders)
LoraSpec = tuple[LoraSource, float, float]

MODEL_PARTS = ("unet",)  # parts patched with strength_model; every other part uses strength_clip


@dataclass(frozen=True)
class LoraFileReport:
    """What one LoRA of a set did to this patcher's networks (for the job log).

    unmatched / mismatched: LoRA tensor names matching no weight of the whole model / matching
    one with the wrong size; skipped: more of those than `max_rejected`, so nothing was applied;
    patched_keys: weights of this patcher's parts the file changed.
    """

    name: str
    unmatched: tuple[str, ...]
    mismatched: tuple[str, ...]
    skipped: bool
    patched_keys: int


class LoraPatcher:
    """Applies LoRA sets to `parts` ({"unet": UNetModel, "clip_l": CLIPTextModel, ...}).

    key_map: models.lora_keys.checkpoint_lora_key_map of the WHOLE checkpoint (also when this
    patcher holds only some of its networks), so a key belonging to a network held elsewhere
    is not reported as unmatched. backup_device: where originals are kept ("cpu" keeps them off
    the GPU, like ComfyUI's offload device; None = next to the weight).
    """

    def __init__(self, parts: Mapping[str, nn.Module], key_map: LoraKeyMap, *,
                 backup_device: str | torch.device | None = "cpu"):
        self.parts = dict(parts)
        self.key_map = key_map
        self.backup_device = backup_device
        self._backups: dict[tuple[str, str], torch.Tensor] = {}
        self._applied_key: tuple = ()
        self._reports: list[LoraFileReport] = []
        # identity -> (source, parsed) of the latest set's files; holding the source keeps an
        # in-memory state dict alive, so its id (part of the identity) cannot be reused
        self._parsed: dict[tuple, tuple[LoraSource, ParsedLora]] = {}
        self.weights_written = 0  # weights recomputed so far (a cache hit adds nothing)

    @property
    def applied_key(self) -> tuple:
        """Identity of the LoRA set now on the weights; () when the originals are in place."""
        return self._applied_key

    @property
    def reports(self) -> list[LoraFileReport]:
        return list(self._reports)

    # -----------------------------------------------------------------------------------------

    def apply(self, loras: Sequence[LoraSpec], *, max_rejected: int | None = None) -> list[LoraFileReport]:
        """Put exactly this LoRA set on the weights; returns one report per LoRA.

        max_rejected: skip a LoRA whose unmatched + mismatched tensor count exceeds it (Fooocus
        skips a file for a model at more than 12); None applies whatever matches.
        Zero strengths contribute nothing for their part. Raises on unreadable files; the
        original weights are then in place.
        """
        try:
            key = self._set_key(loras, max_rejected)
            if key == self._applied_key:
                return self.reports
            self.restore()
            plan, reports = self._plan(loras, max_rejected)
            self._patch(plan)
        except BaseException:
            self.restore()
            raise
        self._applied_key = key if plan else ()
        self._reports = reports
        return self.reports

    def restore(self) -> None:
        """Put every original weight back, bit for bit."""
        if self._backups:
            tensors = self._tensors()
            with torch.inference_mode():
                for (part, key), original in self._backups.items():
                    tensors[part][key].copy_(original)
        self._backups.clear()
        self._applied_key = ()
        self._reports = []

    # -----------------------------------------------------------------------------------------

    def _set_key(self, loras: Sequence[LoraSpec], max_rejected: int | None) -> tuple:
        holds_model = any(part in MODEL_PARTS for part in self.parts)
        holds_clip = any(part not in MODEL_PARTS for part in self.parts)
        entries = tuple((_identity(source), float(sm) if holds_model else None, float(sc) if holds_clip else None)
                        for source, sm, sc in loras)
        return entries + (("max_rejected", max_rejected),) if entries else ()

    def _plan(self, loras: Sequence[LoraSpec], max_rejected: int | None):
        """(weight -> [(adapter, rows, strength)] in set order, one report per LoRA)."""
        parsed = {}
        for source, _, _ in loras:
            identity = _identity(source)
            cached = self._parsed.get(identity)
            parsed[identity] = cached or (source, parse_lora(_read(source), self.key_map))
        self._parsed = parsed  # only the current set's files stay parsed
        plan: dict[tuple[str, str], list[tuple[object, tuple[int, int, int] | None, float]]] = {}
        reports = []
        for index, (source, strength_model, strength_clip) in enumerate(loras):
            lora = parsed[_identity(source)][1]
            skipped = max_rejected is not None and len(lora.rejected) > max_rejected
            count = 0
            for (part, weight_key), entries in ({} if skipped else lora.patches).items():
                strength = strength_model if part in MODEL_PARTS else strength_clip
                if part not in self.parts or strength == 0:
                    continue
                count += 1
                plan.setdefault((part, weight_key), []).extend(
                    (adapter, rows, float(strength)) for adapter, rows in entries)
            reports.append(LoraFileReport(_name(source, index), tuple(lora.unmatched), tuple(lora.mismatched),
                                          skipped, count))
        return plan, reports

    def _tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {part: dict(module.state_dict(keep_vars=True)) for part, module in self.parts.items()}

    def _patch(self, plan) -> None:
        tensors = self._tensors()
        # inference_mode allows in-place writes to inference tensors and plain parameters alike
        with torch.inference_mode():
            for (part, key), patches in plan.items():
                weight = tensors[part].get(key)
                if weight is None:
                    continue  # e.g. a `.diff_b` for a module without bias: nothing to patch
                self._backups[(part, key)] = weight.detach().to(self.backup_device or weight.device, copy=True)
                merged = weight.detach().to(torch.float32, copy=True)
                for adapter, rows, strength in patches:
                    _apply_adapter(merged, adapter, strength, rows)
                weight.copy_(merged.to(weight.dtype))
                self.weights_written += 1


def _apply_adapter(weight: torch.Tensor, adapter, strength: float, rows: tuple[int, int, int] | None) -> None:
    """weight (float32, merged so far) <- weight patched by one adapter. With `rows`, the adapter
    describes a fused weight of rows[2] rows and this weight receives rows [rows[0], rows[0] + rows[1])."""
    shape = weight.shape if rows is None else torch.Size((rows[2], *weight.shape[1:]))

    def own_rows(full: torch.Tensor) -> torch.Tensor:
        return full if rows is None else full.narrow(0, rows[0], rows[1])

    if isinstance(adapter, SetAdapter):
        weight.copy_(own_rows(adapter.value.to(device=weight.device, dtype=torch.float32).reshape(shape)))
        return
    delta = own_rows(adapter.delta(shape, weight.device))
    dora_scale = getattr(adapter, "dora_scale", None)
    if dora_scale is None:
        weight.add_(delta, alpha=strength)
        return
    magnitude = dora_scale.to(weight.device, torch.float32)
    if rows is not None and magnitude.shape[0] == rows[2]:  # per-output magnitudes of the fused weight
        magnitude = magnitude.narrow(0, rows[0], rows[1])
    weight.add_(_dora_weight(weight, delta, magnitude) - weight, alpha=strength)


def _dora_weight(weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """DoRA: the merged direction W + dW rescaled so its norms equal the stored magnitudes, per
    output row when `dora_scale` has one entry per output (LyCORIS wd_on_out), else per input column."""
    merged = weight + delta
    if magnitude.shape[0] == weight.shape[0] and magnitude.numel() == weight.shape[0]:
        norm = merged.reshape(weight.shape[0], -1).norm(dim=1).reshape(weight.shape[0], *[1] * (weight.dim() - 1))
    else:
        columns = merged.transpose(0, 1)
        norm = columns.reshape(columns.shape[0], -1).norm(dim=1)
        norm = norm.reshape(1, weight.shape[1], *[1] * (weight.dim() - 2))
    return merged * (magnitude.reshape(norm.shape) / (norm + torch.finfo(torch.float32).eps))


# ---------------------------------------------------------------------------------------------
# LoRA sources: a file path or an in-memory state dict


def _identity(source: LoraSource) -> tuple:
    """Cache identity: a file by path, size and modification time (an edited file is re-read);
    a state dict by object identity (the patcher keeps applied ones alive)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.path.realpath(os.fspath(source))
        stat = os.stat(path)
        return ("file", path, stat.st_size, stat.st_mtime_ns)
    return ("state_dict", id(source))


def _read(source: LoraSource) -> Mapping[str, torch.Tensor]:
    if isinstance(source, (str, os.PathLike)):
        return read_state_dict(source)
    return source


def _name(source: LoraSource, index: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source))
    return f"<lora state dict {index}>"
