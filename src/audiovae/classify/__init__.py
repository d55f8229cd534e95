"""Classification on VAE embeddings: ``embed`` (poolings, learned heads, clips to embed), ``classifier``
(probes and their files), ``fewlabel`` (few-label evaluation, ``suggest``). Their public names are here too."""

from audiovae.classify.classifier import (
    ESTIMATORS,
    HEAD_FILE,
    Classifier,
    check_classes,
    check_estimators,
    evaluate,
    fit,
    plot_confusion,
    probe_search,
)
from audiovae.classify.embed import (
    DEFAULT_POOLING,
    FEATURE_KINDS,
    LEARNED,
    MAX_WINDOW_S,
    MEANS,
    PARENT_DIR,
    POOLINGS,
    ClassifyError,
    Item,
    balanced_subset,
    best_pooling,
    check_pooling,
    embed,
    embed_items,
    embed_items_multi,
    embed_many,
    embedding_dim,
    features,
    head_embedding,
    labelled_items,
    learned_embedder,
    manifest_items,
    mfcc_features,
    model_meta,
    model_poolings,
    posterior,
    posterior_frames,
)
from audiovae.classify.fewlabel import DRAWS, SEMI_METHODS, SUGGESTED, few_label_eval, suggest

__all__ = [
    "DEFAULT_POOLING", "DRAWS", "ESTIMATORS", "FEATURE_KINDS", "HEAD_FILE", "LEARNED", "MAX_WINDOW_S", "MEANS",
    "PARENT_DIR", "POOLINGS", "SEMI_METHODS", "SUGGESTED", "Classifier", "ClassifyError", "Item", "balanced_subset",
    "best_pooling", "check_classes", "check_estimators", "check_pooling", "embed", "embed_items",
    "embed_items_multi", "embed_many", "embedding_dim", "evaluate", "features", "few_label_eval", "fit",
    "head_embedding", "labelled_items", "learned_embedder", "manifest_items", "mfcc_features", "model_meta",
    "model_poolings", "plot_confusion", "posterior", "posterior_frames", "probe_search", "suggest",
]
