import shutil

import pytest
import torch

from inspector.model.nets.teachers import (TEACHERS, TeacherWeightsError, build_teacher, build_untrained_teacher,
                                     get_spec, resolve_weights, sha256_file)


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_every_teacher_gives_three_maps_at_strides_4_8_16(name):
    teacher = build_untrained_teacher(name)
    spec = teacher.spec
    feats = teacher(torch.zeros(1, 3, 96, 128))
    assert [f.shape[1] for f in feats] == list(spec.channels)
    assert [(f.shape[2], f.shape[3]) for f in feats] == [(96 // s, 128 // s) for s in spec.strides]


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_teachers_compute_nothing_past_the_last_tap(name):
    names = [n for n, _ in build_untrained_teacher(name).named_modules()]
    assert not any(part in n for n in names for part in ("layer4", "fc", "_conv_head", "_fc"))


def test_real_lite0_weights_are_verified_and_frozen():
    teacher = build_teacher("efficientnet_lite0")
    assert teacher.weights_sha256 == get_spec("efficientnet_lite0").weights_sha256
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    # Pretrained weights, not random: ImageNet BN statistics are far from the init values (0 / 1).
    bn = teacher.body.stem[1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_missing_torchvision_weights_name_the_file_and_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(TeacherWeightsError) as err:
        build_teacher("resnet18", allow_download=False)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path) in msg and "--teacher-weights" in msg


def test_explicit_weight_file_with_wrong_hash_is_refused(tmp_path):
    good = resolve_weights(get_spec("efficientnet_lite0"))
    bad = tmp_path / good.name
    shutil.copy(good, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert sha256_file(bad) != sha256_file(good)
    with pytest.raises(TeacherWeightsError, match="sha256"):
        build_teacher("efficientnet_lite0", weights=bad)


def test_fake_torchvision_file_is_refused_by_its_hash_prefix(tmp_path):
    fake = tmp_path / "resnet18-f37072fd.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, fake)
    with pytest.raises(TeacherWeightsError, match="expected f37072fd"):
        build_teacher("resnet18", weights=fake)


def test_unknown_teacher_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown teacher 'vgg'"):
        get_spec("vgg")
