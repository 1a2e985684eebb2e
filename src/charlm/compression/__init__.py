"""Lossless compression with a language model: ``charlm compress`` / ``decompress`` (issue 8).

    archive = charlm.compress(data)                      # online: a byte model learns while coding
    archive = charlm.compress(data, model="runs/x")      # pretrained: a character run, adapting
    assert charlm.decompress(archive, model=...) == data
"""

from .codec import CompressSettings, compress, decompress, lane_spans, model_digest
from .container import ArchiveError

__all__ = ["ArchiveError", "CompressSettings", "compress", "decompress", "lane_spans", "model_digest"]
