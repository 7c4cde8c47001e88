"""MNIST family: mnist, fashion-mnist and digits, all with LeNet (registered on import)."""
from common.datasets import DATASETS, DatasetSpec
from common.schedule import Schedule
from mnist.data import DIGITS_SIDE, load_digits_split, mnist_loader
from mnist.lenet import LENET_DESCRIPTOR_LAYERS, LeNet

# The one place these schedules are stated (docs/method.md#training-schedules).
LENET_SCHEDULE = Schedule(lr=0.05, momentum=0.5, batch_size=25, epochs=50, milestones=(15, 30, 45))
LENET_ROTATION_SCHEDULE = Schedule(lr=0.05, momentum=0.5, batch_size=25, epochs=8, milestones=(3, 6))

_LENET = dict(
    num_classes=10,
    image_shape=(1, DIGITS_SIDE, DIGITS_SIDE),  # MNIST's size; digits are upscaled to it
    model=lambda num_classes, mc_dropout: LeNet(num_classes, mc_dropout),
    descriptor_layers=LENET_DESCRIPTOR_LAYERS,
    default_layer_set="l80",
    classifier="fc2",
    penultimate="fc1",
    schedule=LENET_SCHEDULE,
    pretrain_schedule=LENET_ROTATION_SCHEDULE,
    top_k=32,
    inference_batch_size=2048,  # fastest for LeNet descriptors on 1-2 CPU cores (measured 512..4096)
)

DATASETS.register("mnist", DatasetSpec(
    name="mnist", loader=mnist_loader("MNIST"), mean=(0.1307,), std=(0.3081,),
    budget=125, iterations=10, val_per_class=1000, default_imbalance=100,
    description="MNIST (torchvision idx files; downloaded where the internet exists)", **_LENET,
))
DATASETS.register("fashion-mnist", DatasetSpec(
    name="fashion-mnist", loader=mnist_loader("FashionMNIST", ("/usr/share/datasets/fashion-mnist",)),
    mean=(0.2860,), std=(0.3530,), budget=125, iterations=10, val_per_class=1000, default_imbalance=100,
    description="Fashion-MNIST (Debian's dataset-fashion-mnist or torchvision idx files)", **_LENET,
))
DATASETS.register("digits", DatasetSpec(
    name="digits", loader=load_digits_split, mean=(0.1307,), std=(0.3081,),
    budget=20, iterations=4, val_per_class=20, default_imbalance=10,
    description="scikit-learn digits, 8x8 upscaled to 28x28 (embedded, offline)", **_LENET,
))
