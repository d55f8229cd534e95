"""Every benchmark: ``measure`` (speed, memory, reconstruction quality, training curve; ``write_table``),
``codec`` (against classic codecs), ``classify`` (few-label classification tasks), ``generate`` (generated
against real clips). The names of ``measure`` and ``codec`` are here too."""

from audiovae.bench.codec import (
    BAND_FLOOR_DB,
    CODEC_TARGETS,
    OURS_KBPS,
    band_error_db,
    codec_benchmark,
    codec_conditions,
    codec_targets,
    fullband_benchmark,
    plot_rate_quality,
    summarize_codec,
)
from audiovae.bench.measure import (
    codec_speed,
    demo_speech,
    memory,
    quality,
    run_measured,
    speed,
    summarize,
    training_curve,
    training_throughput,
    write_table,
)

__all__ = [
    "BAND_FLOOR_DB", "CODEC_TARGETS", "OURS_KBPS", "band_error_db", "codec_benchmark", "codec_conditions",
    "codec_speed", "codec_targets", "demo_speech",
    "fullband_benchmark", "memory", "plot_rate_quality", "quality", "run_measured", "speed", "summarize",
    "summarize_codec",
    "training_curve", "training_throughput", "write_table",
]
