"""torchvision FakeData: random images of any shape, for tests and benchmarks."""

from __future__ import annotations

import torch
from torchvision import datasets
from torchvision.transforms import v2

from kdexp.data.base import ImageDataModule
from kdexp.data.registry import register_dataset


@register_dataset
class FakeDataModule(ImageDataModule):
    name = "fake"

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        train_size: int = 256,
        test_size: int = 128,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.input_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.train_size, self.test_size = train_size, test_size

    def make_datasets(self):
        transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        make = lambda size, offset: datasets.FakeData(  # noqa: E731
            size, self.input_shape, self.num_classes, transform, random_offset=offset
        )
        train = make(self.train_size, 0)
        return train, train, make(self.test_size, 10**6)
