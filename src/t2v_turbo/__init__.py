"""t2v-turbo: few-step text-to-video by consistency distillation with mixed reward feedback."""

__version__ = "0.1.0"
