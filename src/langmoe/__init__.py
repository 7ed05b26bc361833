"""langmoe: language-group Mixture-of-Experts for multilingual language models."""

__version__ = "0.1.0"
