"""The demo's Python side, free of any web framework: validate the form, generate, write mp4 files.

`DemoHandlers.generate` and `DemoHandlers.compare` are what the web page's buttons call; they raise
`InputError` for bad input (the UI turns it into a visible error) and return paths of H.264 mp4 files
upscaled with nearest neighbour so tiny (32x32) videos are visible.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..models.base import Backbone
from ..pipeline import generate, safe_filename
from ..video_io import write_video

MAX_PROMPT_CHARS = 300
MIN_STEPS, MAX_STEPS = 1, 8
GUIDANCE_RANGE = (0.0, 30.0)
MAX_SEED = 2**31 - 1
DISPLAY_SIZE = 256  # shown videos are upscaled by an integer factor to about this many pixels

ModelSource = Backbone | Callable[[], Backbone]


def display_upscale(height: int, width: int, target: int = DISPLAY_SIZE) -> int:
    """Integer nearest-neighbour factor that brings the larger side to about `target` (>= 1)."""
    return max(1, target // max(height, width))


@dataclass
class Result:
    """One generated video: the mp4 file and what it cost."""

    path: Path
    model: str
    steps: int
    seconds: float  # wall-clock: text encoding + sampling + VAE decode (not the mp4 write)
    unet_evals: int
    sampler: str  # "consistency" (student), "ddim-cfg" or "euler-cfg" (a flow teacher, Wan)
    guidance: float  # what the sampler used: the embedded w, or the teacher's CFG scale

    def summary(self) -> str:
        g = f"w={self.guidance:g}" if self.sampler == "consistency" else f"CFG {self.guidance:g}"
        steps = f"{self.steps} step{'s' if self.steps != 1 else ''}"
        return f"{self.model}: {steps} ({g}), {self.unet_evals} UNet evals, {self.seconds:.2f} s"


class DemoHandlers:
    """Holds the models and one lock per model, so concurrent requests never share a model.

    Args:
        models: name -> a loaded Backbone or a zero-argument loader (called once, on first use).
        out_dir: where mp4 files go (a fresh temporary folder by default).
        compare_models: (teacher, student) names the compare view runs.
        compare_steps: (teacher steps, student steps) of the compare view; the paper's 50 vs 4.
        display_size: videos are upscaled by an integer factor to about this many pixels.
        fps: playback rate (default: each model's native fps).
        keep_files: generated files kept in `out_dir`; older ones are deleted as new ones arrive.
    """

    def __init__(
        self,
        models: Mapping[str, ModelSource],
        out_dir: str | Path | None = None,
        compare_models: tuple[str, str] = ("teacher", "turbo"),
        compare_steps: tuple[int, int] = (50, 4),
        display_size: int = DISPLAY_SIZE,
        fps: int | None = None,
        keep_files: int = 64,
    ):
        if not models:
            raise InputError("the demo needs at least one model")
        self._sources = dict(models)
        self._loaded: dict[str, Backbone] = {}
        self._locks = {name: threading.Lock() for name in self._sources}
        self._load_lock = threading.Lock()
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="t2v-turbo-demo-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.keep_files = keep_files
        self.compare_models = compare_models
        self.compare_steps = compare_steps
        self.display_size = display_size
        self.fps = fps

    def prune(self) -> int:
        """Delete all but the newest `keep_files` generated videos (and their folders); returns how many went."""
        import shutil

        folders = sorted(
            (d for d in self.out_dir.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True
        )
        old = folders[self.keep_files :]
        for d in old:
            shutil.rmtree(d, ignore_errors=True)
        return len(old)

    # ------------------------------------------------------------------ models
    @property
    def model_names(self) -> list[str]:
        return list(self._sources)

    @property
    def can_compare(self) -> bool:
        return all(name in self._sources for name in self.compare_models)

    def model(self, name: str) -> Backbone:
        """The model called `name`, loading it on first use."""
        if name not in self._sources:
            raise InputError(f"unknown model {name!r}; choose one of {self.model_names}")
        with self._load_lock:
            if name not in self._loaded:
                src = self._sources[name]
                self._loaded[name] = src if isinstance(src, Backbone) else src()
            return self._loaded[name]

    # ------------------------------------------------------------------ validation
    @staticmethod
    def check_prompt(prompt: str | None) -> str:
        prompt = (prompt or "").strip()
        if not prompt:
            raise InputError("please enter a prompt (it is empty)")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InputError(f"the prompt is too long: {len(prompt)} characters (at most {MAX_PROMPT_CHARS})")
        return prompt

    @staticmethod
    def check_number(value, name: str, lo: float, hi: float, integer: bool = False) -> float | int:
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be a number, got {value!r}") from None
        if not math.isfinite(x) or not lo <= x <= hi:
            raise InputError(f"{name} must be between {lo:g} and {hi:g}, got {value!r}")
        if integer:
            if x != int(x):
                raise InputError(f"{name} must be a whole number, got {value!r}")
            return int(x)
        return x

    # ------------------------------------------------------------------ work
    def _run(self, name: str, prompt: str, steps: int, w: float, seed: int) -> Result:
        model = self.model(name)
        # the form's value is the student's w (T2V-Turbo convention); a teacher runs CFG at the scale
        # 1 + w, the one every command uses for the same w (pipeline.teacher_cfg_scale)
        with self._locks[name]:  # one request per model at a time
            t0 = time.perf_counter()
            gen = generate(model, [prompt], num_steps=steps, w=w, seed=seed)
            seconds = time.perf_counter() - t0
        guidance = gen.settings["w"] if gen.settings["w"] is not None else gen.settings["cfg_scale"]
        video = gen.videos[0]  # (3, T, H, W) in [-1, 1]
        factor = display_upscale(video.shape[-2], video.shape[-1], self.display_size)
        stem = f"{safe_filename(prompt, 80)}-{safe_filename(name, 40)}-{steps}steps-seed{seed}"
        path = self.out_dir / uuid.uuid4().hex[:8] / f"{stem.replace(' ', '_')}.mp4"
        write_video(path, video, fps=self.fps or model.native_fps, upscale=factor)
        self.prune()
        return Result(path, name, steps, seconds, gen.unet_evals, gen.settings["sampler"], guidance)

    def generate(self, prompt: str, steps, guidance, seed, model: str) -> tuple[Result, str]:
        """The "Generate" button: one video -> (result, status line)."""
        prompt = self.check_prompt(prompt)
        steps = self.check_number(steps, "steps", MIN_STEPS, MAX_STEPS, integer=True)
        guidance = self.check_number(guidance, "guidance", *GUIDANCE_RANGE)
        seed = self.check_number(seed, "seed", 0, MAX_SEED, integer=True)
        res = self._run(model, prompt, steps, guidance, seed)
        return res, f"Done: {res.summary()} (seed {seed})."

    def compare(self, prompt: str, guidance, seed) -> tuple[Result, Result, str]:
        """The compare view: the same prompt and seed through the teacher and T2V-Turbo.

        Returns (teacher result, student result, status line with both wall-clock times).
        """
        if not self.can_compare:
            missing = [n for n in self.compare_models if n not in self._sources]
            raise InputError(
                f"the compare view needs the models {missing}, which this demo was not started with"
            )
        prompt = self.check_prompt(prompt)
        guidance = self.check_number(guidance, "guidance", *GUIDANCE_RANGE)
        seed = self.check_number(seed, "seed", 0, MAX_SEED, integer=True)
        (teacher, student), (t_steps, s_steps) = self.compare_models, self.compare_steps
        a = self._run(teacher, prompt, t_steps, guidance, seed)
        b = self._run(student, prompt, s_steps, guidance, seed)
        speedup = a.seconds / b.seconds if b.seconds > 0 else float("inf")
        return a, b, f"{a.summary()} | {b.summary()} | {speedup:.1f}x faster"
