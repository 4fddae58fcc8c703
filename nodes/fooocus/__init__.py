"""Fooocus prompt side: styles, wildcards, inline LoRAs, per-image prompt tasks, performance modes,
presets and the "Fooocus V2" expansion. Pure Python except expansion.py (torch + transformers).

Import the submodules directly (``nodes.fooocus.styles`` ...); this package imports nothing so
that using styles or presets never pulls in torch.
"""
