"""charlm: recurrent language models (RNN, GRU, LSTM), from the book's equations to a tool."""

from .batches import BatchStream, random_batches, sequential_batches
from .corpora import CORPORA, CorpusError
from .dataset import Splits, load_corpus, load_splits
from .models import RNNLM, ModelConfig, detach_state
from .text import clean_lines, tokenize
from .vocab import Vocab

__version__ = "0.1.0"
__all__ = ["CORPORA", "BatchStream", "CorpusError", "ModelConfig", "RNNLM", "Splits", "Vocab",
           "clean_lines", "detach_state", "load_corpus", "load_splits", "random_batches",
           "sequential_batches", "tokenize"]
