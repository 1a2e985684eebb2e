"""The data pipeline: corpora and text files, cleaning, tokens, the vocabulary, splits and batches."""
