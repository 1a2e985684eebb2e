"""Lossless compression with a language model: ``charlm compress`` / ``decompress`` (issue 8).

    archive = charlm.compress(data)                      # online: a byte model learns while coding
    archive = charlm.compress(data, run="runs/x")        # pretrained: a character run, adapting
    assert charlm.decompress(archive, run=...) == data
    compress_stream(open("big.txt", "rb"), open("big.chlm", "wb"))   # a segment at a time (issue 20)
"""

from .codec import CompressSettings, lane_spans, model_digest
from .container import ArchiveError
from .streaming import compress, compress_stream, decompress, decompress_stream

__all__ = ["ArchiveError", "CompressSettings", "compress", "compress_stream", "decompress",
           "decompress_stream", "lane_spans", "model_digest"]
