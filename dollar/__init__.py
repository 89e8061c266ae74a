"""DOLLAR: few-step video generation via distillation and latent reward optimisation."""

from dollar.pipeline import DollarPipeline, DollarPipelineOutput

__all__ = ["DollarPipeline", "DollarPipelineOutput"]
__version__ = "0.1.0"
