"""rpo-bench: Diffusion-RPO, Diffusion-DPO and SFT for text-to-image diffusion, and the benchmark to compare them."""

__version__ = "0.1.0"
