"""``aug-attn explain`` for taggers: the waveform and its spectrogram under the attention of the back end.

The file is cut into the model's windows (no overlap, the last one ending at the end of the file)
and each window runs with :class:`~aug_attn.attention_maps.record_attention`. The attention drawn is
that of the last attention layer the model runs (its back end): MuSLCAT's [CLS] token over the time
tokens (mean over heads), or, without a class token (MuSLCAN's AAC back end, MuSLCAT with
``pool: meanmax``), the attention each time token receives (mean over heads and queries). Token ``t`` of ``N`` covers the ``t``-th ``1/N`` of its
window; windows overlapping the last one are averaged. The values are softmax weights (0-1, no unit), drawn
on their own labelled y axis over the waveform and over the spectrogram.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from aug_attn.attention_maps import record_attention
from aug_attn_tasks.audio.io import chunk_windows, load_audio, window_starts
from aug_attn_tasks.audio.predict import AudioPredictor
from aug_attn_tasks.audio.recipe import TaggingModule
from aug_attn_tasks.viz import pyplot, ranked_text, save_figure, top_classes

__all__ = ["attention_over_time", "attention_label", "explain_figure", "explain"]


def attention_over_time(module: TaggingModule, wave: np.ndarray, window: int) -> tuple[np.ndarray, torch.Tensor]:
    """Back-end attention per sample ``(L,)`` (as described in the module doc) and the clip's
    probabilities ``(T,)`` for the mono waveform ``wave (L,)``."""
    length = max(len(wave), window)
    starts = window_starts(length, window, hop=window)  # those of chunk_windows
    windows = torch.from_numpy(chunk_windows(wave, window, hop=window))  # (K, window)
    with torch.inference_mode(), record_attention(module.model) as records:
        probs, _ = module.clip_scores(windows[None])  # (1, T)
    if not records:
        raise ValueError(f"{type(module.model).__name__} has no attention layer: nothing to explain")
    # clip_scores runs the windows in batches: the back end's records of all batches, in order
    back_end = torch.cat([r.weights for r in records if r.name == records[-1].name])  # (K, h, N_q, N)
    weights = back_end.mean(dim=1)  # heads averaged
    if getattr(module.model, "cls", None) is not None:
        per_token = weights[:, 0, 1:]  # the [CLS] query over the time tokens: (K, N)
    else:
        per_token = weights.mean(dim=1)  # attention received: (K, N)
    total, count = np.zeros(length), np.zeros(length)
    for start, row in zip(starts, per_token.numpy()):
        total[start : start + window] += np.repeat(row, -(-window // len(row)))[:window]
        count[start : start + window] += 1
    return (total / np.maximum(count, 1))[: len(wave)], probs[0]


def attention_label(module: TaggingModule) -> str:
    """The y-axis label of :func:`attention_over_time`'s values for ``module``: softmax weights (0-1, no unit)."""
    if getattr(module.model, "cls", None) is not None:
        return "[CLS] attention weight\n(mean over heads)"
    return "attention received\n(mean over heads, queries)"


def explain_figure(module: TaggingModule, config: dict[str, Any], path: Path, top: int = 3) -> Any:
    """The matplotlib Figure :func:`explain` saves: ``path``'s waveform and log spectrogram (with its
    colour bar in dB), each with the back end's attention over time on a right-hand y axis labelled
    by :func:`attention_label` (shaded over the waveform, a cyan line over the spectrogram), titled
    with the top tags."""
    plt = pyplot()
    predictor = AudioPredictor(module, config)
    wave = load_audio(path, predictor.rate, predictor.limits)  # (L,)
    attention, probs = attention_over_time(module, wave, predictor.window)
    ranked = top_classes(module.tags, probs, top)
    label = attention_label(module)
    seconds = np.arange(len(wave)) / predictor.rate
    fig, (ax_wave, ax_spec) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    ax_wave.plot(seconds, wave, color="0.55", linewidth=0.6)
    ax_wave.set_ylabel("amplitude")
    ax_att = ax_wave.twinx()
    ax_att.fill_between(seconds, attention, color="tab:red", alpha=0.35, step="mid")
    ax_att.set_ylabel(label, color="tab:red", fontsize=9)
    ax_att.tick_params(axis="y", colors="tab:red")
    n_fft = min(512, 2 ** int(np.log2(max(16, len(wave) // 4))))
    spec = torch.stft(torch.from_numpy(wave), n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)
    levels = ax_spec.imshow(
        20 * np.log10(spec.abs().numpy() + 1e-6), origin="lower", aspect="auto", cmap="magma",
        extent=(0, len(wave) / predictor.rate, 0, predictor.rate / 2),
    )  # fmt: skip
    # The colour bar sits right of the attention axis's label, outside the axes, so that the two
    # panels keep one time axis.
    fig.colorbar(levels, cax=ax_spec.inset_axes((1.13, 0.0, 0.02, 1.0)), label="STFT magnitude (dB)")
    ax_spec.set_xlabel("time (s)")
    ax_spec.set_ylabel("frequency (Hz)")
    ax_line = ax_spec.twinx()  # the line's own scale: its peak at 90% of the height, as over the spectrogram before
    ax_line.plot(seconds, attention, color="cyan", linewidth=1)
    ax_line.set_ylim(0, max(float(attention.max()), 1e-12) / 0.9)
    ax_line.set_ylabel(label, color="darkcyan", fontsize=9)
    ax_line.tick_params(axis="y", colors="darkcyan")
    fig.suptitle(f"{path.name}: {ranked_text(ranked)}", fontsize=10)
    return fig


def explain(module: TaggingModule, config: dict[str, Any], path: Path, out: Path, top: int = 3) -> Path:
    """Draw ``path``'s waveform and log spectrogram with the back end's attention over time and the
    top tags into ``out`` (PNG): :func:`explain_figure`, saved."""
    return save_figure(explain_figure(module, config, path, top), out)
