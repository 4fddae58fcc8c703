"""Noise-level parameterisations ("model sampling") of diffusion UNets.

A model sampling answers four questions for the k-diffusion contract (x = x0 + sigma * noise):
- which sigmas the network was trained on (`sigmas`, ascending) and `sigma_min` / `sigma_max`;
- how sigma maps to the timestep the UNet is conditioned on and back (`timestep`, `sigma`);
- how to scale the UNet input (`calculate_input`) and turn its output into a denoised x0
  (`calculate_denoised`) for its prediction type (eps, v, EDM, LCM);
- how to build the starting latent from unit noise (`noise_scaling`).

Variants: `DiscreteModelSampling` (SD1.5/SDXL scaled-linear betas, eps or v),
`DistilledModelSampling` (the 50-sigma LCM/TCD table) and `ContinuousEDMModelSampling`
(Playground v2.5, v-pred EDM models). `model_sampling_for_scheduler` picks the one Fooocus patches in
for its lcm / tcd / edm_playground_v2.5 schedulers. `make_denoiser` wraps a raw UNet call into a
k-diffusion denoiser.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

PREDICTIONS = ("eps", "v", "edm", "lcm", "x0")


def scaled_linear_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012,
                                 num_timesteps: int = 1000) -> torch.Tensor:
    """Cumulative alpha products of the SD "scaled linear" beta schedule, in float64.

    beta_i = linspace(sqrt(beta_start), sqrt(beta_end), N)_i ** 2. Kept in float64 because Fooocus
    computes the sigma table in double precision before casting (its patch_precision), which moves
    the small sigmas by ~1e-6 relative to a float32 computation.
    """
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


# What the last alpha product becomes after the zero-terminal-SNR rescale: exactly 0 would make
# sigma_max infinite; this keeps the last sigma finite (about 4519), as ComfyUI does.
ZERO_SNR_LAST_ALPHA_CUMPROD = 4.8973451890853435e-08


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so the last step has zero signal (Lin et al. 2023, alg. 1),
    keeping the first step's value; used by v-prediction checkpoints marked `ztsnr`."""
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    rescaled = root ** 2
    rescaled[-1] = ZERO_SNR_LAST_ALPHA_CUMPROD
    return rescaled


