"""The model families this demo runs, one adapter class each: what differs between SD 1.x/2.x, SDXL, SD3/SD3.5 and
FLUX.1, in one place, so the rest of the code asks a family what it does instead of comparing its name.

    family = family_of(pipe)
    family.denoiser(pipe), family.native_size(pipe), family.defaults(pipe)    the network, size and settings
    family.guided(pipe, guidance), family.guidance_arguments(guidance)      whether a negative branch exists
    family.scheduler(pipe, name, config)                                    the sampler a run uses
    family.flow_matching, .true_cfg, .two_clips, .joint_attention …         what the engine, hooks and NAG read

Adding a family (PixArt, a distilled model) means a subclass here and its encoding where `flow_models.py` or
`prompts.py` reads its text.
"""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FluxPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UniPCMultistepScheduler,
)

from negprompt_demo.settings import NAG_DEFAULTS, SCHEDULER_NAMES

# The DDPM-family samplers users pick from (settings.SCHEDULER_NAMES); both runs of a comparison use the same one.
SCHEDULERS: dict[str, tuple[type, dict]] = {
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "DDIM": (DDIMScheduler, {}),
    "UniPC": (UniPCMultistepScheduler, {}),
}
assert tuple(SCHEDULERS) == SCHEDULER_NAMES
# The flow-matching families always sample with their own FlowMatchEulerDiscreteScheduler, an Euler sampler.
FLOW_MATCHING_SCHEDULER = "Euler"
# FLUX.1-dev's distilled guidance (diffusers' and Black Forest Labs' default); the guidance setting is true CFG's.
FLUX_DISTILLED_GUIDANCE = 3.5


class StableDiffusion:
    """SD 1.x/2.x: a UNet with cross-attention to one CLIP encoder's 77-token chunks; classifier-free guidance as
    one batched call of [negative, text] per step; any DDPM-family scheduler."""

    key = "sd"  # the family's row in tables kept by name inside models/ (previews' latent colours)
    title = "SD 1.x/2.x"
    pipeline_class: type = StableDiffusionPipeline
    flow_matching = False  # x_t = (1 − σ)·x0 + σ·noise, v = noise − x0; own scheduler; text read as written
    true_cfg = False  # the guidance setting is FLUX.1's true CFG: two denoiser calls per step, a distilled run
    two_clips = False  # SDXL: two CLIP encoders read the text; a pooled vector from the first chunk
    joint_attention = False  # text and image attend jointly in a transformer (no cross-attention to map)
    text_first = False  # joint attention's sequence order: [text ; image] (FLUX.1) or [image ; text] (SD3)
    nag_norm = 1  # the norm NAG's authors use to compare the guided and the positive attention output
    nag_pooled_from_negative = False  # NAG's negative call takes the negative's pooled vector (FLUX.1)
    # Default steps, guidance and scheduler (a model folder's negprompt_defaults.json overrides them).
    settings_defaults = {"steps": 25, "guidance": 7.5, "scheduler": "Euler"}
    note = ""  # what a user must know about the family before comparing (the end of the page's model note)

    def denoiser(self, pipe):
        """The network called at every step."""
        return pipe.unet

    def native_size(self, pipe) -> int:
        """The resolution the model was trained at, in pixels: the denoiser's sample size × the VAE's factor."""
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)

    def defaults(self, pipe) -> dict:
        """Default steps/guidance/scheduler and NAG's inputs for this family (before a model folder's own)."""
        return NAG_DEFAULTS | self.settings_defaults

    def guided(self, pipe, guidance: float) -> bool:
        """Whether the call has a negative branch at all: guidance above 1, and not an LCM-style UNet with
        guidance built into its timestep embedding."""
        return guidance > 1 and pipe.unet.config.time_cond_proj_dim is None

    def guidance_arguments(self, guidance: float) -> dict:
        """The guidance setting as the pipeline's arguments."""
        return {"guidance_scale": guidance}

    def scheduler(self, pipe, name: str, base_config):
        """The run's scheduler (settings.SCHEDULER_NAMES), built from the model's own configuration."""
        scheduler_class, scheduler_kwargs = SCHEDULERS[name]
        return scheduler_class.from_config(base_config, **scheduler_kwargs)

    def zero_empty_negative(self, pipe) -> bool:
        """Whether a plain call with no negative prompt uses all-zero embeddings instead of the encoded ""."""
        return False


