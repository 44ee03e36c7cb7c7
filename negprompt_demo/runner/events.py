"""The typed events a run sends to its front end, and its errors as plain text (`Failed`), which survive the trip
from a ZeroGPU worker process: every value here is picklable and holds no pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from negprompt_demo.models.loading import ModelLoadError
from negprompt_demo.sampling.engine import Comparison, GenerationCancelled, NonFiniteError
from negprompt_demo.sampling.many_seeds import SeedGrid
from negprompt_demo.sampling.sweep import Sweep
from negprompt_demo.sampling.trace import StepRecord
from negprompt_demo.settings import CompareSettings, InputError


@dataclass
class Ready:
    settings: CompareSettings  # resolved: seed, size and the model's defaults filled in
    warnings: list[str]
    model: str


@dataclass
class Step:
    done: int
    total: int
    records: list[StepRecord]  # oldest first; a record has x0 pictures when the live view was due to show one


@dataclass
class Done:
    comparison: Comparison


@dataclass
class SweepDone:
    sweep: Sweep


@dataclass
class SeedRows:
    seeds: list[int]
    images: dict  # column → one image per seed of `seeds`


@dataclass
class SeedsDone:
    grid: SeedGrid  # every image; on the device side only its timing (`stream` fills in the rows it was sent)


Event = Ready | Step | Done | SweepDone | SeedRows | SeedsDone


class DeviceError(RuntimeError):
    """An unexpected error in the sampling function, by the name of its original class."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


@dataclass
class Failed:
    """An error inside the device function, as plain text so it survives the trip from a ZeroGPU worker."""

    error_type: str
    message: str

    @classmethod
    def of(cls, error: BaseException) -> Failed:
        return cls(type(error).__name__, str(error))

    def exception(self) -> Exception:
        """The error again, as the class the page knows how to word (unknown ones keep their name)."""
        known = {cls.__name__: cls for cls in (InputError, ModelLoadError, NonFiniteError, GenerationCancelled)}
        if self.error_type in known:
            return known[self.error_type](self.message)
        return DeviceError(self.error_type, self.message)
