"""predict.py: a user's image files classified with a saved model (a tiny real digits run, trained once)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, run_cli, run_script_in_process
from common import storage
from common.datasets import DATASETS
from common.experiment import build_models
from common.schedule import Schedule
from common.train import predict_probabilities
from imagenet import image_folder_spec
from imagenet.folder import FolderImages

RUN_FLAGS = ["--runs", "1", "--iterations", "1", "--budget", "20", "--epochs", "2", "--quiet", "--methods", "random",
             "--device", "cpu", "--threads", "1"]
TEST_DIGITS = [0, 1, 2, 3, 4, 5]  # positions in the digits test split
FOLDER_DATASET = "predict-folder"


@pytest.fixture
def run_predict(monkeypatch, capsys):
    """`python predict.py ARGS` in this process."""
    return lambda *args: run_script_in_process("predict.py", args, monkeypatch, capsys)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The model_000.pt of one tiny random-acquisition run on digits (trained once per module)."""
    out = tmp_path_factory.mktemp("predict-run")
    result = run_cli("--out", out, *RUN_FLAGS)
    assert result.returncode == 0, result.stderr
    return out / "digits" / "ir10_val20" / "run0" / "unsup0" / "random" / "model_000.pt"


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory, digits_data) -> tuple[list[Path], torch.Tensor]:
    """PNGs of digits test images (28x28, upscaled by the digits loader) and the same images as tensors."""
    folder = tmp_path_factory.mktemp("digit-files")
    images = digits_data.test.images[TEST_DIGITS]  # uint8 [N, 1, 28, 28]
    paths = []
    for position, image in zip(TEST_DIGITS, images):
        path = folder / f"digit{position}.png"
        Image.fromarray(image[0].numpy(), mode="L").save(path)
        paths.append(path)
    return paths, images


def model_probabilities(spec, checkpoint_path: Path, images: torch.Tensor) -> torch.Tensor:
    """What the saved ensemble itself predicts for `images` through common.train (mean softmax [N, C])."""
    models = build_models(spec, storage.load_checkpoint(checkpoint_path, "states"), mc_dropout=False)
    return predict_probabilities(models, images, spec.normalise, torch.device("cpu"))


