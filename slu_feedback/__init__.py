"""slu_feedback: joint intent detection and slot filling with an output-level feedback loop."""

__version__ = "0.1.0"
