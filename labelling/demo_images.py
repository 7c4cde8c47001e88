"""Write scikit-learn's digits as a folder of PNG files to try label.py on (make demo-label):

    python -m labelling.demo_images FOLDER [--count 500]
    python -m labelling.demo_images FOLDER --answer PROJECT/batches/001/batch.csv   # play the annotator

FOLDER/images/dNNNN.png (28x28 grey, as run.py's digits) and FOLDER/answers.csv, every image's true class
(`path,label`). With --answer: FOLDER/answers-<batch>.csv, the true classes of that batch's images, for
`label.py import`.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digits(folder: Path, count: int) -> int:
    import datasets_available  # noqa: F401  (registers every dataset)
    from PIL import Image

    from common.datasets import DATASETS

    train = DATASETS.get("digits").load(None, True)
    count = min(count, len(train))
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = ["path,label"]
    for index in range(count):
        Image.fromarray(train.images[index, 0].numpy()).save(images / f"d{index:04d}.png")
        rows.append(f"d{index:04d}.png,{NAMES[int(train.labels[index])]}")
    (folder / "answers.csv").write_text("\n".join(rows) + "\n")
    return count


def answer_batch(folder: Path, batch_csv: Path) -> Path:
    truth = dict(list(csv.reader((folder / "answers.csv").open()))[1:])
    target = folder / f"answers-{batch_csv.parent.name}.csv"
    rows = [f"{row['path']},{truth[row['path']]}" for row in csv.DictReader(batch_csv.open())]
    target.write_text("path,label\n" + "\n".join(rows) + "\n")
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--answer", type=Path, default=None, help="a batch.csv to answer from the true classes")
    args = parser.parse_args()
    if args.answer:
        print(f"{answer_batch(args.folder, args.answer)}: the true classes of {args.answer}")
        raise SystemExit(0)
    print(f"{args.folder / 'images'}: {write_digits(args.folder, args.count)} PNG files; true classes in "
          f"{args.folder / 'answers.csv'}")
