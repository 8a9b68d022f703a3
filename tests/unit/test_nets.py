import pytest
import torch

from inspector.model.nets.dual import VARIANTS, DualStudent
from inspector.model.nets.losses import cosine_distillation_loss
from inspector.model.nets.reverse import ReverseDistillation
from inspector.model.nets.teachers import TEACHERS, build_untrained_teacher


def test_rd_with_wide_resnet50_2_has_the_papers_shapes():
    teacher = build_untrained_teacher("wide_resnet50_2")
    x = torch.zeros(1, 3, 256, 256)
    with torch.no_grad():
        t = teacher(x)
        assert [tuple(f.shape[1:]) for f in t] == [(256, 64, 64), (512, 32, 32), (1024, 16, 16)]
        rd = ReverseDistillation(teacher.spec).eval()
        fused = rd.bottleneck.fusion(t)
        assert tuple(fused.shape[1:]) == (3072, 16, 16)
        code = rd.bottleneck(t)
        assert tuple(code.shape[1:]) == (2048, 8, 8)
        out = rd.decoder(code)
    assert [tuple(f.shape[1:]) for f in out] == [(256, 64, 64), (512, 32, 32), (1024, 16, 16)]
    # OCBE stage = 3 bottlenecks, decoder stages = 3, 4, 6 blocks (the reference layout).
    assert len(rd.bottleneck.embed) == 3
    assert [len(rd.decoder.stage3), len(rd.decoder.stage2), len(rd.decoder.stage1)] == [3, 4, 6]
    # the first decoder block upsamples with a 2x2 transposed conv in both paths
    first = rd.decoder.stage3[0]
    assert isinstance(first.conv2, torch.nn.ConvTranspose2d) and first.conv2.kernel_size == (2, 2)
    assert isinstance(first.upsample[0], torch.nn.ConvTranspose2d)


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_students_fit_every_teacher(name):
    teacher = build_untrained_teacher(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        t = teacher(x)
        students = [ReverseDistillation(teacher.spec)(x, t)]
        if name in ("resnet18", "efficientnet_lite0"):
            students += [DualStudent(teacher.spec, v).eval()(x, t) for v in VARIANTS]
    for pyramids in students:
        for pyramid in pyramids:
            assert [p.shape for p in pyramid] == [f.shape for f in t]


def test_dskd_ablations_switch_parts_on_and_off():
    spec = build_untrained_teacher("efficientnet_lite0").spec
    parts = {v: DualStudent(spec, v) for v in VARIANTS}
    assert parts["forward"].reverse_student is None and parts["forward"].forward_student is not None
    assert parts["rd"].forward_student is None and parts["rd"].reverse_student is not None
    assert type(parts["dual"].bottleneck).__name__ == "DeepFeatureEmbedding"
    assert type(parts["dual_no_df"].bottleneck).__name__ == "OneClassBottleneck"
    with pytest.raises(ValueError):
        DualStudent(spec, "triple")


def test_dskd_df_module_lets_the_reverse_loss_train_the_forward_student():
    teacher = build_untrained_teacher("efficientnet_lite0")
    x = torch.randn(2, 3, 64, 64)
    t = teacher(x)
    for variant, expect_grad in (("dual", True), ("dual_no_df", False)):
        model = DualStudent(teacher.spec, variant)
        reverse_only = cosine_distillation_loss(t, model(x, t)[1:])
        reverse_only.backward()
        grads = [p.grad for p in model.forward_student.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads) == expect_grad


def test_losses_are_zero_for_a_perfect_student_and_differ_by_kind():
    t = [torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8), torch.randn(2, 32, 4, 4)]
    for kind in ("map", "pixel"):
        assert cosine_distillation_loss(t, [t], kind).abs() < 1e-5
    s = [f + torch.randn_like(f) for f in t]
    a, b = cosine_distillation_loss(t, [s], "map"), cosine_distillation_loss(t, [s], "pixel")
    assert a > 0 and b > 0 and not torch.isclose(a, b)
    with pytest.raises(ValueError):
        cosine_distillation_loss(t, [s], "l2")


def test_students_of_signed_teachers_can_output_negative_values():
    """EfficientNet taps are signed (linear bottlenecks): a ReLU-ended student could not match them."""
    lite = build_untrained_teacher("efficientnet_lite0")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        t = lite(x)
        assert all((f < 0).any() for f in t)
        for student in (ReverseDistillation(lite.spec), DualStudent(lite.spec, "dual")):
            for pyramid in student.eval()(x, t):
                assert all((f < 0).any() for f in pyramid)
        resnet = build_untrained_teacher("resnet18")
        tr = resnet(x)
        assert all((f >= 0).all() for f in tr)  # post-ReLU taps: the paper's student, no heads
        assert not hasattr(ReverseDistillation(resnet.spec).decoder.heads, "heads")