def _interpolate_log_sigma(log_sigmas: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """exp of the log-sigma table read at a fractional index (linear in log sigma)."""
    index = index.float().clamp(0, len(log_sigmas) - 1)
    low = index.floor().long()
    high = index.ceil().long()
    weight = index.frac()
    return ((1 - weight) * log_sigmas[low] + weight * log_sigmas[high]).exp()


def _nearest_index(log_sigmas: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Index of the table entry nearest in log sigma (ComfyUI's argmin rule; sigma 0 -> index 0)."""
    distances = sigma.float().log().reshape(1, -1) - log_sigmas.reshape(-1, 1)
    return distances.abs().argmin(dim=0).reshape(sigma.shape)


class ModelSampling:
    """Shared behaviour: a sigma table plus a prediction-type conversion.

    Subclasses define `timestep(sigma)` and `sigma(timestep)`. All methods accept sigma as a float
    or a tensor broadcastable to the batch (shape [] or [B]); tables follow sigma's device.
    """

    def __init__(self, sigmas: torch.Tensor, prediction: str, sigma_data: float):
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction type {prediction!r}; valid: {', '.join(PREDICTIONS)}")
        self.sigmas = sigmas.float()
        self.log_sigmas = self.sigmas.log()
        self.prediction = prediction
        self.sigma_data = float(sigma_data)
        self._log_sigmas_by_device = {}

    def log_sigmas_on(self, device) -> torch.Tensor:
        """The log-sigma table on `device`, copied once per device (not once per model call)."""
        device = torch.device(device)
        if device not in self._log_sigmas_by_device:
            self._log_sigmas_by_device[device] = self.log_sigmas.to(device)
        return self._log_sigmas_by_device[device]

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma reached after `percent` of the trajectory (ControlNet / IP-Adapter start-stop)."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * 999.0)))

    def progress(self, sigma: torch.Tensor) -> float:
        """Fooocus's progress p = 1 - t/999 for the first sample's timestep (spec §0).

        For EDM models t = 0.25 ln(sigma) so p stays near 1, exactly as in Fooocus.
        """
        t = self.timestep(torch.as_tensor(sigma).reshape(-1)[:1])
        return float(1.0 - t[0] / 999.0)

    # --- prediction type ---------------------------------------------------------------------
    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """UNet input c_in * x with c_in = 1 / sqrt(sigma^2 + sigma_data^2)."""
        sigma = _as_batch(sigma, x)
        return x / (sigma ** 2 + self.sigma_data ** 2).sqrt()

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor,
                           x: torch.Tensor) -> torch.Tensor:
        """Denoised x0 from the UNet output for this prediction type (x is the un-scaled input)."""
        sigma = _as_batch(sigma, model_output)
        if self.prediction == "eps":
            return x - model_output * sigma
        if self.prediction == "x0":  # the network predicts the clean latent itself (ComfyUI's X0)
            return model_output
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        if self.prediction == "v":
            return x * c_skip - model_output * c_out
        if self.prediction == "edm":
            return x * c_skip + model_output * c_out
        raise ValueError(f"prediction {self.prediction!r} needs DistilledModelSampling")

    def noise_scaling(self, sigma: float | torch.Tensor, noise: torch.Tensor, latent: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        """Starting point of sampling: latent + noise scaled to the first sigma.

        At full denoise discrete models start from noise * sqrt(1 + sigma^2) (ComfyUI/Fooocus:
        the variance of x0 + sigma*eps for unit-variance data); img2img starts from noise * sigma.
        """
        sigma = float(sigma)
        scale = math.sqrt(1.0 + sigma * sigma) if max_denoise else sigma
        return latent + noise * scale

    def is_max_denoise(self, sigmas: torch.Tensor) -> bool:
        """True when the schedule starts at (or above) the model's largest sigma (full denoise)."""
        first = float(sigmas[0])
        return math.isclose(first, self.sigma_max, rel_tol=1e-5) or first > self.sigma_max

    def inverse_noise_scaling(self, sigma: float | torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Map the sampler's final x back to a latent (identity for every model here)."""
        return latent


def _as_batch(sigma, like: torch.Tensor) -> torch.Tensor:
    """Sigma as a tensor shaped [B, 1, 1, ...] (or scalar) on `like`'s device."""
    sigma = torch.as_tensor(sigma, device=like.device, dtype=torch.float32)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))


class DiscreteModelSampling(ModelSampling):
    """SD1.5 / SDXL: 1000 trained sigmas from the scaled-linear betas, integer timesteps 0..999.

    sigma_min = 0.0291675, sigma_max = 14.614642 for the default betas.
    """

    def __init__(self, prediction: str = "eps", beta_start: float = 0.00085, beta_end: float = 0.012,
                 num_timesteps: int = 1000, zero_terminal_snr: bool = False):
        alphas_cumprod = scaled_linear_alphas_cumprod(beta_start, beta_end, num_timesteps)
        if zero_terminal_snr:
            alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
        sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod) ** 0.5
        super().__init__(sigmas.float(), prediction, sigma_data=1.0)
        self.alphas_cumprod = alphas_cumprod.float()
        self.num_timesteps = num_timesteps

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma)
        index = _nearest_index(self.log_sigmas_on(sigma.device), sigma)
        return index.float()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        timestep = torch.as_tensor(timestep)
        return _interpolate_log_sigma(self.log_sigmas_on(timestep.device), timestep)


