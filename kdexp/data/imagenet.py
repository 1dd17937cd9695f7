"""An ImageNet-style folder: ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*.JPEG``."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import datasets
from torchvision.transforms import v2

from kdexp.data.base import ImageDataModule
from kdexp.data.registry import register_dataset

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@register_dataset
class ImageFolderDataModule(ImageDataModule):
    """Standard ImageNet transforms: RandomResizedCrop+flip to train, Resize+CenterCrop to test.

    The number of classes is read from the train folder; ``num_classes`` in the config is checked.
    """

    name = "imagenet"

    def __init__(
        self, root: str, image_size: int = 224, num_classes: int | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.image_size = Path(root), image_size
        self.input_shape = (3, image_size, image_size)
        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise FileNotFoundError(
                    f"data.root={root!r} must hold 'train/' and 'val/' class folders; "
                    f"{self.root / split} is missing"
                )
        found = sum(1 for p in (self.root / "train").iterdir() if p.is_dir())
        if num_classes is not None and num_classes != found:
            raise ValueError(f"data.num_classes={num_classes} but {self.root}/train has {found}")
        self.num_classes = found

    def make_datasets(self):
        to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
        resize = round(self.image_size * 256 / 224)
        train_t = v2.Compose(
            [v2.RandomResizedCrop(self.image_size), v2.RandomHorizontalFlip(), *to_tensor]
        )
        eval_t = v2.Compose([v2.Resize(resize), v2.CenterCrop(self.image_size), *to_tensor])
        folder = lambda split, t: datasets.ImageFolder(str(self.root / split), transform=t)  # noqa: E731
        return folder("train", train_t), folder("train", eval_t), folder("val", eval_t)
