"""bertops: pretrain BERT from scratch and fine-tune it on many tasks, as one reproducible pipeline."""

__version__ = "0.1.0"
