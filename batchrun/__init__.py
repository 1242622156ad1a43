"""batchrun: turn large, messy file sets into one clean, checkpointed staging table."""

__version__ = "0.1.0"
