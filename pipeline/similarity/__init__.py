"""Similarity: how far the data are from ImageNet or another data set, layer by layer, how well each
layer transfers, and advice drawn from both (no torch here).

::

    from pipeline.similarity import similarity_table, advise_cache
    table = similarity_table("cache/br35h-....h5")                 # against ImageNet (needs --bn-stats)
    table = similarity_table("cache/a.h5", reference="cache/b.h5")  # against another data set
    advice = advise_cache("cache/br35h-....h5", "cache/br35h-....probes.json")
    print(advice.text())
"""

from .advice import Advice, Curve, Finding, advise, advise_cache, curves_from_table, probe_comparisons
from .gaussian import channel_moments, mean_shift_channels, sym_kl_channels, w2_channels
from .registry import KINDS, MEASURES, Measure, get_measure, measure_names, register_measure
from .samples import domain_auc, frechet, frechet_rel, mmd, mmd2_unbiased
from .tables import IMAGENET, LayerRow, SimilarityTable, assign_bn, bn_table, similarity_table
from .transfer import hscore, leep, logme

__all__ = [
    "IMAGENET",
    "KINDS",
    "MEASURES",
    "Advice",
    "Curve",
    "Finding",
    "LayerRow",
    "Measure",
    "SimilarityTable",
    "advise",
    "advise_cache",
    "assign_bn",
    "bn_table",
    "channel_moments",
    "curves_from_table",
    "domain_auc",
    "frechet",
    "frechet_rel",
    "get_measure",
    "hscore",
    "leep",
    "logme",
    "mean_shift_channels",
    "measure_names",
    "mmd",
    "mmd2_unbiased",
    "probe_comparisons",
    "register_measure",
    "similarity_table",
    "sym_kl_channels",
    "w2_channels",
]
