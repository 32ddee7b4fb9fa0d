"""openrft: reinforcement fine-tuning of reasoning models from tens to hundreds of domain samples."""

__version__ = "0.1.0"
