"""Run by test_methods: 2 gloo processes (ddp_spawn) train CRD; every rank must end with the
same memory bank. Prints one RESULT line from rank 0."""
import torch
import pytorch_lightning as pl
from kdexp.data.fake import FakeDataModule
from kdexp.methods import build_method
from kdexp.models import build_model

class SameBank(pl.Callback):
    def on_train_end(self, trainer, module):
        bank = torch.cat([module.contrast.memory_student, module.contrast.memory_teacher], 1)
        banks = module.all_gather(bank)  # (world, N, 2D)
        labels = module.all_gather(module.contrast.labels)
        same = bool(torch.equal(banks[0], banks[1]) and torch.equal(labels[0], labels[1]))
        seen = int((labels[0] >= 0).sum())
        if trainer.is_global_zero:
            print(f"RESULT same_bank={same} seen={seen} of {module.contrast.num_data}", flush=True)

if __name__ == "__main__":
    torch.manual_seed(0)
    t = build_model({"name": "cnn_small"}, 4, 1); s = build_model({"name": "cnn_tiny"}, 4, 1)
    module = build_method({"name": "crd", "nce_negatives": 16}, s, t, 4, (1, 28, 28), {"name": "sgd", "lr": 0.05}, {"name": "none"})
    dm = FakeDataModule(image_shape=(1, 28, 28), num_classes=4, train_size=32, test_size=8, batch_size=4)
    dm.shuffle_seed = 0
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[SameBank()])
    trainer.fit(module, datamodule=dm)
