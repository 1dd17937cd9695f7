"""The CIFAR-100 knowledge-distillation benchmark architectures (CRD / RepDistiller, mdistiller).

Importing this package registers every model. Each architecture matches RepDistiller's definition
layer for layer (same parameter count, same module names, so its published checkpoints load with
``strict=True``), except that pooling is adaptive so 28x28 inputs also work, ``in_channels`` sets
the first conv's input channels, and ``forward`` returns logits only (features come from hooks).

Stage convention, every family: the stages are RepDistiller's ``feat[1:-1]`` (``is_feat=True``
list without the stem output and without the pooled embedding). So attention transfer's features are
all stages, similarity-preserving KD's is ``stages[-1]``, and FitNets' benchmark hint layer
(``--hint_layer 2`` → ``feat[2]``) is ``stages[1]``. The classifier's input is ``feat[-1]``.

Registered: resnet8, resnet14, resnet20, resnet32, resnet44, resnet56, resnet110, resnet8x4,
resnet32x4, resnet50, wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2, vgg8, vgg11, vgg13, vgg16, vgg19,
mobilenetv2, shufflenetv1, shufflenetv2.
"""

from kdexp.models.cifar import (  # noqa: F401  (imported to register the models)
    mobilenetv2,
    resnet,
    resnetv2,
    shufflenetv1,
    shufflenetv2,
    vgg,
    wrn,
)