class StableDiffusionXL(StableDiffusion):
    """SDXL: as SD, with two CLIP encoders (their hidden states side by side, bigG's pooled vector added to the time
    embedding), and all-zero embeddings for an empty negative where the model says so (the base model does)."""

    key = "sdxl"
    title = "SDXL"
    pipeline_class = StableDiffusionXLPipeline
    two_clips = True
    settings_defaults = {"steps": 30, "guidance": 5.0, "scheduler": "Euler"}  # diffusers' SDXL default scale is 5

    def zero_empty_negative(self, pipe) -> bool:
        return bool(pipe.config.get("force_zeros_for_empty_prompt", False))


class StableDiffusion3(StableDiffusion):
    """SD3/SD3.5: a joint-attention transformer ([image ; text]) sampled by flow matching with its own scheduler;
    two CLIPs and T5 read the text as written (no A1111 syntax, `flow_models.py`)."""

    key = "sd3"
    title = "SD3"
    pipeline_class = StableDiffusion3Pipeline
    flow_matching = True
    joint_attention = True
    t5_tokenizer = "tokenizer_3"  # the pipeline attribute of its T5 tokenizer
    t5_tokens = 256  # the T5 tokens its pipeline reads (`max_sequence_length`'s default)
    # SD3.5 medium's model card: 40 steps, scale 4.5; NAG's α from the NAG authors' SD3 processor.
    settings_defaults = {"steps": 40, "guidance": 4.5, "scheduler": FLOW_MATCHING_SCHEDULER, "nag_alpha": 0.125}
    note = " SD3 samples with its own flow-matching Euler scheduler; the scheduler setting does not apply."

    def denoiser(self, pipe):
        return pipe.transformer

    def native_size(self, pipe) -> int:
        """The pipeline's own default size (FLUX.1 does not read one from a config)."""
        return int(pipe.default_sample_size) * int(pipe.vae_scale_factor)

    def guided(self, pipe, guidance: float) -> bool:
        return guidance > 1

    def scheduler(self, pipe, name: str, base_config):
        """Its own flow-matching scheduler, whatever the name (`flow_models.check_settings` says so)."""
        return type(pipe.scheduler).from_config(base_config)


class Flux(StableDiffusion3):
    """FLUX.1: guidance-distilled, so a negative prompt acts only through true CFG (`true_cfg_scale`, which the
    guidance setting sets: a text call and a negative call per step); a joint-attention transformer ([text ;
    image]) over 2×2-packed latents; CLIP's pooled vector and T5."""

    key = "flux"
    title = "FLUX.1"
    pipeline_class = FluxPipeline
    true_cfg = True
    text_first = True
    nag_norm = 2
    nag_pooled_from_negative = True
    t5_tokenizer = "tokenizer_2"
    t5_tokens = 512
    # 4 is diffusers' true-CFG example; FLUX.1-dev is made for 28 steps, schnell (no guidance embedding) for 4.
    # NAG's α from the NAG authors' FLUX.1 processor and pipeline.
    settings_defaults = {"steps": 28, "guidance": 4.0, "scheduler": FLOW_MATCHING_SCHEDULER, "nag_alpha": 0.25}
    note = (
        " FLUX.1 ignores a negative prompt unless true CFG is on: here the guidance scale is true CFG's scale "
        "(above 1; it doubles the sampling time). Both images use it, the first with an empty negative; FLUX.1's "
        "default image (no true CFG) comes as a third picture in the downloads. NAG (“how the negative acts”: "
        "nag) needs no true CFG."
    )

    def defaults(self, pipe) -> dict:
        defaults = super().defaults(pipe)
        if not pipe.transformer.config.guidance_embeds:  # FLUX.1-schnell
            defaults["steps"] = 4
        return defaults

    def guidance_arguments(self, guidance: float) -> dict:
        """True CFG's scale; the distilled guidance stays at its default (see engine.py's docstring)."""
        return {"true_cfg_scale": guidance, "guidance_scale": FLUX_DISTILLED_GUIDANCE}


FAMILIES = (Flux(), StableDiffusion3(), StableDiffusionXL(), StableDiffusion())  # most specific pipeline first
FAMILY_BY_PIPELINE = {family.pipeline_class.__name__: family for family in FAMILIES}  # model_index.json's _class_name


def family_of(pipe) -> StableDiffusion:
    """The adapter of the pipeline's family."""
    for family in FAMILIES:
        if isinstance(pipe, family.pipeline_class):
            return family
    raise TypeError(f"{type(pipe).__name__} is not a supported pipeline ({', '.join(FAMILY_BY_PIPELINE)}).")