def predicted(result) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_predictions_match_the_model_on_the_same_images(run_predict, checkpoint, digit_files, digits_spec):
    paths, images = digit_files
    result = run_predict("--checkpoint", checkpoint, *paths, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    expected = model_probabilities(digits_spec, checkpoint, images)
    lines = result.stdout.splitlines()
    assert len(lines) == len(paths)
    for line, path, probs in zip(lines, paths, expected):
        name, ranked = line.rsplit(": ", 1)
        cls, probability = ranked.split(" ")
        assert name == str(path)
        assert int(cls) == int(probs.argmax())
        assert float(probability.strip("()")) == pytest.approx(float(probs.max()), abs=1e-4)


def test_json_top_k_is_ordered_and_matches_the_model(run_predict, checkpoint, digit_files, digits_spec):
    paths, images = digit_files
    results = predicted(run_predict("--checkpoint", checkpoint, *paths, "--top", "3", "--json", "--device", "cpu"))
    expected = model_probabilities(digits_spec, checkpoint, images)
    assert [r["path"] for r in results] == [str(p) for p in paths]
    for result, probs in zip(results, expected):
        top = result["top"]
        assert len(top) == 3 and len({entry["class"] for entry in top}) == 3
        values = [entry["probability"] for entry in top]
        assert all(0 < v <= 1 for v in values) and values == sorted(values, reverse=True)
        assert (result["class"], result["probability"]) == (top[0]["class"], top[0]["probability"])
        assert [entry["class"] for entry in top] == probs.topk(3).indices.tolist()
        np.testing.assert_allclose(values, probs.topk(3).values.numpy(), atol=1e-6)


def test_ensemble_checkpoint_averages_the_members_softmax(run_predict, checkpoint, digit_files, digits_spec, tmp_path):
    paths, images = digit_files
    trained = storage.load_checkpoint(checkpoint, "states")[0]
    torch.manual_seed(1)
    untrained = digits_spec.model(digits_spec.num_classes, False).state_dict()
    ensemble = tmp_path / "model_000.pt"
    storage.save_checkpoint(ensemble, {"states": [trained, untrained]})
    results = predicted(run_predict("--checkpoint", ensemble, "--dataset", "digits", *paths, "--top", "10", "--json",
                                    "--device", "cpu"))
    members = [model_probabilities(digits_spec, checkpoint, images),
               predict_probabilities(build_models(digits_spec, [untrained], False), images, digits_spec.normalise,
                                     torch.device("cpu"))]
    mean = (members[0] + members[1]) / 2
    for result, probs in zip(results, mean):
        by_class = {entry["class"]: entry["probability"] for entry in result["top"]}
        np.testing.assert_allclose([by_class[c] for c in range(10)], probs.numpy(), atol=1e-6)


def test_other_sizes_and_colours_are_converted_and_resized(run_predict, checkpoint, digits_spec, tmp_path):
    grey_rgb = tmp_path / "grey.jpg"  # 50x40 RGB of one grey level: read as L 100 everywhere, resized to 28x28
    Image.new("RGB", (50, 40), (100, 100, 100)).save(grey_rgb, quality=100)
    results = predicted(run_predict("--checkpoint", checkpoint, grey_rgb, "--top", "10", "--json", "--device", "cpu"))
    expected = model_probabilities(digits_spec, checkpoint, torch.full((1, 1, 28, 28), 100, dtype=torch.uint8))[0]
    by_class = {entry["class"]: entry["probability"] for entry in results[0]["top"]}
    np.testing.assert_allclose([by_class[c] for c in range(10)], expected.numpy(), atol=1e-6)


def test_invert_reads_dark_on_light_digits(run_predict, checkpoint, digit_files, tmp_path):
    paths, images = digit_files
    inverted = tmp_path / "inverted.png"
    Image.fromarray(255 - images[0, 0].numpy(), mode="L").save(inverted)
    original = predicted(run_predict("--checkpoint", checkpoint, paths[0], "--top", "10", "--json", "--device", "cpu"))
    as_given = predicted(run_predict("--checkpoint", checkpoint, inverted, "--top", "10", "--json", "--device", "cpu"))
    restored = predicted(run_predict("--checkpoint", checkpoint, inverted, "--invert", "--top", "10", "--json",
                                     "--device", "cpu"))
    assert restored[0]["top"] == original[0]["top"]
    assert as_given[0]["top"] != original[0]["top"]


def test_dataset_comes_from_protocol_json(run_predict, checkpoint, digit_files, tmp_path):
    paths, _ = digit_files
    protocol = checkpoint.parents[2] / "protocol.json"
    assert json.loads(protocol.read_text())["dataset"] == "digits"
    # a copy of the run whose protocol names another dataset of another model: the checkpoint no longer fits
    copy = tmp_path / "run0"
    shutil.copytree(checkpoint.parents[2], copy)
    storage.write_json(copy / "protocol.json", {**json.loads(protocol.read_text()), "dataset": "svhn"})
    line = assert_one_line_error(run_predict("--checkpoint", copy / "unsup0" / "random" / "model_000.pt", paths[0]))
    assert "svhn" in line and "does not fit" in line


def test_moved_checkpoint_needs_dataset(run_predict, checkpoint, digit_files, tmp_path):
    paths, _ = digit_files
    moved = tmp_path / "model.pt"
    shutil.copy(checkpoint, moved)
    result = run_predict("--checkpoint", moved, paths[0], "--device", "cpu")
    assert "--dataset" in assert_one_line_error(result) and result.returncode == 2 and result.stdout == ""
    here = run_predict("--checkpoint", checkpoint, paths[0], "--device", "cpu")
    override = run_predict("--checkpoint", moved, "--dataset", "digits", paths[0], "--device", "cpu")
    assert override.returncode == 0, override.stderr
    assert override.stdout == here.stdout and override.stdout.strip()


@pytest.mark.parametrize("bad", ["corrupt", "missing"])
def test_a_bad_image_is_one_line_and_nothing_printed(run_predict, checkpoint, digit_files, tmp_path, bad):
    paths, _ = digit_files
    path = tmp_path / f"{bad}.png"
    if bad == "corrupt":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    result = run_predict("--checkpoint", checkpoint, paths[0], path, paths[1], "--device", "cpu")
    line = assert_one_line_error(result)
    assert result.returncode == 2 and result.stdout == ""  # all or nothing: the good images are not printed either
    assert str(path) in line and str(paths[0]) not in line


def test_a_checkpoint_of_another_datasets_model_is_one_line(run_predict, digit_files, tmp_path):
    paths, _ = digit_files
    cifar = DATASETS.get("cifar10")
    other = tmp_path / "model_000.pt"
    storage.save_checkpoint(other, {"states": [cifar.model(cifar.num_classes, False).state_dict()]})
    result = run_predict("--checkpoint", other, "--dataset", "digits", paths[0], "--device", "cpu")
    line = assert_one_line_error(result)
    assert result.returncode == 2 and result.stdout == ""
    assert str(other) in line and "does not fit the digits model" in line


@pytest.mark.parametrize("args, expected", [
    (["--checkpoint", "{missing}"], "does not exist"),
    (["--checkpoint", "{initial}"], "not a model checkpoint"),
    (["--checkpoint", "{checkpoint}", "--dataset", "no-such-set"], "unknown dataset 'no-such-set'"),
    (["--checkpoint", "{checkpoint}", "--top", "11"], "more than the 10 classes"),
])
def test_user_errors_are_one_line(run_predict, checkpoint, digit_files, tmp_path, args, expected):
    paths, _ = digit_files
    names = {"missing": tmp_path / "none.pt", "checkpoint": checkpoint,
             "initial": checkpoint.parents[2] / "initial" / "random_m0.pt"}
    result = run_predict(*[arg.format(**names) for arg in args], paths[0], "--device", "cpu")
    assert expected in assert_one_line_error(result)
    assert result.returncode == 2 and result.stdout == ""


def test_folder_datasets_use_their_evaluation_resize_and_crop(run_predict, tmp_path):
    """An image-folder model reads a file as its dataset's evaluation images are read (shorter side, centre crop)."""
    if FOLDER_DATASET not in DATASETS:
        DATASETS.register(FOLDER_DATASET, image_folder_spec(
            FOLDER_DATASET, 3, tmp_path, crop=32, resize=36,
            schedule=Schedule(lr=0.05, momentum=0.9, batch_size=16, epochs=1, milestones=()),
        ))
    spec = DATASETS.get(FOLDER_DATASET)
    torch.manual_seed(0)
    states = [spec.model(spec.num_classes, False).state_dict()]
    checkpoint = tmp_path / "model_000.pt"
    storage.save_checkpoint(checkpoint, {"states": states})
    photo = tmp_path / "photo.png"  # 70 wide, 50 high, random colours
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(photo)
    results = predicted(run_predict("--checkpoint", checkpoint, "--dataset", FOLDER_DATASET, photo, "--top", "3",
                                    "--json", "--device", "cpu"))
    as_dataset = FolderImages(np.asarray([str(photo).encode()]), crop=32, resize=36, workers=0)[:]  # [1, 3, 32, 32]
    expected = predict_probabilities(build_models(spec, states, False), as_dataset, spec.normalise,
                                     torch.device("cpu"))[0]
    assert [entry["class"] for entry in results[0]["top"]] == expected.topk(3).indices.tolist()
    np.testing.assert_allclose([entry["probability"] for entry in results[0]["top"]], expected.topk(3).values.numpy(),
                               atol=1e-5)