class DistilledModelSampling(DiscreteModelSampling):
    """LCM / TCD: the 50 sigmas at timesteps 19, 39, ..., 999 of the 1000-step table.

    Timesteps reported to the UNet are index*20 + 19. `prediction="lcm"` adds the LCM boundary
    conditions (sigma_data 0.5, timestep scaling 10): x0 = c_out * x0_eps + c_skip * x.
    `alphas_cumprod` stays the full 1000-entry table (TCD indexes it by timestep).
    """

    def __init__(self, prediction: str = "lcm", original_timesteps: int = 50, zero_terminal_snr: bool = False):
        super().__init__("eps", zero_terminal_snr=zero_terminal_snr)
        self.skip_steps = self.num_timesteps // original_timesteps
        full = self.sigmas
        picked = torch.arange(original_timesteps) * self.skip_steps + (self.skip_steps - 1)
        ModelSampling.__init__(self, full[picked], prediction, 1.0)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma)
        index = _nearest_index(self.log_sigmas_on(sigma.device), sigma)
        return (index * self.skip_steps + (self.skip_steps - 1)).float()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        timestep = torch.as_tensor(timestep)
        index = (timestep.float() - (self.skip_steps - 1)) / self.skip_steps
        return _interpolate_log_sigma(self.log_sigmas_on(timestep.device), index)

    def calculate_denoised(self, sigma, model_output, x):
        if self.prediction != "lcm":
            return super().calculate_denoised(sigma, model_output, x)
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        t = _as_batch(self.timestep(sigma), model_output)
        x0 = x - model_output * _as_batch(sigma, model_output)
        scaled_t = t * 10.0
        c_skip = 0.25 / (scaled_t ** 2 + 0.25)
        c_out = scaled_t / (scaled_t ** 2 + 0.25) ** 0.5
        return c_out * x0 + c_skip * x


class ContinuousEDMModelSampling(ModelSampling):
    """Continuous-sigma EDM models: log-spaced table, timestep t = 0.25 * ln(sigma).

    Playground v2.5: sigma_min 0.002, sigma_max 120, sigma_data 0.5, prediction "edm".
    v-prediction EDM checkpoints (CosXL style) use prediction "v" with sigma_data 1.
    Full-denoise noise is scaled by sigma_max itself (not sqrt(1 + sigma^2)).
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 120.0, sigma_data: float = 0.5,
                 prediction: str = "edm"):
        sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000, dtype=torch.float64).exp()
        super().__init__(sigmas.float(), prediction, sigma_data)
        self._sigma_min, self._sigma_max = float(sigma_min), float(sigma_max)

    @property
    def sigma_min(self) -> float:
        return self._sigma_min

    @property
    def sigma_max(self) -> float:
        return self._sigma_max

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(sigma).float().log() * 0.25

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return (torch.as_tensor(timestep).float() / 0.25).exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        log_min = math.log(self.sigma_min)
        return math.exp((math.log(self.sigma_max) - log_min) * (1.0 - percent) + log_min)

    def noise_scaling(self, sigma, noise, latent, max_denoise=False):
        return latent + noise * float(sigma)


def model_sampling_for_scheduler(scheduler: str, base: ModelSampling) -> ModelSampling:
    """The model sampling Fooocus patches in for a scheduler name (spec §2), else `base`.

    lcm -> distilled table with LCM output; tcd -> distilled table, eps;
    edm_playground_v2.5 -> continuous EDM (0.002..120, sigma_data 0.5).
    """
    if scheduler == "lcm":
        return DistilledModelSampling("lcm")
    if scheduler == "tcd":
        return DistilledModelSampling("eps")
    if scheduler == "edm_playground_v2.5":
        return ContinuousEDMModelSampling(0.002, 120.0, 0.5, "edm")
    return base


def make_denoiser(unet_apply: Callable[..., torch.Tensor], model_sampling: ModelSampling):
    """Wrap `unet_apply(x_in, timesteps, **kwargs) -> raw output` into `denoiser(x, sigma, **kwargs)`.

    The result follows the sampler contract: it scales the input by c_in, passes the model's
    timestep for each sample's sigma and converts the output to x0.
    """
    def denoiser(x: torch.Tensor, sigma: torch.Tensor, **kwargs) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        timesteps = model_sampling.timestep(sigma)
        output = unet_apply(model_sampling.calculate_input(sigma, x), timesteps, **kwargs)
        return model_sampling.calculate_denoised(sigma, output.to(x.dtype), x)

    return denoiser
