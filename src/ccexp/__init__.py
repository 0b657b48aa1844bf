"""ccexp: fine-tune and evaluate small language models for contact-center analytics."""

__version__ = "0.1.0"
