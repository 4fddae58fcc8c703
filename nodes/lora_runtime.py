"""Networks ready to run: on the compute device, with the handle's LoRAs applied.

LoRA weights are patched in place and kept while the same LoRA set is asked for again (the
patcher remembers what it applied); a different set (or none) first restores the originals.
Keys of a LoRA that match no weight are reported in the job's log.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from graph import context as graph_context

from .runtime import placement, use

# Fooocus skips a LoRA for a model when more than this many of its tensors fit nothing
# (e.g. an SD1.5 LoRA on an SDXL model), instead of applying the few that happen to fit.
MAX_REJECTED_TENSORS = 12


@contextlib.contextmanager
def running_unet(model) -> Iterator[tuple]:
    """(unet, device, dtype) for a MODEL handle."""
    with use(model.network) as (unet,):
        _apply(model.patcher, [(path, strength, 0.0) for path, strength in model.loras])
        device, dtype = placement(model.network)
        yield unet, device, dtype


@contextlib.contextmanager
def running_encoder(clip) -> Iterator[tuple]:
    """(prompt encoder, device, dtype) for a CLIP handle."""
    with use(*clip.networks):
        _apply(clip.patcher, [(path, 0.0, strength) for path, strength in clip.loras])
        device, dtype = placement(clip.networks[0])
        yield clip.encoder, device, dtype


@contextlib.contextmanager
def running_vae(vae) -> Iterator[tuple]:
    with use(vae.network) as (module,):
        device, dtype = placement(vae.network)
        yield module, device, dtype


def _apply(patcher, specs) -> None:
    if patcher is None:
        if specs:
            raise ValueError("this network cannot take LoRAs (it was not loaded from a checkpoint)")
        return
    reports = patcher.apply(specs, max_rejected=MAX_REJECTED_TENSORS)
    log = graph_context.current().log
    for report in reports:
        if report.unmatched or report.mismatched:
            log.warning("LoRA %s: %d key(s) matched nothing, %d had the wrong size (e.g. %s)", report.name,
                        len(report.unmatched), len(report.mismatched),
                        ", ".join((report.unmatched + report.mismatched)[:3]))
