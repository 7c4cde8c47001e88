"""SVHN (train+extra as the train split) with ResNet-10 (registered on import)."""
from common.datasets import DATASETS, DatasetSpec
from common.schedule import Schedule
from svhn.data import SVHN_IMAGE_SHAPE, load_svhn
from svhn.resnet import RESNET10_SPEC_FIELDS

# The classifier's schedule (docs/method.md#training-schedules).
SVHN_SCHEDULE = Schedule(lr=0.1, momentum=0.5, batch_size=128, epochs=35, milestones=(15, 30))
# Rotation pretraining (the FK paper's setting states only LeNet's): our choice, the classifier's lr and momentum
# over 15 epochs with x0.1 at 5 and 10; batch 128 images, so 512 rotated inputs per step.
SVHN_ROTATION_SCHEDULE = Schedule(lr=0.1, momentum=0.5, batch_size=128, epochs=15, milestones=(5, 10))

DATASETS.register("svhn", DatasetSpec(
    name="svhn", num_classes=10, loader=load_svhn, image_shape=SVHN_IMAGE_SHAPE,
    schedule=SVHN_SCHEDULE, pretrain_schedule=SVHN_ROTATION_SCHEDULE,
    mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    budget=1250, iterations=10,
    val_per_class=10400,  # the FK paper's protocol: 104k validation, ~500k pool from train+extra (604,388)
    default_imbalance=100,
    description="SVHN cropped digits, train+extra (.mat files; downloaded where the internet exists)",
    **RESNET10_SPEC_FIELDS,
))
