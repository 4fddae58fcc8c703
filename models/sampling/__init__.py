"""Sampling maths: noise-level parameterisations, sigma schedules, samplers, guidance.

Everything here is a pure function or a small immutable object over the k-diffusion contract
`model(x, sigma, **extra_args) -> denoised x0`; nothing touches the graph layer or global RNG.
Entry points for the node layer: `registry` (names, `get_sampler`, `make_sigmas`),
`model_sampling` (sigma tables, denoiser wrapper), `noise` (initial noise, Brownian tree),
`guidance` (CFG batching + Fooocus combine), `adm`, `refiner`, `freeu`.
"""
