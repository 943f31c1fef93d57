"""Where a trained ITAE's reconstruction error falls: for one window of each video of a scored split, the input
frame, its reconstruction and Eq. 7's per-pixel error, side by side, from a finished trial's cached stages. Why:
an AUC says how well R ranks frames, not what R looks at (what the sheets showed on Ped2: README, Real data).

    python -m vadcore errmaps results/laptop-levers/trials/recipe-ped2-s0 --out runs/errmaps-recipe.png

Each row is one video: the window centred on the middle of its anomalous frames (the video's middle when it has
none), its middle frame. Errors share one grey scale per sheet (white = the sheet's 99.5th percentile, written in
the first caption), so rows compare. The default split is the development split; looking at test frames beside
their labels is for figures, not for choosing settings.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vadcore.config import TrialConfig
from vadcore.configtools import from_dict
from vadcore.errors import ConfigError

CAPTION = 12  # pixels of caption above each row
WHITE = 99.5  # percentile of the sheet's errors drawn white


def centre_start(labels: np.ndarray, frames: int) -> int:
    """First frame of the window of `frames` centred on the middle of the anomalous frames of a video with these
    per-frame labels (on the video's middle if none), clipped to the video."""
    ones = np.flatnonzero(labels)
    middle = (ones[0] + ones[-1]) // 2 if len(ones) else len(labels) // 2
    return int(min(max(middle - frames // 2, 0), max(len(labels) - frames, 0)))


def _stage_folders(trial_dir: Path, cache_root: Path, split: str) -> tuple[TrialConfig, Path, Path]:
    """(config, ITAE stage folder, shard folder of `split`) of a finished trial, checked to exist."""
    record_path = trial_dir / "trial.json"
    if not record_path.is_file():
        raise ConfigError(f"{trial_dir}: no trial.json; give the folder of a finished trial (results/<sweep>/trials/<id>)")
    record = json.loads(record_path.read_text())
    cfg = from_dict(TrialConfig, record["config"], source=str(record_path))
    shards = f"shards_{split}"
    if shards not in record["stages"]:
        have = [k.removeprefix("shards_") for k in record["stages"] if k.startswith("shards_") and k != "shards_train"]
        hint = f"; it scored {' and '.join(have)}: pass --split {have[-1]}" if have else ""
        raise ConfigError(f"{record_path}: the trial has no {split} split{hint}" + (" (a trial scores the dev split with data.dev=true)" if split == "dev" else ""))
    itae = cache_root / "stages/itae" / record["stages"]["itae"]["key"]
    folder = cache_root / "shards" / cfg.data.benchmark / record["stages"][shards]["key"]
    for path in (itae / "itae.pt", folder / "manifest.json"):
        if not path.is_file():
            raise ConfigError(f"{path} is missing from the cache {cache_root}: run the trial again (its command is in "
                              f"{trial_dir / 'plan.json'}) to rebuild its stages, or pass the --cache it ran with")
    return cfg, itae, folder


def error_rows(trial_dir: Path, cache_root: Path, split: str = "dev", videos: list[str] | None = None
               ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """[(caption, input (H, W), reconstruction (H, W), Eq. 7 error (H, W))], one per video, channels averaged,
    intensities in [0, 1]. `videos` None: every video of the split, in id order."""
    from vadcore.data.loader import load_manifest
    from vadcore.steps.itae import load_itae, run_itae
    from vadcore.steps.windows import clip_to_float, window_loader
    from vadcore.scoring import error_map, recon_error

    cfg, itae_folder, folder = _stage_folders(trial_dir, cache_root, split)
    known = sorted(load_manifest(folder)["per_video"])
    unknown = sorted(set(videos or ()) - set(known))
    if unknown:
        raise ConfigError(f"video(s) {', '.join(unknown)} are not in the {split} split of {trial_dir.name} "
                          f"({len(known)} videos: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''})")
    itae = load_itae(cfg, itae_folder).to("cpu")  # a few windows: no need for an accelerator
    T, rows = cfg.itae.frames, []

    def windows(video: str):
        for b in window_loader(folder, cfg, train=False, batch=8, videos={video})[1]:
            yield from zip(b["start"].tolist(), b["clip"], b["labels"])

    for video in videos or known:
        starts, labels = [], np.zeros(0, np.uint8)  # first pass: the labels; the second keeps one clip
        for s, _, lab in windows(video):
            starts.append(s)
            labels = np.pad(labels, (0, max(0, s + T - len(labels))))
            labels[s : s + T] = lab.numpy()
        want = centre_start(labels, T)
        start = min(starts, key=lambda s: abs(s - want))
        clip = next(c for s, c, _ in windows(video) if s == start)
        with torch.no_grad():
            x = clip_to_float(clip[None], torch.device("cpu"))
            recon = run_itae(cfg, itae, x).recon.float()
            err = error_map(x, recon)[0, T // 2]
            r = float(recon_error(x, recon, cfg.score.patch, None, cfg.score.patch_stride)[0, T // 2])
        t = start + T // 2
        caption = f"{video} frame {t} label {labels[t]} R {r:.3f}"
        rows.append((caption, x[0, :, T // 2].mean(0).numpy(), recon[0, :, T // 2].mean(0).numpy(), err.numpy()))
    return rows


def sheet(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """RGB uint8 image: one captioned row per entry of `error_rows`, input | reconstruction | error; small frames
    (64x96) drawn at twice their size, native ones (240x360) at theirs."""
    from PIL import Image, ImageDraw

    white = max(float(np.percentile(np.stack([e for *_, e in rows]), WHITE)), 1e-6)
    h, w = rows[0][1].shape
    zoom = 2 if w < 200 else 1
    tile_w = w * zoom + 2
    out = Image.new("RGB", (3 * tile_w, len(rows) * (h * zoom + CAPTION)), "white")
    draw = ImageDraw.Draw(out)
    for i, (caption, *tiles) in enumerate(rows):
        top = i * (h * zoom + CAPTION)
        scaled = (tiles[0], tiles[1], np.minimum(tiles[2] / white, 1.0))
        for j, tile in enumerate(scaled):
            img = Image.fromarray((tile * 255).round().astype(np.uint8)).resize((w * zoom, h * zoom), Image.NEAREST)
            out.paste(img, (j * tile_w, top + CAPTION))
        text = caption if i else f"{caption}   (input | reconstruction | Eq. 7 error, white = {white:.3f})"
        draw.text((2, top), text, fill="red" if " label 1 " in caption else "black")
    return np.asarray(out)
