"""BoneSR training: the schedule, checkpoints that survive a kill, resume equality, export, bad configs."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bonekit.errors import BoneKitError  # noqa: E402
from bonekit.sr import train as tr  # noqa: E402
from bonekit.sr.model import load_model  # noqa: E402

TINY_G = {"arch": "pix2pixhd_local", "ngf": 4, "n_downsample": 2, "n_blocks": 1, "n_blocks_local": 1}
TINY_D = {"ndf": 8, "num_D": 2, "n_layers": 2}


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    """A smooth random texture (target) and the same seen through a Gaussian PSF (input)."""
    from scipy import ndimage

    folder = tmp_path_factory.mktemp("srdata")
    rng = np.random.default_rng(0)
    paths = []
    for name, n in (("train", 24), ("val", 8)):
        f = ndimage.gaussian_filter(rng.standard_normal((n, 32, 32)), (0, 1.5, 1.5))
        y = 800.0 + 600.0 * np.tanh(f / f.std())
        x = ndimage.gaussian_filter(y, (0, 1.5, 1.5))
        path = folder / f"{name}.npz"
        np.savez(path, inputs=x.astype(np.float32), targets=y.astype(np.float32))
        paths.append(str(path))
    return paths


def config(out, arrays, **train):
    t = {"epochs": 2, "global_epochs": 1, "fix_global_epochs": 1, "decay_epochs": 1, "batch_size": 4,
         "checkpoint_every": 2, **train}
    return {"out": str(out), "data": {"kind": "arrays", "arrays": arrays[0], "validation": [arrays[1]]},
            "model": {"generator": TINY_G, "discriminator": TINY_D}, "train": t}


class Killed(Exception):
    pass


def killer(at: str):
    """A progress callback that 'kills' the run when its message first contains ``at``."""
    def progress(fraction, message):
        if at in message:
            raise Killed(message)
    return progress


def weights(path):
    _, net = load_model(path)
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("kill_at", ["global epoch 1/1 batch 3/6",   # mid-epoch in the global phase
                                     "local epoch 1/2 batch 5/6",    # mid-epoch, enhancer-only epoch
                                     "local epoch 2/2 batch 1/6"])   # right after the switch to all weights
def test_resume_after_kill_gives_identical_weights(tmp_path, arrays, kill_at):
    torch.set_num_threads(1)
    full = tr.train(config(tmp_path / "full", arrays))
    with pytest.raises(Killed):
        tr.train(config(tmp_path / "killed", arrays), progress=killer(kill_at))
    assert (tmp_path / "killed" / "checkpoint.pt").exists()
    assert not (tmp_path / "killed" / "model.pt").exists()
    resumed = tr.train(config(tmp_path / "killed", arrays), resume=True)
    assert_same(weights(full["model"]), weights(resumed["model"]))
    assert [h["epoch"] for h in resumed["history"]] == [1, 1, 2]
    for a, b in zip(full["history"], resumed["history"]):
        assert a["G_GAN"] == pytest.approx(b["G_GAN"], rel=1e-9)
        assert a["val_ssim"] == pytest.approx(b["val_ssim"], rel=1e-9)


def test_same_seed_same_model_other_seed_other_model(tmp_path, arrays):
    torch.set_num_threads(1)
    cfg = config(tmp_path / "a", arrays, epochs=1, global_epochs=0, fix_global_epochs=0)
    a = tr.train(cfg)
    b = tr.train(dict(cfg, out=str(tmp_path / "b")))
    c = tr.train(dict(cfg, out=str(tmp_path / "c"), seed=1))
    assert_same(weights(a["model"]), weights(b["model"]))
    wa, wc = weights(a["model"]), weights(c["model"])
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_training_improves_on_the_interpolated_input(tmp_path, arrays):
    """With an L1 term a small U-Net learns to deblur: validation PSNR ends well above its input's."""
    torch.set_num_threads(1)
    cfg = config(tmp_path / "l1", arrays, epochs=12, global_epochs=0, fix_global_epochs=0, decay_epochs=4,
                 lambda_l1=100.0, lambda_feat=0.0, lr=5e-3, batch_size=4)
    cfg["model"]["generator"] = {"arch": "unet", "ngf": 8, "depth": 2}
    history = tr.train(cfg)["history"]
    assert history[-1]["val_psnr"] > history[-1]["val_psnr_input"] + 2.0   # measured: +4.8 dB
    assert history[-1]["val_psnr"] > history[0]["val_psnr"]


def test_checkpoint_rules(tmp_path, arrays):
    cfg = config(tmp_path / "run", arrays, epochs=1, global_epochs=0)
    with pytest.raises(BoneKitError, match="Nothing to resume"):
        tr.train(cfg, resume=True)
    tr.train(cfg)
    with pytest.raises(BoneKitError, match="--resume"):
        tr.train(cfg)
    other = json.loads(json.dumps(cfg))
    other["model"]["generator"]["ngf"] = 8
    with pytest.raises(BoneKitError, match="other 'model' settings"):
        tr.train(other, resume=True)
    # a truncated checkpoint (a kill during a non-atomic copy, a full disk) is reported, not half-read
    ck = tmp_path / "run" / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:1000])
    with pytest.raises(BoneKitError, match="truncated or corrupt"):
        tr.train(cfg, resume=True)


