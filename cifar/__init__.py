"""CIFAR-10 and CIFAR-100 with the same ResNet-10 as SVHN (registered on import)."""
from cifar.data import CIFAR10, CIFAR100, CIFAR_SIDE, cifar_loader
from common.datasets import DATASETS, DatasetSpec
from common.schedule import Schedule
from svhn.resnet import RESNET10_SPEC_FIELDS

# The FK paper's setting has no CIFAR schedule; ours is the usual CIFAR ResNet recipe, shortened: SGD lr 0.1,
# momentum 0.9, weight decay 5e-4, batch 128, 50 epochs, x0.1 at 25 and 40.
CIFAR_SCHEDULE = Schedule(lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=50, milestones=(25, 40))
# Rotation pretraining, also our choice: the same optimiser over 15 epochs, x0.1 at 5 and 10.
CIFAR_ROTATION_SCHEDULE = Schedule(lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=15,
                                   milestones=(5, 10))

_CIFAR = {"schedule": CIFAR_SCHEDULE, "pretrain_schedule": CIFAR_ROTATION_SCHEDULE, "iterations": 10,
          "default_imbalance": 10, "image_shape": (3, CIFAR_SIDE, CIFAR_SIDE),
          **RESNET10_SPEC_FIELDS}

# val_per_class: 10% of the 50,000 training images (docs/method.md#validation-set-and-biased-pool).
DATASETS.register("cifar10", DatasetSpec(
    name="cifar10", num_classes=10, loader=cifar_loader(CIFAR10),
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), budget=1000, val_per_class=500,
    description="CIFAR-10 (python pickle batches; downloaded where the internet exists)", **_CIFAR,
))
DATASETS.register("cifar100", DatasetSpec(
    name="cifar100", num_classes=100, loader=cifar_loader(CIFAR100),
    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), budget=2500, val_per_class=50,
    description="CIFAR-100, fine labels (python pickle batches; downloaded where the internet exists)", **_CIFAR,
))
