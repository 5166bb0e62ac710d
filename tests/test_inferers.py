"""CoSegSlidingWindowInferer's two input modes: windows at the image's resolution, or the whole image resized."""

from __future__ import annotations

import pytest
import torch

from coseg.inferers import FULL_RESOLUTION_OUTPUTS, CoSegSlidingWindowInferer, resize_images
from coseg.keys import OutputKeys


class _Echo(torch.nn.Module):
    """Returns its input (first channel) under every output key, and records the shapes it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls.append(tuple(x.shape))
        out = {key: x[:, :1].clone() for key in FULL_RESOLUTION_OUTPUTS}
        out[OutputKeys.SEM_PROMPT] = x[:, :1, ::4, ::4]  # a low-resolution output the inferer drops
        return out


def _inferer(**kwargs) -> CoSegSlidingWindowInferer:
    return CoSegSlidingWindowInferer(roi_size=(64, 64), sw_batch_size=4, overlap=0.25, mode="gaussian", **kwargs)


@pytest.mark.parametrize("shape", [(70, 50), (130, 90), (64, 64), (40, 100)])
def test_resize_mode_runs_the_whole_image_once_and_answers_on_its_grid(shape):
    net = _Echo()
    image = torch.full((1, 3, *shape), 0.5)
    image[:, 0] = torch.linspace(-1, 1, shape[1])  # a ramp along x: bilinear resizing keeps it linear inside
    with torch.no_grad():
        out = _inferer(input_mode="resize")(image, net)
    assert net.calls == [(1, 3, 64, 64)]
    assert set(out) == set(FULL_RESOLUTION_OUTPUTS)
    for value in out.values():
        assert tuple(value.shape) == (1, 1, *shape)
    # away from the borders (where bilinear clamps) the ramp comes back unchanged
    inner = out[OutputKeys.SEM_LOGITS][0, 0, :, 4:-4]
    torch.testing.assert_close(inner, image[0, 0, :, 4:-4], atol=0.02, rtol=0)


def test_crop_mode_slides_windows_over_the_image_at_its_resolution():
    net = _Echo()
    image = torch.rand(1, 3, 70, 130)
    with torch.no_grad():
        out = _inferer()(image, net)
    assert net.calls and all(c[-2:] == (64, 64) for c in net.calls)
    assert sum(c[0] for c in net.calls) > 1  # several windows
    torch.testing.assert_close(out[OutputKeys.SEM_LOGITS], image[:, :1])  # echoed windows stitch back exactly


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="input_mode must be one of \\('crop', 'resize'\\), got 'Resize'"):
        _inferer(input_mode="Resize")
    with pytest.raises(ValueError, match="needs roi_size of two positive ints"):
        CoSegSlidingWindowInferer(roi_size=(64, -1), sw_batch_size=1, input_mode="resize")
    with pytest.raises(ValueError, match="must be \\(B, C, H, W\\)"):
        resize_images(torch.zeros(3, 8, 8), (4, 4))
    with pytest.raises(ValueError, match="two positive ints"):
        resize_images(torch.zeros(1, 3, 8, 8), (4, 0))


def test_resize_images_is_a_plain_bilinear_resize():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(resize_images(x, (2, 2)), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))  # 2x2 means
    assert resize_images(x, (4, 4)) is x
    assert type(resize_images(x, (8, 6))) is torch.Tensor
