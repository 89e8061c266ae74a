"""DOLLAR: few-step video generation via distillation and latent reward optimisation."""

__all__ = ["DollarPipeline", "DollarPipelineOutput"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``from dollar import DollarPipeline`` loads the pipeline (and torch, diffusers) on first use,
    so light modules such as ``dollar.ranking`` import without them."""
    if name in __all__:
        from dollar import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'dollar' has no attribute {name!r}")
