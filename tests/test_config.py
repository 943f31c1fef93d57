"""Config resolution: profiles, --set overrides, and errors that name the field and the allowed values."""
from __future__ import annotations

import re

import pytest

from vadcore.config import resolve_config
from vadcore.errors import ConfigError


def test_profile_and_overrides_resolve_in_order():
    cfg = resolve_config("ped2", "paper")
    assert (cfg.data.height, cfg.data.width, cfg.itae.spatial_strides, cfg.flow.glow.levels) == (240, 360, (2, 2, 1, 1), 1)
    assert (cfg.itae_train.batch_size, cfg.itae_train.lr, cfg.flow.train.batch_size) == (2, 1e-3, 20)
    cfg = resolve_config("ped2", "smoke", ["score.lambda_L=0.5", "itae.spatial_strides=[2, 2, 2, 1]"])
    assert cfg.score.lambda_L == 0.5 and cfg.itae.spatial_strides == (2, 2, 2, 1)


@pytest.mark.parametrize(
    "sets, message",
    [
        (["itae.tua=2"], r"unknown field itae\.tua; allowed fields of itae: frames, tau"),
        (["itae.tau=two"], r"itae\.tau='two' must be int"),
        (["itae.tau=3"], r"itae\.tau=3 must divide itae\.frames=16"),
        (["flow.glow.levels=4"], r"flow\.glow\.levels=4 too deep"),
        (["flow.extra_input='rgb'"], r"flow\.extra_input='rgb' is not allowed; allowed: 'none', 'intensity', 'error_map'"),
        (["itae.paths='app'"], r"flow\.mot=true needs itae\.paths='app\+mot'"),
        (["score.lambda_local=1", "flow.prior.kind='hgad'"], r"score\.lambda_local=1\.0 needs flow\.prior\.kind='gaussian'"),
        (["score.local_patch=9"], r"score\.local_patch=9 must fit the flows' 8x12 NLL map"),
        (["lambda"], r"--set 'lambda' must look like key=value"),
        (["itae=3", "itae.tau=2"], r"itae=3 and itae\.FIELD=\.\.\. both set: itae is either a value or a section"),
        (["itae.tau=2", "itae=3"], r"itae=3 and itae\.FIELD=\.\.\. both set"),
        (["flow.glow=1", "flow.glow.steps=2"], r"flow\.glow=1 and flow\.glow\.FIELD=\.\.\. both set"),
        (["itae=3"], r"itae=3: itae is a section, set its fields as itae\.FIELD=\.\.\.; fields: frames, tau"),
        (["data.loader_workers=-2"], r"data\.loader_workers=-2 must be >= 0"),
        (["itae.width=inf"], r"itae\.width=inf must be a finite number"),
        (["flow.prior.lambda1=nan"], r"flow\.prior\.lambda1=nan must be a finite number"),
        (["seed=-1"], r"seed=-1 must be in \[0, 2\*\*32\)"),
    ],
)
def test_bad_overrides_name_the_field(sets, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("ped2", "smoke", sets)


@pytest.mark.parametrize("section", ["itae_train", "flow.train"])
@pytest.mark.parametrize(
    "override, message",
    [
        ("lr=inf", r"lr=inf must be a finite number"),
        ("lr=nan", r"lr=nan must be a finite number"),
        ("lr=0", r"lr=0\.0 must be > 0"),
        ("min_lr=0.5", r"min_lr=0\.5 must be <= .*lr="),
        ("max_steps=-3", r"max_steps=-3 must be >= 0"),
        ("grad_clip=-1", r"grad_clip=-1\.0 must be >= 0"),
        ("weight_decay=-1e-4", r"weight_decay=-0\.0001 must be >= 0"),
        ("epochs=0", r"epochs=0 must be >= 1"),
    ],
)
def test_training_sections_reject_values_out_of_range(section, override, message):
    with pytest.raises(ConfigError, match=rf"^{re.escape(section)}\.{message}"):
        resolve_config("ped2", "smoke", [f"{section}.{override}"])


@pytest.mark.parametrize(
    "sets, message",
    [
        (["itae_train.crop=[64]"], r"itae_train\.crop=\[64\] must be \[\] \(whole inputs\) or \[height, width\]"),
        (["flow.train.crop=[0, 4]"], r"flow\.train\.crop=\[0, 4\] must be"),
        (["itae_train.crop=[72, 32]"], r"itae_train\.crop=\[72, 32\] must fit the 64x96 frames"),
        (["itae_train.crop=[30, 32]"], r"frame size 30x32 must be divisible by 4"),
        (["flow.train.crop=[18, 4]"], r"flow\.train\.crop=\[18, 4\] must fit the flows' 16x24 latent maps"),
        (["flow.train.crop=[3, 4]"], r"latent 3x4 must be divisible by 2\*\*L=2"),
        (["flow.train.crop=[4, 4]", "flow.prior.kind='hgad'"], r"flow\.train\.crop=\[4, 4\] needs a prior over positions"),
    ],
)
def test_crops_must_fit_and_pass_the_strides(sets, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("ped2", "smoke", sets)
    assert resolve_config("ped2", "smoke", ["itae_train.crop=[32, 48]", "flow.train.crop=[8, 12]"]).itae_train.crop == (32, 48)


def test_unknown_profile_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="unknown profile 'fast'; allowed: smoke, laptop, paper"):
        resolve_config("ped2", "fast")


def test_every_profile_validates_for_every_benchmark():
    for profile in ("smoke", "laptop", "paper"):
        for bench in ("synthetic", "ped2", "avenue", "shanghaitech"):
            resolve_config(bench, profile)


def test_dev_split_only_where_the_benchmark_has_one(monkeypatch):
    from vadcore.data.ped2 import Ped2

    for bench in ("synthetic", "ped2", "avenue", "shanghaitech"):  # real ones: vadcore.data.devsplit
        assert resolve_config(bench, "smoke", ["data.dev=true"]).data.dev
    monkeypatch.setattr(Ped2, "has_dev", False)
    with pytest.raises(ConfigError, match=r"data.dev=true: benchmark 'ped2' has no development split yet.*; benchmarks with one: synthetic, avenue, shanghaitech"):
        resolve_config("ped2", "smoke", ["data.dev=true"])
