"""BoneSR inference and model files: geometry, determinism, tiling, OOM fallback, bad input, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bonekit.cli import main  # noqa: E402
from bonekit.errors import BoneKitError  # noqa: E402
from bonekit.io import read_volume, write_volume  # noqa: E402
from bonekit.sr import infer  # noqa: E402
from bonekit.sr.degrade import refined_grid, upsample_to  # noqa: E402
from bonekit.sr.model import ModelInfo, Normalization, load_model, save_model  # noqa: E402
from bonekit.sr.networks import GeneratorConfig, build_generator, init_weights  # noqa: E402
from bonekit.volume import Volume  # noqa: E402

G = {"arch": "pix2pixhd_global", "ngf": 4, "n_downsample": 2, "n_blocks": 1}


def tiny_model(arch=G, scale=2, lr_spacing=0.5, seed=0):
    cfg = GeneratorConfig.from_dict(arch)
    net = init_weights(build_generator(cfg), seed).eval()
    info = ModelInfo(generator=cfg.to_dict(), scale=scale, lr_spacing_mm=lr_spacing,
                     hr_spacing_mm=lr_spacing / scale, card={"name": "tiny"})
    return info, net


@pytest.fixture()
def ct():
    rng = np.random.default_rng(0)
    direction = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])  # oblique-free but not identity
    return Volume.from_geometry((rng.normal(300, 400, (6, 20, 18))).astype(np.float32), spacing=(0.5, 0.5, 0.7),
                                origin=(10, -4, 3), direction=direction, modality="CT", units="HU")


@pytest.fixture()
def model_file(tmp_path):
    info, net = tiny_model()
    return save_model(tmp_path / "tiny.pt", info, net)


# ---------------------------------------------------------------- interpolation and geometry
def test_upsample_equals_the_physical_space_resampler(ct):
    fine = infer.upsample(ct, 3)
    ref = upsample_to(ct, refined_grid(ct, 3))
    assert np.allclose(fine.affine, ref.affine)
    assert np.max(np.abs(fine.array - ref.array)) < 1e-3 * np.ptp(ct.array)


def test_upsample_reproduces_a_linear_ramp_inside_and_keeps_the_box(ct):
    shape = (14, 20, 18)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    ramp = Volume(2 * i + 3 * j - k, ct.affine)
    fine = infer.upsample(ramp, 4)
    fk, fj, fi = np.meshgrid(*[(np.arange(n * 4) + 0.5) / 4 - 0.5 for n in shape], indexing="ij")
    # the edge extension bends the spline near the border; it decays as 0.27^distance
    inside = (fk > 5) & (fk < 8) & (fj > 5) & (fj < 14) & (fi > 5) & (fi < 12)
    assert np.allclose(fine.array[inside], (2 * fi + 3 * fj - fk)[inside], atol=2e-3)
    # each coarse voxel's scale^3 fine centres average to the coarse centre: same physical box
    assert np.allclose(fine.spacing, ct.spacing / 4)
    centres = [fine.index_to_physical([a, b, c]) for a in range(4) for b in range(4) for c in range(4)]
    assert np.allclose(np.mean(centres, axis=0), ct.index_to_physical([0, 0, 0]))


def test_output_geometry_and_units(ct):
    result = infer.super_resolve(ct, tiny_model(), device="cpu")
    out = result.volume
    assert out.shape == (12, 40, 36)
    assert np.allclose(out.spacing, ct.spacing / 2) and np.allclose(out.direction, ct.direction)
    assert np.allclose(out.affine, refined_grid(ct, 2).affine)
    assert out.units == "HU" and out.array.dtype == np.float32
    assert out.array.min() >= -200 - 1e-3 and out.array.max() <= 1800 + 1e-3   # the tanh window
    assert result.device == "cpu" and result.precision == "fp32" and result.fallbacks == []


def test_roi_crops_to_its_bounding_box(ct):
    roi = ct.with_array(np.zeros(ct.shape, np.uint8))
    roi.array[2:4, 5:9, 6:10] = 1
    out = infer.super_resolve(ct, tiny_model(), roi=roi, margin_mm=0.0, device="cpu").volume
    assert out.shape == (4, 8, 8)
    # its first fine voxel sits in the first ROI voxel's block
    corner = ct.index_to_physical([6, 5, 2]) - ct.affine[:3, :3] @ np.full(3, 0.25)
    assert np.allclose(out.origin, corner)
    with pytest.raises(BoneKitError, match="ROI is empty"):
        infer.super_resolve(ct, tiny_model(), roi=roi.with_array(np.zeros(ct.shape, np.uint8)), device="cpu")


def test_inference_is_deterministic(ct):
    a = infer.super_resolve(ct, tiny_model(), device="cpu").volume.array
    b = infer.super_resolve(ct, tiny_model(), device="cpu").volume.array
    assert np.array_equal(a, b)


def test_batch_size_does_not_change_the_result(ct):
    a = infer.super_resolve(ct, tiny_model(), device="cpu", batch_size=1).volume.array
    b = infer.super_resolve(ct, tiny_model(), device="cpu", batch_size=12).volume.array
    assert np.allclose(a, b, atol=1e-3)


# ---------------------------------------------------------------- tiling and fallback
def test_tiles_cover_and_blend_without_seams():
    starts = infer.tile_starts(100, 40, 8)
    assert starts[0] == 0 and starts[-1] == 60 and min(np.diff(starts)) > 0 and 40 - max(np.diff(starts)) >= 8
    assert infer.tile_starts(30, 40, 8) == [0]
    # blending weights of a constant image give back the constant exactly (no seams)
    runner = infer._Runner(torch.nn.Identity(), 4, "cpu", "fp32", 16, 6, 8, print)
    x = np.full((2, 40, 52), 0.25, np.float32)
    assert np.allclose(runner.slices(x), 0.25)
    # an identity network: tiled output equals the input everywhere
    x = np.random.default_rng(0).random((2, 40, 52)).astype(np.float32)
    assert np.allclose(runner.slices(x), x, atol=1e-6)


def test_tiled_agrees_with_untiled(ct):
    """Without per-image statistics (batch norm in eval mode) tiles with a blended overlap give the
    whole-slice result up to the padding each tile edge sees."""
    model = tiny_model(dict(G, norm="batch"))
    whole = infer.super_resolve(ct, model, device="cpu").volume.array
    tiled = infer.super_resolve(ct, model, device="cpu", tile=24, overlap=8).volume.array
    assert tiled.shape == whole.shape
    assert np.corrcoef(whole.ravel(), tiled.ravel())[0, 1] > 0.999
    assert np.mean(np.abs(whole - tiled)) < 0.05     # HU, on a 2000 HU window


def test_tiles_change_instance_norm_statistics(ct):
    """Instance norm normalises each tile by its own statistics: tiles are an approximation there
    (measured on the demonstration model in benchmarks/sr_inference.py), closer with larger tiles."""
    model = tiny_model()
    whole = infer.super_resolve(ct, model, device="cpu").volume.array
    small = infer.super_resolve(ct, model, device="cpu", tile=24, overlap=8).volume.array
    large = infer.super_resolve(ct, model, device="cpu", tile=32, overlap=16).volume.array
    assert np.abs(whole - large).mean() < np.abs(whole - small).mean()


def test_out_of_memory_falls_back_to_tiles_then_cpu(ct, monkeypatch):
    """Simulated: the 'GPU' runs out of memory for tiles above 32 px and then for any tile."""
    info, net = tiny_model()
    runner = infer._Runner(net, 4, "cpu", "fp32", None, 8, 16, lambda m: None)
    runner.device = "cuda:0"          # pretend; forward is replaced, nothing touches a GPU
    real = infer._Runner.forward
    calls = []

    def forward(self, x):
        calls.append((self.device, x.shape[-1]))
        if self.device.startswith("cuda"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, x)

    monkeypatch.setattr(infer._Runner, "forward", forward)
    x = np.random.default_rng(0).random((2, 40, 36)).astype(np.float32)
    out = runner.slices(x)
    assert runner.device == "cpu" and runner.tile is None
    assert [f.split(":")[0] for f in runner.fallbacks] == ["out of memory on cuda", "out of memory on cuda",
                                                           "out of memory with the smallest tiles on the GPU"]
    assert "tiles of 16 px" in runner.fallbacks[1]
    assert np.allclose(out, real(runner, x))


def test_out_of_memory_on_the_cpu_is_a_clear_error(monkeypatch):
    runner = infer._Runner(torch.nn.Identity(), 4, "cpu", "fp32", None, 4, 16, lambda m: None)

    def forward(self, x):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")

    monkeypatch.setattr(infer._Runner, "forward", forward)
    with pytest.raises(BoneKitError, match="--roi"):
        runner.slices(np.zeros((1, 64, 64), np.float32))


def test_other_runtime_errors_are_not_swallowed(monkeypatch):
    runner = infer._Runner(torch.nn.Identity(), 4, "cpu", "fp32", None, 4, 16, lambda m: None)

    def forward(self, x):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(infer._Runner, "forward", forward)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        runner.slices(np.zeros((1, 64, 64), np.float32))


# ---------------------------------------------------------------- model files and bad input
def test_model_file_round_trip(tmp_path):
    info, net = tiny_model(scale=4, lr_spacing=0.2)
    path = save_model(tmp_path / "m.pt", info, net)
    info2, net2 = load_model(path)
    assert info2.to_dict() == info.to_dict()
    for k, v in net.state_dict().items():
        assert torch.equal(v, net2.state_dict()[k])


def test_normalization_round_trip_and_clipping():
    n = Normalization(-200, 1800)
    x = np.array([-1000.0, -200.0, 800.0, 1800.0, 3000.0])
    assert np.allclose(n.forward(x), [-1, -1, 0, 1, 1])
    assert np.allclose(n.inverse(n.forward(x[1:4])), x[1:4])
    with pytest.raises(BoneKitError, match="hi_hu > lo_hu"):
        Normalization(100, 100)


def test_weights_that_do_not_fit_the_configuration(tmp_path):
    info, net = tiny_model()
    other = dict(info.to_dict(), generator=dict(G, ngf=8), format="bonekit-sr-model", version=1,
                 state_dict=net.state_dict())
    torch.save(other, tmp_path / "bad.pt")
    with pytest.raises(BoneKitError, match="do not fit the recorded generator"):
        load_model(tmp_path / "bad.pt")


def test_corrupt_missing_and_foreign_files(tmp_path, model_file):
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(model_file.read_bytes()[:2000])
    with pytest.raises(BoneKitError, match="truncated or corrupt"):
        load_model(truncated)
    with pytest.raises(BoneKitError, match="no such BoneSR model file"):
        load_model(tmp_path / "nothing.pt")
    torch.save({"format": "bonekit-sr-checkpoint"}, tmp_path / "ck.pt")
    with pytest.raises(BoneKitError, match="bonekit sr export"):
        load_model(tmp_path / "ck.pt")
    (tmp_path / "junk.pt").write_text("hello")
    with pytest.raises(BoneKitError, match="not a readable"):
        load_model(tmp_path / "junk.pt")


def test_unsupported_spacing_and_channels(ct):
    model = tiny_model(lr_spacing=0.2)
    with pytest.raises(BoneKitError, match="trained on 0.200 mm"):
        infer.super_resolve(ct, model, device="cpu")
    assert infer.super_resolve(ct, model, device="cpu", allow_spacing=True).volume.shape == (12, 40, 36)
    rect = Volume.from_geometry(ct.array, spacing=(0.5, 0.8, 1.0))
    with pytest.raises(BoneKitError, match="not square"):
        infer.super_resolve(rect, tiny_model(), device="cpu")
    with pytest.raises(BoneKitError, match="3D image"):   # a colour image never becomes a Volume
        Volume(np.zeros((4, 8, 8, 3), np.float32))
    info, net = tiny_model(arch=dict(G, in_channels=3))
    with pytest.raises(BoneKitError, match="1 input channel"):
        infer.super_resolve(ct, (info, net), device="cpu")


def test_devices_and_precisions():
    assert infer.resolve_device("cpu") == "cpu"
    assert infer.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(BoneKitError, match="no usable CUDA GPU"):
            infer.resolve_device("cuda")
    with pytest.raises(BoneKitError, match="Unknown device"):
        infer.resolve_device("tpu")
    with pytest.raises(BoneKitError, match="Unknown precision"):
        infer.autocast_dtype("cpu", "int8")


# ---------------------------------------------------------------- command line
def test_cli_infer_writes_the_fine_volume(tmp_path, ct, model_file, capsys):
    write_volume(ct, tmp_path / "ct.nrrd")
    code = main(["sr", "infer", str(tmp_path / "ct.nrrd"), "--model", str(model_file), "--out",
                 str(tmp_path / "sr.nrrd"), "--device", "cpu", "--json", str(tmp_path / "sr.json")])
    assert code == 0
    out = read_volume(tmp_path / "sr.nrrd")
    assert out.shape == (12, 40, 36) and np.allclose(out.spacing, ct.spacing / 2)
    assert json.loads((tmp_path / "sr.json").read_text())["device"] == "cpu"
    # bad input: one line, exit 2, nothing written
    code = main(["sr", "infer", str(tmp_path / "ct.nrrd"), "--model", str(tmp_path / "none.pt"), "--out",
                 str(tmp_path / "x.nrrd")])
    assert code == 2 and not (tmp_path / "x.nrrd").exists()
    assert "neither a model file nor a catalogue model" in capsys.readouterr().err
    code = main(["sr", "infer", str(tmp_path / "ct.nrrd"), "--model", str(model_file), "--out",
                 str(tmp_path / "ct.nrrd")])
    assert code == 2


def test_cli_simulate_and_evaluate(tmp_path, capsys):
    from scipy import ndimage

    rng = np.random.default_rng(3)
    f = ndimage.gaussian_filter(rng.standard_normal((48, 48, 48)), 2.0)
    hr = Volume.from_geometry(((f > 0.02) * 1800.0).astype(np.float32), spacing=(0.05,) * 3, units="HU")
    write_volume(hr, tmp_path / "hr.nrrd")
    assert main(["sr", "simulate", str(tmp_path / "hr.nrrd"), "--out", str(tmp_path / "lr.nrrd"),
                 "--noise", "0"]) == 0
    lr = read_volume(tmp_path / "lr.nrrd")
    assert lr.shape == (12, 12, 12) and np.allclose(lr.spacing, 0.2)
    assert abs(lr.array.mean() - hr.array.mean()) < 0.02 * 1800        # area averaging keeps the mean
    # "SR" = the truth itself: perfect scores; the baseline (bicubic of the LR) is worse
    assert main(["sr", "evaluate", "--sr", str(tmp_path / "hr.nrrd"), "--hr", str(tmp_path / "hr.nrrd"),
                 "--input", str(tmp_path / "lr.nrrd"), "--blocks", "0.8", "--json", str(tmp_path / "e.json")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["images"]["sr"]["SSIM"] == pytest.approx(1.0)
    assert report["images"]["baseline"]["SSIM"] < 0.9
    assert report["morphometry"]["sr"]["agreement"]["BV/TV"]["mean.diff"] == pytest.approx(0.0, abs=1e-12)
    assert report["settings"]["blocks"] == 27


def test_cli_models_lists_the_catalogue(capsys):
    from bonekit.models import catalogue

    assert main(["sr", "models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == catalogue("sr")
