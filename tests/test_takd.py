"""Teacher-assistant KD: a chain on the Born-Again runner, one link per assistant."""

import json
import os
from pathlib import Path

import pytest

from kdexp.methods import check_method_cfg, method_class

FAKE = (
    "data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=32",
    "trainer.max_epochs=1", "teacher.train.max_epochs=1",
    "profile.min_run_time=0.02", "profile.throughput_batch=4",
)


def test_links_are_the_assistants_then_the_student() -> None:
    cls = method_class("takd")
    assert cls.chain.plain and method_class("born_again").chain.plain and method_class("kd").chain is None
    links = cls.chain_links({"assistants": ["cnn_medium", "cnn_small"]})
    assert links == [{"source": "kdexp", "name": "cnn_medium"}, {"source": "kdexp", "name": "cnn_small"}, None]
    assert method_class("born_again").chain_links({"generations": 2}) == [None, None]


@pytest.mark.parametrize(
    ("assistants", "message"),
    [([], "non-empty list"), ("cnn_small", "non-empty list"), (["cnn_small", "cnn_huge"], r"unknown model\(s\) \['cnn_huge'\]")],
)
def test_bad_assistants_are_clear_errors(assistants, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_method_cfg({"name": "takd", "assistants": assistants})


def test_takd_chain_trains_each_link_from_the_one_before_and_reports_every_link(kdexp_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "chain"
    args = (*FAKE, "teacher=cnn_medium", "student=cnn_tiny", "method=takd", "method.assistants=[cnn_small]")
    outcome = kdexp_run(*args, cache_dir=tmp_path / "cache", run_dir=run_dir)
    assert outcome.exit_code == 0, outcome.message
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["method"] == "takd"
    assert results["run"]["chain"] == ["cnn_medium", "cnn_small", "cnn_tiny"]
    links = results["generations"]
    assert [g["model"] for g in links] == ["cnn_medium", "cnn_small", "cnn_tiny"]
    assert [g["params"] for g in links[1:]] == [24058, 6274]  # cnn_small, cnn_tiny
    assert all("acc_top1" in g and g["latency_ms_b1"] > 0 for g in links)
    assert "ensemble" not in results  # different architectures: no Born-Again ensemble
    first = json.loads((run_dir / "gen1" / "results.json").read_text())
    second = json.loads((run_dir / "gen2" / "results.json").read_text())
    assert (first["run"]["teacher"], first["run"]["student"]) == ("cnn_medium", "cnn_small")
    assert (second["run"]["teacher"], second["run"]["student"]) == ("cnn_small", "cnn_tiny")
    assert first["run"]["teacher_source"]["source"] == "trained"  # the cached teacher
    assert second["run"]["teacher_source"] == {"source": "generation 1", "model": "cnn_small"}
    assert second["teacher"]["acc_top1"] == first["student"]["acc_top1"]  # link 1 taught link 2
    assert first["teacher"]["acc_top1"] == links[0]["acc_top1"]

    # Resume: the student's link lost its results; the assistant's link is reused, not retrained.
    stamp = os.path.getmtime(run_dir / "gen1" / "student.pt")
    (run_dir / "gen2" / "results.json").unlink()
    outcome = kdexp_run(*args, cache_dir=tmp_path / "cache", run_dir=run_dir)
    assert outcome.exit_code == 0, outcome.message
    assert os.path.getmtime(run_dir / "gen1" / "student.pt") == stamp
    assert json.loads((run_dir / "gen2" / "results.json").read_text())["run"]["teacher"] == "cnn_small"


def test_unregistered_assistant_fails_before_any_training(kdexp_run, tmp_path: Path) -> None:
    outcome = kdexp_run(*FAKE, "method=takd", "method.assistants=[cnn_medium,resnet_huge]",
                        cache_dir=tmp_path / "cache", run_dir=tmp_path / "run")
    assert outcome.exit_code == 2 and "method.assistants names unknown model(s) ['resnet_huge']" in outcome.message
    assert not list((tmp_path / "cache").glob("*.pt"))