def test_export_from_checkpoint_equals_the_final_model(tmp_path, arrays):
    cfg = config(tmp_path / "run", arrays, epochs=1, global_epochs=0)
    summary = tr.train(cfg)
    exported = tr.export_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "exported.pt")
    assert_same(weights(summary["model"]), weights(exported))
    info, _ = load_model(exported)
    assert info.scale == 4 and info.normalization.hi_hu == 1800.0


def test_learning_rate_schedule_and_batch_order():
    cfg = tr.TrainConfig.from_dict({"train": {"epochs": 4, "decay_epochs": 2, "lr": 1e-3}})
    phase = tr.schedule(cfg)[-1]
    assert [tr.learning_rate(cfg, phase, e) for e in range(4)] == pytest.approx([1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3])
    a, b = tr.batch_order(0, 1, 2, 50), tr.batch_order(0, 1, 2, 50)
    assert np.array_equal(a, b) and sorted(a) == list(range(50))
    assert not np.array_equal(a, tr.batch_order(0, 1, 3, 50))


def test_schedule_of_the_local_enhancer():
    cfg = tr.TrainConfig.from_dict({"model": {"generator": TINY_G},
                                    "train": {"epochs": 3, "global_epochs": 2, "fix_global_epochs": 1}})
    phases = tr.schedule(cfg)
    assert [(p.name, p.epochs, p.half_resolution, p.fix_epochs) for p in phases] == [
        ("global", 2, True, 0), ("local", 3, False, 1)]
    inner = tr._global_part(cfg.generator_config())
    assert inner.arch == "pix2pixhd_global" and inner.ngf == 8


def test_augmentation_moves_input_and_target_together():
    rng = np.random.default_rng(1)
    x = rng.random((6, 8, 8)).astype(np.float32)
    xa, ya = tr.augment(x, x + 1, 0, 0, 0, 0)
    assert np.array_equal(xa + 1, ya)
    assert not np.array_equal(xa, x)


@pytest.mark.parametrize("bad, match", [
    ({"data": {"kind": "web"}}, "data.kind"),
    ({"train": {"amp": "fp8"}}, "train.amp"),
    ({"train": {"epochz": 3}}, "Unknown train setting"),
    ({"model": {"generator": "huge"}}, "model.generator"),
    ({"data": {"scale": 2.5}}, "data.scale"),
])
def test_bad_configurations(bad, match):
    with pytest.raises(BoneKitError, match=match):
        cfg = tr.TrainConfig.from_dict(bad)
        cfg.generator_config()


def test_config_file_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"out": "run", "data": {"hr": [{"path": "a.nrrd"}]}}))
    cfg = tr.TrainConfig.read(tmp_path / "c.json")
    assert cfg.out == str(tmp_path / "run") and cfg.data.hr[0]["path"] == str(tmp_path / "a.nrrd")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BoneKitError, match="not valid JSON"):
        tr.TrainConfig.read(tmp_path / "bad.json")


def test_torchrun_two_processes_equal_one_process_on_the_whole_batches(tmp_path, arrays):
    """``torchrun --nproc_per_node 2`` (DistributedDataParallel; gloo on the CPU, NCCL on GPUs): each
    rank trains on its half of every (augmented) batch and the gradients are averaged, so the
    generator equals the one-process one trained on the whole batches. Weights agree to float
    round-off, except conv biases just before an instance norm: their gradient is zero in exact
    arithmetic and Adam turns round-off into steps of the learning rate; they cancel in the
    outputs, which agree. Rank 0 alone writes the files. (Measured before the fix: patches were
    augmented by their place in a rank's share, 6e-4 apart.)"""
    import os
    import subprocess
    import sys

    torch.set_num_threads(1)
    cfg = config(tmp_path / "two", arrays, epochs=1, global_epochs=0, fix_global_epochs=0)
    path = tmp_path / "ddp.json"
    path.write_text(json.dumps(cfg))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                          "-m", "bonekit", "sr", "train", str(path)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "two"
    assert sorted(p.name for p in out.glob("*.pt")) == ["checkpoint.pt", "model.pt"]
    assert len(json.loads((out / "history.json").read_text())["history"]) == 1
    alone = tr.train(dict(cfg, out=str(tmp_path / "one")))["model"]
    (_, two), (_, one) = load_model(out / "model.pt"), load_model(alone)
    a, b = two.state_dict(), one.state_dict()
    assert a.keys() == b.keys()
    gaps = np.array([float((a[k] - b[k]).abs().max()) for k in a if k.endswith("weight")])
    assert np.median(gaps) < 1e-6 and np.mean(gaps < 1e-5) > 0.75, gaps
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (2, 1, 32, 32)).astype(np.float32))
    with torch.no_grad():
        assert torch.allclose(two(x), one(x), atol=1e-4)
