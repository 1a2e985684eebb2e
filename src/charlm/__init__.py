"""charlm: recurrent language models (RNN, GRU, LSTM), from the book's equations to a tool.

The functions `train`, `resume`, `generate` and `evaluate` mirror the `charlm` commands of the same names.
"""

from .checkpoint import Run, load
from .compression import compress, compress_stream, decompress, decompress_stream
from .config import TrainConfig
from .data.batches import BatchStream, random_batches, sequential_batches
from .data.corpora import CORPORA, CorpusError
from .data.dataset import Splits, load_corpus, load_splits
from .data.text import clean_lines, tokenize
from .data.vocab import Vocab
from .evaluation import EvalResult, evaluate_ids
from .evaluation import evaluate_run as evaluate
from .generation import GenerateConfig, generate, stream, stream_scored
from .inspection.attribution import attribute
from .models import RNNLM, ModelConfig, detach_state
from .training.loop import TrainResult
from .training.run import resume, train

__version__ = "0.1.0"
__all__ = [
           "CORPORA",
           "RNNLM",
           "BatchStream",
           "CorpusError",
           "EvalResult",
           "GenerateConfig",
           "ModelConfig",
           "Run",
           "Splits",
           "TrainConfig",
           "TrainResult",
           "Vocab",
           "attribute",
           "clean_lines",
           "compress",
           "compress_stream",
           "decompress",
           "decompress_stream",
           "detach_state",
           "evaluate",
           "evaluate_ids",
           "generate",
           "load",
           "load_corpus",
           "load_splits",
           "random_batches",
           "sequential_batches",
           "stream",
           "stream_scored",
           "tokenize",
           "resume",
           "train",
]
