"""The per-step guidance trace: what classifier-free guidance did at every denoising step of both runs.

During a paired call the denoiser (UNet or transformer) sees one batch per step, `[neg_without, neg_with,
text_without, text_with]` (diffusers puts the negative/unconditional half first), or for FLUX.1's true CFG two
calls per step (text, then negative). The denoiser hook of `guidance.BranchHook` (which also decides when and how
strongly the negative acts) hands over each run's ε_neg and ε_text, and hence the guidance direction ε_text − ε_neg,
without an extra denoiser call. `callback_on_step_end` then adds what only exists after the scheduler step (the new
latents).

The model's prediction is read by its kind: ε (epsilon), v (v_prediction), x0 (sample), or for the flow-matching
families (SD3, FLUX.1) the velocity v = noise − x0 of x_t = (1 − σ)·x0 + σ·noise ("flow"). FLUX.1's packed latents
(2×2 patches as 64 channels) are unpacked to [c, h, w] first, so maps and x0 are per latent pixel for every family.

Optionally the hook adds one batch item — the with-negative run's latents under the *empty* conditioning — so
ε_empty − ε_neg shows where the negative prompt itself pushes ("negative push" map).

Everything kept is small, on the CPU, at latent resolution and in float16: about 25 MB for 50 SDXL steps at 1024 px.
With attention maps on (`attention.py`), each kept step also holds one map per word, at most 32 MiB per run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from negprompt_demo.sampling.attention import AttentionPlan

RUNS = ("without", "with")  # index 0: empty negative prompt; index 1: the user's negative prompt
# The guidance branches whose x0 alone, from the with-run's latents, is recorded with the push map (in this order:
# StepRecord.branch_x0_latents, StepRecord.branch_previews)
BRANCHES = ("prompt", "empty", "negative")


@dataclass
class StepRecord:
    """One denoising step of both runs. Maps are [h, w] per run at latent resolution."""

    index: int  # 0-based step number
    timestep: float
    sigma: float  # noise level: x_t = x0 + σ·noise (variance-exploding view), or flow matching's σ in [0, 1]
    # Arrays are None only in a stored trace's steps other than the one read back (tracefile.TraceStore.load).
    guidance_map: torch.Tensor | None  # [2, h, w] float16: ‖ε_text − ε_neg‖ over channels, per latent pixel
    guidance_mean: tuple[float, float]  # mean of each run's map
    guidance_peak: float  # largest value of both maps (one colour scale for all steps needs every step's peak)
    guidance_cosine: float  # cosine between the two runs' guidance vectors (1 = same direction)
    divergence: float  # ‖x_with − x_without‖ / ‖x_without‖ of the latents after this step
    x0_latents: torch.Tensor | None  # [2, c, h, w] float16: predicted clean sample of each run (RUNS)
    negative_active: bool = True  # whether the with-run's negative prompt acted at this step (its window)
    push_map: torch.Tensor | None = None  # [h, w] float16: ‖ε_empty − ε_neg‖ on the with-run's latents
    push_mean: float | None = None
    push_peak: float | None = None
    # [3, c, h, w] float16, with the push map: what the with-run's prompt branch, empty-prompt branch and negative
    # branch each predict alone (BRANCHES)
    branch_x0_latents: torch.Tensor | None = None
    # uint8 pictures by previews.fill_previews: [2, H, W, 3] of x0_latents, [3, H, W, 3] of branch_x0_latents
    previews: np.ndarray | None = None
    branch_previews: np.ndarray | None = None
    # [words, h, w] float16: each word's cross-attention map (GuidanceTrace.attention says which words), on the
    # steps the attention plan keeps
    attention_maps: torch.Tensor | None = None
    # [h, w] float16: how far NAG moved the with-run's cross-attention output, ‖Z − Z⁺‖ per latent pixel (mean over
    # layers, nag.py); None where NAG did not act at this step
    nag_map: torch.Tensor | None = None
    nag_mean: float | None = None
    nag_peak: float | None = None
    # what the with-run was conditioned on at this step: {"prompt": text, "negative": text of its negative branch}
    # (they change with A1111 prompt editing; the negative is the baseline's outside the window)
    texts: dict | None = None

    def __getstate__(self) -> dict:
        """Pickled with numpy arrays: torch pickles tensors between processes as file descriptors of the sender,
        which a ZeroGPU worker process may not outlive (runner.device.sample_on_device yields these records)."""
        return {name: value.numpy() if torch.is_tensor(value) else value for name, value in vars(self).items()}

    def __setstate__(self, state: dict) -> None:
        tensors = ("guidance_map", "x0_latents", "branch_x0_latents", "push_map", "attention_maps", "nag_map")
        self.__dict__.update(
            {
                name: torch.from_numpy(value) if name in tensors and value is not None else value
                for name, value in state.items()
            }
        )

    def scalars(self) -> dict:
        data = {
            "step": self.index + 1,
            "timestep": round(self.timestep, 4),
            "sigma": round(self.sigma, 5),
            "guidance_mean": {run: round(value, 6) for run, value in zip(RUNS, self.guidance_mean)},
            "guidance_cosine": round(self.guidance_cosine, 6),
            "divergence": round(self.divergence, 6),
            "negative_active": self.negative_active,
        }
        if self.texts is not None:
            data["texts"] = self.texts
        if self.push_mean is not None:
            data["push_mean"] = round(self.push_mean, 6)
        if self.nag_mean is not None:
            data["nag_mean"] = round(self.nag_mean, 6)
        return data


@dataclass
class GuidanceTrace:
    """All steps of one comparison, plus what is needed to read them (scale, whether CFG was on)."""

    guidance_scale: float
    cfg_active: bool
    prediction_type: str
    steps: list[StepRecord] = field(default_factory=list)
    attention: AttentionPlan | None = None  # the words mapped, when attention maps were recorded
    # How the negative acted inside its window (guidance.NegativePlan), for the step view's captions
    negative_strength: float = 1.0
    perp_neg: bool = False
    negative_mode: str = "cfg"  # settings.negative_mode: through CFG's branch, in attention (NAG), or both

    def to_json(self) -> dict:
        """Scalars, plus the attention maps when recorded (the only maps kept in the JSON: they are what a user
        asks for with the option; the guidance maps stay in the PNG/GIF outputs)."""
        document = {
            "guidance_scale": self.guidance_scale,
            "cfg_active": self.cfg_active,
            "prediction_type": self.prediction_type,
            "runs": list(RUNS),
            "steps": [step.scalars() for step in self.steps],
        }
        if self.attention is not None:
            kept = [step.attention_maps for step in self.steps if step.attention_maps is not None]
            document["attention"] = {
                **self.attention.to_json(),
                "maps": [np.round(maps.float().numpy(), 4).tolist() for maps in kept],  # [step][word][h][w]
            }
        return document

    def series(self, name: str) -> np.ndarray:
        """One scalar over all steps: 'guidance_without', 'guidance_with', 'divergence', 'guidance_cosine', 'push'."""
        pick = {
            "guidance_without": lambda s: s.guidance_mean[0],
            "guidance_with": lambda s: s.guidance_mean[1],
            "divergence": lambda s: s.divergence,
            "guidance_cosine": lambda s: s.guidance_cosine,
            "push": lambda s: float("nan") if s.push_mean is None else s.push_mean,
        }[name]
        return np.array([pick(step) for step in self.steps], dtype=np.float64)


class GuidanceTracer:
    """Turns what `guidance.BranchHook` captured at each step of a single-seed paired call (runs 0 and 1) into
    a `GuidanceTrace`. `spatial` maps the denoiser's latents to [n, c, h, w] (FLUX.1 unpacks its patches)."""

    def __init__(
        self,
        pipe,
        guidance_scale: float,
        cfg_active: bool,
        push_map: bool,
        spatial: Callable[[torch.Tensor], torch.Tensor] | None = None,
        attention: AttentionPlan | None = None,
    ):
        self.pipe = pipe
        self.cfg_active = cfg_active
        self.push_map = push_map and cfg_active
        self.guidance_scale = guidance_scale
        self.attention = attention
        self.spatial = spatial or (lambda latents: latents)
        self.flow_matching = isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
        if self.flow_matching:
            self.prediction_type = "flow"
        else:
            self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
            # log(sigma) at each integer training timestep, to find the noise level of any (fractional) timestep
            alphas_cumprod = pipe.scheduler.alphas_cumprod.double()
            self._log_sigmas = 0.5 * torch.log((1 - alphas_cumprod) / alphas_cumprod)
        self.trace = GuidanceTrace(guidance_scale, cfg_active, self.prediction_type, attention=attention)

    def record_step(
        self,
        index: int,
        latents: torch.Tensor,
        branches,
        attention_maps: torch.Tensor | None = None,
        nag_map: torch.Tensor | None = None,
    ) -> StepRecord:
        """One StepRecord from the step's branches (`guidance.Branches`), the stepped latents and, when recorded,
        the step's attention maps (`attention.AttentionRecorder.take`) and NAG's ‖Z − Z⁺‖ map (`nag.py`)."""
        sample = self.spatial(branches.sample[0:2]).float()
        t, sigma = self.noise_level(index, branches.timestep)
        neg, text = self.spatial(branches.negative[0:2]).float(), self.spatial(branches.text[0:2]).float()
        guided = neg + self.guidance_scale * (text - neg) if self.cfg_active else text
        direction = text - neg if self.cfg_active else torch.zeros_like(text)  # [2, c, h, w]
        guidance_map = direction.norm(dim=1)
        flat = direction.flatten(1)
        cosine = torch.nn.functional.cosine_similarity(flat[0:1], flat[1:2], eps=1e-12).item()

        x0 = self.predict_x0(sample, guided, sigma)
        empty = self.empty_branch(branches)
        branch_x0 = None
        if empty is not None:  # each branch alone, from the with-run's latents (the article's "step 4"; BRANCHES)
            alone = torch.stack([text[1], empty.float(), neg[1]])
            branch_x0 = self.predict_x0(sample[1:2].expand_as(alone), alone, sigma).half().cpu()
        stepped = latents.float()
        divergence = ((stepped[1] - stepped[0]).norm() / stepped[0].norm().clamp_min(1e-12)).item()

        record = StepRecord(
            index=index,
            timestep=t,
            sigma=sigma,
            guidance_map=guidance_map.half().cpu(),
            guidance_mean=(guidance_map[0].mean().item(), guidance_map[1].mean().item()),
            guidance_peak=guidance_map.max().item(),
            guidance_cosine=cosine if self.cfg_active else float("nan"),
            divergence=divergence,
            x0_latents=x0.half().cpu(),
            branch_x0_latents=branch_x0,
            negative_active=bool(branches.active[1]) or nag_map is not None,
            attention_maps=attention_maps,
            nag_map=nag_map,
            nag_mean=None if nag_map is None else nag_map.float().mean().item(),
            nag_peak=None if nag_map is None else nag_map.float().max().item(),
        )
        if self.push_map:
            # ε_∅ − ε_neg on the with-run's latents: where (and how hard) the negative prompt itself pushes. Zero
            # where the with-run's negative branch is the empty prompt's (outside its window).
            push = (empty.float() - neg[1]).norm(dim=0)
            record.push_map = push.half().cpu()
            record.push_mean = push.mean().item()
            record.push_peak = push.max().item()
        self.trace.steps.append(record)
        return record

    def noise_level(self, index: int, timestep) -> tuple[float, float]:
        """(timestep, sigma) of step `index`. Flow matching: the scheduler's own σ of the step (FLUX.1 hands its
        transformer σ, SD3 σ·1000, so the denoiser's timestep is not read); else sigma of the timestep."""
        if self.flow_matching:
            scheduler = self.pipe.scheduler
            return float(scheduler.timesteps[index]), float(scheduler.sigmas[index])
        t = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        return t, self.sigma_at(t)

    def empty_branch(self, branches) -> torch.Tensor | None:
        """ε_∅ on the with-run's latents when the push map asked for it: the extra item, or, where the with-run's
        negative does not act (before its window it is even the same run as the without-run), its negative
        branch, which is then the empty prompt's. Spatial, as [c, h, w] (FLUX.1's patches unpacked)."""
        if not self.push_map:
            return None
        empty = branches.empty.get(1)
        return self.spatial((empty if empty is not None else branches.negative[1])[None])[0]

    def sigma_at(self, timestep: float) -> float:
        """Noise level of a training timestep, interpolating log-sigma for the fractional ones Karras uses."""
        last = len(self._log_sigmas) - 1
        t = min(max(timestep, 0.0), float(last))
        low = int(math.floor(t))
        high = min(low + 1, last)
        weight = t - low
        log_sigma = (1 - weight) * self._log_sigmas[low] + weight * self._log_sigmas[high]
        return float(torch.exp(log_sigma))

    def predict_x0(self, model_input: torch.Tensor, model_output: torch.Tensor, sigma: float) -> torch.Tensor:
        """The clean sample the model predicts now. `model_input` is the denoiser's (scaled) input, which every
        diffusers DDPM-family scheduler puts in the variance-preserving form x_t = √ᾱ·x0 + √(1−ᾱ)·ε; flow
        matching's is x_t = (1 − σ)·x0 + σ·noise with the velocity v = noise − x0 predicted, so x0 = x_t − σ·v."""
        if self.prediction_type == "flow":
            return model_input - sigma * model_output
        alpha_bar = 1.0 / (1.0 + sigma * sigma)
        a, b = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        if self.prediction_type == "v_prediction":
            return a * model_input - b * model_output
        if self.prediction_type == "sample":
            return model_output
        return (model_input - b * model_output) / a
