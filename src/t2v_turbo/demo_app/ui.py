"""The Gradio page: a "Generate" tab and a "Compare" tab over `DemoHandlers`. Gradio is imported
only here and only when called (the optional `[demo]` extra)."""

from __future__ import annotations

import os

from ..errors import InputError
from .handlers import GUIDANCE_RANGE, MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS, MIN_STEPS, DemoHandlers

DEFAULT_HOST = "127.0.0.1"
EXAMPLES = ["a red digit 3 moving left", "a blue digit 7 moving up", "a green digit 0 moving right"]
# keep tiny videos crisp when the browser scales them further
CSS = "video { image-rendering: pixelated; } #status, #compare-status { min-height: 1.5em; }"


def require_gradio():
    """Import gradio, or fail with a one-line install hint (the CLI prints it and exits 2)."""
    # a local demo reports nothing to third parties (gradio's usage analytics / version check)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as e:
        raise InputError(
            "the web demo needs Gradio, an optional extra: pip install -e '.[demo]' (from the repository; or: pip install gradio)"
        ) from e
    return gr


def build_ui(handlers: DemoHandlers, title: str = "T2V-Turbo demo"):
    """The page (a `gr.Blocks`, not yet launched); each button calls one `DemoHandlers` method."""
    gr = require_gradio()
    names = handlers.model_names
    default = "turbo" if "turbo" in names else names[0]

    def on_generate(prompt, steps, guidance, seed, model):
        try:
            res, status = handlers.generate(prompt, steps, guidance, seed, model)
        except InputError as e:
            raise gr.Error(str(e)) from None
        return str(res.path), str(res.path), status

    def on_compare(prompt, guidance, seed):
        try:
            a, b, status = handlers.compare(prompt, guidance, seed)
        except InputError as e:
            raise gr.Error(str(e)) from None
        return str(a.path), a.summary(), str(b.path), b.summary(), status

    guidance_help = "w embedded by a student (T2V-Turbo convention); a teacher runs CFG with scale 1 + w"
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\nFew-step text-to-video by consistency distillation with reward feedback. "
            "Small videos are shown enlarged (nearest neighbour, integer factor)."
        )
        with gr.Tab("Generate", id="generate-tab"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(
                        label=f"Prompt (at most {MAX_PROMPT_CHARS} characters)",
                        placeholder=EXAMPLES[0],
                        lines=2,
                        elem_id="prompt",
                    )
                    model = gr.Dropdown(names, value=default, label="Model", elem_id="model")
                    steps = gr.Slider(MIN_STEPS, MAX_STEPS, value=4, step=1, label="Steps", elem_id="steps")
                    guidance = gr.Slider(
                        *GUIDANCE_RANGE, value=7.5, step=0.5, label="Guidance", info=guidance_help
                    )
                    seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                    gr.Examples([[e] for e in EXAMPLES], inputs=[prompt], label="Examples")
                with gr.Column():
                    video = gr.Video(
                        label="Video", autoplay=True, loop=True, interactive=False, elem_id="video"
                    )
                    download = gr.File(label="Download (mp4)", interactive=False, elem_id="download")
                    status = gr.Markdown(elem_id="status")
        with gr.Tab("Compare", id="compare-tab"):
            teacher, student = handlers.compare_models
            t_steps, s_steps = handlers.compare_steps
            gr.Markdown(
                f"The same prompt and seed through the teacher (`{teacher}`, {t_steps} DDIM steps with CFG) "
                f"and T2V-Turbo (`{student}`, {s_steps} consistency steps), with wall-clock times."
                + (
                    ""
                    if handlers.can_compare
                    else f"\n\n**Unavailable:** start the demo with both `{teacher}` and `{student}`."
                )
            )
            with gr.Row():
                c_prompt = gr.Textbox(
                    label="Prompt", placeholder=EXAMPLES[0], scale=3, elem_id="compare-prompt"
                )
                c_guidance = gr.Slider(
                    *GUIDANCE_RANGE, value=7.5, step=0.5, label="Guidance", info=guidance_help
                )
                c_seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
            c_button = gr.Button(
                "Compare", variant="primary", elem_id="compare", interactive=handlers.can_compare
            )
            with gr.Row():
                with gr.Column():
                    a_video = gr.Video(
                        label=f"Teacher, {t_steps} steps",
                        autoplay=True,
                        loop=True,
                        interactive=False,
                        elem_id="teacher-video",
                    )
                    a_time = gr.Markdown(elem_id="teacher-time")
                with gr.Column():
                    b_video = gr.Video(
                        label=f"T2V-Turbo, {s_steps} steps",
                        autoplay=True,
                        loop=True,
                        interactive=False,
                        elem_id="turbo-video",
                    )
                    b_time = gr.Markdown(elem_id="turbo-time")
            c_status = gr.Markdown(elem_id="compare-status")

        # the queue runs events in worker threads; DemoHandlers holds one lock per model, so at most
        # one request uses a model at a time, while different models may run side by side
        gen_inputs = [prompt, steps, guidance, seed, model]
        button.click(
            on_generate,
            gen_inputs,
            [video, download, status],
            concurrency_limit=len(names),
            concurrency_id="generate",
            api_name="generate",
        )
        prompt.submit(
            on_generate,
            gen_inputs,
            [video, download, status],
            concurrency_limit=len(names),
            concurrency_id="generate",
            api_visibility="undocumented",
        )
        c_button.click(
            on_compare,
            [c_prompt, c_guidance, c_seed],
            [a_video, a_time, b_video, b_time, c_status],
            concurrency_limit=1,
            api_name="compare",
        )
    demo.queue(max_size=32)
    return demo


def launch(
    demo, handlers: DemoHandlers, host: str = DEFAULT_HOST, port: int | None = None, block: bool = True
):
    """Serve the page. block=False returns at once (call `demo.close()` to stop). Returns the URL."""
    gr = require_gradio()
    theme = gr.themes.Default(  # system fonts: the page fetches nothing from outside
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        share=False,
        show_error=True,
        quiet=not block,
        ssr_mode=False,
        allowed_paths=[str(handlers.out_dir)],
        theme=theme,
        css=CSS,
    )
    return url
