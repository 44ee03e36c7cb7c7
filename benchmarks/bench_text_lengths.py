"""What reading texts of different chunk counts at their own length costs (A1111's default, pad_cond_uncond off):
a 2-chunk negative with a 1-chunk prompt, the step's UNet call split in two (one per length) vs padded into one
(A1111's pad_cond_uncond option), on the embedded model. Texts of one length are not split: no cost there.

    python -m benchmarks.bench_text_lengths
"""

from __future__ import annotations

from unittest import mock

from benchmarks.common import PROMPT, SEED, median, spread, time_interleaved
from negprompt_demo.models import scheduled_text
from negprompt_demo.models.loading import load_pipeline
from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import CompareSettings

LONG_NEGATIVE = ", ".join(["blurry, lowres, bad hands, mustache, hat"] * 10)  # 2 chunks


def main(repeats: int = 5) -> None:
    pipe = load_pipeline()
    settings = CompareSettings(PROMPT, LONG_NEGATIVE, seed=SEED, steps=20, push_map=False)

    def padded():
        with mock.patch.object(scheduled_text, "text_lengths", lambda *args, **kwargs: None):
            return compare(pipe, settings, trace=False)

    times = time_interleaved({"own lengths": lambda: compare(pipe, settings, trace=False), "padded": padded}, repeats)
    for name, values in times.items():
        print(f"{name:12s} {median(values):.3f} s  ({spread(values)})")
    print(f"own lengths / padded: {median(times['own lengths']) / median(times['padded']):.2f}×")


if __name__ == "__main__":
    main()
